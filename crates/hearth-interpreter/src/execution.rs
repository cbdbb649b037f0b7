//! One execution on a kernel: the request, the lines its IOPub messages
//! become, and the end — when the kernel has replied and gone idle. A
//! client that goes away (its line cannot be written) interrupts the
//! execution; the context is usable again once the kernel is idle.

use std::time::Duration;

use jupyter_protocol::{JupyterMessage, JupyterMessageContent};
use serde_json::{Map, Value};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;

use crate::kernel::{Kernel, KernelError, Messages, is_idle};
use crate::output::{Chunk, Line, result};

/// How timing works for executions.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// A keepalive line after this much silence (and a check that the
    /// kernel still runs).
    pub keepalive: Duration,
    /// After its reply, how long a request's idle status may lag (IOPub
    /// can drop messages when a client reads too slowly).
    pub idle_lag: Duration,
    /// How long an interrupted execution may take to stop before its
    /// kernel counts as stuck.
    pub interrupt_grace: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Self {
            keepalive: Duration::from_secs(2),
            idle_lag: Duration::from_secs(2),
            interrupt_grace: Duration::from_secs(10),
        }
    }
}

/// How an execution ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The kernel replied and is idle: the context can go on.
    Done,
    /// The client went away; the execution was interrupted and stopped.
    Interrupted,
    /// The kernel died or would not stop: it must be restarted.
    KernelLost,
}

/// Where lines go; `None` once the client has gone.
struct Sink<'a> {
    out: Option<&'a mpsc::Sender<Chunk>>,
    last: Instant,
    error_sent: bool,
}

impl<'a> Sink<'a> {
    fn new(out: Option<&'a mpsc::Sender<Chunk>>) -> Self {
        Self {
            out,
            last: Instant::now(),
            error_sent: false,
        }
    }

    /// Writes a line; false when the client has gone.
    async fn send(&mut self, line: Line) -> bool {
        self.send_within(line, None).await
    }

    /// Writes a line that holds `budget` (of the output read from the
    /// kernel) until the client takes it; false when the client has gone.
    async fn send_within(&mut self, line: Line, budget: Option<OwnedSemaphorePermit>) -> bool {
        let Some(out) = self.out else {
            return false;
        };
        let chunk = Chunk {
            bytes: line.to_bytes(),
            budget,
        };
        if out.send(chunk).await.is_err() {
            self.out = None;
            return false;
        }
        self.last = Instant::now();
        true
    }
}

/// Runs `code` visibly and writes its lines to `out`, ending with
/// `end_of_execution` unless the client went away.
pub async fn run(kernel: &mut Kernel, code: &str, out: &mpsc::Sender<Chunk>, pace: Pace) -> Ended {
    let mut sink = Sink::new(Some(out));
    let mut watch = match Watch::start(kernel, code, false).await {
        Ok(watch) => watch,
        Err(error) => {
            tracing::warn!(%error, "an execution could not start");
            sink.send(Line::error(
                "KernelError",
                format!("the execution could not start: {}", error.for_client()),
            ))
            .await;
            sink.send(Line::EndOfExecution).await;
            return Ended::KernelLost;
        }
    };
    let ended = watch.follow(kernel, &mut sink, pace, None).await;
    let ended = match ended {
        Ended::Interrupted => {
            // The client is gone: stop the code, then wait for the kernel.
            if kernel.interrupt().await.is_err() {
                Ended::KernelLost
            } else {
                let deadline = Instant::now() + pace.interrupt_grace;
                match watch.follow(kernel, &mut sink, pace, Some(deadline)).await {
                    Ended::Done | Ended::Interrupted => Ended::Interrupted,
                    Ended::KernelLost => Ended::KernelLost,
                }
            }
        }
        Ended::KernelLost => {
            sink.send(Line::error(
                "KernelDied",
                "the kernel stopped during the execution; the context's state is lost and it was restarted",
            ))
            .await;
            Ended::KernelLost
        }
        Ended::Done => Ended::Done,
    };
    kernel.unsubscribe();
    if ended != Ended::Interrupted {
        sink.send(Line::EndOfExecution).await;
    }
    ended
}

