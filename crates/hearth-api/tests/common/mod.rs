//! A control plane served on a loopback port over a fake node, with a team
//! and key to call it with. The database is a fresh SQLite file, or the
//! PostgreSQL named by HEARTH_TEST_DATABASE_URL (shared; every test makes
//! its own teams, so tests do not see each other's sandboxes).

#![allow(dead_code)]

pub mod fake_node;

use std::sync::Arc;

use hearth_api::store::TemplateRecord;
use hearth_api::{ApiConfig, AppState, Node, Nodes, Store, Uploads};

pub use fake_node::FakeNode;

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

pub struct Harness {
    pub url: String,
    pub state: Arc<AppState>,
    pub node: FakeNode,
    pub key: String,
    pub team_id: String,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

pub async fn store(
    dir: &tempfile::TempDir,
) -> Result<Store, Box<dyn std::error::Error + Send + Sync>> {
    let url = std::env::var("HEARTH_TEST_DATABASE_URL").unwrap_or_else(|_| {
        format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("hearth.db").display()
        )
    });
    Ok(Store::open(&url).await?)
}

/// A row for sandbox `id` of nobody's team.
pub fn record(id: &str) -> hearth_api::store::SandboxRecord {
    hearth_api::store::SandboxRecord {
        sandbox_id: id.into(),
        team_id: "nobody".into(),
        template_id: "base".into(),
        alias: None,
        build_id: "b".into(),
        node: "elsewhere".into(),
        client_id: "c".into(),
        host_address: "127.0.0.1".into(),
        envd_version: "0.6.5".into(),
        envd_access_token: None,
        traffic_access_token: None,
        allow_internet: true,
        network: serde_json::json!({}),
        metadata: Default::default(),
        cpu_count: 1,
        memory_mb: 128,
        disk_size_mb: 0,
        started_at: 0,
        end_at: i64::MAX,
        paused: false,
        paused_memory: true,
        auto_pause: false,
        auto_pause_memory: true,
        auto_resume_secs: None,
    }
}

pub fn template(id: &str, team: Option<&str>) -> TemplateRecord {
    TemplateRecord {
        template_id: id.into(),
        team_id: team.map(str::to_owned),
        public: team.is_none(),
        build_id: "build-1".into(),
        cpu_count: 2,
        memory_mb: 512,
        disk_size_mb: 4096,
        envd_version: "0.6.5".into(),
        created_at: 0,
        updated_at: 0,
        last_spawned_at: None,
        spawn_count: 0,
        aliases: vec![],
    }
}

impl Harness {
    pub async fn start() -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Self::with_config(ApiConfig::default()).await
    }

    pub async fn with_config(
        config: ApiConfig,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let (node, address) = FakeNode::start().await?;
        // Named uniquely: tests share a PostgreSQL, and reconciling one
        // harness's node must not touch another's sandboxes.
        let name = format!("fake-{}", uuid::Uuid::new_v4());
        Self::over(node, vec![Node::new(&name, &address)?], config).await
    }

    pub async fn over(
        node: FakeNode,
        nodes: Vec<Node>,
        config: ApiConfig,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Self::serving(node, nodes, config, None).await
    }

    /// A harness whose port also serves HTTPS with `tls`.
    pub async fn with_tls(
        config: ApiConfig,
        tls: std::sync::Arc<tokio_rustls::rustls::ServerConfig>,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let (node, address) = FakeNode::start().await?;
        let name = format!("fake-{}", uuid::Uuid::new_v4());
        Self::serving(node, vec![Node::new(&name, &address)?], config, Some(tls)).await
    }

    async fn serving(
        node: FakeNode,
        nodes: Vec<Node>,
        config: ApiConfig,
        tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let dir = tempfile::tempdir()?;
        let store = store(&dir).await?;
        let mut base = template("base", None);
        base.aliases = vec!["base".into()];
        store.put_template(&base).await?;
        let team = store.create_team("tests", 10).await?;
        let (_, key) = store.create_api_key(&team.team_id, "tests").await?;
        let uploads = Uploads::new(dir.path().join("uploads"), b"test upload key".to_vec());
        let state = Arc::new(AppState::new(store, Nodes::new(nodes), config, uploads));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(hearth_api::listener::serve(
            listener,
            hearth_api::server::app(state.clone()),
            tls,
            std::future::pending(),
        ));
        Ok(Self {
            url,
            state,
            node,
            key,
            team_id: team.team_id,
            http: reqwest::Client::new(),
            _dir: dir,
        })
    }

    /// A key of a new team.
    pub async fn other_team(
        &self,
        max_sandboxes: i64,
    ) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        let team = self.state.store.create_team("other", max_sandboxes).await?;
        Ok(self
            .state
            .store
            .create_api_key(&team.team_id, "other")
            .await?
            .1)
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .header("X-API-Key", &self.key)
    }

    /// Creates a sandbox from `base` with `body` merged in; returns its id.
    pub async fn create(
        &self,
        body: serde_json::Value,
    ) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        let mut full = serde_json::json!({ "templateID": "base" });
        if let (Some(full), Some(extra)) = (full.as_object_mut(), body.as_object()) {
            for (k, v) in extra {
                full.insert(k.clone(), v.clone());
            }
        }
        let response = self
            .request(reqwest::Method::POST, "/v2/sandboxes")
            .json(&full)
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        if status != 201 {
            return Err(format!("create answered {status}: {body}").into());
        }
        Ok(body["sandboxID"].as_str().unwrap_or_default().to_owned())
    }
}

impl Harness {
    /// Asserts that `method path` (with the harness's key and no body)
    /// fails with `status` and E2B's error body.
    pub async fn expect_error(
        &self,
        method: reqwest::Method,
        path: &str,
        status: u16,
    ) -> TestResult {
        assert_error(self.request(method, path).send().await?, status).await
    }
}

/// Asserts the E2B error body and status.
pub async fn assert_error(response: reqwest::Response, status: u16) -> TestResult {
    assert_eq!(response.status().as_u16(), status);
    let body: serde_json::Value = response.json().await?;
    assert_eq!(body["code"], status, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    Ok(())
}
