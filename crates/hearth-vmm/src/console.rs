//! A VM's serial console kept in a bounded in-memory ring: QEMU writes the
//! console to a unix socket and a reader task keeps the newest bytes, so a
//! guest flooding its console costs a fixed amount of memory and no disk.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::sandbox_log::SandboxLog;

/// The newest console output of one VM.
#[derive(Debug)]
pub struct ConsoleLog {
    capacity: usize,
    bytes: Mutex<VecDeque<u8>>,
    total: AtomicU64,
    /// The sandbox's log, which gets the console's lines too.
    lines: Option<Arc<SandboxLog>>,
}

/// What [`ConsoleLog::snapshot`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSnapshot {
    /// The newest bytes, at most the log's capacity.
    pub bytes: Vec<u8>,
    /// Every byte the guest wrote, kept or not.
    pub total_bytes: u64,
}

impl ConsoleLog {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            bytes: Mutex::new(VecDeque::with_capacity(capacity.min(1 << 16))),
            total: AtomicU64::new(0),
            lines: None,
        }
    }

    /// Sends the console's lines to `lines` as well.
    pub fn with_lines(mut self, lines: Option<Arc<SandboxLog>>) -> Self {
        self.lines = lines;
        self
    }

    /// Appends `chunk`, dropping the oldest bytes beyond the capacity.
    pub fn push(&self, chunk: &[u8]) {
        if let Some(lines) = &self.lines {
            lines.console_output(chunk);
        }
        self.total.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        let keep = &chunk[chunk.len().saturating_sub(self.capacity)..];
        let mut bytes = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        let held = bytes.len();
        let excess = (held + keep.len()).saturating_sub(self.capacity);
        bytes.drain(..excess.min(held));
        bytes.extend(keep);
    }

    pub fn snapshot(&self) -> ConsoleSnapshot {
        let bytes = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        ConsoleSnapshot {
            bytes: bytes.iter().copied().collect(),
            total_bytes: self.total.load(Ordering::Relaxed),
        }
    }

    /// [`Self::follow`] with an owned path, for spawning.
    pub async fn follow_owned(
        self: std::sync::Arc<Self>,
        socket: std::path::PathBuf,
        deadline: Duration,
    ) {
        self.follow(&socket, deadline).await;
    }

    /// Connects to QEMU's console socket and copies into the log until QEMU
    /// closes it. Gives up connecting after `deadline`.
    pub async fn follow(self: std::sync::Arc<Self>, socket: &Path, deadline: Duration) {
        let started = Instant::now();
        let mut stream = loop {
            match tokio::net::UnixStream::connect(socket).await {
                Ok(stream) => break stream,
                Err(_) if started.elapsed() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(error) => {
                    tracing::warn!(socket = %socket.display(), %error, "console socket never opened");
                    return;
                }
            }
        };
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => self.push(&buffer[..n]),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_bytes_and_counts_all() {
        let log = ConsoleLog::new(8);
        log.push(b"hello ");
        log.push(b"world");
        assert_eq!(log.snapshot().bytes, b"lo world");
        log.push(b"a very long line that exceeds everything");
        let snapshot = log.snapshot();
        assert_eq!(snapshot.bytes, b"erything");
        assert_eq!(snapshot.total_bytes, 11 + 40);
    }
}
