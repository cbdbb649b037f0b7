//! Resource use of one sandbox, read from its VMM process and disk overlay.

use std::path::Path;

/// A sample of one sandbox's use.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SandboxMetrics {
    pub cpu_seconds: f64,
    pub memory_rss_bytes: u64,
    pub memory_pss_bytes: u64,
    pub disk_bytes: u64,
}

/// Samples the VMM process `pid` and the overlay at `disk`.
pub fn sample(pid: u32, disk: &Path) -> std::io::Result<SandboxMetrics> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let disk_bytes =
        std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(disk)?).saturating_mul(512);
    Ok(SandboxMetrics {
        cpu_seconds: cpu_seconds(&stat).unwrap_or(0.0),
        memory_rss_bytes: rollup_kib(&rollup, "Rss:").saturating_mul(1024),
        memory_pss_bytes: rollup_kib(&rollup, "Pss:").saturating_mul(1024),
        disk_bytes,
    })
}

/// utime + stime of a `/proc/<pid>/stat` line, in seconds.
fn cpu_seconds(stat: &str) -> Option<f64> {
    // The command name is in parentheses and may hold spaces: count fields
    // after the last ')'. utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // /proc reports clock ticks of USER_HZ, which is 100 on Linux.
    Some((utime + stime) / 100.0)
}

/// The host's `MemTotal` and `MemAvailable`, in bytes (0 when unreadable).
pub fn host_memory() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    (
        rollup_kib(&text, "MemTotal:").saturating_mul(1024),
        rollup_kib(&text, "MemAvailable:").saturating_mul(1024),
    )
}

/// A `Name:  <n> kB` field of a `/proc` table, in KiB.
fn rollup_kib(rollup: &str, field: &str) -> u64 {
    rollup
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        let stat = "1234 (qemu system x) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 3 0";
        assert_eq!(cpu_seconds(stat), Some(4.0));
        assert_eq!(cpu_seconds("garbage"), None);
    }

    #[test]
    fn this_process_can_be_sampled() -> std::io::Result<()> {
        let file = std::env::current_exe()?;
        let sample = sample(std::process::id(), &file)?;
        assert!(sample.memory_rss_bytes > 0 && sample.disk_bytes > 0);
        Ok(())
    }
}
