//! One Jupyter kernel: a child process this server starts from its
//! kernelspec, and the ZeroMQ sockets it is spoken to over (shell for
//! requests, IOPub for what they produce, control for interrupts). No
//! Jupyter server sits in between.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::Duration;

use jupyter_protocol::{
    ConnectionInfo, ExecuteRequest, InterruptRequest, JupyterMessage, JupyterMessageContent,
    connection_info::Transport,
};
use jupyter_zmq_client::{
    ClientControlConnection, ClientIoPubConnection, ClientShellConnection, KernelspecDir,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;

use crate::language::Language;

/// How many IOPub messages of one request wait for their reader before
/// the IOPub reader waits too (output of a fast kernel to a slow client).
const PENDING_MESSAGES: usize = 256;
/// How much of a request's output (KiB) may wait, read from the kernel but
/// not yet taken by its client: beyond it the reader stops reading, the
/// kernel's sockets fill and the kernel waits (or IOPub drops messages, as
/// Jupyter's does). A single message larger than this is let through alone.
/// Each request has its own, so a client that stalls holds up no other.
const OUTPUT_BUDGET_KIB: u32 = 16 * 1024;
/// The silence after `idle` that ends a request of a kernel whose output
/// can come later (see [`Kernel::late_output`]).
const LATE_OUTPUT: Duration = Duration::from_millis(150);
/// How long a handshake request is waited on before it is sent again.
const HANDSHAKE_RETRY: Duration = Duration::from_secs(2);
/// How many times a kernel that exits as it starts is started.
const START_ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("no kernel for {0} is installed")]
    NotInstalled(Language),
    #[error("cannot start the {kernel} kernel: {source}")]
    Spawn {
        kernel: String,
        source: std::io::Error,
    },
    #[error("the {kernel} kernel exited while starting ({status})")]
    ExitedAtStart { kernel: String, status: String },
    #[error("the {kernel} kernel did not answer within {after:?}")]
    StartTimeout { kernel: String, after: Duration },
    #[error("writing the kernel's connection file {path}: {source}")]
    ConnectionFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to the kernel: {0}")]
    Channel(#[from] jupyter_zmq_client::RuntimeError),
    #[error("the kernel went away")]
    Gone,
}

impl KernelError {
    /// What a client is told: the kernel and what went wrong, never the
    /// server's paths or the sockets' detail (those go to the log).
    pub fn for_client(&self) -> String {
        match self {
            Self::Spawn { kernel, .. } => format!("cannot start the {kernel} kernel"),
            Self::ConnectionFile { .. } => "cannot prepare the kernel's connection".to_owned(),
            Self::Channel(_) => "lost the connection to the kernel".to_owned(),
            Self::NotInstalled(_)
            | Self::ExitedAtStart { .. }
            | Self::StartTimeout { .. }
            | Self::Gone => self.to_string(),
        }
    }
}

/// An IOPub message of a request with its share of the output budget,
/// which it keeps until the client has taken what it became.
pub struct Delivery {
    pub message: JupyterMessage,
    pub budget: Option<OwnedSemaphorePermit>,
}

/// Messages of one request, from the IOPub reader.
pub struct Messages {
    receiver: mpsc::Receiver<Delivery>,
    budget: Arc<Semaphore>,
}

impl Messages {
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.receiver.recv().await
    }

    /// Whether output read for this request still waits for its client
    /// (the kernel may have said more that is held up behind it).
    pub fn output_pending(&self) -> bool {
        self.budget.available_permits() < OUTPUT_BUDGET_KIB as usize
    }
}

/// Where the IOPub messages of the request being followed go.
struct Subscriber {
    msg_id: String,
    sender: mpsc::Sender<Delivery>,
    /// The request's output budget, in KiB.
    budget: Arc<Semaphore>,
}

/// Which request's IOPub messages go where.
type Route = Arc<SyncMutex<Option<Subscriber>>>;

