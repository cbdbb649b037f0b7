//! A node's sandbox service as the control plane calls it: the generated
//! gRPC client, with every answer about where a sandbox runs (or that it is
//! gone) written into the node's live table (`live.rs`), which the proxy
//! routes by. Callers cannot forget to: it is the only client there is.

use std::collections::HashSet;
use std::sync::Arc;

use hearth_proto::auth::NodeChannel;
use hearth_proto::orchestrator::sandbox_service_client::SandboxServiceClient;
use hearth_proto::orchestrator::{
    RunningSandbox, SandboxConsole, SandboxConsoleRequest, SandboxCreateRequest,
    SandboxCreateResponse, SandboxDeleteRequest, SandboxGetRequest, SandboxListResponse,
    SandboxLogs, SandboxLogsRequest, SandboxMetricSeries, SandboxMetricSeriesRequest,
    SandboxPauseRequest, SandboxResumeRequest, SandboxSnapshot, SandboxSnapshotRequest,
    SandboxUpdateRequest, SnapshotDeleteRequest,
};
use tonic::{IntoRequest, Response, Status};

use super::live::LiveTable;

/// The node's `SandboxService`, keeping its live table current.
#[derive(Debug, Clone)]
pub struct SandboxClient {
    inner: SandboxServiceClient<NodeChannel>,
    live: Arc<LiveTable>,
}

/// A node that says it has no such sandbox: it is gone for good (ids are
/// never reused).
fn note_missing<T>(live: &LiveTable, id: &str, answer: &Result<T, Status>) {
    if matches!(answer, Err(status) if status.code() == tonic::Code::NotFound) {
        live.end(id);
    }
}

/// Revives a sandbox whose delete did not end in the node's "done" (an
/// error, or the caller's deadline dropping the call).
struct ReviveUnlessDone<'a> {
    live: &'a LiveTable,
    id: &'a str,
    done: bool,
}

impl Drop for ReviveUnlessDone<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.live.revive(self.id);
        }
    }
}

impl SandboxClient {
    pub(super) fn new(channel: NodeChannel, live: Arc<LiveTable>) -> Self {
        Self {
            inner: SandboxServiceClient::new(channel),
            live,
        }
    }

    pub async fn create(
        &mut self,
        request: impl IntoRequest<SandboxCreateRequest>,
    ) -> Result<Response<SandboxCreateResponse>, Status> {
        let request = request.into_request();
        let id = request
            .get_ref()
            .sandbox
            .as_ref()
            .map(|config| config.sandbox_id.clone());
        let response = self.inner.create(request).await?;
        if let Some(id) = id {
            self.live.created(&id, &response.get_ref().host_address);
        }
        Ok(response)
    }

    pub async fn get(
        &mut self,
        request: impl IntoRequest<SandboxGetRequest>,
    ) -> Result<Response<RunningSandbox>, Status> {
        let request = request.into_request();
        let id = request.get_ref().sandbox_id.clone();
        let asked = self.live.epoch();
        let answer = self.inner.get(request).await;
        if let Ok(response) = &answer {
            let sandbox = response.get_ref();
            // A paused one runs nowhere.
            if !sandbox.paused {
                self.live
                    .reported(&sandbox.sandbox_id, &sandbox.host_address, asked);
            }
        }
        note_missing(&self.live, &id, &answer);
        answer
    }

    pub async fn list(
        &mut self,
        request: impl IntoRequest<()>,
    ) -> Result<Response<SandboxListResponse>, Status> {
        let asked = self.live.epoch();
        let response = self.inner.list(request).await?;
        let listed: HashSet<&str> = response
            .get_ref()
            .sandboxes
            .iter()
            .map(|s| s.sandbox_id.as_str())
            .collect();
        self.live.keep_listed(&listed, asked);
        Ok(response)
    }

    pub async fn update(
        &mut self,
        request: impl IntoRequest<SandboxUpdateRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_request();
        let id = request.get_ref().sandbox_id.clone();
        let answer = self.inner.update(request).await;
        note_missing(&self.live, &id, &answer);
        answer
    }

    /// Deletes a sandbox. It counts as gone from the moment this is called,
    /// so its proxied streams end with the kill rather than after the VM is
    /// torn down; a delete that fails, or is given up on, takes that back
    /// (the node is then asked again on the sandbox's next request).
    pub async fn delete(
        &mut self,
        request: impl IntoRequest<SandboxDeleteRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_request();
        let id = request.get_ref().sandbox_id.clone();
        self.live.end(&id);
        let mut undo = ReviveUnlessDone {
            live: &self.live,
            id: &id,
            done: false,
        };
        let answer = self.inner.delete(request).await;
        undo.done = answer.is_ok()
            || matches!(&answer, Err(status) if status.code() == tonic::Code::NotFound);
        answer
    }

    /// Pauses a sandbox: from then on it runs nowhere (its proxied streams
    /// end) until a resume.
    pub async fn pause(
        &mut self,
        request: impl IntoRequest<SandboxPauseRequest>,
    ) -> Result<Response<RunningSandbox>, Status> {
        let request = request.into_request();
        let id = request.get_ref().sandbox_id.clone();
        let answer = self.inner.pause(request).await;
        if answer.is_ok() {
            self.live.paused(&id);
        }
        note_missing(&self.live, &id, &answer);
        answer
    }

    /// Resumes a paused sandbox, at the address the node gives it now.
    pub async fn resume(
        &mut self,
        request: impl IntoRequest<SandboxResumeRequest>,
    ) -> Result<Response<RunningSandbox>, Status> {
        let request = request.into_request();
        let id = request.get_ref().sandbox_id.clone();
        let answer = self.inner.resume(request).await;
        if let Ok(response) = &answer {
            self.live.created(&id, &response.get_ref().host_address);
        }
        note_missing(&self.live, &id, &answer);
        answer
    }

    /// Snapshots a running sandbox, which runs on where it was.
    pub async fn snapshot(
        &mut self,
        request: impl IntoRequest<SandboxSnapshotRequest>,
    ) -> Result<Response<SandboxSnapshot>, Status> {
        let request = request.into_request();
        let id = request.get_ref().sandbox_id.clone();
        let answer = self.inner.snapshot(request).await;
        note_missing(&self.live, &id, &answer);
        answer
    }

    /// Snapshots name no sandbox: nothing to note.
    pub async fn delete_snapshot(
        &mut self,
        request: impl IntoRequest<SnapshotDeleteRequest>,
    ) -> Result<Response<()>, Status> {
        self.inner.delete_snapshot(request).await
    }

    pub async fn console(
        &mut self,
        request: impl IntoRequest<SandboxConsoleRequest>,
    ) -> Result<Response<SandboxConsole>, Status> {
        let request = request.into_request();
        let id = request.get_ref().sandbox_id.clone();
        let answer = self.inner.console(request).await;
        note_missing(&self.live, &id, &answer);
        answer
    }

    /// A sandbox's log. Not found means the node keeps no log of it, which
    /// says nothing of whether it runs.
    pub async fn logs(
        &mut self,
        request: impl IntoRequest<SandboxLogsRequest>,
    ) -> Result<Response<SandboxLogs>, Status> {
        self.inner.logs(request).await
    }

    /// A sandbox's sampled metrics; not found as for [`Self::logs`].
    pub async fn metric_series(
        &mut self,
        request: impl IntoRequest<SandboxMetricSeriesRequest>,
    ) -> Result<Response<SandboxMetricSeries>, Status> {
        self.inner.metric_series(request).await
    }
}
