//! What the control-plane fuzz targets share: one runtime, a SQLite store in
//! a scratch directory (removed at exit), the rows the routes look up, and
//! the checks every answer must pass. Everything is built once per process;
//! each input is one request through the whole router, in process.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hearth_api::store::{BuildRecord, BuildShape, BuildStatus, SandboxRecord, TemplateRecord};
use hearth_api::{Store, Uploads};
use http_body_util::BodyExt;
use serde_json_value::Value;
use tower::ServiceExt;

/// The sandbox rows the targets address. Lowercase letters and digits, like
/// the ids hearth makes, so that hosts `<port>-<id>.<domain>` can name them.
pub const SANDBOX: &str = "fuzzsandbox000000001";
/// A sandbox created without public traffic: its ports (not envd's) need
/// [`TRAFFIC_TOKEN`].
pub const PRIVATE_SANDBOX: &str = "fuzzsandbox000000002";
/// A sandbox whose row names a node that is not part of the cluster.
pub const STRAY_SANDBOX: &str = "fuzzsandbox000000003";
pub const ENVD_TOKEN: &str = "fuzz-envd-access-token";
pub const TRAFFIC_TOKEN: &str = "fuzz-traffic-access-token";
/// A template of the fuzz team, with a ready build tagged `v1`.
pub const TEMPLATE_ID: &str = "fuzztemplate00000001";
pub const TEMPLATE_NAME: &str = "fuzz-tpl";
/// An upload of that template, so COPY steps naming it pass their checks.
pub const FILES_HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
/// The name the rows give the node that is nowhere.
pub const NO_SUCH_NODE: &str = "fuzz-node-gone";

pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

static SCRATCH: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_scratch() {
    if let Some(dir) = SCRATCH.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// This process's scratch directory. In /dev/shm when there is one: the
/// store commits (and syncs) on most requests, which on a disk would make
/// the sync, not our code, what the fuzzer measures.
pub fn scratch() -> &'static Path {
    SCRATCH.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("hearth-fuzz-api-{}", std::process::id()));
        // A leftover of a crashed process that had the same pid.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        // libFuzzer ends with exit(), which runs no Rust destructors.
        // SAFETY: `remove_scratch` is a plain function that only reads a
        // static set before it is registered.
        unsafe {
            libc::atexit(remove_scratch);
        }
        dir
    })
}

/// The store, opened in the scratch directory.
pub async fn open_store(name: &str) -> Store {
    let path = scratch().join(format!("{name}.db"));
    Store::open_sqlite_file(&path)
        .await
        .expect("open the store")
}

/// Uploads in the scratch directory, with [`FILES_HASH`] present for
/// [`TEMPLATE_ID`].
pub fn uploads(name: &str) -> Uploads {
    let uploads = Uploads::new(
        scratch().join(format!("{name}-uploads")),
        b"fuzz upload key".to_vec(),
    );
    let file = uploads.path(TEMPLATE_ID, FILES_HASH).expect("upload path");
    std::fs::create_dir_all(file.parent().expect("upload dir")).expect("upload dir");
    std::fs::write(&file, b"test").expect("upload file");
    uploads
}

/// A sandbox row of `team_id` on `node`, ending in five minutes (so that
/// refreshes and connects extend it and reach the node).
pub fn sandbox(id: &str, team_id: &str, node: &str) -> SandboxRecord {
    let now = hearth_api::store::now_ms();
    SandboxRecord {
        sandbox_id: id.into(),
        team_id: team_id.into(),
        template_id: "base".into(),
        alias: Some("base".into()),
        build_id: "base-build".into(),
        node: node.into(),
        client_id: "fuzz-client".into(),
        // A documentation address (RFC 5737): the node never confirms the
        // sandbox, so nothing is ever sent there; if it were, it would go
        // nowhere rather than to a service on this host.
        host_address: "192.0.2.1".into(),
        envd_version: "0.6.5".into(),
        envd_access_token: Some(ENVD_TOKEN.into()),
        traffic_access_token: None,
        allow_internet: true,
        network: serde_json_value::json!({}),
        metadata: [("purpose".to_owned(), "fuzz".to_owned())].into(),
        cpu_count: 2,
        memory_mb: 512,
        disk_size_mb: 4096,
        started_at: now,
        end_at: now + 300_000,
        paused: false,
        auto_pause: false,
    }
}

