//! What every request handler shares.

use std::sync::Arc;

use crate::builds::Builds;
use crate::config::ApiConfig;
use crate::extract::KeyTouches;
use crate::nodes::Nodes;
use crate::proxy::{SignedUrls, Upstream};
use crate::starting::Starting;
use crate::store::Store;
use crate::uploads::Uploads;

#[derive(Debug)]
pub struct AppState {
    pub store: Store,
    pub nodes: Nodes,
    pub config: ApiConfig,
    pub key_touches: KeyTouches,
    /// HTTP clients for sandbox traffic and envd's metrics, per sandbox.
    pub upstream: Upstream,
    /// Bounds the lookups of signed `/files` URLs that name no sandbox.
    pub signed_urls: SignedUrls,
    /// Creates in flight per team.
    pub starting: Starting,
    /// Build-context archives and the key their upload URLs are signed with.
    pub uploads: Uploads,
    /// Template builds this process runs.
    pub builds: Builds,
    /// Resumes in progress, one per sandbox.
    pub resumes: crate::resumes::Resumes,
    /// Counts and times what the API does, for operators.
    pub telemetry: Arc<crate::telemetry::ApiTelemetry>,
}

impl AppState {
    pub fn new(store: Store, nodes: Nodes, config: ApiConfig, uploads: Uploads) -> Self {
        let builds = Builds::new(config.max_concurrent_builds);
        Self {
            store,
            nodes,
            config,
            key_touches: KeyTouches::default(),
            upstream: Upstream::new(),
            signed_urls: SignedUrls::default(),
            starting: Starting::default(),
            uploads,
            builds,
            resumes: crate::resumes::Resumes::default(),
            telemetry: Arc::default(),
        }
    }
}
