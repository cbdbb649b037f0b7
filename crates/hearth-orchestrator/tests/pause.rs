//! Pausing a clone to disk and resuming it (real VMs, TCG here): processes,
//! memory and files go on; the paused state holds what the clone changed,
//! not its RAM. Run by `make vm-test` (root, QEMU, network namespaces).

mod common;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

use common::{COMMAND_TIMEOUT, Leftovers, TestResult, runtime_and_template, test_slots};
use hearth_net::EgressPolicy;
use hearth_vmm::{EnvdClient, InitParams};

fn init(id: &str) -> InitParams {
    InitParams {
        env_vars: Some(HashMap::from([(
            "PAUSED_ONCE".to_owned(),
            "yes".to_owned(),
        )])),
        access_token: Some(format!("token-{id}")),
        default_user: Some("user".into()),
        hostname: Some(id.to_owned()),
        ..InitParams::default()
    }
}

async fn shell(envd: &EnvdClient, script: &str) -> Result<String, Box<dyn std::error::Error>> {
    let output = envd
        .run("sh", &["-c", script], None, COMMAND_TIMEOUT)
        .await?;
    if output.exit_code != 0 {
        return Err(format!("`{script}` failed: {output:?}").into());
    }
    Ok(output.stdout.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn a_clone_paused_to_disk_resumes_where_it_was() -> TestResult {
    let (runtime, template) = runtime_and_template().await?;
    let mut leftovers = Leftovers::default();
    let id = format!("pz-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    leftovers.run_dirs.push(runtime.sandbox_dir(&id));
    leftovers.run_dirs.push(runtime.paused_dir(&id));
    let running = runtime
        .clone_sandbox(&template, &id, init(&id), &EgressPolicy::default())
        .await?;
    let envd = &running.sandbox.envd;
    // A counter that lives only in a process's memory, a file on disk, a
    // file in RAM (/dev/shm), and 32 MiB of changed memory.
    shell(
        envd,
        "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /dev/shm/count.new && mv /dev/shm/count.new /dev/shm/count; sleep 0.1; done' \
         </dev/null >/dev/null 2>&1 & echo $! > /dev/shm/counter.pid",
    )
    .await?;
    shell(envd, "echo on-disk > /home/user/kept && sync").await?;
    shell(envd, "head -c 33554432 /dev/urandom > /dev/shm/noise").await?;
    let boot_id = shell(envd, "cat /proc/sys/kernel/random/boot_id").await?;
    let pid = shell(envd, "cat /dev/shm/counter.pid").await?;
    let before: u64 = shell(envd, "sleep 1; cat /dev/shm/count").await?.parse()?;
    assert!(before > 0);
    let netns = running.slot.netns.clone();

    let paused = runtime
        .pause_sandbox(&template, running)
        .await
        .map_err(|(error, _)| error)?;
    // The VM and its slot are gone; the state is on disk, apart from the
    // running sandboxes' directories.
    assert_eq!(paused.run_dir, runtime.paused_dir(&id));
    assert!(!runtime.sandbox_dir(&id).exists());
    assert!(
        !common::process_running(&format!("{}/", paused.run_dir.display())),
        "a paused clone's QEMU still runs"
    );
    assert!(!std::path::Path::new("/run/netns").join(&netns).exists());
    let snapshot = std::fs::metadata(paused.snapshot())?;
    let ram = u64::from(template.meta.memory_mib) << 20;
    let on_disk = snapshot.blocks() * 512;
    eprintln!(
        "paused: {} of {} pages kept, {} MiB on disk for {} MiB of RAM",
        paused.memory.kept,
        paused.memory.present,
        on_disk >> 20,
        ram >> 20
    );
    // What it changed (the 32 MiB and what the guest touched), not its RAM.
    assert!(paused.memory.kept * 4096 >= 32 << 20, "{:?}", paused.memory);
    assert!(
        on_disk < ram / 2,
        "{on_disk} bytes on disk for {ram} of RAM"
    );

    let resumed = runtime
        .resume_sandbox(&template, &paused, init(&id), &EgressPolicy::default())
        .await?;
    let envd = &resumed.sandbox.envd;
    // The same boot, the same process, counting on from where it was.
    assert_eq!(
        shell(envd, "cat /proc/sys/kernel/random/boot_id").await?,
        boot_id
    );
    assert_eq!(shell(envd, "cat /dev/shm/counter.pid").await?, pid);
    assert!(
        shell(envd, &format!("kill -0 {pid} && echo alive")).await? == "alive",
        "the counter process is gone"
    );
    let after: u64 = shell(envd, "sleep 1; cat /dev/shm/count").await?.parse()?;
    assert!(after > before, "the counter went from {before} to {after}");
    assert_eq!(shell(envd, "cat /home/user/kept").await?, "on-disk");
    assert_eq!(
        shell(envd, "wc -c < /dev/shm/noise").await?,
        (32u64 << 20).to_string()
    );
    assert_eq!(shell(envd, "echo $PAUSED_ONCE").await?, "yes");
    // The guest's clock was set again on resume.
    let guest_now: i64 = shell(envd, "date +%s").await?.parse()?;
    let host_now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    )?;
    assert!(
        (guest_now - host_now).abs() <= 2,
        "guest {guest_now}, host {host_now}"
    );
    // A resumed clone has no snapshot left; it can be paused again.
    assert!(!paused.snapshot().exists());
    let again = runtime
        .pause_sandbox(&template, resumed)
        .await
        .map_err(|(error, _)| error)?;
    let resumed = runtime
        .resume_sandbox(&template, &again, init(&id), &EgressPolicy::default())
        .await?;
    assert_eq!(
        shell(&resumed.sandbox.envd, "cat /home/user/kept").await?,
        "on-disk"
    );
    let run_dir = resumed.sandbox.run_dir.clone();
    runtime.destroy_sandbox(resumed).await?;
    assert!(!run_dir.exists());
    assert!(test_slots().is_empty(), "{:?}", test_slots());
    drop(leftovers);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn a_paused_sandbox_outlives_its_node_and_resumes_in_the_next() -> TestResult {
    use std::sync::Arc;

    use hearth_orchestrator::{NodeLimits, SandboxError, SandboxManager, SandboxSpec};

    let (runtime, template) = runtime_and_template().await?;
    let id = format!("pm-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut leftovers = Leftovers::default();
    leftovers.run_dirs.push(runtime.sandbox_dir(&id));
    leftovers.run_dirs.push(runtime.paused_dir(&id));
    let node = SandboxManager::new(Arc::new(runtime), NodeLimits::default());
    node.register_template(template.clone());
    let spec = SandboxSpec {
        sandbox_id: id.clone(),
        template_id: template.meta.name.clone(),
        access_token: Some("paused-token".into()),
        metadata: [("kept".to_owned(), "across".to_owned())].into(),
        ..SandboxSpec::default()
    };
    node.create(spec).await?;
    let (_, committed) = node.allocated();
    assert!(committed > 0);
    let paused = node.pause(&id).await?;
    assert!(paused.paused);
    assert!(node.get(&id)?.paused);
    assert!(
        node.list()
            .iter()
            .any(|s| s.spec.sandbox_id == id && s.paused)
    );
    assert_eq!(node.allocated(), (0, 0), "a paused sandbox commits nothing");
    assert!(matches!(
        node.pause(&id).await,
        Err(SandboxError::Paused(_))
    ));
    assert!(matches!(
        node.metrics(&id).await,
        Err(SandboxError::Paused(_))
    ));
    // The node goes away (shutdown deletes running sandboxes only).
    node.delete_all().await;
    drop(node);

    let (runtime, template) = runtime_and_template().await?;
    let node = SandboxManager::new(Arc::new(runtime), NodeLimits::default());
    node.register_template(template);
    let found = node.runtime().paused_sandboxes();
    assert_eq!(node.adopt_paused(found), 1);
    let again = node.get(&id)?;
    assert!(again.paused);
    assert_eq!(
        again.spec.metadata.get("kept").map(String::as_str),
        Some("across")
    );
    let end = std::time::SystemTime::now() + std::time::Duration::from_secs(600);
    let resumed = node.resume(&id, Some(end)).await?;
    assert!(!resumed.paused && resumed.end_time == Some(end));
    assert!(matches!(
        node.resume(&id, None).await,
        Err(SandboxError::NotPaused(_))
    ));
    let metrics = node.metrics(&id).await?;
    assert!(metrics.memory_rss_bytes > 0);
    // Paused again and deleted: nothing of it stays.
    node.pause(&id).await?;
    let paused_dir = node.runtime().paused_dir(&id);
    assert!(paused_dir.exists());
    node.delete(&id).await?;
    assert!(!paused_dir.exists());
    assert!(!node.runtime().sandbox_dir(&id).exists());
    assert!(matches!(node.get(&id), Err(SandboxError::NotFound(_))));
    assert!(test_slots().is_empty() || node.list().is_empty());
    drop(leftovers);
    Ok(())
}
