//! Real VMs (TCG on our machines): the base template, clones, isolation,
//! and clean teardown. Run by `make vm-test` (root, QEMU, network namespaces).

mod common;

use hearth_net::EgressPolicy;
use std::collections::HashMap;

use common::{
    COMMAND_TIMEOUT, Leftovers, TestResult, process_running, runtime_and_template, test_slots,
};
use hearth_vmm::{InitParams, VmStatus, Vmm};

fn init_for(id: &str) -> InitParams {
    InitParams {
        env_vars: Some(HashMap::from([(
            "HEARTH_SANDBOX".to_owned(),
            id.to_owned(),
        )])),
        access_token: Some(format!("token-{id}")),
        default_user: Some("user".into()),
        hostname: Some(id.to_owned()),
        ..InitParams::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn three_clones_are_isolated_and_leave_nothing_behind() -> TestResult {
    let (runtime, template) = runtime_and_template().await?;
    let mut leftovers = Leftovers::default();
    let ids: Vec<String> = (0..3)
        .map(|i| {
            format!("iso{i}-{}", uuid::Uuid::new_v4().simple())
                .chars()
                .take(12)
                .collect()
        })
        .collect();
    let mut sandboxes = Vec::new();
    for id in &ids {
        leftovers.run_dirs.push(runtime.sandbox_dir(id));
        sandboxes.push(
            runtime
                .clone_sandbox(&template, id, init_for(id), &EgressPolicy::default())
                .await?,
        );
    }
    for (running, id) in sandboxes.iter().zip(&ids) {
        let envd = &running.sandbox.envd;
        let started = std::time::Instant::now();
        let hostname = envd.run("hostname", &[], None, COMMAND_TIMEOUT).await?;
        assert_eq!(
            hostname.stdout.trim(),
            id,
            "each clone has its own hostname"
        );
        let env = envd
            .run("sh", &["-c", "echo $HEARTH_SANDBOX"], None, COMMAND_TIMEOUT)
            .await?;
        assert_eq!(env.stdout.trim(), id, "/init's env vars reach commands");
        let user = envd.run("id", &["-un"], None, COMMAND_TIMEOUT).await?;
        assert_eq!(user.stdout.trim(), "user", "/init's default user");
        let sudo = envd
            .run("sudo", &["-n", "id", "-u"], None, COMMAND_TIMEOUT)
            .await?;
        assert_eq!(sudo.stdout.trim(), "0", "passwordless sudo: {sudo:?}");
        let address = envd
            .run(
                "ip",
                &["-4", "-o", "addr", "show", "eth0"],
                None,
                COMMAND_TIMEOUT,
            )
            .await?;
        assert!(
            address.stdout.contains("169.254.0.21/30"),
            "every clone sees the template's guest address in its own namespace: {address:?}"
        );
        let before = unix_now();
        let clock = envd.run("date", &["+%s"], None, COMMAND_TIMEOUT).await?;
        let after = unix_now();
        let guest_now: i64 = clock.stdout.trim().parse()?;
        assert!(
            (before - 1..=after + 1).contains(&guest_now),
            "the guest clock was set after the restore: guest {guest_now}, host {before}..{after}"
        );
        eprintln!(
            "{id}: checks took {:?}; clone timings {:?}",
            started.elapsed(),
            running.sandbox.timings
        );
    }
    // A file written in one clone is absent in the others.
    let first = &sandboxes[0].sandbox.envd;
    let wrote = first
        .run(
            "sh",
            &["-c", "echo secret > /home/user/only-here && sync"],
            None,
            COMMAND_TIMEOUT,
        )
        .await?;
    assert_eq!(wrote.exit_code, 0, "{wrote:?}");
    for (index, running) in sandboxes.iter().enumerate() {
        let probe = running
            .sandbox
            .envd
            .run(
                "test",
                &["-e", "/home/user/only-here"],
                None,
                COMMAND_TIMEOUT,
            )
            .await?;
        assert_eq!(
            probe.exit_code,
            i32::from(index != 0),
            "clone {index}: {probe:?}"
        );
    }
    // Guest RAM stays shared with the template until written.
    let template_ram = template.memory_file();
    for running in &sandboxes {
        let pid = hearth_vmm::QemuVm::pid(&running.sandbox.vm);
        let dirty = private_dirty_kib(pid, &template_ram.to_string_lossy())?;
        assert!(
            dirty < u64::from(template.meta.memory_mib) * 1024 / 2,
            "a clone dirtied {dirty} KiB of its {} MiB template RAM",
            template.meta.memory_mib
        );
    }
    // Teardown leaves no QEMU, no overlay, no namespace or tap.
    let run_dirs: Vec<_> = sandboxes
        .iter()
        .map(|s| s.sandbox.run_dir.clone())
        .collect();
    let pids: Vec<u32> = sandboxes.iter().map(|s| s.sandbox.vm.pid()).collect();
    let netns: Vec<String> = sandboxes.iter().map(|s| s.slot.netns.clone()).collect();
    let veths: Vec<String> = sandboxes.iter().map(|s| s.slot.host_veth.clone()).collect();
    for running in sandboxes {
        runtime.destroy_sandbox(running).await?;
    }
    for ((dir, pid), (ns, veth)) in run_dirs.iter().zip(&pids).zip(netns.iter().zip(&veths)) {
        assert!(!dir.exists(), "{} is left", dir.display());
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "QEMU {pid} is left"
        );
        assert!(
            !std::path::Path::new("/run/netns").join(ns).exists(),
            "netns {ns} is left"
        );
        assert!(
            !std::path::Path::new("/sys/class/net").join(veth).exists(),
            "veth {veth} is left"
        );
    }
    for dir in &run_dirs {
        assert!(
            !process_running(&dir.to_string_lossy()),
            "a QEMU of {} still runs",
            dir.display()
        );
    }
    assert!(
        test_slots().is_empty(),
        "test namespaces are left: {:?}",
        test_slots()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn a_clone_pauses_and_resumes() -> TestResult {
    let (runtime, template) = runtime_and_template().await?;
    let mut leftovers = Leftovers::default();
    let id = "pause-resume";
    leftovers.run_dirs.push(runtime.sandbox_dir(id));
    let running = runtime
        .clone_sandbox(&template, id, init_for(id), &EgressPolicy::default())
        .await?;
    let vm = &running.sandbox.vm;
    assert_eq!(runtime.vmm.status(vm).await?, VmStatus::Running);
    runtime.vmm.pause(vm).await?;
    assert_eq!(runtime.vmm.status(vm).await?, VmStatus::Paused);
    assert!(
        !running.sandbox.envd.healthy().await,
        "a paused guest does not answer"
    );
    runtime.vmm.resume(vm).await?;
    assert_eq!(runtime.vmm.status(vm).await?, VmStatus::Running);
    let echo = running
        .sandbox
        .envd
        .run("echo", &["back"], None, COMMAND_TIMEOUT)
        .await?;
    assert_eq!(echo.stdout, "back\n");
    runtime.destroy_sandbox(running).await?;
    Ok(())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Private_Dirty (KiB) of the mapping of `file` in process `pid`.
fn private_dirty_kib(pid: u32, file: &str) -> Result<u64, Box<dyn std::error::Error>> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let mut in_mapping = false;
    let mut total = None;
    for line in smaps.lines() {
        let is_header = line.split_whitespace().next().is_some_and(|first| {
            first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        });
        if is_header {
            in_mapping = line.ends_with(file);
        } else if in_mapping && line.starts_with("Private_Dirty:") {
            let kib: u64 = line.split_whitespace().nth(1).unwrap_or("0").parse()?;
            *total.get_or_insert(0) += kib;
        }
    }
    total.ok_or_else(|| format!("process {pid} does not map {file}").into())
}
