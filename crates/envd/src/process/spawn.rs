//! Starting a process for a user, optionally on a PTY, and pumping its
//! output to attached streams until it ends.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use nix::unistd::{Gid, Uid};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::child::{self, Child, Program, make_pipes};
use super::clone_spawn::{self, Identity};
use super::exit_status::EndInfo;
use super::handle::{Config, Event, Input, Output, ProcessHandle, StdinPipe};
use super::posix_spawn;
use super::pty::{PtyMaster, PtyPair};
use super::registry::ProcessRegistry;
use crate::users::User;

/// Largest stdout/stderr chunk sent in one data event.
const PIPE_CHUNK: usize = 32 * 1024;
/// Largest PTY chunk sent in one data event.
const PTY_CHUNK: usize = 16 * 1024;
/// After the process exits, output still in flight is read until the pipes
/// stay silent this long (a background child may hold them open forever).
const DRAIN_IDLE: Duration = Duration::from_millis(100);

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything needed to start one process.
#[derive(Debug)]
pub struct SpawnSpec {
    pub config: Config,
    pub tag: Option<String>,
    pub user: User,
    pub cwd: PathBuf,
    /// Sandbox-wide variables (from `/init`), overridden by `config.envs`.
    pub global_envs: HashMap<String, String>,
    /// `(cols, rows)` when the process gets a terminal.
    pub pty: Option<(u16, u16)>,
    pub stdin: bool,
    /// When the process is killed (`Connect-Timeout-Ms` of `Start`).
    pub deadline: Option<Instant>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("opening a PTY")]
    Pty(#[source] std::io::Error),
    #[error("starting '{cmd}'")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("this kernel has no pidfd_open (Linux 5.3 or newer is needed)")]
    NoPidfd,
}

/// A started process and a stream already attached to it.
pub struct Started {
    pub handle: Arc<ProcessHandle>,
    pub events: mpsc::Receiver<Event>,
}

pub fn spawn(spec: SpawnSpec, registry: &ProcessRegistry) -> Result<Started, SpawnError> {
    if !child::available() {
        return Err(SpawnError::NoPidfd);
    }
    let envs = environment(&spec);
    let program = Program {
        cmd: &spec.config.cmd,
        args: &spec.config.args,
        envs: &envs,
        cwd: &spec.cwd,
        stdin: spec.stdin,
    };
    let spawn_error = |source| SpawnError::Spawn {
        cmd: spec.config.cmd.clone(),
        source,
    };
    let same_identity =
        Uid::effective().as_raw() == spec.user.uid && Gid::effective().as_raw() == spec.user.gid;
    let identity = Identity {
        uid: spec.user.uid,
        gid: spec.user.gid,
        groups: &spec.user.groups,
        controlling_tty: spec.pty.is_some(),
    };
    let (child, input, readers_input) = match spec.pty {
        Some((cols, rows)) => {
            let PtyPair { master, slave } = PtyPair::open(cols, rows).map_err(SpawnError::Pty)?;
            let fd = slave.as_raw_fd();
            let child = clone_spawn::spawn(&program, &identity, [fd; 3]).map_err(spawn_error)?;
            // The child has its own copies; ours must close so that reads
            // report the end of the terminal when the child exits.
            drop(slave);
            let master = Arc::new(master);
            (child, Input::Pty(master.clone()), ReaderSource::Pty(master))
        }
        None => {
            let (child, pipes) = if same_identity {
                posix_spawn::spawn(&program).map_err(spawn_error)?
            } else {
                let (ends, pipes) = make_pipes(spec.stdin).map_err(spawn_error)?;
                let child = clone_spawn::spawn(
                    &program,
                    &identity,
                    ends.each_ref().map(|fd| fd.as_raw_fd()),
                )
                .map_err(spawn_error)?;
                drop(ends);
                (child, pipes.into_async().map_err(spawn_error)?)
            };
            let stdin = pipes.stdin.map(|s| Box::new(s) as StdinPipe);
            let readers =
                ReaderSource::Pipes(Some(Box::new(pipes.stdout)), Some(Box::new(pipes.stderr)));
            (child, Input::Pipe(tokio::sync::Mutex::new(stdin)), readers)
        }
    };
    let pid = child.pid;

    let handle = Arc::new(ProcessHandle::new(pid, spec.tag, spec.config, input));
    let events = handle.subscribe();
    registry.insert(handle.clone());

    let (out_tx, out_rx) = mpsc::channel::<Output>(16);
    let progress = Arc::new(AtomicU64::new(0));
    let readers = readers_input.start(out_tx, progress.clone());
    let forwarder = tokio::spawn(forward_output(handle.clone(), out_rx));
    tokio::spawn(supervise(
        child,
        handle.clone(),
        registry.clone(),
        Pumps {
            readers,
            forwarder,
            progress,
        },
        spec.deadline,
    ));
    Ok(Started { handle, events })
}

fn environment(spec: &SpawnSpec) -> Vec<(String, String)> {
    let home = spec.user.home.to_string_lossy().into_owned();
    let mut envs: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), home),
        ("USER".into(), spec.user.name.clone()),
        ("LOGNAME".into(), spec.user.name.clone()),
    ];
    if !spec.user.shell.is_empty() {
        envs.push(("SHELL".into(), spec.user.shell.clone()));
    }
    envs.extend(spec.global_envs.iter().map(|(k, v)| (k.clone(), v.clone())));
    envs.extend(spec.config.envs.iter().cloned());
    envs
}

