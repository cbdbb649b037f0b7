//! Handlers of the `process.Process` RPCs.

use std::path::Path;

use connectrpc::{ConnectError, RequestContext, ServiceRequest, ServiceResult, ServiceStream};
use envd_proto::process::__buffa::oneof::process_input::Input as InputKind;
use envd_proto::process::__buffa::oneof::process_selector::Selector as SelectorKind;
use envd_proto::process::__buffa::oneof::stream_input_request::Event as InputEvent;
use envd_proto::process::*;
use futures::StreamExt;

use super::handle::{Config, InputError, ProcessHandle};
use super::registry::Selector;
use super::spawn::{SpawnSpec, spawn};
use super::stream::process_events;
use crate::rpc::{full_text, keepalive_interval, request_user};
use crate::state::SharedEnvd;
use crate::users::resolve_path;

/// Terminal size used when a PTY request gives none.
const DEFAULT_PTY_SIZE: (u16, u16) = (80, 24);

pub struct ProcessService {
    envd: SharedEnvd,
}

impl ProcessService {
    pub fn new(envd: SharedEnvd) -> Self {
        Self { envd }
    }

    fn find(
        &self,
        selector: Option<&ProcessSelector>,
    ) -> Result<std::sync::Arc<ProcessHandle>, ConnectError> {
        let selector = match selector.and_then(|s| s.selector.as_ref()) {
            Some(SelectorKind::Pid(pid)) => Selector::Pid(*pid),
            Some(SelectorKind::Tag(tag)) => Selector::Tag(tag.clone()),
            None => {
                return Err(ConnectError::invalid_argument(
                    "a process selector (pid or tag) is required",
                ));
            }
        };
        self.envd
            .processes
            .find(&selector)
            .ok_or_else(|| ConnectError::not_found(format!("{selector} not found")))
    }
}

fn input_error(error: InputError) -> ConnectError {
    match &error {
        InputError::IsPty(_) | InputError::NotPty(_) => {
            ConnectError::invalid_argument(error.to_string())
        }
        InputError::StdinClosed(_) => ConnectError::failed_precondition(error.to_string()),
        InputError::Write { .. } => ConnectError::internal(full_text(&error)),
    }
}

fn pty_size(pty: &PTY) -> (u16, u16) {
    match pty.size.as_option() {
        Some(size) if size.cols > 0 && size.rows > 0 => (
            u16::try_from(size.cols).unwrap_or(u16::MAX),
            u16::try_from(size.rows).unwrap_or(u16::MAX),
        ),
        _ => DEFAULT_PTY_SIZE,
    }
}

fn process_info(handle: &ProcessHandle) -> ProcessInfo {
    ProcessInfo {
        config: ProcessConfig {
            cmd: handle.config.cmd.clone(),
            args: handle.config.args.clone(),
            envs: handle.config.envs.iter().cloned().collect(),
            cwd: handle.config.cwd.clone(),
            ..Default::default()
        }
        .into(),
        pid: handle.pid,
        tag: handle.tag.clone(),
        ..Default::default()
    }
}

async fn write_input(
    handle: &ProcessHandle,
    input: Option<&ProcessInput>,
) -> Result<(), ConnectError> {
    match input.and_then(|i| i.input.as_ref()) {
        Some(InputKind::Stdin(data)) => handle.write_stdin(data).await.map_err(input_error),
        Some(InputKind::Pty(data)) => handle.write_pty(data).await.map_err(input_error),
        None => Ok(()),
    }
}

// The handlers return concrete types where the trait allows any encodable one.
#[allow(refining_impl_trait)]
impl Process for ProcessService {
    async fn list(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, ListRequest>,
    ) -> ServiceResult<ListResponse> {
        let processes = self
            .envd
            .processes
            .list()
            .iter()
            .map(|h| process_info(h))
            .collect();
        Ok(ListResponse {
            processes,
            ..Default::default()
        }
        .into())
    }

    async fn connect(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, ConnectRequest>,
    ) -> ServiceResult<ServiceStream<ConnectResponse>> {
        let request = request.to_owned_message();
        let handle = self.find(request.process.as_option())?;
        let events = handle.subscribe();
        let deadline = ctx.deadline().map(tokio::time::Instant::from_std);
        let stream = process_events(
            handle.pid,
            events,
            keepalive_interval(&ctx),
            deadline,
            |event| ConnectResponse {
                event: event.into(),
                ..Default::default()
            },
        );
        Ok(stream.into())
    }

