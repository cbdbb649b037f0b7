//! 200 create/delete cycles through the node, then nothing may be left:
//! no namespace, nftables table, QEMU process, run directory, descriptor or
//! memory growth. Run by `make vm-test`.

mod common;

use std::sync::Arc;

use common::{Leftovers, TestResult, process_running, runtime_and_template, test_slots};
use hearth_orchestrator::{NodeLimits, SandboxManager, SandboxSpec};

const CYCLES: usize = 200;

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn nft_tables_in(netns: &str) -> usize {
    std::process::Command::new("ip")
        .args(["netns", "exec", netns, "nft", "list", "tables"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn two_hundred_create_delete_cycles_leak_nothing() -> TestResult {
    let (mut runtime, template) = runtime_and_template().await?;
    runtime.keep_slots_ready(2);
    let sandboxes = runtime.sandboxes_dir();
    let ids: Vec<String> = (0..CYCLES).map(|i| format!("stress-{i}")).collect();
    let _leftovers = Leftovers {
        run_dirs: ids.iter().map(|id| sandboxes.join(id)).collect(),
    };
    let manager = Arc::new(SandboxManager::new(
        Arc::new(runtime),
        NodeLimits::default(),
    ));
    manager.register_template(template);

    let groups_before = vm_cgroups(&manager);
    // Warm up allocator and connection pools before taking the baseline.
    let mut baseline = None;
    for (cycle, id) in ids.iter().enumerate() {
        let spec = SandboxSpec {
            sandbox_id: id.clone(),
            template_id: "base".into(),
            allow_internet: true,
            ..SandboxSpec::default()
        };
        let info = manager.create(spec).await?;
        assert_eq!(manager.list().len(), 1);
        let slot_netns = test_slots();
        assert!(slot_netns.len() <= 3, "slots pile up: {slot_netns:?}");
        assert_eq!(info.spec.sandbox_id, *id);
        manager.delete(id).await?;
        if cycle == 9 {
            baseline = Some((open_descriptors(), rss_kib()));
        }
    }
    let (descriptors, rss) = baseline.ok_or("no baseline")?;
    assert!(manager.list().is_empty());
    assert!(
        open_descriptors() <= descriptors + 4,
        "descriptors grew from {descriptors} to {}",
        open_descriptors()
    );
    let grown = rss_kib().saturating_sub(rss);
    assert!(
        grown < 32 * 1024,
        "the node's RSS grew by {grown} KiB over {CYCLES} cycles"
    );
    for netns in test_slots() {
        assert_eq!(
            nft_tables_in(&netns),
            1,
            "a recycled slot {netns} holds one table"
        );
    }
    manager.runtime().slots.drain().await?;
    assert!(
        test_slots().is_empty(),
        "slots are left: {:?}",
        test_slots()
    );
    let marker = format!("{}/stress-", sandboxes.display());
    assert!(!process_running(&marker), "a QEMU is left");
    let left: Vec<_> = std::fs::read_dir(&sandboxes)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("stress-"))
        .collect();
    assert!(left.is_empty(), "run directories are left: {}", left.len());
    // Other VMs on this host may hold groups of their own: only new ones
    // would be this test's leak.
    let leaked: Vec<String> = vm_cgroups(&manager)
        .difference(&groups_before)
        .cloned()
        .collect();
    assert!(leaked.is_empty(), "VM cgroups are left: {leaked:?}");
    Ok(())
}

/// The VM cgroups on this host (`hearth/vm-<uid>` in the memory hierarchy
/// on v1, the unified one on v2).
fn vm_cgroups(manager: &SandboxManager) -> std::collections::BTreeSet<String> {
    let parent = match manager.runtime().vmm.jail().and_then(|j| j.cgroup_layout()) {
        Some(hearth_vmm::jail::CgroupLayout::V1 { root }) => root.join("memory/hearth"),
        Some(hearth_vmm::jail::CgroupLayout::V2 { root }) => root.join("hearth"),
        None => return Default::default(),
    };
    std::fs::read_dir(parent)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("vm-"))
                .collect()
        })
        .unwrap_or_default()
}
