//! Shared set-up of the VM tests: the node runtime over the real data
//! directory (so the base template is built once and cached), and a guard
//! that removes what a failed test leaves.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use hearth_guest::Progress;
use hearth_orchestrator::{DataDir, NodeRuntime};
use hearth_vmm::Template;

/// Test slots are `htt-<n>`, apart from a running node's `hth-<n>`.
pub const TEST_SLOT_PREFIX: &str = "htt";
/// … with addresses from 10.21.0.0/16, apart from a node's 10.11.0.0/16.
pub const TEST_SUBNET_OCTET: u8 = 21;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The static envd the guest runs (`make vm-test` sets it).
pub fn envd_binary() -> Result<PathBuf, String> {
    std::env::var_os("HEARTH_ENVD")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .ok_or_else(|| "HEARTH_ENVD must name the static envd binary (run `make vm-test`)".into())
}

/// The runtime and its base template, built or reused.
pub async fn runtime_and_template() -> Result<(NodeRuntime, Template), Box<dyn std::error::Error>> {
    remove_stale_slots();
    let progress = Progress::new(false);
    let runtime = NodeRuntime::open(
        DataDir::from_env(),
        hearth_net::SlotNaming::new(TEST_SLOT_PREFIX, TEST_SUBNET_OCTET)?,
        &progress,
    )
    .await?;
    let (template, _) = runtime
        .ensure_base_template(&envd_binary()?, &progress)
        .await?;
    runtime.prepare_host_network().await?;
    Ok((runtime, template))
}

/// Test namespaces left by an earlier, killed run.
pub fn test_slots() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{TEST_SLOT_PREFIX}-")))
                .collect()
        })
        .unwrap_or_default()
}

fn remove_stale_slots() {
    for netns in test_slots() {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &netns])
            .status();
    }
}

/// Removes, on drop, whatever of a test's sandboxes is left: QEMU processes
/// mostly die with their handles (kill-on-drop), but detached or adopted
/// ones do not; this kills those and takes run directories and namespaces.
#[derive(Default)]
pub struct Leftovers {
    pub run_dirs: Vec<PathBuf>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let mut killed = false;
        for dir in &self.run_dirs {
            let needle = format!("{}/", dir.display());
            for pid in hearth_orchestrator::runtime::processes_mentioning(&needle) {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
                killed = true;
            }
        }
        if killed {
            // Let the killed VMs release their taps before the namespaces go.
            std::thread::sleep(Duration::from_millis(200));
        }
        for dir in &self.run_dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        remove_stale_slots();
        let table = format!("hearth_{TEST_SLOT_PREFIX}");
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "inet", &table])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Whether any process runs with `needle` in its command line.
pub fn process_running(needle: &str) -> bool {
    !hearth_orchestrator::runtime::processes_mentioning(needle).is_empty()
}

pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `script` with `sh -c` through `envd`; its trimmed stdout, or an
/// error when it fails.
pub async fn shell(
    envd: &hearth_vmm::EnvdClient,
    script: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let output = envd
        .run("sh", &["-c", script], None, COMMAND_TIMEOUT)
        .await?;
    if output.exit_code != 0 {
        return Err(format!("`{script}` failed: {output:?}").into());
    }
    Ok(output.stdout.trim().to_owned())
}
