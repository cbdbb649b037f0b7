//! Starting and stopping the node orchestrator inside this process: the
//! runtime, the base template, recovery of a previous run, the slot pool,
//! the sandbox manager and its reaper. `hearth node` serves it over gRPC
//! alone; `hearth up` puts the control plane in front of it.

use hearth_orchestrator::history_store::HistoryStore;
use hearth_orchestrator::sandbox_history::HistoryLimits;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hearth_guest::Progress;
use hearth_net::SlotNaming;
use hearth_orchestrator::build::{BuildSettings, TemplateBuilder};
use hearth_orchestrator::{DataDir, NodeLimits, NodeRuntime, SandboxManager};
use hearth_vmm::Template;

/// How a node runs, besides its limits.
#[derive(Debug, Clone, Copy)]
pub struct NodeOptions {
    /// Network slots kept ready for new sandboxes.
    pub slot_pool: usize,
    /// On exit, leave sandboxes running for the next start to adopt.
    pub keep_sandboxes_on_exit: bool,
    /// How long sandboxes' logs and metrics are kept after they end.
    pub history_retention: std::time::Duration,
}

/// A running node.
pub struct LocalNode {
    pub manager: Arc<SandboxManager>,
    pub template: Template,
    pub builder: Arc<TemplateBuilder>,
    options: NodeOptions,
    reaper: tokio::task::JoinHandle<()>,
    /// Samples the running sandboxes' metrics every second.
    sampler: tokio::task::JoinHandle<()>,
}

impl LocalNode {
    pub async fn start(
        data: DataDir,
        naming: SlotNaming,
        envd: &Path,
        limits: NodeLimits,
        options: NodeOptions,
        build: BuildSettings,
        progress: &Progress,
    ) -> anyhow::Result<Self> {
        let mut runtime = NodeRuntime::open(data, naming, progress).await?;
        progress.say(&format!(
            "accelerator: {} ({})",
            runtime.accel.accel, runtime.accel.reason
        ));
        // Sandboxes of `base` trust the extra CAs too.
        runtime.ca_bundle = build.ca_bundle.clone();
        runtime.history.set_limits(HistoryLimits {
            retention: options.history_retention,
            ..HistoryLimits::default()
        });
        let histories = HistoryStore::open(&runtime.histories_dir())?;
        let loaded = runtime.history.persist_in(histories)?;
        if loaded > 0 {
            progress.say(&format!(
                "{loaded} sandbox histories (logs, metrics) on this node"
            ));
        }
        let (template, _) = runtime.ensure_base_template(envd, progress).await?;
        if options.keep_sandboxes_on_exit {
            // A terminal's Ctrl-C must reach the node only, not its VMs.
            runtime.vmm = runtime.vmm.clone().with_own_process_groups();
        }
        // Sandboxes of a previous run that still run are taken over;
        // whatever else it left is removed.
        let recovery = runtime.recover().await?;
        let reclaimed = recovery.reclaimed;
        runtime.prepare_host_network().await?;
        runtime.keep_slots_ready(options.slot_pool);
        let manager = Arc::new(SandboxManager::new(Arc::new(runtime), limits));
        manager.register_template(template.clone());
        let built = hearth_orchestrator::build::recover_built_templates(&manager);
        if built > 0 {
            progress.say(&format!("{built} built templates on this node"));
        }
        let builder = Arc::new(TemplateBuilder::new(manager.clone(), envd, build).await?);
        let adopted = manager.adopt(recovery.adopted).await;
        let paused = manager.adopt_paused(manager.runtime().paused_sandboxes());
        if paused > 0 {
            progress.say(&format!("{paused} paused sandboxes on this node"));
        }
        let snapshots = manager.adopt_snapshots(manager.runtime().snapshots());
        if snapshots > 0 {
            progress.say(&format!("{snapshots} snapshots on this node"));
        }
        // The histories of sandboxes that did not come back have ended.
        let existing = manager
            .list()
            .into_iter()
            .map(|info| info.spec.sandbox_id)
            .collect();
        manager.runtime().history.end_all_but(&existing);
        // Layers only the sandboxes that were not adopted had are garbage.
        manager.runtime().collect_layers().await;
        if adopted > 0 || reclaimed != Default::default() {
            progress.say(&format!(
                "previous run: adopted {adopted} running sandboxes; cleaned up {} sandboxes ({} QEMU processes) and {} network slots",
                reclaimed.run_dirs, reclaimed.processes, reclaimed.slots
            ));
        }
        let reaper = tokio::spawn(manager.clone().reap(Duration::from_secs(1)));
        let sampler = tokio::spawn(
            manager
                .clone()
                .sample_metrics(hearth_orchestrator::sandbox_metrics::SAMPLE_PERIOD),
        );
        Ok(Self {
            manager,
            template,
            builder,
            options,
            reaper,
            sampler,
        })
    }

    /// Stops the node: its sandboxes are deleted, or left running for the
    /// next start when the options say so.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.reaper.abort();
        self.sampler.abort();
        let runtime = self.manager.runtime();
        if self.options.keep_sandboxes_on_exit {
            let kept = self.manager.detach_all().await;
            runtime.slots.drain().await?;
            // The host firewall and masquerade stay: the sandboxes still run.
            eprintln!("left {kept} sandboxes running for the next start to adopt");
        } else {
            self.manager.delete_all().await;
            runtime.slots.drain().await?;
            runtime.remove_host_network().await?;
        }
        // Those of paused sandboxes, and of running ones left running.
        runtime.history.save_existing();
        Ok(())
    }
}
