//! Running commands and code in namespaces.

use std::fs::File;
use std::io;
use std::path::Path;
use std::process::Command;

/// Runs `ip <args>`, failing with its error output.
pub fn ip(args: &[&str]) -> io::Result<()> {
    run("ip", args)
}

/// Runs `tc <args>`, failing with its error output.
pub fn tc(args: &[&str]) -> io::Result<()> {
    run("tc", args)
}

fn run(program: &str, args: &[&str]) -> io::Result<()> {
    let output = Command::new(program).args(args).output()?;
    if output.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}

/// Sets `name` (as `sysctl` spells it) to `value` inside `netns`.
pub fn sysctl(netns: &str, name: &str, value: &str) -> io::Result<()> {
    let path = Path::new("/proc/sys").join(name.replace('.', "/"));
    let value = value.to_owned();
    in_netns(netns, move || std::fs::write(path, value))
}

/// Runs `work` on a thread inside namespace `netns` and returns what it
/// made: a socket stays in the namespace it was opened in, whichever thread
/// uses it afterwards.
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let path = Path::new("/run/netns").join(netns);
    std::thread::spawn(move || {
        let namespace = File::open(&path)?;
        nix::sched::setns(namespace, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(io::Error::from)?;
        work()
    })
    .join()
    .map_err(|_| io::Error::other("a thread in a namespace panicked"))?
}

/// Deletes the test's namespaces even when an assertion fails first.
pub struct RemoveOnDrop(pub Vec<String>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for netns in &self.0 {
            if Path::new("/run/netns").join(netns).exists() {
                let _ = Command::new("ip").args(["netns", "del", netns]).status();
            }
        }
    }
}
