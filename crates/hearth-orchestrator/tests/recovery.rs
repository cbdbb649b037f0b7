//! A node that died without cleaning up, or exited keeping its sandboxes:
//! the next start adopts the sandboxes that still run and are healthy, and
//! finds the rest of its QEMU processes, run directories and network slots
//! and removes them. Run by `make vm-test`.

mod common;

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::{
    COMMAND_TIMEOUT, Leftovers, TEST_SLOT_PREFIX, TEST_SUBNET_OCTET, TestResult, process_running,
    runtime_and_template, test_slots,
};
use hearth_guest::Progress;
use hearth_net::EgressPolicy;
use hearth_net::{NetSlot, SlotNaming};
use hearth_orchestrator::record::RECORD_FILE;
use hearth_orchestrator::{
    BASE_TEMPLATE, NodeLimits, Reclaimed, SandboxInfo, SandboxManager, SandboxRecord, SandboxSpec,
};
use hearth_orchestrator::{DataDir, NodeRuntime};
use hearth_vmm::envd_client::ENVD_PORT;
use hearth_vmm::{EnvdClient, InitParams, Template};

/// The runtime a restarted node opens: nothing cleaned beforehand.
async fn restarted_runtime() -> Result<NodeRuntime, Box<dyn std::error::Error>> {
    Ok(NodeRuntime::open(
        DataDir::from_env(),
        SlotNaming::new(TEST_SLOT_PREFIX, TEST_SUBNET_OCTET)?,
        &Progress::new(true),
    )
    .await?)
}

/// A node that has `ids` running, created like the gRPC API creates them.
async fn node_running(
    runtime: NodeRuntime,
    template: Template,
    ids: &[&str],
) -> Result<SandboxManager, Box<dyn std::error::Error>> {
    let manager = SandboxManager::new(Arc::new(runtime), NodeLimits::default());
    manager.register_template(template);
    for id in ids {
        manager.create(spec(id)).await?;
    }
    Ok(manager)
}

fn spec(id: &str) -> SandboxSpec {
    SandboxSpec {
        sandbox_id: id.into(),
        template_id: BASE_TEMPLATE.into(),
        env_vars: [("GREETING".to_owned(), format!("hello from {id}"))].into(),
        metadata: [("purpose".to_owned(), "recovery".to_owned())].into(),
        access_token: Some(format!("token-{id}")),
        default_user: Some("user".into()),
        alias: "base".into(),
        team_id: "team-1".into(),
        execution_id: format!("exec-{id}"),
        allow_internet: true,
        denied_cidrs: vec!["1.1.1.1/32".into()],
        end_time: Some(SystemTime::now() + Duration::from_secs(3600)),
        ..SandboxSpec::default()
    }
}

/// The node exits keeping its sandboxes (`--keep-sandboxes-on-exit`).
async fn exit_keeping_sandboxes(node: SandboxManager) {
    node.detach_all().await;
    drop(node);
}

/// Set in the node process that [`a_killed_node_s_sandboxes_are_adopted`]
/// starts and kills: the sandboxes it creates, comma-separated.
const DOOMED_NODE: &str = "HEARTH_TEST_DOOMED_NODE";
/// What the doomed node prints once its sandboxes run, before their infos.
const DOOMED_READY: &str = "doomed node ready: ";

/// The node [`a_killed_node_s_sandboxes_are_adopted`] kills: it creates the
/// sandboxes named in `$HEARTH_TEST_DOOMED_NODE` and a pooled slot, prints
/// their infos and waits to be killed. Does nothing without that variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the node process another test starts and kills"]
async fn doomed_node() -> TestResult {
    let Some(ids) = std::env::var(DOOMED_NODE).ok() else {
        return Ok(());
    };
    let ids: Vec<&str> = ids.split(',').collect();
    let (runtime, template) = runtime_and_template().await?;
    let naming = runtime.naming.clone();
    let node = node_running(runtime, template, &ids).await?;
    // A slot its pool held for a create that never came.
    NetSlot::create_free(&naming, 0).await?;
    let infos: Vec<SandboxInfo> = ids
        .iter()
        .map(|id| node.get(id))
        .collect::<Result<_, _>>()?;
    println!("{DOOMED_READY}{}", serde_json::to_string(&infos)?);
    std::future::pending::<()>().await;
    Ok(())
}

