//! Broken snapshots and unresponsive guests: each fails with an error that
//! names the template and the cause, within a deadline, leaving nothing.
//! Run by `make vm-test`.

mod common;

use hearth_net::EgressPolicy;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Leftovers, TestResult, process_running, runtime_and_template, test_slots};
use hearth_net::NetSlot;
use hearth_orchestrator::NodeRuntime;
use hearth_vmm::{CloneRequest, InitParams, NetAttachment, Template};

/// A scratch copy of a template's directory: small files copied (to be
/// spoiled), big ones hard-linked. Removed on drop.
struct TemplateCopy {
    dir: PathBuf,
}

impl TemplateCopy {
    fn new(runtime: &NodeRuntime, template: &Template) -> std::io::Result<Self> {
        let dir = runtime
            .data
            .root()
            .join("v1/test-scratch")
            .join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&template.dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name() else {
                continue;
            };
            let target = dir.join(name);
            if matches!(name.to_str(), Some("template.json" | "device.state")) {
                std::fs::copy(&path, &target)?;
            } else {
                std::fs::hard_link(&path, &target)?;
            }
        }
        Ok(Self { dir })
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Replaces a (possibly hard-linked) file with new contents.
    fn replace(&self, file: &str, contents: &[u8]) -> std::io::Result<()> {
        let path = self.path(file);
        std::fs::remove_file(&path)?;
        std::fs::write(path, contents)
    }
}

impl Drop for TemplateCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn expect_err<T>(result: Result<T, impl std::fmt::Display>, needles: &[&str]) -> String {
    let message = match result {
        Ok(_) => panic!("expected an error mentioning {needles:?}"),
        Err(error) => error.to_string(),
    };
    for needle in needles {
        assert!(
            message.contains(needle),
            "error {message:?} does not mention {needle:?}"
        );
    }
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn missing_or_corrupt_snapshots_are_refused() -> TestResult {
    let (runtime, template) = runtime_and_template().await?;
    expect_err(
        Template::open("base", Path::new("/nonexistent/template")),
        &["template 'base'", "no snapshot"],
    );

    let copy = TemplateCopy::new(&runtime, &template)?;
    copy.replace("template.json", b"{ not json")?;
    expect_err(
        Template::open("base", &copy.dir),
        &["template 'base'", "corrupt", "template.json"],
    );

    let copy = TemplateCopy::new(&runtime, &template)?;
    copy.replace("device.state", &[0u8; 4096])?;
    expect_err(
        Template::open("base", &copy.dir),
        &["template 'base'", "not a QEMU device state"],
    );

    let copy = TemplateCopy::new(&runtime, &template)?;
    std::fs::remove_file(copy.path("memory.ram"))?;
    expect_err(
        Template::open("base", &copy.dir),
        &["template 'base'", "memory.ram is missing"],
    );

    let copy = TemplateCopy::new(&runtime, &template)?;
    copy.replace("memory.ram", &[0u8; 1 << 20])?;
    expect_err(
        Template::open("base", &copy.dir),
        &["template 'base'", "holds 1048576 bytes"],
    );
    Ok(())
}

/// Clones `template` and expects failure; checks nothing is left behind.
async fn clone_fails(
    runtime: &NodeRuntime,
    template: &Template,
    id: &str,
    needles: &[&str],
) -> TestResult {
    let mut leftovers = Leftovers::default();
    let run_dir = runtime.sandbox_dir(id);
    leftovers.run_dirs.push(run_dir.clone());
    let started = Instant::now();
    let result = runtime
        .clone_sandbox(
            template,
            id,
            InitParams::default(),
            &EgressPolicy::default(),
        )
        .await;
    expect_err(result, needles);
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "failing took {:?}",
        started.elapsed()
    );
    assert!(!run_dir.exists(), "{} is left", run_dir.display());
    assert!(
        !process_running(&run_dir.to_string_lossy()),
        "a QEMU of {id} is left"
    );
    assert!(
        test_slots().is_empty(),
        "network slots are left: {:?}",
        test_slots()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn a_snapshot_from_the_other_accelerator_is_refused() -> TestResult {
    let (runtime, template) = runtime_and_template().await?;
    let copy = TemplateCopy::new(&runtime, &template)?;
    let other = match template.meta.accel {
        hearth_vmm::Accel::Tcg => "kvm",
        hearth_vmm::Accel::Kvm => "tcg",
    };
    let meta = std::fs::read_to_string(copy.path("template.json"))?.replace(
        &format!("\"accel\": \"{}\"", template.meta.accel),
        &format!("\"accel\": \"{other}\""),
    );
    copy.replace("template.json", meta.as_bytes())?;
    let spoiled = Template::open("base", &copy.dir)?;
    clone_fails(
        &runtime,
        &spoiled,
        "wrong-accel",
        &[
            "template 'base'",
            &format!("taken under {other}"),
            "rebuild",
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn a_qemu_that_exits_during_restore_is_reported() -> TestResult {
    let (runtime, template) = runtime_and_template().await?;
    let copy = TemplateCopy::new(&runtime, &template)?;
    // The header passes the checks; the stream then ends early.
    let state = std::fs::read(copy.path("device.state"))?;
    copy.replace("device.state", &state[..4096.min(state.len())])?;
    let spoiled = Template::open("base", &copy.dir)?;
    clone_fails(
        &runtime,
        &spoiled,
        "cut-state",
        &["template 'base'", "sandbox 'cut-state'", "QEMU exited"],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn a_guest_whose_envd_never_answers_times_out() -> TestResult {
    let (runtime, template) = runtime_and_template().await?;
    let mut leftovers = Leftovers::default();
    let slot = NetSlot::create_free(&runtime.naming, 0).await?;
    let run_dir = runtime.sandbox_dir("no-envd");
    leftovers.run_dirs.push(run_dir.clone());
    let request = CloneRequest {
        sandbox_id: "no-envd".into(),
        run_dir: run_dir.clone(),
        net: NetAttachment {
            netns: Some(slot.netns_path()),
            tap: hearth_net::TAP_NAME.into(),
            mac: hearth_net::GUEST_MAC.into(),
        },
        // Nothing listens on this port in the guest.
        envd_address: SocketAddr::new(slot.sandbox_address.into(), 1),
        init: InitParams::default(),
        ready_deadline: Duration::from_secs(3),
        log: None,
    };
    let started = Instant::now();
    let result = hearth_vmm::clone_sandbox(&runtime.vmm, &template, request).await;
    let elapsed = started.elapsed();
    slot.destroy().await?;
    expect_err(result, &["template 'base'", "sandbox 'no-envd'", "/init"]);
    assert!(
        elapsed < Duration::from_secs(20),
        "giving up took {elapsed:?}"
    );
    assert!(!run_dir.exists(), "{} is left", run_dir.display());
    assert!(
        !process_running(&run_dir.to_string_lossy()),
        "the clone's QEMU is left"
    );
    Ok(())
}
