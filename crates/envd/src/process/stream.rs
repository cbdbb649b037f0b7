//! Turning a process's events into the `ProcessEvent` stream the SDKs read:
//! `start` first, then data and keepalives, then `end`.

use std::time::Duration;

use connectrpc::{ConnectError, ServiceStream};
use envd_proto::process::__buffa::oneof::process_event::{
    Event as Kind, data_event::Output as Out,
};
use envd_proto::process::ProcessEvent;
use envd_proto::process::process_event::{DataEvent, EndEvent, StartEvent};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::handle::{Event, Output};

fn event(kind: Kind) -> ProcessEvent {
    ProcessEvent {
        event: Some(kind),
        ..Default::default()
    }
}

pub fn start_event(pid: u32) -> ProcessEvent {
    event(Kind::Start(Box::new(StartEvent {
        pid,
        ..Default::default()
    })))
}

fn keepalive_event() -> ProcessEvent {
    event(Kind::Keepalive(Box::default()))
}

fn data_event(output: Output) -> ProcessEvent {
    let output = match output {
        Output::Stdout(b) => Out::Stdout(b.to_vec()),
        Output::Stderr(b) => Out::Stderr(b.to_vec()),
        Output::Pty(b) => Out::Pty(b.to_vec()),
    };
    event(Kind::Data(Box::new(DataEvent {
        output: Some(output),
        ..Default::default()
    })))
}

fn end_event(end: super::exit_status::EndInfo) -> ProcessEvent {
    event(Kind::End(Box::new(EndEvent {
        exit_code: end.exit_code,
        exited: end.exited,
        status: end.status,
        error: end.error,
        ..Default::default()
    })))
}

/// The response stream of `Start` and `Connect`, ended at `deadline`.
pub fn process_events<R: Send + 'static>(
    pid: u32,
    mut events: mpsc::Receiver<Event>,
    keepalive: Duration,
    deadline: Option<Instant>,
    wrap: fn(ProcessEvent) -> R,
) -> ServiceStream<R> {
    Box::pin(async_stream::stream! {
        yield Ok::<R, ConnectError>(wrap(start_event(pid)));
        loop {
            let next = tokio::time::timeout(keepalive, events.recv());
            // Past the request deadline the stream fails with
            // deadline_exceeded, as upstream envd's does, even if the end
            // event (of the process killed at that deadline) is near.
            let expired = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            let received = tokio::select! {
                biased;
                () = expired => {
                    yield Err(ConnectError::deadline_exceeded(format!("the request deadline passed while process {pid} was running")));
                    break;
                }
                received = next => received,
            };
            match received {
                Ok(Some(Event::Data(output))) => yield Ok(wrap(data_event(output))),
                Ok(Some(Event::End(end))) => {
                    yield Ok(wrap(end_event(end)));
                    break;
                }
                Ok(None) => {
                    yield Err(ConnectError::not_found(format!("process {pid} ended before its end event could be delivered")));
                    break;
                }
                Err(_idle) => yield Ok(wrap(keepalive_event())),
            }
        }
    })
}
