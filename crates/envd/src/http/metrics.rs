//! `GET /metrics`: CPU, memory and disk use of the sandbox, read from /proc
//! and statvfs.

use std::sync::Mutex;
use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;

#[derive(Debug, Serialize, PartialEq)]
pub struct Metrics {
    pub ts: i64,
    pub cpu_count: u32,
    pub cpu_used_pct: f64,
    pub mem_total: u64,
    pub mem_used: u64,
    pub mem_cache: u64,
    pub mem_total_mib: u64,
    pub mem_used_mib: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

/// Aggregate CPU time counters from the first line of /proc/stat.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

pub fn parse_cpu_times(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    if values.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest is part of user).
    let idle = values[3] + values.get(4).copied().unwrap_or(0);
    let total: u64 = values.iter().take(8).sum();
    Some(CpuTimes {
        busy: total - idle,
        total,
    })
}

pub fn cpu_percent(before: CpuTimes, after: CpuTimes) -> f64 {
    let total = after.total.saturating_sub(before.total);
    if total == 0 {
        return 0.0;
    }
    let busy = after.busy.saturating_sub(before.busy);
    (busy as f64 / total as f64 * 100.0 * 100.0).round() / 100.0
}

/// Memory figures in bytes from /proc/meminfo: (total, used, cache).
pub fn parse_meminfo(text: &str) -> Option<(u64, u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(':'))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    let total = field("MemTotal")?;
    let free = field("MemFree")?;
    let buffers = field("Buffers").unwrap_or(0);
    let cached = field("Cached").unwrap_or(0) + field("SReclaimable").unwrap_or(0);
    let used = total.saturating_sub(free + buffers + cached);
    Some((total, used, cached))
}

static LAST_CPU: Mutex<Option<CpuTimes>> = Mutex::new(None);

fn read_cpu() -> Result<CpuTimes, ApiError> {
    let stat = std::fs::read_to_string("/proc/stat")
        .map_err(|e| ApiError::internal(format!("reading /proc/stat: {e}")))?;
    parse_cpu_times(&stat).ok_or_else(|| ApiError::internal("unexpected /proc/stat format"))
}

/// CPU use since the previous call (or over a short sample on the first).
async fn cpu_used_pct() -> Result<f64, ApiError> {
    let previous = *LAST_CPU.lock().unwrap_or_else(|p| p.into_inner());
    let before = match previous {
        Some(before) => before,
        None => {
            let before = read_cpu()?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            before
        }
    };
    let now = read_cpu()?;
    *LAST_CPU.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
    Ok(cpu_percent(before, now))
}

async fn collect() -> Result<Metrics, ApiError> {
    let cpu_used_pct = cpu_used_pct().await?;
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| ApiError::internal(format!("reading /proc/meminfo: {e}")))?;
    let (mem_total, mem_used, mem_cache) = parse_meminfo(&meminfo)
        .ok_or_else(|| ApiError::internal("unexpected /proc/meminfo format"))?;
    let disk = nix::sys::statvfs::statvfs("/")
        .map_err(|e| ApiError::internal(format!("statvfs /: {e}")))?;
    let fragment = disk.fragment_size() as u64;
    let disk_total = disk.blocks() as u64 * fragment;
    let disk_used = disk_total.saturating_sub(disk.blocks_free() as u64 * fragment);
    Ok(Metrics {
        ts: chrono::Utc::now().timestamp(),
        cpu_count: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        cpu_used_pct,
        mem_total,
        mem_used,
        mem_cache,
        mem_total_mib: mem_total / (1024 * 1024),
        mem_used_mib: mem_used / (1024 * 1024),
        disk_used,
        disk_total,
    })
}

pub async fn metrics() -> Response {
    match collect().await {
        Ok(metrics) => Json(metrics).into_response(),
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(
            parse_cpu_times(stat),
            Some(CpuTimes {
                busy: 150,
                total: 1000
            })
        );
        assert_eq!(parse_cpu_times("intr 1 2"), None);
    }

    #[test]
    fn computes_percent_between_samples() {
        let a = CpuTimes {
            busy: 100,
            total: 1000,
        };
        let b = CpuTimes {
            busy: 150,
            total: 1100,
        };
        assert_eq!(cpu_percent(a, b), 50.0);
        assert_eq!(cpu_percent(a, a), 0.0);
    }

    #[test]
    fn parses_meminfo() {
        let text = "MemTotal:       1000 kB\nMemFree:         200 kB\nBuffers:          50 kB\nCached:          150 kB\nSReclaimable:     50 kB\n";
        assert_eq!(parse_meminfo(text), Some((1_024_000, 563_200, 204_800)));
    }
}