/// A node in a process of its own (this test binary running [`doomed_node`]);
/// killed when dropped.
struct DoomedNode(std::process::Child);

impl DoomedNode {
    /// Starts it and waits until `ids` run; returns their infos.
    async fn start(ids: &[&str]) -> Result<(Self, Vec<SandboxInfo>), Box<dyn std::error::Error>> {
        let mut child = Command::new(std::env::current_exe()?)
            .args([
                "doomed_node",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DOOMED_NODE, ids.join(","))
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("the doomed node has no stdout")?;
        let node = Self(child);
        let ready = tokio::task::spawn_blocking(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                // The harness prints `test doomed_node ... ` first.
                if let Some((_, infos)) = line?.split_once(DOOMED_READY) {
                    return Ok(Some(infos.to_owned()));
                }
            }
            Ok::<_, std::io::Error>(None)
        });
        let infos = tokio::time::timeout(Duration::from_secs(300), ready)
            .await
            .map_err(|_| "the doomed node did not get ready")???
            .ok_or("the doomed node ended before it was ready")?;
        Ok((node, serde_json::from_str(&infos)?))
    }

    /// SIGKILL: nothing of the node's clean-up runs, the kernel closes its
    /// sockets, its VMs run on.
    fn kill(mut self) -> std::io::Result<()> {
        self.0.kill()?;
        self.0.wait().map(drop)
    }
}

