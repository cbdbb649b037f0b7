//! Which accelerator runs VMs on this host: KVM where it can run a stock
//! guest kernel, TCG (QEMU's emulator) elsewhere. The answer is probed once
//! per host and QEMU version and kept in the node's state directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Result, VmmError};

/// A QEMU accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// QEMU's `-accel` argument. TCG's translation cache is capped so that
    /// each clone's memory stays small.
    pub fn qemu_arg(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg,thread=multi,tb-size=128",
        }
    }

    /// QEMU's `-cpu` argument; recorded with each template, since a
    /// snapshot restores only onto the same CPU model.
    pub fn cpu_model(self) -> &'static str {
        match self {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// The accelerator chosen for this host, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
    /// What the answer depends on; a change means probing again.
    pub host_kernel: String,
    pub qemu_version: String,
}

impl AccelChoice {
    /// The TSC frequency to hand a guest kernel booted under this
    /// accelerator (`tsc_early_khz=`), when it should not measure it: under
    /// TCG the guest's TSC is the host's, and the guest's PIT-based
    /// calibration fails when the host is busy, after which the 6.12 kernel
    /// stalls in early boot. KVM guests calibrate through kvmclock.
    pub fn guest_tsc_khz(&self) -> Option<u32> {
        match self.accel {
            Accel::Tcg => host_tsc_khz(&std::fs::read_to_string("/proc/cpuinfo").ok()?),
            Accel::Kvm => None,
        }
    }
}

/// The host's TSC frequency from `/proc/cpuinfo`, when its TSC is constant.
pub fn host_tsc_khz(cpuinfo: &str) -> Option<u32> {
    let constant = cpuinfo.lines().any(|line| {
        line.starts_with("flags") && line.split_whitespace().any(|f| f == "constant_tsc")
    });
    if !constant {
        return None;
    }
    let mhz: f64 = cpuinfo
        .lines()
        .find(|line| line.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    let khz = (mhz * 1000.0).round();
    (khz >= 1.0 && khz < f64::from(u32::MAX)).then_some(khz as u32)
}

/// A kernel and initramfs that can boot with `hearth.probe=1` and print
/// [`PROBE_MARKER`] on the serial console.
#[derive(Debug, Clone)]
pub struct ProbeImage {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

/// What a probe guest prints once its kernel has reached userspace.
pub const PROBE_MARKER: &str = "hearth-probe-ok";
const PROBE_DEADLINE: Duration = Duration::from_secs(30);
const CACHE_FILE: &str = "accel.json";

/// The QEMU binary hearth runs.
pub const QEMU: &str = "qemu-system-x86_64";

/// Picks the accelerator: `HEARTH_ACCEL` (`kvm` or `tcg`) if set, else the
/// cached answer for this host kernel and QEMU, else a fresh probe.
pub async fn detect(state_dir: &Path, probe_image: Option<&ProbeImage>) -> Result<AccelChoice> {
    let host_kernel = read_trimmed("/proc/sys/kernel/osrelease");
    let qemu_version = qemu_version().await?;
    if let Ok(forced) = std::env::var("HEARTH_ACCEL") {
        let accel = match forced.as_str() {
            "kvm" => Accel::Kvm,
            "tcg" => Accel::Tcg,
            other => {
                return Err(VmmError::Invalid(format!(
                    "HEARTH_ACCEL must be 'kvm' or 'tcg', not '{other}'"
                )));
            }
        };
        return Ok(AccelChoice {
            accel,
            reason: "forced by HEARTH_ACCEL".into(),
            host_kernel,
            qemu_version,
        });
    }
    let cache = state_dir.join(CACHE_FILE);
    if let Some(cached) = std::fs::read(&cache)
        .ok()
        .and_then(|b| serde_json::from_slice::<AccelChoice>(&b).ok())
        .filter(|c| c.host_kernel == host_kernel && c.qemu_version == qemu_version)
    {
        return Ok(cached);
    }
    let (accel, reason) = probe(probe_image).await;
    let choice = AccelChoice {
        accel,
        reason,
        host_kernel,
        qemu_version,
    };
    std::fs::create_dir_all(state_dir).map_err(VmmError::io("creating", state_dir))?;
    let json = serde_json::to_vec_pretty(&choice)
        .map_err(|e| VmmError::Invalid(format!("encoding the accelerator choice: {e}")))?;
    std::fs::write(&cache, json).map_err(VmmError::io("writing", &cache))?;
    Ok(choice)
}

async fn probe(image: Option<&ProbeImage>) -> (Accel, String) {
    if let Err(reason) = kvm_looks_usable() {
        return (Accel::Tcg, reason);
    }
    let Some(image) = image else {
        return (
            Accel::Tcg,
            "KVM looks usable but no guest kernel was available to confirm it".into(),
        );
    };
    match boot_probe(image).await {
        Ok(elapsed) => (
            Accel::Kvm,
            format!(
                "a test guest booted under KVM in {:.1} s",
                elapsed.as_secs_f64()
            ),
        ),
        Err(reason) => (
            Accel::Tcg,
            format!("a test guest did not boot under KVM: {reason}"),
        ),
    }
}

/// Cheap checks that rule KVM out without booting anything.
fn kvm_looks_usable() -> Result<(), String> {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Err("/dev/kvm cannot be opened".into());
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Err(
            "/dev/kvm is PVM (pagetable-based), which cannot run stock guest kernels".into(),
        );
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let has_flag = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !has_flag {
        return Err("the CPU shows no vmx/svm hardware virtualization".into());
    }
    Ok(())
}

/// Boots the probe guest under KVM and waits for its marker.
async fn boot_probe(image: &ProbeImage) -> Result<Duration, String> {
    let dir = std::env::temp_dir().join(format!("hearth-kvm-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let serial = dir.join("serial.log");
    let started = Instant::now();
    let mut child = tokio::process::Command::new(QEMU)
        .args([
            "-M", "microvm", "-accel", "kvm", "-cpu", "host", "-m", "256M",
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(&image.kernel)
        .arg("-initrd")
        .arg(&image.initramfs)
        .args(["-append", "console=ttyS0 panic=-1 hearth.probe=1"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| e.to_string())?;
    let outcome = loop {
        if std::fs::read_to_string(&serial).is_ok_and(|s| s.contains(PROBE_MARKER)) {
            break Ok(started.elapsed());
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!("QEMU exited ({status}) before the guest answered"));
        }
        if started.elapsed() > PROBE_DEADLINE {
            break Err(format!("no answer within {PROBE_DEADLINE:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

/// First line of `qemu-system-x86_64 --version`.
pub async fn qemu_version() -> Result<String> {
    let output = tokio::process::Command::new(QEMU)
        .arg("--version")
        .output()
        .await
        .map_err(|source| VmmError::Spawn {
            vm: "qemu --version".into(),
            source,
        })?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned())
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tsc_tests {
    use super::*;

    #[test]
    fn the_host_tsc_frequency_is_read_only_when_constant() {
        let info = "model name\t: Xeon\ncpu MHz\t\t: 2600.000\nflags\t\t: fpu tsc constant_tsc nonstop_tsc\n";
        assert_eq!(host_tsc_khz(info), Some(2_600_000));
        assert_eq!(host_tsc_khz(&info.replace(" constant_tsc", "")), None);
        assert_eq!(host_tsc_khz("flags : constant_tsc\n"), None);
    }
}