type PipeReader = Box<dyn AsyncRead + Send + Unpin>;

enum ReaderSource {
    Pipes(Option<PipeReader>, Option<PipeReader>),
    Pty(Arc<PtyMaster>),
}

impl ReaderSource {
    fn start(self, tx: mpsc::Sender<Output>, progress: Arc<AtomicU64>) -> Vec<JoinHandle<()>> {
        match self {
            ReaderSource::Pipes(stdout, stderr) => {
                let mut readers = Vec::new();
                if let Some(stdout) = stdout {
                    readers.push(tokio::spawn(read_pipe(
                        stdout,
                        Output::Stdout,
                        tx.clone(),
                        progress.clone(),
                    )));
                }
                if let Some(stderr) = stderr {
                    readers.push(tokio::spawn(read_pipe(
                        stderr,
                        Output::Stderr,
                        tx,
                        progress,
                    )));
                }
                readers
            }
            ReaderSource::Pty(master) => vec![tokio::spawn(read_pty(master, tx, progress))],
        }
    }
}

async fn read_pipe(
    mut pipe: impl AsyncRead + Unpin,
    wrap: fn(Bytes) -> Output,
    tx: mpsc::Sender<Output>,
    progress: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; PIPE_CHUNK];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                progress.fetch_add(n as u64, Ordering::Relaxed);
                if tx
                    .send(wrap(Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

async fn read_pty(master: Arc<PtyMaster>, tx: mpsc::Sender<Output>, progress: Arc<AtomicU64>) {
    let mut buf = vec![0u8; PTY_CHUNK];
    loop {
        match master.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                progress.fetch_add(n as u64, Ordering::Relaxed);
                let chunk = Output::Pty(Bytes::copy_from_slice(&buf[..n]));
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Forwards output in order to the attached streams.
async fn forward_output(handle: Arc<ProcessHandle>, mut rx: mpsc::Receiver<Output>) {
    while let Some(output) = rx.recv().await {
        handle.publish(Event::Data(output)).await;
    }
}

/// The tasks that move a process's output.
struct Pumps {
    readers: Vec<JoinHandle<()>>,
    forwarder: JoinHandle<()>,
    progress: Arc<AtomicU64>,
}

/// Waits for the process (killing it at its deadline), lets the remaining
/// output through, then reports the end and forgets the process.
async fn supervise(
    mut child: Child,
    handle: Arc<ProcessHandle>,
    registry: ProcessRegistry,
    pumps: Pumps,
    deadline: Option<Instant>,
) {
    let status = match deadline {
        Some(deadline) => tokio::select! {
            status = child.wait() => status,
            () = tokio::time::sleep_until(deadline) => {
                tracing::warn!(pid = handle.pid, "process lifetime ended; killing it");
                let _ = handle.signal(nix::sys::signal::Signal::SIGKILL);
                child.wait().await
            }
        },
        None => child.wait().await,
    };
    drain(pumps.readers, &pumps.progress).await;
    // The forwarder ends once every reader (sender) is gone and the queue is
    // empty, so after it the end event is the last thing streams see.
    let _ = pumps.forwarder.await;
    let end = match status {
        Ok(status) => EndInfo::from_status(status),
        Err(error) => EndInfo::wait_failed(&error),
    };
    let pid = handle.pid;
    tracing::info!(
        event_type = "process_end",
        pid,
        exit_code = end.exit_code,
        exited = end.exited,
        status = %end.status,
        error = end.error.as_deref(),
        output_bytes = pumps.progress.load(Ordering::Relaxed),
        "Process with pid {pid} ended"
    );
    handle.publish(Event::End(end)).await;
    registry.remove(handle.pid);
    handle.close_subscribers();
}

async fn drain(mut readers: Vec<JoinHandle<()>>, progress: &AtomicU64) {
    loop {
        // A reader that ended in an earlier round was polled to completion
        // by that round's `join_all`: polling it again panics.
        readers.retain(|reader| !reader.is_finished());
        let before = progress.load(Ordering::Relaxed);
        let all = futures::future::join_all(readers.iter_mut());
        if tokio::time::timeout(DRAIN_IDLE, all).await.is_ok() {
            return;
        }
        if progress.load(Ordering::Relaxed) == before {
            for reader in &readers {
                reader.abort();
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One pipe closes at once, the other keeps delivering for a few drain
    /// rounds: a later round must not poll the finished reader again (a
    /// panic: "JoinHandle polled after completion").
    #[tokio::test]
    async fn drain_outlasts_a_round_with_one_reader_finished() {
        let progress = Arc::new(AtomicU64::new(0));
        let finished = tokio::spawn(async {});
        let busy = tokio::spawn({
            let progress = progress.clone();
            async move {
                let end = Instant::now() + DRAIN_IDLE * 3;
                while Instant::now() < end {
                    progress.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            }
        });
        tokio::time::timeout(
            Duration::from_secs(10),
            drain(vec![finished, busy], &progress),
        )
        .await
        .expect("drain ends once both readers have");
        assert!(progress.load(Ordering::Relaxed) > 0);
    }
}
