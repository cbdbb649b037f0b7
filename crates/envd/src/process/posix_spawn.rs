//! Starting a process with `posix_spawn(3)` directly, for processes that run
//! as envd's own identity without a terminal.
//!
//! Why not `std::process::Command`: to give the child a working directory
//! std needs `posix_spawn_file_actions_addchdir_np`, which it looks up with
//! `dlsym` — and a static binary has no dynamic symbols, so std falls back to
//! `fork` + `exec`. Forking envd costs about half a millisecond per command,
//! as much as the whole spawn otherwise.

use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;

use super::child::{AsyncPipes, Child, ExecArgs, Program, make_pipes};

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

pub fn spawn(program: &Program<'_>) -> io::Result<(Child, AsyncPipes)> {
    let exec = ExecArgs::new(program)?;
    let (child_ends, pipes) = make_pipes(program.stdin)?;
    let setup = SpawnSetup::new(child_ends.each_ref().map(|fd| fd.as_raw_fd()), &exec.cwd)?;
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: `exec` owns the path and
    // the strings its NULL-terminated argv and envp arrays point into, and
    // `setup` holds initialised actions and attributes.
    check(unsafe {
        libc::posix_spawn(
            &mut pid,
            exec.path.as_ptr(),
            &setup.actions,
            &setup.attrs,
            exec.argv.as_ptr().cast(),
            exec.envp.as_ptr().cast(),
        )
    })?;
    drop(child_ends);
    Ok((Child::adopt(pid as u32)?, pipes.into_async()?))
}
