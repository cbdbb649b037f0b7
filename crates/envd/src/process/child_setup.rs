//! What a child process does between `fork` and `exec`: drop to the
//! requested user and, for a PTY, become a session leader that owns the
//! terminal. The only `unsafe` of the process service lives here.

use std::os::fd::RawFd;

use nix::unistd::{Gid, Uid};

/// Identity and terminal settings applied in the child before `exec`.
#[derive(Debug, Clone)]
pub struct ChildSetup {
    pub uid: Uid,
    pub gid: Gid,
    pub groups: Vec<Gid>,
    /// For a PTY: make the slave (already on fd 0) the controlling terminal.
    pub controlling_tty: bool,
}

impl ChildSetup {
    /// Registers the setup on a command.
    pub fn apply(self, command: &mut tokio::process::Command) {
        // SAFETY: the closure runs in the forked child before exec, where only
        // async-signal-safe functions may be called. It calls setsid, ioctl,
        // setgroups, setgid and setuid (raw syscalls through nix, which
        // neither allocate nor lock); `self` was fully built before the fork.
        unsafe {
            command.pre_exec(move || self.run_in_child());
        }
    }

    fn run_in_child(&self) -> std::io::Result<()> {
        // A new session (and process group) so signals reach the whole tree.
        nix::unistd::setsid()?;
        if self.controlling_tty {
            const STDIN: RawFd = 0;
            // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal a
            // terminal from another session) and fd 0 is the PTY slave.
            let rc = unsafe { libc::ioctl(STDIN, libc::TIOCSCTTY, 0) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        nix::unistd::setgroups(&self.groups)?;
        nix::unistd::setgid(self.gid)?;
        nix::unistd::setuid(self.uid)?;
        Ok(())
    }
}
