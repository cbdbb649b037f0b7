//! The same snapshot restored by QEMU alone: the three QMP commands a
//! template restore needs, written by hand on the monitor socket, no `/init`;
//! timed from spawn until envd answers `/health`.
//! (`x-ignore-shared` is not settable with `-global`, so `-incoming file:`
//! alone cannot load a template.)

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use hearth_net::NetSlot;
use hearth_orchestrator::NodeRuntime;
use hearth_vmm::envd_client::{ENVD_PORT, EnvdClient};
use hearth_vmm::template::create_overlay;
use hearth_vmm::{ConsoleSink, GuestMemory, NetAttachment, Template, VmSpec};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::stats::p50_p95;

pub async fn run(
    runtime: &NodeRuntime,
    template: &Template,
    runs: usize,
) -> anyhow::Result<Vec<Duration>> {
    let slot = NetSlot::create_free(&runtime.naming, 0).await?;
    let result = restore_loop(runtime, template, &slot, runs).await;
    slot.destroy().await?;
    let samples = result?;
    println!("raw restore, QEMU alone, over {runs} runs, p50 / p95 in ms:");
    println!("  {:<14} {}", "spawn→health", p50_p95(&samples));
    Ok(samples)
}

async fn restore_loop(
    runtime: &NodeRuntime,
    template: &Template,
    slot: &NetSlot,
    runs: usize,
) -> anyhow::Result<Vec<Duration>> {
    let run_dir = runtime.sandbox_dir("bench-raw");
    let envd = EnvdClient::new(
        "raw",
        SocketAddr::new(slot.sandbox_address.into(), ENVD_PORT),
    )?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir)?;
        let disk = run_dir.join("disk.qcow2");
        create_overlay(&disk, &template.disk(), "qcow2").await?;
        let spec = VmSpec {
            name: "raw".into(),
            run_dir: run_dir.clone(),
            accel: template.meta.accel,
            boot: template.boot(),
            vcpus: template.meta.vcpus,
            memory_mib: template.meta.memory_mib,
            memory: GuestMemory::CloneOf(template.memory_file()),
            disk: Some(disk),
            net: Some(NetAttachment {
                netns: Some(slot.netns_path()),
                tap: hearth_net::TAP_NAME.into(),
                mac: hearth_net::GUEST_MAC.into(),
            }),
            console: ConsoleSink::File,
        };
        // hearth's own command line, minus its pause: QEMU runs the guest as
        // soon as the state is loaded.
        let args: Vec<String> = hearth_vmm::qemu::command_line(
            &spec,
            hearth_vmm::qemu::Launch {
                incoming: true,
                tap_fd: None,
            },
        )
        .into_iter()
        .filter(|a| a != "-S")
        .collect();
        let mut command = tokio::process::Command::new(hearth_vmm::accel::QEMU);
        command.args(&args).kill_on_drop(true);
        hearth_vmm::netns_exec::enter_netns_on_exec(&mut command, &slot.netns_path())?;
        let started = Instant::now();
        let mut child = command.spawn().context("spawning QEMU")?;
        let socket = run_dir.join("qmp.sock");
        let ready = match load_state(&socket, &template.device_state()).await {
            Ok(()) => envd
                .wait_healthy(started + Duration::from_secs(30), || None)
                .await
                .map_err(anyhow::Error::from),
            Err(error) => Err(error),
        };
        let elapsed = started.elapsed();
        child.kill().await?;
        ready?;
        samples.push(elapsed);
    }
    let _ = std::fs::remove_dir_all(&run_dir);
    Ok(samples)
}

/// Connects to QEMU's monitor and starts the incoming migration by hand.
async fn load_state(socket: &Path, state: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match UnixStream::connect(socket).await {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(1)).await
            }
            Err(error) => return Err(error).context("connecting to QMP"),
        }
    };
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    lines.next_line().await?.context("no QMP greeting")?;
    let commands = [
        r#"{"execute":"qmp_capabilities"}"#.to_owned(),
        r#"{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"x-ignore-shared","state":true}]}}"#.to_owned(),
        format!(r#"{{"execute":"migrate-incoming","arguments":{{"uri":"file:{}"}}}}"#, state.display()),
    ];
    for command in commands {
        execute(&mut write, &mut lines, &command).await?;
    }
    // The template was saved paused, so the loaded VM stays paused until `cont`.
    while execute(&mut write, &mut lines, r#"{"execute":"query-status"}"#)
        .await?
        .contains("inmigrate")
    {
        anyhow::ensure!(Instant::now() < deadline, "the state did not load in time");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    execute(&mut write, &mut lines, r#"{"execute":"cont"}"#).await?;
    Ok(())
}

/// Sends one command and returns its `return` line, skipping events.
async fn execute(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    command: &str,
) -> anyhow::Result<String> {
    write.write_all(command.as_bytes()).await?;
    write.write_all(b"\n").await?;
    loop {
        let line = lines.next_line().await?.context("QMP closed")?;
        anyhow::ensure!(!line.contains("\"error\""), "QMP error: {line}");
        if line.contains("\"return\"") {
            return Ok(line);
        }
    }
}
