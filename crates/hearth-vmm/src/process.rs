//! A process this one did not start (an adopted VMM), known by its pid and
//! its start time, so that a reused pid is never mistaken for it.

use std::time::{Duration, Instant};

/// A running process that is not a child of this one: it cannot be waited
/// for, so its exit is seen in `/proc` (gone, or a zombie of its parent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForeignProcess {
    pid: u32,
    /// Clock ticks after boot at which it started (`/proc/<pid>/stat`
    /// field 22).
    start_ticks: u64,
}

/// The state letter and start time of a `/proc/<pid>/stat` line.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    // The command name is in parentheses and may hold anything: count
    // fields after the last ')'. State is field 3, start time field 22.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start_ticks = fields.nth(18)?.parse().ok()?;
    Some((state, start_ticks))
}

fn read_stat(pid: u32) -> Option<(char, u64)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Zombie or dead: the process has exited.
fn exited_state(state: char) -> bool {
    matches!(state, 'Z' | 'X' | 'x')
}

impl ForeignProcess {
    /// Process `pid` if it runs (is not a zombie).
    pub fn find(pid: u32) -> Option<Self> {
        if pid == 0 {
            return None;
        }
        let (state, start_ticks) = read_stat(pid)?;
        (!exited_state(state)).then_some(Self { pid, start_ticks })
    }

    /// Whether it still runs: its pid names a live process that started
    /// when it did.
    pub fn alive(&self) -> bool {
        read_stat(self.pid)
            .is_some_and(|(state, start)| start == self.start_ticks && !exited_state(state))
    }

    /// Its command line, arguments joined by spaces (empty once it exited).
    pub fn command_line(&self) -> String {
        std::fs::read(format!("/proc/{}/cmdline", self.pid))
            .map(|c| {
                String::from_utf8_lossy(&c)
                    .split('\0')
                    .filter(|a| !a.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    }

    /// Sends `signal` unless it has exited (its pid may name another
    /// process by now).
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> std::io::Result<()> {
        if !self.alive() {
            return Ok(());
        }
        let pid = i32::try_from(self.pid).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "pid out of range")
        })?;
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(errno) => Err(std::io::Error::from(errno)),
        }
    }

    /// Waits until it has exited or `timeout` passes; returns whether it
    /// exited.
    pub async fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.alive() {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_state_and_start_time_past_a_strange_name() {
        let stat = "4242 (qemu (x) 1) S 1 4242 4242 0 -1 4194560 9 0 0 0 7 3 0 0 20 0 5 0 \
                    987654 1000 100 18446744073709551615";
        assert_eq!(parse_stat(stat), Some(('S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn finds_itself_and_not_a_dead_pid() {
        let me = ForeignProcess::find(std::process::id());
        assert!(me.is_some_and(|p| p.alive()));
        assert!(
            me.is_some_and(|p| !p.command_line().is_empty()),
            "own command line"
        );
        assert_eq!(ForeignProcess::find(0), None);
    }

    #[tokio::test]
    async fn an_exited_child_is_seen_as_gone() -> std::io::Result<()> {
        let mut child = std::process::Command::new("sleep").arg("30").spawn()?;
        let process =
            ForeignProcess::find(child.id()).ok_or_else(|| std::io::Error::other("no sleep"))?;
        assert!(process.alive());
        process.signal(nix::sys::signal::Signal::SIGKILL)?;
        // Not reaped yet: a zombie counts as exited.
        assert!(process.wait_exit(Duration::from_secs(5)).await);
        child.wait()?;
        assert!(!process.alive());
        assert_eq!(ForeignProcess::find(child.id()), None);
        Ok(())
    }
}