/// A running kernel. Requests go one at a time (its context serialises
/// them); dropping it kills the kernel and everything it started.
pub struct Kernel {
    kernel_name: String,
    pid: i32,
    interrupt_by_message: bool,
    child: tokio::process::Child,
    shell: ClientShellConnection,
    control: ClientControlConnection,
    route: Route,
    iopub_reader: tokio::task::JoinHandle<()>,
    connection_file: PathBuf,
    /// The server's environment, which the kernel inherits.
    inherited: BTreeMap<String, String>,
    /// The kernelspec's variables, which win over the sandbox's.
    spec_env: BTreeMap<String, String>,
    /// The environment the kernel process started with.
    started_with: BTreeMap<String, String>,
}

/// Where and how kernels start.
#[derive(Debug, Clone)]
pub struct KernelSettings {
    /// Where connection files go (they hold the message signing key).
    pub runtime_dir: PathBuf,
    /// How long a kernel may take to answer its first request.
    pub start_timeout: Duration,
    /// Jupyter data directories (with `kernels/<name>/kernel.json`) searched
    /// before the usual ones.
    pub kernel_dirs: Vec<PathBuf>,
}

impl Kernel {
    /// Finds the kernelspec for `language` among the installed ones (the
    /// settings' directories first, then Jupyter's usual places).
    pub async fn spec_for(
        language: Language,
        settings: &KernelSettings,
    ) -> Result<KernelspecDir, KernelError> {
        let mut specs = Vec::new();
        for dir in &settings.kernel_dirs {
            specs.extend(jupyter_zmq_client::read_kernelspec_jsons(dir).await);
        }
        specs.extend(jupyter_zmq_client::list_kernelspecs().await);
        language
            .kernel_names()
            .iter()
            .find_map(|name| specs.iter().find(|s| s.kernel_name == *name))
            .cloned()
            .ok_or(KernelError::NotInstalled(language))
    }

    /// Starts the kernel in `cwd`, with the sandbox's environment variables
    /// `sandbox_env` (the kernelspec's own win), and waits until it answers
    /// on its shell and IOPub channels.
    pub async fn start(
        spec: KernelspecDir,
        cwd: &Path,
        settings: &KernelSettings,
        sandbox_env: &BTreeMap<String, String>,
    ) -> Result<Self, KernelError> {
        // The ports are free when picked, but another process may bind one
        // before the kernel does; such a kernel exits at once, and a new
        // one gets new ports.
        let mut attempts = 1;
        loop {
            match Self::start_once(spec.clone(), cwd, settings, sandbox_env).await {
                Err(KernelError::ExitedAtStart { kernel, status }) if attempts < START_ATTEMPTS => {
                    tracing::warn!(%kernel, %status, "a kernel exited as it started; starting it again");
                    attempts += 1;
                }
                other => return other,
            }
        }
    }

