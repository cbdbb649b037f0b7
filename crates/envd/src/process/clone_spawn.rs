//! Starting a process that needs more than `posix_spawn` offers — another
//! user's identity, or a controlling terminal — with `clone(CLONE_VM |
//! CLONE_VFORK)`: the child borrows envd's memory until it calls `execve`,
//! so nothing is copied (a `fork` of envd costs ~0.5 ms), and envd's calling
//! thread waits for that `execve`, as in glibc's own posix_spawn.
//!
//! The child runs on a stack of its own and may only make raw system calls:
//! no allocation, no locks, no glibc wrappers that coordinate threads —
//! glibc's `setuid` would signal every thread of envd, so the ids are set
//! with `setresuid`/`setresgid`/`setgroups` syscalls instead. A failing step
//! reports its errno through a close-on-exec pipe and exits with 127.

use std::ffi::c_void;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};

use nix::fcntl::OFlag;

use super::child::{Child, ExecArgs, Program};

/// Stack of the child between `clone` and `execve`.
const CHILD_STACK: usize = 256 * 1024;

/// Who the child becomes and what it gets on fds 0, 1 and 2.
pub struct Identity<'a> {
    pub uid: u32,
    pub gid: u32,
    pub groups: &'a [u32],
    /// Make the terminal on fd 0 the controlling terminal of a new session.
    pub controlling_tty: bool,
}

/// Everything the child reads, prepared before `clone`; it lives in the
/// parent's memory, which the child shares until `execve`.
struct ChildPlan {
    exec: ExecArgs,
    stdio: [RawFd; 3],
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    controlling_tty: bool,
    error_fd: RawFd,
}

/// Reports `errno` to the parent and ends the child. Only raw syscalls.
fn fail(plan: &ChildPlan, errno: i32) -> ! {
    let bytes = errno.to_ne_bytes();
    // SAFETY: write and exit are raw syscalls; `bytes` outlives the call.
    unsafe {
        libc::syscall(libc::SYS_write, plan.error_fd, bytes.as_ptr(), bytes.len());
        libc::syscall(libc::SYS_exit, 127);
    }
    // SYS_exit does not return.
    #[allow(clippy::empty_loop)]
    loop {}
}

fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Runs `syscall`; on failure reports errno and exits.
macro_rules! step {
    ($plan:expr, $call:expr) => {
        if $call < 0 {
            fail($plan, last_errno());
        }
    };
}

extern "C" fn child_main(arg: *mut c_void) -> libc::c_int {
    // SAFETY: `arg` points to the ChildPlan that `spawn` keeps alive (and
    // unchanged) until this child has called execve or exited.
    let plan = unsafe { &*(arg as *const ChildPlan) };
    // SAFETY: every call below is a raw system call (through libc::syscall,
    // or a glibc wrapper that is a plain syscall: sigaction, ioctl) on
    // memory prepared by the parent; none allocates or takes a lock.
    unsafe {
        // Default dispositions first, so no envd handler can run in here
        // once signals are unblocked (signals are blocked until execve).
        for signal in 1..=libc::SIGRTMAX() {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
        step!(plan, libc::syscall(libc::SYS_setsid));
        for (target, source) in plan.stdio.iter().enumerate() {
            if *source == target as RawFd {
                // dup2 onto itself keeps close-on-exec; clear it instead.
                step!(
                    plan,
                    libc::syscall(libc::SYS_fcntl, *source, libc::F_SETFD, 0)
                );
            } else {
                step!(plan, libc::syscall(libc::SYS_dup2, *source, target));
            }
        }
        if plan.controlling_tty {
            step!(plan, libc::syscall(libc::SYS_ioctl, 0, libc::TIOCSCTTY, 0));
        }
        step!(
            plan,
            libc::syscall(libc::SYS_setgroups, plan.groups.len(), plan.groups.as_ptr())
        );
        step!(
            plan,
            libc::syscall(libc::SYS_setresgid, plan.gid, plan.gid, plan.gid)
        );
        step!(
            plan,
            libc::syscall(libc::SYS_setresuid, plan.uid, plan.uid, plan.uid)
        );
        // As the user, so a directory they may not enter is refused.
        step!(plan, libc::syscall(libc::SYS_chdir, plan.exec.cwd.as_ptr()));
        let empty: u64 = 0;
        step!(
            plan,
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &empty as *const u64,
                std::ptr::null_mut::<u64>(),
                8
            )
        );
        libc::syscall(
            libc::SYS_execve,
            plan.exec.path.as_ptr(),
            plan.exec.argv.as_ptr(),
            plan.exec.envp.as_ptr(),
        );
        fail(plan, last_errno())
    }
}

/// Blocks every signal in the calling thread until dropped.
struct SignalsBlocked {
    previous: libc::sigset_t,
}

impl SignalsBlocked {
    fn new() -> io::Result<Self> {
        // SAFETY: sigfillset initialises `all`; pthread_sigmask reads it and
        // writes the old mask into `previous`, both valid for the calls.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            let rc = libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(Self { previous })
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut());
        }
    }
}

/// Starts `program` as `identity` with `stdio` on fds 0, 1 and 2.
pub fn spawn(
    program: &Program<'_>,
    identity: &Identity<'_>,
    stdio: [RawFd; 3],
) -> io::Result<Child> {
    let (error_read, error_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let mut plan = ChildPlan {
        exec: ExecArgs::new(program)?,
        stdio,
        uid: identity.uid,
        gid: identity.gid,
        groups: identity.groups.to_vec(),
        controlling_tty: identity.controlling_tty,
        error_fd: error_write.as_raw_fd(),
    };
    let mut stack = vec![0u8; CHILD_STACK];
    // Stacks grow down: the child starts at the (16-byte aligned) top.
    let top = (stack.as_mut_ptr() as usize + CHILD_STACK) & !0xf;
    let pid = {
        let _blocked = SignalsBlocked::new()?;
        // SAFETY: `child_main` only reads `plan` and makes raw syscalls (see
        // its comments); `plan` and `stack` stay alive and
        // unmoved until clone returns, which with CLONE_VFORK is after the
        // child's execve or exit. Signals are blocked around the call.
        unsafe {
            libc::clone(
                child_main,
                top as *mut c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                &mut plan as *mut ChildPlan as *mut c_void,
            )
        }
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    drop(error_write);
    let mut report = [0u8; 4];
    let mut error_read = std::fs::File::from(error_read);
    let reported = error_read.read(&mut report)?;
    if reported == report.len() {
        // The child exited with 127 before execve; reap it.
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        return Err(io::Error::from_raw_os_error(i32::from_ne_bytes(report)));
    }
    drop((plan, stack));
    Child::adopt(pid as u32)
}
