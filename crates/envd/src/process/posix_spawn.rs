//! Starting a process with `posix_spawn(3)` directly, for processes that run
//! as envd's own identity without a terminal.
//!
//! Why not `std::process::Command`: to give the child a working directory
//! std needs `posix_spawn_file_actions_addchdir_np`, which it looks up with
//! `dlsym` — and a static binary has no dynamic symbols, so std falls back to
//! `fork` + `exec`. Forking envd costs about half a millisecond per command,
//! as much as the whole spawn otherwise. The child is waited for through a
//! pidfd (Linux ≥ 5.3), which tokio polls like any other descriptor.

use std::ffi::{CString, OsStr};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
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

/// A process started by [`spawn`]; it must be waited for.
pub struct PosixChild {
    pub pid: u32,
    pidfd: AsyncFd<OwnedFd>,
}

/// envd's ends of the child's standard streams.
pub struct ChildPipes {
    pub stdin: Option<pipe::Sender>,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
}

/// What to run.
pub struct Program<'a> {
    pub cmd: &'a str,
    pub args: &'a [String],
    pub envs: &'a [(String, String)],
    pub cwd: &'a Path,
    pub stdin: bool,
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

/// File actions and attributes of one spawn, destroyed on drop.
struct SpawnSetup {
    actions: libc::posix_spawn_file_actions_t,
    attrs: libc::posix_spawnattr_t,
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

impl SpawnSetup {
    fn new(stdio: [i32; 3], cwd: &CString) -> io::Result<Box<Self>> {
        let mut actions = MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
        let mut attrs = MaybeUninit::<libc::posix_spawnattr_t>::uninit();
        // SAFETY: both init functions fill the structures they are given;
        // they are only used after a successful init, and destroyed once (Drop).
        let mut setup = unsafe {
            check(libc::posix_spawn_file_actions_init(actions.as_mut_ptr()))?;
            if let Err(e) = check(libc::posix_spawnattr_init(attrs.as_mut_ptr())) {
                libc::posix_spawn_file_actions_destroy(actions.as_mut_ptr());
                return Err(e);
            }
            Box::new(Self {
                actions: actions.assume_init(),
                attrs: attrs.assume_init(),
            })
        };
        // SAFETY: the structures are initialised; the fds are open for the
        // duration of the spawn; `cwd` outlives the spawn call (the action
        // copies the path); the sigsets are initialised by sigemptyset and
        // sigfillset before use.
        unsafe {
            for (target, source) in stdio.iter().enumerate() {
                check(libc::posix_spawn_file_actions_adddup2(
                    &mut setup.actions,
                    *source,
                    target as i32,
                ))?;
            }
            check(libc::posix_spawn_file_actions_addchdir_np(
                &mut setup.actions,
                cwd.as_ptr(),
            ))?;
            // Own process group; default signal handling and an empty mask, since
            // envd ignores SIGPIPE and children must not inherit that.
            let flags = libc::POSIX_SPAWN_SETPGROUP
                | libc::POSIX_SPAWN_SETSIGDEF
                | libc::POSIX_SPAWN_SETSIGMASK;
            check(libc::posix_spawnattr_setflags(
                &mut setup.attrs,
                flags as libc::c_short,
            ))?;
            check(libc::posix_spawnattr_setpgroup(&mut setup.attrs, 0))?;
            let mut set = MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigfillset(set.as_mut_ptr());
            check(libc::posix_spawnattr_setsigdefault(
                &mut setup.attrs,
                set.as_ptr(),
            ))?;
            libc::sigemptyset(set.as_mut_ptr());
            check(libc::posix_spawnattr_setsigmask(
                &mut setup.attrs,
                set.as_ptr(),
            ))?;
        }
        Ok(setup)
    }
}

impl Drop for SpawnSetup {
    fn drop(&mut self) {
        // SAFETY: both structures were initialised in `new` and are destroyed once.
        unsafe {
            libc::posix_spawn_file_actions_destroy(&mut self.actions);
            libc::posix_spawnattr_destroy(&mut self.attrs);
        }
    }
}

pub fn spawn(program: &Program<'_>) -> io::Result<(PosixChild, ChildPipes)> {
    let path = resolve_program(program.cmd, program.envs)?;
    let mut argv = vec![cstring(program.cmd)?];
    for arg in program.args {
        argv.push(cstring(arg)?);
    }
    let envp = program
        .envs
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}")))
        .collect::<io::Result<Vec<_>>>()?;
    let cwd = cstring(program.cwd.as_os_str())?;

    let (stdin_child, stdin_parent): (OwnedFd, Option<OwnedFd>) = if program.stdin {
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

    let setup = SpawnSetup::new(
        [
            stdin_child.as_raw_fd(),
            stdout_child.as_raw_fd(),
            stderr_child.as_raw_fd(),
        ],
        &cwd,
    )?;
    let mut argv_ptrs: Vec<*mut libc::c_char> =
        argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_ptrs.push(std::ptr::null_mut());
    let mut envp_ptrs: Vec<*mut libc::c_char> =
        envp.iter().map(|e| e.as_ptr().cast_mut()).collect();
    envp_ptrs.push(std::ptr::null_mut());
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: `path`, `argv` and `envp`
    // own the strings the NULL-terminated pointer arrays point into, and
    // `setup` holds initialised actions and attributes.
    check(unsafe {
        libc::posix_spawn(
            &mut pid,
            path.as_ptr(),
            &setup.actions,
            &setup.attrs,
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
        )
    })?;
    drop((stdin_child, stdout_child, stderr_child));

    let pidfd = pidfd_open(pid as u32)?;
    // SAFETY: `pidfd` is an OwnedFd moved into the AsyncFd, which keeps it
    // open and unchanged for its whole life.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
        .map_err(io::Error::from)?;
    let pipes = ChildPipes {
        stdin: stdin_parent.map(pipe::Sender::from_owned_fd).transpose()?,
        stdout: pipe::Receiver::from_owned_fd(stdout_parent)?,
        stderr: pipe::Receiver::from_owned_fd(stderr_parent)?,
    };
    Ok((
        PosixChild {
            pid: pid as u32,
            pidfd,
        },
        pipes,
    ))
}

impl PosixChild {
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