/// Runs helper code silently (no execution count, no output) and waits for
/// it; the kernel's error message if it failed.
pub async fn run_silent(
    kernel: &mut Kernel,
    code: &str,
    limit: Duration,
    pace: Pace,
) -> Result<(), String> {
    let mut watch = Watch::start(kernel, code, true).await.map_err(|error| {
        tracing::warn!(%error, "a silent execution could not start");
        error.for_client()
    })?;
    let mut sink = Sink::new(None);
    let deadline = Instant::now() + limit;
    let ended = watch.follow(kernel, &mut sink, pace, Some(deadline)).await;
    kernel.unsubscribe();
    match (ended, watch.failure) {
        (Ended::Done, None) => Ok(()),
        (Ended::Done, Some((name, value))) => Err(format!("{name}: {value}")),
        _ => Err(format!("the kernel did not finish it within {limit:?}")),
    }
}

/// An execution being followed.
struct Watch {
    request: JupyterMessage,
    messages: Messages,
    replied: bool,
    idle: bool,
    /// What the reply said went wrong, if anything.
    failure: Option<(String, String)>,
    /// The same, as the error line to send if IOPub brings none.
    reply_error: Option<(String, String, String)>,
}

impl Watch {
    /// Sends `code` to the kernel and starts following it.
    async fn start(kernel: &mut Kernel, code: &str, silent: bool) -> Result<Self, KernelError> {
        let (request, messages) = kernel.execute(code, silent).await?;
        Ok(Self {
            request,
            messages,
            replied: false,
            idle: false,
            failure: None,
            reply_error: None,
        })
    }

    /// Follows the execution until the kernel replied and went idle
    /// (`Done`), the client went away (`Interrupted`; only without a
    /// deadline) or the kernel died or missed `deadline` (`KernelLost`).
    async fn follow(
        &mut self,
        kernel: &mut Kernel,
        sink: &mut Sink<'_>,
        pace: Pace,
        deadline: Option<Instant>,
    ) -> Ended {
        let ended = self.follow_until_done(kernel, sink, pace, deadline).await;
        // A failure only the reply told of (no IOPub error came before the
        // kernel went idle) is reported last, after all the output.
        if ended == Ended::Done
            && !sink.error_sent
            && let Some((name, value, traceback)) = self.reply_error.take()
        {
            sink.error_sent = true;
            sink.send(Line::Error {
                name,
                value,
                traceback,
            })
            .await;
        }
        ended
    }

