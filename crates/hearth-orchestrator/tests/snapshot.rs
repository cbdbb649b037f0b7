//! Snapshots of a running clone (real VMs, TCG here): the source runs on
//! and writes its disk; clones started from the snapshot have its memory
//! (the same processes) and files, and are independent of the source and
//! of each other; the disk layer stays while any clone's disk is over it. Run by
//! `make vm-test` (root, QEMU, network namespaces).

mod common;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

use common::{Leftovers, TestResult, runtime_and_template, shell};
use hearth_net::EgressPolicy;
use hearth_orchestrator::{SandboxInfo, SandboxRecord, SandboxSpec};
use hearth_vmm::InitParams;

fn init(id: &str) -> InitParams {
    InitParams {
        env_vars: Some(HashMap::from([("OWN_ID".to_owned(), id.to_owned())])),
        access_token: Some(format!("token-{id}")),
        default_user: Some("user".into()),
        hostname: Some(id.to_owned()),
        ..InitParams::default()
    }
}

fn short_id(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn clones_of_a_snapshot_are_independent_and_the_source_runs_on() -> TestResult {
    let (runtime, template) = runtime_and_template().await?;
    let mut leftovers = Leftovers::default();
    let (source_id, snap) = (short_id("ss"), short_id("snap"));
    let (a_id, b_id) = (short_id("sa"), short_id("sb"));
    for id in [&source_id, &a_id, &b_id] {
        leftovers.run_dirs.push(runtime.sandbox_dir(id));
    }
    leftovers.run_dirs.push(runtime.snapshots_dir());
    leftovers.run_dirs.push(runtime.layers_dir());
    let egress = EgressPolicy::default();
    let source = runtime
        .clone_sandbox(&template, &source_id, init(&source_id), &egress)
        .await?;
    let envd = &source.sandbox.envd;
    shell(
        envd,
        "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /dev/shm/count.new && mv /dev/shm/count.new /dev/shm/count; sleep 0.1; done' \
         </dev/null >/dev/null 2>&1 & echo $! > /dev/shm/counter.pid",
    )
    .await?;
    shell(envd, "echo before > /home/user/state && sync").await?;
    let pid = shell(envd, "cat /dev/shm/counter.pid").await?;
    let boot_id = shell(envd, "cat /proc/sys/kernel/random/boot_id").await?;
    let record = SandboxRecord::new(
        SandboxInfo {
            spec: SandboxSpec {
                sandbox_id: source_id.clone(),
                template_id: template.name().to_owned(),
                access_token: init(&source_id).access_token,
                ..SandboxSpec::default()
            },
            build_id: template.meta.build_id.clone(),
            vcpus: u32::from(template.meta.vcpus),
            memory_mib: template.meta.memory_mib,
            start_time: std::time::SystemTime::now(),
            end_time: None,
            host_address: source.slot.sandbox_address,
            paused: false,
        },
        0,
        0,
    );
    let snapshot = runtime
        .snapshot_sandbox(&template, &source, record, &snap)
        .await?;
    let ram = u64::from(template.meta.memory_mib) << 20;
    let on_disk = std::fs::metadata(&snapshot.files.state)?.blocks() * 512;
    assert!(
        on_disk < ram / 2,
        "{on_disk} bytes of state for {ram} of RAM"
    );

    // The source runs on, over a new top image: it writes its disk.
    assert_eq!(
        shell(
            envd,
            "echo after > /home/user/state && sync && cat /home/user/state"
        )
        .await?,
        "after"
    );
    assert_eq!(
        shell(envd, &format!("kill -0 {pid} && echo alive")).await?,
        "alive"
    );

    let a = runtime
        .clone_snapshot(&template, &snapshot, &a_id, init(&a_id), &egress)
        .await?;
    let b = runtime
        .clone_snapshot(&template, &snapshot, &b_id, init(&b_id), &egress)
        .await?;
    for (id, clone) in [(&a_id, &a), (&b_id, &b)] {
        let envd = &clone.sandbox.envd;
        // The snapshot's disk and memory: the file as it was, the same
        // process counting on; its own name, token and variables.
        assert_eq!(shell(envd, "cat /home/user/state").await?, "before");
        assert_eq!(
            shell(envd, &format!("kill -0 {pid} && echo alive")).await?,
            "alive"
        );
        let first: u64 = shell(envd, "cat /dev/shm/count").await?.parse()?;
        let later: u64 = shell(envd, "sleep 0.5; cat /dev/shm/count")
            .await?
            .parse()?;
        assert!(
            later > first,
            "{id}: the counter went from {first} to {later}"
        );
        assert_eq!(
            shell(envd, "cat /proc/sys/kernel/random/boot_id").await?,
            boot_id
        );
        assert_eq!(shell(envd, "hostname").await?, *id);
        assert_eq!(shell(envd, "echo $OWN_ID").await?, *id);
    }
    // Independent both ways.
    shell(&a.sandbox.envd, "echo from-a > /home/user/state && sync").await?;
    assert_eq!(
        shell(&b.sandbox.envd, "cat /home/user/state").await?,
        "before"
    );
    assert_eq!(shell(envd, "cat /home/user/state").await?, "after");

    // Removing the snapshot keeps the layer the disks are over; once no
    // disk is over it, it goes.
    let layer = snapshot.files.layer.clone();
    runtime.remove_snapshot(&snap).await?;
    assert!(!snapshot.files.state.exists());
    assert!(layer.exists(), "a layer under running disks was removed");
    runtime.destroy_sandbox(a).await?;
    runtime.collect_layers().await;
    assert!(layer.exists(), "a layer under a running disk was removed");
    runtime.destroy_sandbox(b).await?;
    runtime.collect_layers().await;
    assert!(!layer.exists(), "an unused layer was kept");
    runtime.destroy_sandbox(source).await?;
    drop(leftovers);
    Ok(())
}