impl Drop for DoomedNode {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kill_9(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn a_killed_node_s_sandboxes_are_adopted() -> TestResult {
    let ids = ["adopted-1", "adopted-2"];
    let sandboxes_dir = DataDir::from_env().sandboxes().join(TEST_SLOT_PREFIX);
    let dirs: Vec<_> = ids.iter().map(|id| sandboxes_dir.join(id)).collect();
    let _leftovers = Leftovers {
        run_dirs: dirs.clone(),
    };
    let (doomed, before) = DoomedNode::start(&ids).await?;
    let slots_before = test_slots();
    assert_eq!(slots_before.len(), 3, "two sandboxes and a pooled slot");
    doomed.kill()?;
    for dir in &dirs {
        assert!(
            process_running(&format!("{}/", dir.display())),
            "{} has no VM",
            dir.display()
        );
    }

    let restarted = restarted_runtime().await?;
    let recovery = restarted.recover().await?;
    assert_eq!(recovery.adopted.len(), 2);
    assert_eq!(
        recovery.reclaimed,
        Reclaimed {
            processes: 0,
            run_dirs: 0,
            slots: 1
        },
        "only the pooled slot is cleaned up"
    );
    assert_eq!(test_slots().len(), 2, "the adopted sandboxes' slots stay");
    let node = SandboxManager::new(Arc::new(restarted), NodeLimits::default());
    assert_eq!(node.adopt(recovery.adopted).await, 2);

    // Get and List report them as they were created.
    for before in &before {
        let id = before.spec.sandbox_id.as_str();
        let got = node.get(id)?;
        let asked = spec(id);
        assert_eq!(got.spec.metadata, asked.metadata);
        assert_eq!(got.spec.access_token, asked.access_token);
        assert_eq!(got.spec.denied_cidrs, asked.denied_cidrs);
        assert_eq!(got.spec.default_user, asked.default_user);
        assert_eq!(
            (got.spec.team_id.as_str(), got.spec.execution_id.as_str()),
            (
                before.spec.team_id.as_str(),
                before.spec.execution_id.as_str()
            )
        );
        assert_eq!(got.end_time, before.end_time);
        assert_eq!(got.start_time, before.start_time);
        assert_eq!(got.host_address, before.host_address);
        assert_eq!(
            (got.build_id.as_str(), got.vcpus, got.memory_mib),
            (before.build_id.as_str(), before.vcpus, before.memory_mib)
        );
    }
    let mut listed: Vec<String> = node.list().into_iter().map(|i| i.spec.sandbox_id).collect();
    listed.sort();
    assert_eq!(listed, ids);

    // envd still runs commands, with the sandbox's token, env and user.
    let first = node.get(ids[0])?;
    let envd = EnvdClient::new(
        "test",
        SocketAddr::new(first.host_address.into(), ENVD_PORT),
    )?
    .with_access_token(first.spec.access_token.clone());
    let out = envd
        .run(
            "sh",
            &["-c", "echo $GREETING; hostname; id -un"],
            None,
            COMMAND_TIMEOUT,
        )
        .await?;
    assert_eq!(out.stdout, "hello from adopted-1\nadopted-1\nuser\n");

    // Metrics and the console work; the console ring starts empty.
    assert!(node.metrics(ids[0]).await?.memory_rss_bytes > 0);
    let written = envd
        .run(
            "sh",
            &["-c", "echo written-after-adoption > /dev/ttyS0"],
            Some("root"),
            COMMAND_TIMEOUT,
        )
        .await?;
    assert_eq!(written.exit_code, 0, "{written:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let console = node.console(ids[0]).await?;
        if String::from_utf8_lossy(&console.bytes).contains("written-after-adoption") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the console never showed the line"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Updates reach the record, for the next restart.
    let later = SystemTime::now() + Duration::from_secs(7200);
    node.update_end_time(ids[0], later)?;
    node.update_egress(ids[0], vec!["9.9.9.9/32".into()], vec![], None)
        .await?;
    let record = SandboxRecord::read(&dirs[0])?;
    assert_eq!(record.info.end_time, Some(later));
    assert_eq!(record.info.spec.allowed_cidrs, ["9.9.9.9/32"]);

    // The reaper's checks see an adopted VM die and an end time pass.
    let second = SandboxRecord::read(&dirs[1])?;
    kill_9(second.qemu_pid);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !node
        .due_for_removal()
        .await
        .contains(&(ids[1].to_owned(), "its VM exited"))
    {
        assert!(Instant::now() < deadline, "the dead VM was not noticed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.update_end_time(ids[0], SystemTime::now() - Duration::from_secs(1))?;
    assert!(
        node.due_for_removal()
            .await
            .contains(&(ids[0].to_owned(), "its end time passed"))
    );

    // Delete releases everything: no QEMU, namespace or run directory.
    for id in ids {
        node.delete(id).await?;
    }
    assert!(node.list().is_empty());
    for dir in &dirs {
        let marker = format!("{}/", dir.display());
        wait_for("the adopted QEMU to go", || !process_running(&marker)).await?;
        assert!(!dir.exists(), "{} is left", dir.display());
    }
    node.runtime().slots.drain().await?;
    assert!(
        test_slots().is_empty(),
        "slots are left: {:?}",
        test_slots()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn healthy_sandboxes_kept_on_exit_are_adopted_and_broken_ones_cleaned_up() -> TestResult {
    let ids = [
        "lost-killed",
        "lost-no-record",
        "lost-corrupt",
        "lost-wrong-pid",
        "lost-paused",
        "kept",
    ];
    let (runtime, template) = runtime_and_template().await?;
    let dirs: Vec<_> = ids.iter().map(|id| runtime.sandbox_dir(id)).collect();
    let marker = format!("{}/", runtime.sandboxes_dir().display());
    let _leftovers = Leftovers {
        run_dirs: dirs.clone(),
    };
    let previous = node_running(runtime, template, &ids).await?;
    exit_keeping_sandboxes(previous).await;

    // Its QEMU was killed while the node was down.
    let killed = SandboxRecord::read(&dirs[0])?.qemu_pid;
    kill_9(killed);
    let killed_marker = format!("{}/", dirs[0].display());
    wait_for("the killed QEMU to go", || !process_running(&killed_marker)).await?;
    // No record, or a cut-off one.
    std::fs::remove_file(dirs[1].join(RECORD_FILE))?;
    let record = std::fs::read(dirs[2].join(RECORD_FILE))?;
    std::fs::write(dirs[2].join(RECORD_FILE), &record[..record.len() / 2])?;
    // A record naming a process that is not its VM.
    let mut wrong = SandboxRecord::read(&dirs[3])?;
    wrong.qemu_pid = std::process::id();
    wrong.write(&dirs[3])?;
    // A VM that no longer runs: paused through its monitor.
    pause_through_qmp(&dirs[4].join("qmp.sock"))?;

    let restarted = restarted_runtime().await?;
    let recovery = restarted.recover().await?;
    let adopted: Vec<&str> = recovery
        .adopted
        .iter()
        .map(|a| a.record.info.spec.sandbox_id.as_str())
        .collect();
    assert_eq!(adopted, ["kept"]);
    assert_eq!(
        recovery.reclaimed,
        Reclaimed {
            processes: 4,
            run_dirs: 5,
            slots: 5
        }
    );
    let node = SandboxManager::new(Arc::new(restarted), NodeLimits::default());
    assert_eq!(node.adopt(recovery.adopted).await, 1);
    let kept = node.get("kept")?;
    let out = EnvdClient::new("test", SocketAddr::new(kept.host_address.into(), ENVD_PORT))?
        .with_access_token(kept.spec.access_token.clone())
        .run("hostname", &[], None, COMMAND_TIMEOUT)
        .await?;
    assert_eq!(out.stdout.trim(), "kept");
    let (broken, kept_dir) = dirs.split_at(ids.len() - 1);
    for dir in broken {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
    assert_eq!(test_slots().len(), 1, "only the kept sandbox's slot stays");

    node.delete("kept").await?;
    wait_for("the kept QEMU to go", || !process_running(&marker)).await?;
    assert!(!kept_dir[0].exists());
    assert!(
        test_slots().is_empty(),
        "slots are left: {:?}",
        test_slots()
    );
    Ok(())
}

/// Sends QMP `stop` to the monitor at `socket`.
fn pause_through_qmp(socket: &std::path::Path) -> TestResult {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line)?; // the greeting
    for command in ["qmp_capabilities", "stop"] {
        writeln!(writer, "{{\"execute\": \"{command}\"}}")?;
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            if line.contains("\"return\"") {
                break;
            }
            if line.is_empty() || line.contains("\"error\"") {
                return Err(format!("QMP {command}: {line}").into());
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn leftovers_of_a_crashed_node_are_cleaned_up() -> TestResult {
    let (crashed, template) = runtime_and_template().await?;
    let ids = ["crashed-1", "crashed-2"];
    let _leftovers = Leftovers {
        run_dirs: ids.iter().map(|id| crashed.sandbox_dir(id)).collect(),
    };
    for id in ids {
        let running = crashed
            .clone_sandbox(
                &template,
                id,
                InitParams::default(),
                &EgressPolicy::default(),
            )
            .await?;
        // As if the node were killed: nothing runs its clean-up.
        std::mem::forget(running);
    }
    let marker = format!("{}/", crashed.sandboxes_dir().display());
    assert!(process_running(&marker), "the crashed node's VMs still run");
    assert_eq!(test_slots().len(), 2);
    // Their cgroups, which their leases (gone with the crashed node) would
    // have removed.
    let cgroups: Vec<std::path::PathBuf> =
        hearth_orchestrator::runtime::processes_mentioning(&marker)
            .into_iter()
            .filter_map(vm_cgroup_dir)
            .collect();

    // Opened as a restarting node would be: nothing cleaned beforehand.
    let restarted = NodeRuntime::open(
        DataDir::from_env(),
        SlotNaming::new(TEST_SLOT_PREFIX, TEST_SUBNET_OCTET)?,
        &Progress::new(true),
    )
    .await?;
    let reclaimed = restarted.reclaim_leftovers().await?;
    assert_eq!(
        reclaimed,
        Reclaimed {
            processes: 2,
            run_dirs: 2,
            slots: 2
        }
    );
    assert!(!process_running(&marker), "QEMU processes are left");
    assert!(
        test_slots().is_empty(),
        "slots are left: {:?}",
        test_slots()
    );
    for id in ids {
        assert!(
            !restarted.sandbox_dir(id).exists(),
            "{id}'s run directory is left"
        );
    }
    for dir in &cgroups {
        assert!(
            !dir.exists(),
            "a killed VM's cgroup {} is left",
            dir.display()
        );
    }
    assert_eq!(restarted.reclaim_leftovers().await?, Reclaimed::default());
    Ok(())
}

/// The directory of `pid`'s VM cgroup (`hearth/vm-<uid>`) in the first
/// hierarchy that has one, if it is in one.
fn vm_cgroup_dir(pid: i32) -> Option<std::path::PathBuf> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    cgroups.lines().find_map(|line| {
        // `<id>:<controllers>:<path>`; v2's line is `0::<path>`.
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if !path.starts_with("/hearth/vm-") {
            return None;
        }
        let hierarchy = match controllers.split(',').next()? {
            "" => std::path::PathBuf::from("/sys/fs/cgroup"),
            first => std::path::Path::new("/sys/fs/cgroup").join(first),
        };
        Some(hierarchy.join(path.trim_start_matches('/')))
    })
}
