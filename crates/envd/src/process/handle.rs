//! A running process: its identity, its input side and the fan-out of its
//! output to every attached stream.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::exit_status::EndInfo;
use super::pty::PtyMaster;

/// How many events an attached stream may fall behind before the process's
/// output waits for it (backpressure instead of unbounded buffering).
const SUBSCRIBER_BUFFER: usize = 64;

/// One piece of what the process produced.
#[derive(Debug, Clone)]
pub enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
    Pty(Bytes),
}

/// What attached streams receive after the start event.
#[derive(Debug, Clone)]
pub enum Event {
    Data(Output),
    End(EndInfo),
}

/// The command line a process was started with, as `List` reports it.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub cmd: String,
    pub args: Vec<String>,
    pub envs: Vec<(String, String)>,
    pub cwd: Option<String>,
}

/// The writing end of a process's stdin pipe.
pub type StdinPipe = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// Where input for the process goes.
pub enum Input {
    /// A pipe to its stdin; `None` once closed (or when stdin was off).
    Pipe(tokio::sync::Mutex<Option<StdinPipe>>),
    Pty(Arc<PtyMaster>),
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Pipe(_) => f.write_str("Input::Pipe"),
            Input::Pty(_) => f.write_str("Input::Pty"),
        }
    }
}

/// Errors of input and control operations.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("process {0} has a PTY: send input as pty, not stdin")]
    IsPty(u32),
    #[error("process {0} has no PTY: send input as stdin, not pty")]
    NotPty(u32),
    #[error("stdin of process {0} is closed or was not enabled")]
    StdinClosed(u32),
    #[error("writing to process {pid}")]
    Write {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug)]
pub struct ProcessHandle {
    pub pid: u32,
    pub tag: Option<String>,
    pub config: Config,
    pub input: Input,
    subscribers: Mutex<Vec<mpsc::Sender<Event>>>,
}

impl ProcessHandle {
    pub fn new(pid: u32, tag: Option<String>, config: Config, input: Input) -> Self {
        Self {
            pid,
            tag,
            config,
            input,
            subscribers: Mutex::new(Vec::new()),
        }
    }

    /// Attaches a new stream that receives all output produced from now on.
    pub fn subscribe(&self) -> mpsc::Receiver<Event> {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        self.lock_subscribers().push(tx);
        rx
    }

    fn lock_subscribers(&self) -> std::sync::MutexGuard<'_, Vec<mpsc::Sender<Event>>> {
        match self.subscribers.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Delivers an event to every attached stream, waiting for slow ones;
    /// streams whose client went away are dropped.
    pub async fn publish(&self, event: Event) {
        let subscribers: Vec<_> = self.lock_subscribers().clone();
        let mut gone = Vec::new();
        for tx in &subscribers {
            if tx.send(event.clone()).await.is_err() {
                gone.push(tx.clone());
            }
        }
        if !gone.is_empty() {
            self.lock_subscribers()
                .retain(|tx| !gone.iter().any(|g| g.same_channel(tx)));
        }
    }

    /// Detaches every stream (their receivers see the channel close).
    pub fn close_subscribers(&self) {
        self.lock_subscribers().clear();
    }

    pub fn pty(&self) -> Option<&Arc<PtyMaster>> {
        match &self.input {
            Input::Pty(master) => Some(master),
            Input::Pipe(_) => None,
        }
    }

    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), InputError> {
        use tokio::io::AsyncWriteExt;
        let pid = self.pid;
        match &self.input {
            Input::Pty(_) => Err(InputError::IsPty(pid)),
            Input::Pipe(pipe) => {
                let mut guard = pipe.lock().await;
                let stdin = guard.as_mut().ok_or(InputError::StdinClosed(pid))?;
                stdin
                    .write_all(data)
                    .await
                    .map_err(|source| InputError::Write { pid, source })?;
                stdin
                    .flush()
                    .await
                    .map_err(|source| InputError::Write { pid, source })
            }
        }
    }

    pub async fn write_pty(&self, data: &[u8]) -> Result<(), InputError> {
        let pid = self.pid;
        let master = self.pty().ok_or(InputError::NotPty(pid))?;
        master
            .write_all(data)
            .await
            .map_err(|source| InputError::Write { pid, source })
    }

    pub async fn close_stdin(&self) -> Result<(), InputError> {
        match &self.input {
            Input::Pty(_) => Err(InputError::IsPty(self.pid)),
            Input::Pipe(pipe) => {
                pipe.lock().await.take();
                Ok(())
            }
        }
    }

    /// Sends a signal to the process's group, so children it spawned get it too.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> nix::Result<()> {
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        match nix::sys::signal::killpg(pid, signal) {
            Ok(()) => Ok(()),
            Err(_) => nix::sys::signal::kill(pid, signal),
        }
    }
}
