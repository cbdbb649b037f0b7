//! Arbitrary bytes as the JSON body of the control plane's JSON-taking
//! routes. The first byte picks the route (every route that reads a JSON
//! body, see `ROUTES`), the rest is the body. Each request carries a valid
//! `X-API-Key` and goes through the whole router (`hearth_api::server::app`):
//! the proxy middleware, the key check, our `JsonBody` extractor, serde's
//! derives for the SDKs' models and every check the handlers make on what
//! they parsed, down to the store.
//!
//! The store has a sandbox of the key's team, a template of the team with a
//! ready build and an upload, and every build start gets a fresh waiting
//! build, so the routes that take ids get past their lookups.
//!
//! The cluster has no nodes, so nothing leaves the process and every answer
//! is immediate. That decides the one 5xx allowed: a request that passed
//! every check and then needs a node (placing a sandbox or a build, or
//! telling the sandbox's node its new end or network) ends in a 503, as it
//! would against a cluster whose nodes are all gone. Precisely, a 5xx is
//! accepted only if it is 503 (never 500, 502, 504), on a route marked
//! `needs_node`, for a body that is well-formed JSON (or blank), with a
//! message about the node; a create's 503 must also say `should-retry:
//! false`, since the node may have begun it.
//!
//! Asserted besides: no panic; a body that is not JSON (nor blank, which
//! reads as `{}`) is a 400; every answer ≥ 400 is E2B's error body
//! `{code, message}` with `code` equal to the status; a success is a 2xx
//! with an empty or JSON body; nothing else (1xx, 3xx) is answered.
#![no_main]

#[path = "api_harness.rs"]
mod api_harness;

use std::sync::{Arc, OnceLock};

use api_harness::{NO_SUCH_NODE, SANDBOX, TEMPLATE_ID, e2b_error, runtime, send};
use hearth_api::{ApiConfig, AppState, Nodes, Store};
use http::{Method, StatusCode};
use libfuzzer_sys::fuzz_target;

/// One JSON-taking route. In `path`, `{sandbox}`, `{template}` and `{key}`
/// are the fixture's rows; `{build}` is a build made waiting for this input.
struct Route {
    method: Method,
    path: &'static str,
    /// Whether a request that passes every check goes on to a node.
    needs_node: bool,
    /// Whether it creates a sandbox (its 503 says not to retry).
    creates: bool,
}

const fn route(method: Method, path: &'static str, needs_node: bool, creates: bool) -> Route {
    Route {
        method,
        path,
        needs_node,
        creates,
    }
}

/// Every route of `hearth_api::routes::router` whose handler takes a
/// `JsonBody`.
const ROUTES: &[Route] = &[
    route(Method::POST, "/sandboxes", true, true),
    route(Method::POST, "/v2/sandboxes", true, true),
    route(Method::POST, "/sandboxes/{sandbox}/connect", true, false),
    route(Method::POST, "/v2/sandboxes/{sandbox}/connect", true, false),
    route(Method::POST, "/sandboxes/{sandbox}/timeout", true, false),
    route(Method::POST, "/sandboxes/{sandbox}/refreshes", true, false),
    route(Method::PUT, "/sandboxes/{sandbox}/network", true, false),
    route(Method::POST, "/v2/templates", false, false),
    route(Method::POST, "/v3/templates", false, false),
    route(Method::PATCH, "/templates/{template}", false, false),
    route(Method::PATCH, "/v2/templates/{template}", false, false),
    route(
        Method::POST,
        "/v2/templates/{template}/builds/{build}",
        true,
        false,
    ),
    route(Method::POST, "/templates/tags", false, false),
    route(Method::DELETE, "/templates/tags", false, false),
    route(Method::POST, "/api-keys", false, false),
    route(Method::PATCH, "/api-keys/{key}", false, false),
];

struct Fixture {
    router: axum::Router,
    store: Store,
    team_id: String,
    key: String,
    key_id: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        runtime().block_on(async {
            let store = api_harness::open_store("api").await;
            api_harness::put_base(&store).await;
            let team = store.create_team("fuzz", 10).await.expect("create a team");
            let (key_record, key) = store
                .create_api_key(&team.team_id, "fuzz")
                .await
                .expect("create a key");
            let row = api_harness::sandbox(SANDBOX, &team.team_id, NO_SUCH_NODE);
            store.insert_sandbox(&row).await.expect("insert a sandbox");
            api_harness::put_team_template(&store, &team.team_id).await;
            let state = AppState::new(
                store.clone(),
                Nodes::new(Vec::new()),
                ApiConfig::default(),
                api_harness::uploads("api"),
            );
            Fixture {
                router: hearth_api::server::app(Arc::new(state)),
                store,
                team_id: team.team_id,
                key,
                key_id: key_record.key_id,
            }
        })
    })
}

/// What `JsonBody` reads as `{}`.
fn blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

/// Whether `body` is JSON as serde_json reads it, whatever its shape.
fn well_formed(body: &[u8]) -> bool {
    blank(body) || serde_json_value::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let route = &ROUTES[usize::from(pick) % ROUTES.len()];
    let fixture = fixture();
    runtime().block_on(async {
        let mut path = route
            .path
            .replace("{sandbox}", SANDBOX)
            .replace("{template}", TEMPLATE_ID)
            .replace("{key}", &fixture.key_id);
        if path.contains("{build}") {
            // A fresh one: an earlier input may have started or superseded
            // the last, and then the start would stop before placement.
            let build = api_harness::waiting_build(&fixture.store, &fixture.team_id).await;
            path = path.replace("{build}", &build);
        }
        let request = http::Request::builder()
            .method(route.method.clone())
            .uri(&path)
            .header("x-api-key", &fixture.key)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_vec()))
            .expect("a request");
        let answer = send(&fixture.router, request).await;
        let status = answer.status;
        let what = format!(
            "{} {path} with {:?}",
            route.method,
            String::from_utf8_lossy(body)
        );
        if !well_formed(body) {
            assert!(
                status == StatusCode::BAD_REQUEST || status == StatusCode::PAYLOAD_TOO_LARGE,
                "{what}: a malformed body got {status}"
            );
        }
        if status.is_success() {
            if !answer.body.is_empty() {
                let parsed = serde_json_value::from_slice::<serde_json_value::Value>(&answer.body);
                assert!(
                    parsed.is_ok(),
                    "{what}: {status} with a body that is not JSON"
                );
            }
            return;
        }
        assert!(
            status.is_client_error() || status.is_server_error(),
            "{what}: unexpected status {status}"
        );
        let error = e2b_error(&answer);
        if status.is_server_error() {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {error}");
            assert!(
                route.needs_node,
                "{what}: a 503 from a route that needs no node: {error}"
            );
            assert!(
                well_formed(body),
                "{what}: a 503 for a malformed body: {error}"
            );
            let message = error["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("node"),
                "{what}: a 503 not about the node: {error}"
            );
            if route.creates {
                assert_eq!(
                    answer
                        .headers
                        .get("should-retry")
                        .and_then(|v| v.to_str().ok()),
                    Some("false"),
                    "{what}: a create's 503 that invites a retry"
                );
            }
        }
    });
});
