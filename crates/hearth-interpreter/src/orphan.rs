//! Kernels never outlive the server: if it dies (killed, crashed), the
//! kernel gets SIGKILL from the kernel of the OS rather than running on
//! unowned with the sandbox's memory.

/// Asks that the child started by `command` be killed when this server
/// dies. Linux ties this to the thread that forks the child: kernels are
/// started from the runtime's worker threads, which live as long as the
/// server.
pub fn die_with_parent(command: &mut tokio::process::Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed: it makes two system calls
    // (prctl(2), getppid(2)) and allocates nothing on success.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The server died before prctl took effect: nothing would kill
            // this child later, so it does not start.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}
