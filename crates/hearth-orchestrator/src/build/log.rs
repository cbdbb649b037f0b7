//! A build's log: lines with a time, a level and the step they belong to,
//! sent to whoever follows the build (the gRPC stream) as they happen.

use std::time::SystemTime;

use hearth_vmm::OutputStream;
/// E2B's four levels, as sandbox logs have them.
pub use hearth_vmm::sandbox_log::LogLevel;
use tokio::sync::mpsc;

/// A build prints at most this many lines; more are dropped (and counted),
/// so a step that floods its output cannot exhaust the node's memory.
const MAX_LINES: usize = 200_000;
/// Longer lines are cut.
const MAX_LINE: usize = 8 << 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub time: SystemTime,
    pub level: LogLevel,
    pub message: String,
    pub step: Option<String>,
}

/// Where a build's lines go; cheap to clone.
#[derive(Debug, Clone)]
pub struct BuildLog {
    sender: mpsc::UnboundedSender<LogLine>,
    sent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl BuildLog {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<LogLine>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let log = Self {
            sender,
            sent: std::sync::Arc::default(),
        };
        (log, receiver)
    }

    pub fn line(&self, level: LogLevel, step: Option<&str>, mut message: String) {
        use std::sync::atomic::Ordering;
        let count = self.sent.fetch_add(1, Ordering::Relaxed);
        if count > MAX_LINES {
            return;
        }
        if count == MAX_LINES {
            message =
                format!("the build printed more than {MAX_LINES} lines; the rest are not kept");
        }
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let _ = self.sender.send(LogLine {
            time: SystemTime::now(),
            level,
            message,
            step: step.map(str::to_owned),
        });
    }

    pub fn debug(&self, step: Option<&str>, message: String) {
        self.line(LogLevel::Debug, step, message);
    }
    pub fn info(&self, step: Option<&str>, message: String) {
        self.line(LogLevel::Info, step, message);
    }
    pub fn warn(&self, step: Option<&str>, message: String) {
        self.line(LogLevel::Warn, step, message);
    }
    pub fn error(&self, step: Option<&str>, message: String) {
        self.line(LogLevel::Error, step, message);
    }
}

/// Turns a process's output chunks into log lines, both streams at info:
/// build tools print their progress on stderr.
pub struct LineSplitter {
    log: BuildLog,
    step: String,
    pending: [Vec<u8>; 2],
}

impl LineSplitter {
    pub fn new(log: BuildLog, step: String) -> Self {
        Self {
            log,
            step,
            pending: [Vec::new(), Vec::new()],
        }
    }

    pub fn push(&mut self, stream: OutputStream, bytes: &[u8]) {
        let index = usize::from(stream == OutputStream::Stderr);
        self.pending[index].extend_from_slice(bytes);
        while let Some(end) = self.pending[index]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
        {
            let line: Vec<u8> = self.pending[index].drain(..=end).collect();
            self.emit(&line[..line.len() - 1]);
        }
        if self.pending[index].len() > MAX_LINE {
            let line = std::mem::take(&mut self.pending[index]);
            self.emit(&line);
        }
    }

    fn emit(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end();
        if !text.is_empty() {
            self.log.info(Some(&self.step), text.to_owned());
        }
    }

    pub fn flush(&mut self) {
        for index in 0..2 {
            let line = std::mem::take(&mut self.pending[index]);
            self.emit(&line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_becomes_lines_of_the_step() {
        let (log, mut lines) = BuildLog::new();
        let mut splitter = LineSplitter::new(log, "3".into());
        splitter.push(OutputStream::Stdout, b"hel");
        splitter.push(OutputStream::Stderr, b"warn\n");
        splitter.push(OutputStream::Stdout, b"lo\nworld");
        splitter.flush();
        let mut got = Vec::new();
        while let Ok(line) = lines.try_recv() {
            assert_eq!(line.step.as_deref(), Some("3"));
            got.push(line.message);
        }
        assert_eq!(got, ["warn", "hello", "world"]);
    }
}