    async fn follow_until_done(
        &mut self,
        kernel: &mut Kernel,
        sink: &mut Sink<'_>,
        pace: Pace,
        deadline: Option<Instant>,
    ) -> Ended {
        // The last time the kernel said anything about this request: after
        // its reply, idle may be missing (IOPub drops messages when a client
        // reads too slowly), so silence for `idle_lag` ends it.
        let mut last_heard = Instant::now();
        let mut next_check = Instant::now() + pace.keepalive;
        // Output that may still come once the kernel replied and went idle
        // (a window from then, never extended: a kernel whose background
        // code keeps printing does not keep the request open).
        let late_output = kernel.late_output();
        let mut settled: Option<Instant> = None;
        loop {
            let mut wake = next_check;
            if self.replied && self.idle {
                let at = *settled.get_or_insert_with(Instant::now);
                if at.elapsed() >= late_output {
                    return Ended::Done;
                }
                wake = wake.min(at + late_output);
            }
            // Output still on its way to the client is not silence.
            if self.messages.output_pending() {
                last_heard = Instant::now();
            }
            if self.replied {
                if last_heard.elapsed() >= pace.idle_lag {
                    return Ended::Done;
                }
                wake = wake.min(last_heard + pace.idle_lag);
            }
            if let Some(deadline) = deadline {
                wake = wake.min(deadline);
            }
            tokio::select! {
                reply = kernel.reply_to(&self.request), if !self.replied => {
                    self.replied = true;
                    last_heard = Instant::now();
                    let Ok(reply) = reply else {
                        return Ended::KernelLost;
                    };
                    if let Some((name, value, traceback)) = failure(&reply) {
                        self.failure = Some((name.clone(), value.clone()));
                        self.reply_error = Some((name, value, traceback));
                    }
                }
                delivery = self.messages.recv(), if !self.idle || !late_output.is_zero() => {
                    let Some(delivery) = delivery else {
                        return if self.idle && self.replied { Ended::Done } else { Ended::KernelLost };
                    };
                    self.idle |= is_idle(&delivery.message);
                    if let Some(line) = line_of(&delivery.message, &mut sink.error_sent)
                        && !sink.send_within(line, delivery.budget).await
                        && deadline.is_none()
                    {
                        return Ended::Interrupted;
                    }
                    // After the write: time spent waiting for a slow client
                    // is not the kernel's silence.
                    last_heard = Instant::now();
                }
                _ = tokio::time::sleep_until(wake) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) || !kernel.is_alive() {
                        return Ended::KernelLost;
                    }
                    if Instant::now() >= next_check {
                        next_check = Instant::now() + pace.keepalive;
                        // Silence is a keepalive line: a client that went
                        // away shows as a failed write.
                        if !self.replied
                            && deadline.is_none()
                            && sink.last.elapsed() >= pace.keepalive
                            && !sink.send(Line::Keepalive).await
                        {
                            return Ended::Interrupted;
                        }
                    }
                }
            }
        }
    }
}

/// The line an IOPub message becomes, if any. Only an execution's first
/// error is reported (`error_sent`).
fn line_of(message: &JupyterMessage, error_sent: &mut bool) -> Option<Line> {
    let timestamp = || {
        message
            .header
            .date
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    };
    match &message.content {
        JupyterMessageContent::StreamContent(stream) => Some(match stream.name {
            jupyter_protocol::Stdio::Stdout => Line::Stdout {
                text: stream.text.clone(),
                timestamp: timestamp(),
            },
            jupyter_protocol::Stdio::Stderr => Line::Stderr {
                text: stream.text.clone(),
                timestamp: timestamp(),
            },
        }),
        JupyterMessageContent::DisplayData(display) => {
            Some(result(mime_bundle(&display.data), false))
        }
        JupyterMessageContent::ExecuteResult(value) => Some(result(mime_bundle(&value.data), true)),
        JupyterMessageContent::ErrorOutput(error) if !*error_sent => {
            *error_sent = true;
            Some(Line::Error {
                name: error.ename.clone(),
                value: error.evalue.clone(),
                traceback: error.traceback.join("\n"),
            })
        }
        JupyterMessageContent::ExecuteInput(input) => Some(Line::NumberOfExecutions {
            execution_count: i64::try_from(input.execution_count.value()).unwrap_or(i64::MAX),
        }),
        _ => None,
    }
}

/// A display's MIME bundle as the kernel sent it.
fn mime_bundle(media: &jupyter_protocol::Media) -> Map<String, Value> {
    match serde_json::to_value(media) {
        Ok(Value::Object(bundle)) => bundle,
        _ => Map::new(),
    }
}

/// (name, value, traceback) of a reply that says the execution failed.
fn failure(reply: &JupyterMessage) -> Option<(String, String, String)> {
    let content = serde_json::to_value(&reply.content).ok()?;
    let text = |key: &str| {
        content
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    match content.get("status").and_then(Value::as_str) {
        Some("error") => {
            let traceback = content
                .get("traceback")
                .and_then(Value::as_array)
                .map(|lines| {
                    lines
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default();
            Some((text("ename"), text("evalue"), traceback))
        }
        Some("aborted" | "abort") => Some((
            "ExecutionAborted".into(),
            "Execution was aborted".into(),
            String::new(),
        )),
        _ => None,
    }
}
