//! How a finished process is described in an `EndEvent`.
//!
//! `status` mirrors the text the SDKs know from upstream envd
//! (`"exit status 1"`, `"signal: killed"`), and `exitCode` is `-1` for a
//! process ended by a signal.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// The fields of an `EndEvent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndInfo {
    pub exit_code: i32,
    pub exited: bool,
    pub status: String,
    pub error: Option<String>,
}

impl EndInfo {
    pub fn from_status(status: ExitStatus) -> Self {
        if let Some(code) = status.code() {
            let text = format!("exit status {code}");
            return Self {
                exit_code: code,
                exited: true,
                error: (code != 0).then(|| text.clone()),
                status: text,
            };
        }
        let signal = status.signal().unwrap_or(0);
        let mut text = format!("signal: {}", signal_name(signal));
        if status.core_dumped() {
            text.push_str(" (core dumped)");
        }
        Self {
            exit_code: -1,
            exited: false,
            error: Some(text.clone()),
            status: text,
        }
    }

    /// A process whose exit status could not be collected.
    pub fn wait_failed(error: &std::io::Error) -> Self {
        Self {
            exit_code: -1,
            exited: false,
            status: "unknown".to_string(),
            error: Some(error.to_string()),
        }
    }
}

/// Descriptions of signals as Go's `syscall.Signal.String()` prints them.
fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "hangup",
        libc::SIGINT => "interrupt",
        libc::SIGQUIT => "quit",
        libc::SIGILL => "illegal instruction",
        libc::SIGTRAP => "trace/breakpoint trap",
        libc::SIGABRT => "aborted",
        libc::SIGBUS => "bus error",
        libc::SIGFPE => "floating point exception",
        libc::SIGKILL => "killed",
        libc::SIGUSR1 => "user defined signal 1",
        libc::SIGSEGV => "segmentation fault",
        libc::SIGUSR2 => "user defined signal 2",
        libc::SIGPIPE => "broken pipe",
        libc::SIGALRM => "alarm clock",
        libc::SIGTERM => "terminated",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_has_no_error() {
        let end = EndInfo::from_status(ExitStatus::from_raw(0));
        assert_eq!(end.exit_code, 0);
        assert!(end.exited);
        assert_eq!(end.status, "exit status 0");
        assert_eq!(end.error, None);
    }

    #[test]
    fn failure_carries_status_as_error() {
        let end = EndInfo::from_status(ExitStatus::from_raw(3 << 8));
        assert_eq!(end.exit_code, 3);
        assert_eq!(end.error.as_deref(), Some("exit status 3"));
    }

    #[test]
    fn killed_process_reports_signal() {
        let end = EndInfo::from_status(ExitStatus::from_raw(libc::SIGKILL));
        assert_eq!(end.exit_code, -1);
        assert!(!end.exited);
        assert_eq!(end.status, "signal: killed");
        let term = EndInfo::from_status(ExitStatus::from_raw(libc::SIGTERM));
        assert_eq!(term.status, "signal: terminated");
    }
}
