//! Proportional set size of idle clones: RAM pages shared with the template
//! (and between clones) count fractionally.

use hearth_net::EgressPolicy;
use std::time::Duration;

use hearth_orchestrator::{NodeRuntime, RunningSandbox};
use hearth_vmm::{InitParams, Template};

/// How long clones sit idle before they are measured.
const SETTLE: Duration = Duration::from_secs(5);

pub async fn run(runtime: &NodeRuntime, template: &Template, many: usize) -> anyhow::Result<()> {
    let mut clones: Vec<RunningSandbox> = Vec::new();
    let result = measure(runtime, template, many, &mut clones).await;
    for running in clones {
        runtime.destroy_sandbox(running).await?;
    }
    result
}

async fn measure(
    runtime: &NodeRuntime,
    template: &Template,
    many: usize,
    clones: &mut Vec<RunningSandbox>,
) -> anyhow::Result<()> {
    let mib = template.meta.memory_mib;
    for count in [1, many] {
        while clones.len() < count {
            let id = format!("bench-mem-{}", clones.len());
            clones.push(
                runtime
                    .clone_sandbox(
                        template,
                        &id,
                        InitParams::default(),
                        &EgressPolicy::default(),
                    )
                    .await?,
            );
        }
        tokio::time::sleep(SETTLE).await;
        let mut total_kib = 0;
        let mut rss_kib = 0;
        for running in clones.iter() {
            let vm = &running.sandbox.vm;
            let sample =
                hearth_orchestrator::metrics::sample(vm.pid(), &vm.run_dir().join("disk.qcow2"))?;
            total_kib += sample.memory_pss_bytes / 1024;
            rss_kib += sample.memory_rss_bytes / 1024;
        }
        println!(
            "memory of {count} idle clone(s) of a {mib} MiB template: PSS {:.1} MiB in all, {:.1} MiB each (RSS {:.1} MiB each)",
            total_kib as f64 / 1024.0,
            total_kib as f64 / 1024.0 / count as f64,
            rss_kib as f64 / 1024.0 / count as f64,
        );
    }
    Ok(())
}