    async fn start_once(
        spec: KernelspecDir,
        cwd: &Path,
        settings: &KernelSettings,
        sandbox_env: &BTreeMap<String, String>,
    ) -> Result<Self, KernelError> {
        let kernel_name = spec.kernel_name.clone();
        let spec_env: BTreeMap<String, String> = spec
            .kernelspec
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        // Variables that are not UTF-8 are inherited but never compared.
        let inherited: BTreeMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let started_with = environment(&inherited, sandbox_env, &spec_env);
        let interrupt_by_message = spec.kernelspec.interrupt_mode.as_deref() == Some("message");
        let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        let (ports, listeners) = jupyter_zmq_client::peek_ports_with_listeners(ip, 5).await?;
        let [stdin_port, control_port, hb_port, shell_port, iopub_port] = ports[..] else {
            return Err(KernelError::Gone);
        };
        let connection = ConnectionInfo {
            transport: Transport::TCP,
            ip: ip.to_string(),
            stdin_port,
            control_port,
            hb_port,
            shell_port,
            iopub_port,
            signature_scheme: "hmac-sha256".into(),
            key: uuid::Uuid::new_v4().to_string(),
            kernel_name: Some(kernel_name.clone()),
        };
        let connection_file = settings
            .runtime_dir
            .join(format!("kernel-{}.json", uuid::Uuid::new_v4()));
        write_private(&settings.runtime_dir, &connection_file, &connection)?;
        let mut command = spec
            .command(&connection_file, None, None)
            .map_err(KernelError::Channel)?;
        command.envs(
            sandbox_env
                .iter()
                .filter(|(k, _)| !spec_env.contains_key(*k)),
        );
        // Its own process group: a kill takes what the kernel started too.
        command.current_dir(cwd).process_group(0).kill_on_drop(true);
        crate::orphan::die_with_parent(&mut command);
        let spawned = command.spawn();
        // The kernel binds the ports next; until now they were held here.
        drop(listeners);
        let child = spawned.map_err(|source| KernelError::Spawn {
            kernel: kernel_name.clone(),
            source,
        })?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or_default();
        let deadline = Instant::now() + settings.start_timeout;
        let mut starting = Starting {
            kernel_name,
            child: Some(child),
            connection_file: connection_file.clone(),
        };
        let session = uuid::Uuid::new_v4().to_string();
        let (shell, control, iopub) = starting
            .connect(&connection, &session, deadline, settings.start_timeout)
            .await?;
        let route: Route = Arc::new(SyncMutex::new(None));
        let iopub_reader = tokio::spawn(read_iopub(iopub, route.clone()));
        let Some(child) = starting.child.take() else {
            return Err(KernelError::Gone);
        };
        let mut kernel = Self {
            kernel_name: std::mem::take(&mut starting.kernel_name),
            pid,
            interrupt_by_message,
            child,
            shell,
            control,
            route,
            iopub_reader,
            connection_file,
            inherited,
            spec_env,
            started_with,
        };
        kernel.handshake(deadline, settings.start_timeout).await?;
        Ok(kernel)
    }

