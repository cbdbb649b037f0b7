//! Each sandbox's QEMU is confined: an unprivileged uid without
//! capabilities, QEMU's seccomp filter, a mount namespace that holds only its
//! own files, and a cgroup that its guest's RAM is charged to. Read from
//! `/proc` and cgroupfs, with real VMs. Run by `make vm-test`.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{COMMAND_TIMEOUT, Leftovers, TestResult, runtime_and_template};
use hearth_net::EgressPolicy;
use hearth_vmm::InitParams;
use hearth_vmm::jail::CgroupLayout;

fn init_for(id: &str) -> InitParams {
    InitParams {
        env_vars: Some(HashMap::new()),
        access_token: Some(format!("token-{id}")),
        default_user: Some("user".into()),
        hostname: Some(id.to_owned()),
        ..InitParams::default()
    }
}

/// A field of `/proc/<pid>/status`.
fn status_field(pid: u32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
        .chars()
        .take(12)
        .collect()
}

/// The memory controller's directory of `pid`'s group.
fn memory_group(layout: &CgroupLayout, pid: u32) -> Option<PathBuf> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    match layout {
        CgroupLayout::V1 { root } => cgroups.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then(|| root.join("memory").join(path.trim_start_matches('/')))
        }),
        CgroupLayout::V2 { root } => cgroups
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(|path| root.join(path.trim_start_matches('/'))),
    }
}

fn read_number(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn a_sandboxs_qemu_is_unprivileged_filtered_and_sees_only_its_files() -> TestResult {
    let (runtime, template) = runtime_and_template().await?;
    let jail = runtime
        .vmm
        .jail()
        .ok_or("tests run as root: VMs must be jailed")?;
    let uid_range = jail.config().uid_base..jail.config().uid_base + jail.config().uid_count;
    let mut leftovers = Leftovers::default();
    let ids = [unique("jail-a"), unique("jail-b")];
    let mut sandboxes = Vec::new();
    for id in &ids {
        leftovers.run_dirs.push(runtime.sandbox_dir(id));
        sandboxes.push(
            runtime
                .clone_sandbox(&template, id, init_for(id), &EgressPolicy::default())
                .await?,
        );
    }
    let pids: Vec<u32> = sandboxes.iter().map(|s| s.sandbox.vm.pid()).collect();
    let mut uids = Vec::new();
    for &pid in &pids {
        let uid: Vec<u32> = status_field(pid, "Uid")
            .split_whitespace()
            .filter_map(|u| u.parse().ok())
            .collect();
        assert_eq!(uid.len(), 4, "real, effective, saved and fs uid");
        assert!(
            uid.iter().all(|u| uid_range.contains(u)),
            "QEMU runs as {uid:?}"
        );
        uids.push(uid[0]);
        for caps in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
            assert_eq!(status_field(pid, caps), "0000000000000000", "{caps}");
        }
        assert_eq!(status_field(pid, "Seccomp"), "2", "QEMU's seccomp filter");
        assert_eq!(status_field(pid, "NoNewPrivs"), "1");
        assert_ne!(
            std::fs::read_link(format!("/proc/{pid}/ns/mnt"))?,
            std::fs::read_link("/proc/self/ns/mnt")?,
            "a mount namespace of its own"
        );
    }
    assert_ne!(uids[0], uids[1], "each VM has a uid of its own");

    // What the first VM's QEMU sees: its own run directory and its template's
    // files, not the other sandbox's, not the host's /etc or the data directory.
    let root = PathBuf::from(format!("/proc/{}/root", pids[0]));
    let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    assert!(
        inside(&runtime.sandbox_dir(&ids[0]))
            .join("disk.qcow2")
            .exists()
    );
    assert!(inside(&template.memory_file()).exists());
    assert!(!inside(&runtime.sandbox_dir(&ids[1])).exists());
    assert!(!inside(Path::new("/etc/passwd")).exists());
    assert!(!inside(runtime.data.root()).join("hearth.db").exists());
    let disk = runtime.sandbox_dir(&ids[0]).join("disk.qcow2");
    let meta = std::fs::metadata(&disk)?;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "the disk is private"
    );
    assert_eq!(meta.uid(), uids[0], "and its VM's");

    // The cgroup: memory = guest RAM + the VMM's overhead, CPU quota = vCPUs.
    let layout = jail.cgroup_layout().ok_or("this host has cgroups")?;
    let group = memory_group(layout, pids[0]).ok_or("QEMU is in a memory cgroup")?;
    assert!(
        group.ends_with(format!("hearth/vm-{}", uids[0])),
        "in its own group: {}",
        group.display()
    );
    let guest_bytes = u64::from(template.meta.memory_mib) << 20;
    let (limit_file, peak_file) = match layout {
        CgroupLayout::V1 { .. } => ("memory.limit_in_bytes", "memory.max_usage_in_bytes"),
        CgroupLayout::V2 { .. } => ("memory.max", "memory.peak"),
    };
    let limit = read_number(&group.join(limit_file));
    assert!(
        limit > guest_bytes && limit <= guest_bytes + (512 << 20),
        "limit {limit} for {guest_bytes} of guest RAM"
    );

    // The guest dirties all the RAM it can get: what QEMU then holds is
    // charged to the sandbox's group and stays under its limit, and the VM
    // lives on (the guest's own OOM killer may end the hog).
    let envd = &sandboxes[0].sandbox.envd;
    let hog = "chunks = []\n\
               try:\n    \
                   while True:\n        \
                       chunks.append(bytes([1]) * (8 << 20))\n\
               except MemoryError:\n    \
                   pass\n";
    let _ = envd
        .run(
            "python3",
            &["-c", hog],
            None,
            std::time::Duration::from_secs(180),
        )
        .await;
    let peak = read_number(&group.join(peak_file));
    assert!(
        peak > guest_bytes / 2,
        "the guest's RAM is charged to the group: peak {peak}"
    );
    assert!(peak <= limit, "peak {peak} over the limit {limit}");
    let alive = envd.run("echo", &["alive"], None, COMMAND_TIMEOUT).await?;
    assert_eq!(alive.stdout.trim(), "alive");

    let groups: Vec<PathBuf> = pids
        .iter()
        .filter_map(|&pid| memory_group(layout, pid))
        .collect();
    for running in sandboxes {
        runtime.destroy_sandbox(running).await?;
    }
    for group in groups {
        assert!(!group.exists(), "{} is left", group.display());
    }
    drop(leftovers);
    Ok(())
}