    async fn start(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, StartRequest>,
    ) -> ServiceResult<ServiceStream<StartResponse>> {
        let request = request.to_owned_message();
        let user = request_user(&self.envd, &ctx)?;
        let process = request
            .process
            .as_option()
            .ok_or_else(|| ConnectError::invalid_argument("process config is required"))?;
        if process.cmd.is_empty() {
            return Err(ConnectError::invalid_argument(
                "process cmd must not be empty",
            ));
        }
        let cwd = match &process.cwd {
            Some(cwd) if !cwd.is_empty() => {
                let resolved = resolve_path(cwd, &user.home);
                if !Path::new(&resolved).is_dir() {
                    return Err(ConnectError::invalid_argument(format!(
                        "cwd '{}' does not exist",
                        resolved.display()
                    )));
                }
                resolved
            }
            _ => {
                let workdir = self.envd.default_workdir(&user);
                if workdir.is_dir() {
                    workdir
                } else {
                    "/".into()
                }
            }
        };
        let mut envs: Vec<(String, String)> = process
            .envs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        envs.sort();
        let deadline = ctx.deadline().map(tokio::time::Instant::from_std);
        let spec = SpawnSpec {
            config: Config {
                cmd: process.cmd.clone(),
                args: process.args.clone(),
                envs,
                cwd: process.cwd.clone(),
            },
            tag: request.tag.clone(),
            user,
            cwd,
            global_envs: self.envd.defaults().env_vars,
            pty: request.pty.as_option().map(pty_size),
            stdin: request.stdin.unwrap_or(true),
            deadline,
        };
        let started = spawn(spec, &self.envd.processes)
            .map_err(|e| ConnectError::invalid_argument(full_text(&e)))?;
        let pid = started.handle.pid;
        tracing::info!(
            event_type = "process_start",
            pid,
            command = %command_line(&process.cmd, &process.args),
            request_timeout_ms = deadline
                .map(|at| at.saturating_duration_since(tokio::time::Instant::now()).as_millis() as u64),
            "Process with pid {pid} started"
        );
        self.envd.process_started.notify_one();
        let stream = process_events(
            started.handle.pid,
            started.events,
            keepalive_interval(&ctx),
            deadline,
            |event| StartResponse {
                event: event.into(),
                ..Default::default()
            },
        );
        Ok(stream.into())
    }

    async fn update(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, UpdateRequest>,
    ) -> ServiceResult<UpdateResponse> {
        let request = request.to_owned_message();
        let handle = self.find(request.process.as_option())?;
        if let Some(pty) = request.pty.as_option() {
            let master = handle.pty().ok_or_else(|| {
                ConnectError::invalid_argument(format!(
                    "process {} has no PTY to resize",
                    handle.pid
                ))
            })?;
            let (cols, rows) = pty_size(pty);
            master
                .resize(cols, rows)
                .map_err(|e| ConnectError::internal(format!("resizing the PTY: {e}")))?;
        }
        Ok(UpdateResponse::default().into())
    }

    async fn stream_input(
        &self,
        _ctx: RequestContext,
        mut requests: ServiceStream<connectrpc::StreamMessage<StreamInputRequest>>,
    ) -> ServiceResult<StreamInputResponse> {
        let mut handle = None;
        while let Some(message) = requests.next().await {
            let message = message?.to_owned_message();
            match message.event {
                Some(InputEvent::Start(start)) => {
                    handle = Some(self.find(start.process.as_option())?);
                }
                Some(InputEvent::Data(data)) => {
                    let handle = handle.as_ref().ok_or_else(|| {
                        ConnectError::invalid_argument(
                            "the first StreamInput message must be start",
                        )
                    })?;
                    write_input(handle, data.input.as_option()).await?;
                }
                Some(InputEvent::Keepalive(_)) | None => {}
            }
        }
        Ok(StreamInputResponse::default().into())
    }

    async fn send_input(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, SendInputRequest>,
    ) -> ServiceResult<SendInputResponse> {
        let request = request.to_owned_message();
        let handle = self.find(request.process.as_option())?;
        write_input(&handle, request.input.as_option()).await?;
        Ok(SendInputResponse::default().into())
    }

    async fn send_signal(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, SendSignalRequest>,
    ) -> ServiceResult<SendSignalResponse> {
        let request = request.to_owned_message();
        let handle = self.find(request.process.as_option())?;
        let signal = match request.signal.as_known() {
            Some(Signal::SIGNAL_SIGKILL) => nix::sys::signal::Signal::SIGKILL,
            Some(Signal::SIGNAL_SIGTERM) => nix::sys::signal::Signal::SIGTERM,
            _ => {
                return Err(ConnectError::invalid_argument(
                    "signal must be SIGNAL_SIGTERM or SIGNAL_SIGKILL",
                ));
            }
        };
        handle.signal(signal).map_err(|e| {
            ConnectError::internal(format!("signalling process {}: {e}", handle.pid))
        })?;
        Ok(SendSignalResponse::default().into())
    }

    async fn close_stdin(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, CloseStdinRequest>,
    ) -> ServiceResult<CloseStdinResponse> {
        let request = request.to_owned_message();
        let handle = self.find(request.process.as_option())?;
        handle.close_stdin().await.map_err(input_error)?;
        Ok(CloseStdinResponse::default().into())
    }
}

/// A command and its arguments as one line, for the process's log event.
fn command_line(cmd: &str, args: &[String]) -> String {
    std::iter::once(cmd)
        .chain(args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}
