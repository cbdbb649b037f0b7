//! A child process envd started itself (by `posix_spawn` or `clone`): its
//! standard streams, and waiting for it through a pidfd (Linux ≥ 5.3),
//! which tokio polls like any other descriptor.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::OnceLock;

use nix::fcntl::OFlag;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

/// A started process; it must be waited for.
pub struct Child {
    pub pid: u32,
    pidfd: AsyncFd<OwnedFd>,
}

/// The child's ends of its standard streams: stdin, stdout, stderr.
pub type ChildEnds = [OwnedFd; 3];

/// envd's ends of the child's standard streams.
pub struct Pipes {
    stdin: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// envd's ends, registered with tokio.
pub struct AsyncPipes {
    pub stdin: Option<pipe::Sender>,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
}

impl Pipes {
    pub fn into_async(self) -> io::Result<AsyncPipes> {
        Ok(AsyncPipes {
            stdin: self.stdin.map(pipe::Sender::from_owned_fd).transpose()?,
            stdout: pipe::Receiver::from_owned_fd(self.stdout)?,
            stderr: pipe::Receiver::from_owned_fd(self.stderr)?,
        })
    }
}

/// Pipes for stdout and stderr, and for stdin when enabled (else /dev/null).
pub fn make_pipes(stdin: bool) -> io::Result<(ChildEnds, Pipes)> {
    let (stdin_child, stdin_parent) = if stdin {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        (read, Some(write))
    } else {
        let null = nix::fcntl::open(
            "/dev/null",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        (null, None)
    };
    let (stdout_parent, stdout_child) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (stderr_parent, stderr_child) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    Ok((
        [stdin_child, stdout_child, stderr_child],
        Pipes {
            stdin: stdin_parent,
            stdout: stdout_parent,
            stderr: stderr_parent,
        },
    ))
}

/// What to run.
pub struct Program<'a> {
    pub cmd: &'a str,
    pub args: &'a [String],
    pub envs: &'a [(String, String)],
    pub cwd: &'a Path,
    pub stdin: bool,
}

/// A program's path, argv, envp and working directory as C strings, with
/// the NULL-terminated pointer arrays `execve` takes. The pointers stay
/// valid when this moves: they point into the strings' own heap buffers.
pub struct ExecArgs {
    pub path: CString,
    pub cwd: CString,
    pub argv: Vec<*const libc::c_char>,
    pub envp: Vec<*const libc::c_char>,
    _strings: Vec<CString>,
}

impl ExecArgs {
    pub fn new(program: &Program<'_>) -> io::Result<Self> {
        let mut args = vec![cstring(program.cmd)?];
        for arg in program.args {
            args.push(cstring(arg)?);
        }
        let envs = program
            .envs
            .iter()
            .map(|(k, v)| cstring(format!("{k}={v}")))
            .collect::<io::Result<Vec<_>>>()?;
        let terminated = |strings: &[CString]| -> Vec<*const libc::c_char> {
            strings
                .iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        Ok(Self {
            path: resolve_program(program.cmd, program.envs)?,
            cwd: cstring(program.cwd.as_os_str())?,
            argv: terminated(&args),
            envp: terminated(&envs),
            _strings: args.into_iter().chain(envs).collect(),
        })
    }
}

/// Whether this kernel has pidfds (checked once).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| pidfd_open(std::process::id()).is_ok())
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn cstring(text: impl AsRef<OsStr>) -> io::Result<CString> {
    CString::new(text.as_ref().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "argument contains a NUL byte"))
}

/// Finds `cmd` on the child's `PATH` when it names no directory.
fn resolve_program(cmd: &str, envs: &[(String, String)]) -> io::Result<CString> {
    if cmd.contains('/') {
        return cstring(cmd);
    }
    let path = envs
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or("/usr/bin:/bin", |(_, v)| v.as_str());
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(cmd);
        if nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok()
            && candidate.is_file()
        {
            return cstring(candidate.as_os_str());
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("executable file '{cmd}' not found in $PATH"),
    ))
}

impl Child {
    /// Takes charge of waiting for the child `pid` of this process.
    pub fn adopt(pid: u32) -> io::Result<Self> {
        let pidfd = pidfd_open(pid)?;
        // SAFETY: `pidfd` is an OwnedFd moved into the AsyncFd, which keeps it
        // open and unchanged for its whole life.
        let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self { pid, pidfd })
    }

    /// Waits for the process to end and reaps it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            let mut guard = self.pidfd.readable().await?;
            match waitid(
                Id::PIDFd(self.pidfd.get_ref().as_fd()),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
            ) {
                Ok(WaitStatus::Exited(_, code)) => {
                    return Ok(ExitStatus::from_raw((code & 0xff) << 8));
                }
                Ok(WaitStatus::Signaled(_, signal, core)) => {
                    return Ok(ExitStatus::from_raw(
                        signal as i32 | if core { 0x80 } else { 0 },
                    ));
                }
                Ok(_) => guard.clear_ready(),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}