/// `base`, public, as a node registers it.
pub async fn put_base(store: &Store) {
    store
        .put_template(&TemplateRecord {
            template_id: "base".into(),
            team_id: None,
            public: true,
            build_id: "base-build".into(),
            cpu_count: 2,
            memory_mb: 512,
            disk_size_mb: 4096,
            envd_version: "0.6.5".into(),
            created_at: 0,
            updated_at: 0,
            last_spawned_at: None,
            spawn_count: 0,
            aliases: vec!["base".into()],
        })
        .await
        .expect("put base");
}

fn build(template_id: &str, team_id: &str, tags: &[&str]) -> BuildRecord {
    BuildRecord {
        build_id: hearth_api::secrets::uuid(),
        template_id: template_id.into(),
        team_id: team_id.into(),
        status: BuildStatus::Waiting,
        started: false,
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        cpu_count: 2,
        memory_mb: 1024,
        disk_size_mb: 0,
        envd_version: String::new(),
        node: String::new(),
        reason_message: None,
        reason_step: None,
        created_at: 0,
        updated_at: 0,
        finished_at: None,
    }
}

/// [`TEMPLATE_NAME`] for `team_id`, with a ready build (built on
/// [`NO_SUCH_NODE`]) tagged `default` and `v1`.
pub async fn put_team_template(store: &Store, team_id: &str) {
    let ready = build(TEMPLATE_ID, team_id, &["default", "v1"]);
    assert!(
        store
            .register_build(Some(TEMPLATE_NAME), &ready)
            .await
            .expect("register a build"),
        "the template name is taken"
    );
    assert!(
        store
            .claim_build_start(&ready.build_id, NO_SUCH_NODE)
            .await
            .expect("claim a build")
    );
    assert!(
        store
            .mark_building(&ready.build_id)
            .await
            .expect("mark a build building")
    );
    let shape = BuildShape {
        cpu_count: 2,
        memory_mb: 1024,
        disk_size_mb: 4096,
        envd_version: "0.6.5".into(),
    };
    assert!(
        store
            .finish_build_ready(&ready.build_id, &shape)
            .await
            .expect("finish a build")
    );
}

/// A new build of [`TEMPLATE_ID`] waiting to be started; its id.
pub async fn waiting_build(store: &Store, team_id: &str) -> String {
    let waiting = build(TEMPLATE_ID, team_id, &[]);
    assert!(
        store
            .register_build(None, &waiting)
            .await
            .expect("register a build")
    );
    waiting.build_id
}

/// An answer, read whole.
pub struct Answer {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

/// Sends `request` through `router` and reads the answer.
pub async fn send(router: &axum::Router, request: http::Request<axum::body::Body>) -> Answer {
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("the router is infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("an answer's body ends")
        .to_bytes()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

/// The error body every answer ≥ 400 must carry, as the SDKs parse it:
/// a JSON object with `code` equal to the status and a non-empty
/// `message`. Returns the body.
pub fn e2b_error(answer: &Answer) -> Value {
    let text = String::from_utf8_lossy(&answer.body);
    let json: Value = serde_json_value::from_slice(&answer.body).unwrap_or_else(|e| {
        panic!(
            "{}: the error body is not JSON ({e}): {text:?}",
            answer.status
        )
    });
    assert!(
        json.is_object(),
        "{}: the error body is not an object: {json}",
        answer.status
    );
    assert_eq!(
        json["code"].as_u64(),
        Some(u64::from(answer.status.as_u16())),
        "{}: the code is not the status: {json}",
        answer.status
    );
    assert!(
        json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}: no message: {json}",
        answer.status
    );
    let content_type = answer
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        content_type.starts_with("application/json"),
        "{}: an error body of type {content_type:?}: {json}",
        answer.status
    );
    json
}