    pub fn name(&self) -> &str {
        &self.kernel_name
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The environment the kernel process started with.
    pub fn started_with(&self) -> &BTreeMap<String, String> {
        &self.started_with
    }

    /// The environment the kernel is to have with the sandbox's variables
    /// `sandbox_env`: the server's, the sandbox's over it, the kernelspec's
    /// over both (as when it started).
    pub fn environment_for(
        &self,
        sandbox_env: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        environment(&self.inherited, sandbox_env, &self.spec_env)
    }

    /// How long output of a request may still come after the kernel said
    /// it is idle. Deno's kernel forwards output (stdout, the cell's value)
    /// through a queue of its own while it publishes its status directly,
    /// so the value can come after `idle`; Jupyter's own order (idle
    /// last) holds for the others.
    pub fn late_output(&self) -> Duration {
        if self.kernel_name == "deno" {
            LATE_OUTPUT
        } else {
            Duration::ZERO
        }
    }

    /// Runs nothing (an empty silent execution: every kernel answers it,
    /// and its reply decodes whatever the kernel is) until a reply and an
    /// IOPub message of the same request arrive: then IOPub is subscribed
    /// and nothing the next request prints is lost.
    async fn handshake(&mut self, deadline: Instant, limit: Duration) -> Result<(), KernelError> {
        loop {
            if Instant::now() > deadline {
                return Err(KernelError::StartTimeout {
                    kernel: self.kernel_name.clone(),
                    after: limit,
                });
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(KernelError::ExitedAtStart {
                    kernel: self.kernel_name.clone(),
                    status: status.to_string(),
                });
            }
            // A request sent while the kernel was not yet reading may be
            // lost: each is waited on for a while, then sent again (a late
            // reply to an earlier one is told apart by its parent id).
            let (request, mut messages) = self.execute("", true).await?;
            let wait = (Instant::now() + HANDSHAKE_RETRY).min(deadline);
            let replied = tokio::time::timeout_at(wait, self.reply_to(&request)).await;
            if !matches!(replied, Ok(Ok(_))) {
                self.unsubscribe();
                continue;
            }
            // IOPub caught up when it shows this request's status.
            let seen = tokio::time::timeout(Duration::from_millis(500), messages.recv()).await;
            self.unsubscribe();
            if matches!(seen, Ok(Some(_))) {
                return Ok(());
            }
        }
    }

    /// Routes the IOPub messages of `request` to the receiver returned.
    pub fn subscribe(&self, request: &JupyterMessage) -> Messages {
        let (sender, receiver) = mpsc::channel(PENDING_MESSAGES);
        let budget = Arc::new(Semaphore::new(OUTPUT_BUDGET_KIB as usize));
        let subscriber = Subscriber {
            msg_id: request.header.msg_id.clone(),
            sender,
            budget: budget.clone(),
        };
        if let Ok(mut route) = self.route.lock()
            && let Some(before) = route.replace(subscriber)
        {
            before.budget.close();
        }
        Messages { receiver, budget }
    }

    /// Stops routing; a reader waiting for the request's budget gives up.
    pub fn unsubscribe(&self) {
        if let Ok(mut route) = self.route.lock()
            && let Some(before) = route.take()
        {
            before.budget.close();
        }
    }

    /// Sends an execute request; its IOPub messages arrive on the receiver.
    pub async fn execute(
        &mut self,
        code: &str,
        silent: bool,
    ) -> Result<(JupyterMessage, Messages), KernelError> {
        let request: JupyterMessage = ExecuteRequest {
            code: code.to_owned(),
            silent,
            store_history: !silent,
            user_expressions: None,
            allow_stdin: false,
            stop_on_error: true,
        }
        .into();
        let messages = self.subscribe(&request);
        self.shell.send(request.clone()).await?;
        Ok((request, messages))
    }

    /// The shell reply to `request` (replies to requests given up on
    /// earlier are skipped, and so are messages that do not decode, while
    /// the kernel lives).
    pub async fn reply_to(
        &mut self,
        request: &JupyterMessage,
    ) -> Result<JupyterMessage, KernelError> {
        loop {
            let reply = match self.shell.read().await {
                Ok(reply) => reply,
                Err(error) => {
                    if !self.is_alive() {
                        return Err(error.into());
                    }
                    tracing::debug!(kernel = %self.kernel_name, %error, "skipped a shell message");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            if reply
                .parent_header
                .as_ref()
                .is_some_and(|parent| parent.msg_id == request.header.msg_id)
            {
                return Ok(reply);
            }
        }
    }

    /// Interrupts what the kernel runs, the way its kernelspec asks.
    pub async fn interrupt(&mut self) -> Result<(), KernelError> {
        if self.interrupt_by_message {
            self.control.send(InterruptRequest {}.into()).await?;
            return Ok(());
        }
        // `id()` is None once the child was reaped (its pid may be reused).
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) on our own child, not yet reaped (tokio gives
            // its id only until then), so the pid is still that process.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        Ok(())
    }

    /// Whether the kernel process is still there.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.iopub_reader.abort();
        // Its group outlives a reaped leader only through members it started,
        // and no other process takes the group's id while any is left.
        kill_group(self.pid);
        let _ = std::fs::remove_file(&self.connection_file);
    }
}

/// A kernel process between spawn and handshake; dropped early, it takes
/// the process and its connection file with it.
struct Starting {
    kernel_name: String,
    child: Option<tokio::process::Child>,
    connection_file: PathBuf,
}

impl Starting {
    /// Connects the channels once the kernel listens (a connect to a port
    /// nothing listens on yet fails, so it is retried).
    async fn connect(
        &mut self,
        connection: &ConnectionInfo,
        session: &str,
        deadline: Instant,
        limit: Duration,
    ) -> Result<
        (
            ClientShellConnection,
            ClientControlConnection,
            ClientIoPubConnection,
        ),
        KernelError,
    > {
        loop {
            let attempt = async {
                let identity = jupyter_zmq_client::peer_identity_for_session(session)?;
                let iopub =
                    jupyter_zmq_client::create_client_iopub_connection(connection, "", session)
                        .await?;
                let shell = jupyter_zmq_client::create_client_shell_connection_with_identity(
                    connection, session, identity,
                )
                .await?;
                let control =
                    jupyter_zmq_client::create_client_control_connection(connection, session)
                        .await?;
                Ok::<_, jupyter_zmq_client::RuntimeError>((shell, control, iopub))
            };
            if let Ok(connected) = attempt.await {
                return Ok(connected);
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(KernelError::ExitedAtStart {
                    kernel: self.kernel_name.clone(),
                    status: status.to_string(),
                });
            }
            if Instant::now() > deadline {
                return Err(KernelError::StartTimeout {
                    kernel: self.kernel_name.clone(),
                    after: limit,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(child) = &self.child
            && let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok())
        {
            kill_group(pid);
            let _ = std::fs::remove_file(&self.connection_file);
        }
    }
}

/// Kills a kernel's process group (0: none).
pub(crate) fn kill_group(pid: i32) {
    if pid > 0 {
        // SAFETY: killpg(2) on the group this server made for its own child.
        unsafe { libc::killpg(pid, libc::SIGKILL) };
    }
}

/// The connection file, readable by this server's user only.
fn write_private(dir: &Path, path: &Path, connection: &ConnectionInfo) -> Result<(), KernelError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let error = |source| KernelError::ConnectionFile {
        path: path.to_owned(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(error)?;
    let json = serde_json::to_vec(connection).map_err(|e| error(std::io::Error::other(e)))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(error)?;
    file.write_all(&json).map_err(error)
}

/// Reads IOPub for the kernel's life, handing each message to the request
/// it belongs to with its share of the output budget (waiting for that
/// share first); messages of no current request are dropped.
async fn read_iopub(mut iopub: ClientIoPubConnection, route: Route) {
    let mut failures: u64 = 0;
    loop {
        let Ok(message) = iopub.read().await else {
            // A message that does not verify or decode is skipped; a socket
            // that keeps failing (its kernel died) is retried ever less
            // often until the reader is aborted with its kernel.
            failures = (failures + 1).min(100);
            tokio::time::sleep(Duration::from_millis(10 * failures)).await;
            continue;
        };
        failures = 0;
        let Some(parent) = message.parent_header.as_ref().map(|p| p.msg_id.clone()) else {
            continue;
        };
        let subscriber = match route.lock() {
            Ok(route) => route
                .as_ref()
                .filter(|s| s.msg_id == parent)
                .map(|s| (s.sender.clone(), s.budget.clone())),
            Err(_) => None,
        };
        if let Some((sender, budget)) = subscriber {
            let kib = u32::try_from(approximate_size(&message) / 1024 + 1)
                .unwrap_or(u32::MAX)
                .min(OUTPUT_BUDGET_KIB);
            // Fails once the request is no longer followed (its budget is
            // closed then): the message goes nowhere.
            let Ok(budget) = budget.acquire_many_owned(kib).await else {
                continue;
            };
            let _ = sender
                .send(Delivery {
                    message,
                    budget: Some(budget),
                })
                .await;
        }
    }
}

/// A kernel's environment: the server's, the sandbox's over it, the
/// kernelspec's over both.
fn environment(
    inherited: &BTreeMap<String, String>,
    sandbox_env: &BTreeMap<String, String>,
    spec_env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut environment = inherited.clone();
    environment.extend(sandbox_env.clone());
    environment.extend(spec_env.clone());
    environment
}

/// About how many bytes a message holds (its text, or its content as JSON).
fn approximate_size(message: &JupyterMessage) -> usize {
    match &message.content {
        JupyterMessageContent::StreamContent(stream) => stream.text.len(),
        JupyterMessageContent::Status(_) | JupyterMessageContent::ExecuteInput(_) => 0,
        other => serde_json::to_vec(other).map_or(0, |json| json.len()),
    }
}

/// Whether the kernel went idle: the last IOPub message of a request.
pub fn is_idle(message: &JupyterMessage) -> bool {
    matches!(
        &message.content,
        JupyterMessageContent::Status(status)
            if status.execution_state == jupyter_protocol::ExecutionState::Idle
    )
}
