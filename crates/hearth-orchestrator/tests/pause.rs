//! Pausing a clone to disk and resuming it (real VMs, TCG here): processes,
//! memory and files go on; the paused state holds what the clone changed,
//! not its RAM. Run by `make vm-test` (root, QEMU, network namespaces).

mod common;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

use common::{Leftovers, TestResult, runtime_and_template, shell, test_slots};
use hearth_net::EgressPolicy;
use hearth_vmm::InitParams;

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
        .pause_sandbox(&template, running, true)
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
        paused.memory.map_or(0, |m| m.kept),
        paused.memory.map_or(0, |m| m.present),
        on_disk >> 20,
        ram >> 20
    );
    // What it changed (the 32 MiB and what the guest touched), not its RAM.
    assert!(
        paused.memory.is_some_and(|m| m.kept * 4096 >= 32 << 20),
        "{:?}",
        paused.memory
    );
    assert!(
        on_disk < ram / 2,
        "{on_disk} bytes on disk for {ram} of RAM"
    );

    let resumed = runtime
        .resume_sandbox(
            &template,
            &paused,
            init(&id),
            &EgressPolicy::default(),
            false,
        )
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
        .pause_sandbox(&template, resumed, true)
        .await
        .map_err(|(error, _)| error)?;
    let resumed = runtime
        .resume_sandbox(
            &template,
            &again,
            init(&id),
            &EgressPolicy::default(),
            false,
        )
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
    node.create(spec.clone()).await?;
    // A snapshot of another sandbox, which outlives the node as well.
    let (source, snap) = (format!("{id}-src"), format!("{id}-snap"));
    let from_snap = format!("{id}-from");
    for dir in [
        node.runtime().sandbox_dir(&source),
        node.runtime().sandbox_dir(&from_snap),
    ] {
        leftovers.run_dirs.push(dir);
    }
    leftovers.run_dirs.push(node.runtime().snapshots_dir());
    leftovers.run_dirs.push(node.runtime().layers_dir());
    node.create(SandboxSpec {
        sandbox_id: source.clone(),
        ..spec.clone()
    })
    .await?;
    node.snapshot(&source, &snap).await?;
    assert!(matches!(
        node.snapshot(&source, &snap).await,
        Err(SandboxError::AlreadyExists(_))
    ));
    node.delete(&source).await?;
    let (_, committed) = node.allocated();
    assert!(committed > 0);
    let paused = node.pause(&id, true).await?;
    assert!(paused.paused);
    assert!(node.get(&id)?.paused);
    assert!(
        node.list()
            .iter()
            .any(|s| s.spec.sandbox_id == id && s.paused)
    );
    assert_eq!(node.allocated(), (0, 0), "a paused sandbox commits nothing");
    assert!(matches!(
        node.pause(&id, true).await,
        Err(SandboxError::Paused(_))
    ));
    assert!(matches!(
        node.metrics(&id).await,
        Err(SandboxError::Paused(_))
    ));
    // Deleting the template keeps the build the paused sandbox and the
    // snapshot run over.
    assert!(node.forget_template(&spec.template_id).is_empty());
    // The node goes away (shutdown deletes running sandboxes only).
    node.delete_all().await;
    drop(node);

    let (runtime, template) = runtime_and_template().await?;
    let template_name = template.meta.name.clone();
    let node = SandboxManager::new(Arc::new(runtime), NodeLimits::default());
    node.register_template(template);
    let found = node.runtime().paused_sandboxes();
    assert_eq!(node.adopt_paused(found), 1);
    assert_eq!(node.adopt_snapshots(node.runtime().snapshots()), 1);
    let started = node
        .create(SandboxSpec {
            sandbox_id: from_snap.clone(),
            template_id: snap.clone(),
            ..spec.clone()
        })
        .await?;
    assert_eq!(started.spec.template_id, template_name);
    node.delete_snapshot(&snap).await?;
    assert!(matches!(
        node.delete_snapshot(&snap).await,
        Err(SandboxError::UnknownSnapshot(_))
    ));
    node.delete(&from_snap).await?;
    assert!(
        std::fs::read_dir(node.runtime().layers_dir())?
            .next()
            .is_none(),
        "layers left after their snapshot and sandboxes went"
    );
    let again = node.get(&id)?;
    assert!(again.paused);
    assert_eq!(
        again.spec.metadata.get("kept").map(String::as_str),
        Some("across")
    );
    let end = std::time::SystemTime::now() + std::time::Duration::from_secs(600);
    let resumed = node.resume(&id, Some(end), false).await?;
    assert!(!resumed.paused && resumed.end_time == Some(end));
    assert!(matches!(
        node.resume(&id, None, false).await,
        Err(SandboxError::NotPaused(_))
    ));
    let metrics = node.metrics(&id).await?;
    assert!(metrics.memory_rss_bytes > 0);
    // Paused again and deleted: nothing of it stays.
    node.pause(&id, true).await?;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn a_filesystem_only_pause_keeps_the_disk_and_boots_again() -> TestResult {
    let (runtime, template) = runtime_and_template().await?;
    let mut leftovers = Leftovers::default();
    let id = format!("pf-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    leftovers.run_dirs.push(runtime.sandbox_dir(&id));
    leftovers.run_dirs.push(runtime.paused_dir(&id));
    let egress = EgressPolicy::default();
    let running = runtime
        .clone_sandbox(&template, &id, init(&id), &egress)
        .await?;
    // Written and not synced: the pause has the guest write it back.
    shell(&running.sandbox.envd, "echo kept > /home/user/kept").await?;
    let boot_id = shell(&running.sandbox.envd, "cat /proc/sys/kernel/random/boot_id").await?;
    let paused = runtime
        .pause_sandbox(&template, running, false)
        .await
        .map_err(|(error, _)| error)?;
    assert!(paused.memory.is_none());
    assert!(
        !paused.snapshot().exists(),
        "a filesystem-only pause wrote memory"
    );
    let booted = runtime
        .resume_sandbox(&template, &paused, init(&id), &egress, false)
        .await?;
    let envd = &booted.sandbox.envd;
    assert_eq!(shell(envd, "cat /home/user/kept").await?, "kept");
    let second_boot = shell(envd, "cat /proc/sys/kernel/random/boot_id").await?;
    assert_ne!(second_boot, boot_id, "the guest did not boot again");
    assert_eq!(
        shell(envd, "echo $PAUSED_ONCE; hostname").await?,
        format!("yes\n{id}")
    );
    // A guest that booted afresh pauses with its memory and resumes like a
    // clone; a fresh boot drops that memory.
    shell(envd, "echo in-ram > /dev/shm/mark").await?;
    let paused = runtime
        .pause_sandbox(&template, booted, true)
        .await
        .map_err(|(error, _)| error)?;
    let resumed = runtime
        .resume_sandbox(&template, &paused, init(&id), &egress, false)
        .await?;
    assert_eq!(
        shell(&resumed.sandbox.envd, "cat /dev/shm/mark").await?,
        "in-ram"
    );
    let paused = runtime
        .pause_sandbox(&template, resumed, true)
        .await
        .map_err(|(error, _)| error)?;
    let rebooted = runtime
        .resume_sandbox(&template, &paused, init(&id), &egress, true)
        .await?;
    let envd = &rebooted.sandbox.envd;
    assert_eq!(
        shell(envd, "test -e /dev/shm/mark || echo gone").await?,
        "gone"
    );
    assert_eq!(shell(envd, "cat /home/user/kept").await?, "kept");
    assert!(
        !rebooted
            .sandbox
            .run_dir
            .join(hearth_vmm::pause::SNAPSHOT)
            .exists()
    );
    runtime.destroy_sandbox(rebooted).await?;
    drop(leftovers);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn without_room_on_disk_a_pause_and_a_snapshot_are_refused_and_lose_nothing() -> TestResult {
    use std::sync::Arc;

    use hearth_orchestrator::{NodeLimits, SandboxError, SandboxManager, SandboxSpec};

    let (runtime, template) = runtime_and_template().await?;
    let id = format!("pd-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut leftovers = Leftovers::default();
    leftovers.run_dirs.push(runtime.sandbox_dir(&id));
    leftovers.run_dirs.push(runtime.paused_dir(&id));
    // Room for a create (the floor) but not for the guest's RAM beside it.
    let free = hearth_orchestrator::admission::free_disk_mib(runtime.data.root())?;
    let floor = free.saturating_sub(u64::from(template.meta.memory_mib) / 2);
    let node = SandboxManager::new(
        Arc::new(runtime),
        NodeLimits {
            min_free_disk_mib: floor,
            ..NodeLimits::default()
        },
    );
    node.register_template(template.clone());
    node.create(SandboxSpec {
        sandbox_id: id.clone(),
        template_id: template.meta.name.clone(),
        ..SandboxSpec::default()
    })
    .await?;
    assert!(matches!(
        node.pause(&id, true).await,
        Err(SandboxError::ResourceExhausted(_))
    ));
    assert!(matches!(
        node.snapshot(&id, &format!("{id}-snap")).await,
        Err(SandboxError::ResourceExhausted(_))
    ));
    // It runs on as it was, and nothing of a pause or snapshot was written.
    let info = node.get(&id)?;
    assert!(!info.paused);
    assert!(node.metrics(&id).await?.memory_rss_bytes > 0);
    assert!(!node.runtime().paused_dir(&id).exists());
    assert!(node.runtime().snapshots().is_empty());
    // A filesystem-only pause needs no room for memory.
    node.pause(&id, false).await?;
    node.delete(&id).await?;
    drop(leftovers);
    Ok(())
}
