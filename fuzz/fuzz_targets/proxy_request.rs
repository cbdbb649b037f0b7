//! Arbitrary requests for sandbox traffic through the whole router
//! (`hearth_api::server::app`), so that the proxy middleware's target
//! parsing (`E2b-Sandbox-Id`/`E2b-Sandbox-Port` headers, hosts
//! `<port>-<id>.<domain>`), its traffic-token check and its signed `/files`
//! URL lookup run on what the fuzzer makes.
//!
//! Input: one byte of flags, then fields separated by `\n`: the Host, the
//! `E2b-Sandbox-Id`, the `E2b-Sandbox-Port`, the path and query, and the
//! `E2B-Traffic-Access-Token`. Flags: bits 0–1 the method (GET, POST, PUT,
//! DELETE); bits 2–5 whether the Host, id, port and token headers are sent;
//! bit 6 whether the proxy has a configured domain ([`DOMAIN`]); bit 7
//! whether the URI is in absolute form (`http://<host><path>`, as HTTP/2
//! requests arrive). Inputs with a field that is no header value or no URI
//! are skipped: hyper never delivers those.
//!
//! The store has three sandboxes: [`SANDBOX`] and [`PRIVATE_SANDBOX`] (which
//! needs its traffic token on ports other than envd's) on a node whose
//! address refuses connections, and [`STRAY_SANDBOX`] on a node that is not
//! part of the cluster. No node ever confirms a sandbox, so nothing is ever
//! forwarded and nothing leaves the process but refused connects to the
//! loopback; every answer is immediate.
//!
//! Asserted: no panic; the answer is one the proxy documents (400 for a
//! target it cannot read, 401 for a signed URL that matches nothing, 403
//! without the traffic token, 502 for a sandbox that does not run, 503 when
//! its node does not answer) or, for a request that names no sandbox, the
//! API's own (204 /health, 200 /openapi.json, 401 without a key, 404, 405,
//! 501); every answer ≥ 400 is E2B-shaped JSON with `code` equal to the
//! status, and a 502 names the sandbox. A request named by the headers gets
//! exactly the answer the headers' documented meaning gives; one that names
//! no sandbox never reaches the sandbox answers (403, 502, 503) without
//! naming one by host or signed URL.
#![no_main]

#[path = "api_harness.rs"]
mod api_harness;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use api_harness::{
    ENVD_TOKEN, NO_SUCH_NODE, PRIVATE_SANDBOX, SANDBOX, STRAY_SANDBOX, TRAFFIC_TOKEN, e2b_error,
    runtime, send,
};
use hearth_api::config::NodeDeadlines;
use hearth_api::{ApiConfig, AppState, Node, Nodes};
use http::{HeaderValue, Method, StatusCode};
use libfuzzer_sys::fuzz_target;

/// The domain of host routing when bit 6 is set.
const DOMAIN: &str = "sandbox.fuzz.test";
const ENVD_PORT: u16 = 49983;
const CLOSED_NODE: &str = "fuzz-node-closed";
/// The private sandbox's envd token: each sandbox has its own, or a signed
/// URL would match both (and be refused as ambiguous).
const PRIVATE_ENVD_TOKEN: &str = "fuzz-envd-access-token-2";

struct Fixture {
    plain: axum::Router,
    with_domain: axum::Router,
}

/// A loopback address nothing listens on: the port of a listener that was
/// just closed.
fn refusing_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let address = listener.local_addr().expect("the listener's address");
    drop(listener);
    assert!(
        std::net::TcpStream::connect(address).is_err(),
        "{address} accepts connections; the node must refuse them"
    );
    format!("http://{address}")
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        runtime().block_on(async {
            let store = api_harness::open_store("proxy").await;
            let team = store.create_team("fuzz", 10).await.expect("create a team");
            let mut public = api_harness::sandbox(SANDBOX, &team.team_id, CLOSED_NODE);
            public.envd_access_token = Some(ENVD_TOKEN.into());
            let mut private = api_harness::sandbox(PRIVATE_SANDBOX, &team.team_id, CLOSED_NODE);
            private.envd_access_token = Some(PRIVATE_ENVD_TOKEN.into());
            private.traffic_access_token = Some(TRAFFIC_TOKEN.into());
            let stray = api_harness::sandbox(STRAY_SANDBOX, &team.team_id, NO_SUCH_NODE);
            for row in [public, private, stray] {
                store.insert_sandbox(&row).await.expect("insert a sandbox");
            }
            // Made in the runtime: the node's channel spawns its worker.
            let node = Node::new(CLOSED_NODE, &refusing_address()).expect("a node");
            let nodes = Nodes::new(vec![node]);
            let config = ApiConfig {
                // Refused connects answer at once; this bounds anything else.
                node_deadlines: NodeDeadlines {
                    probe: Duration::from_millis(250),
                    ..NodeDeadlines::default()
                },
                ..ApiConfig::default()
            };
            let router = |config: ApiConfig| {
                let state = AppState::new(
                    store.clone(),
                    nodes.clone(),
                    config,
                    api_harness::uploads("proxy"),
                );
                hearth_api::server::app(Arc::new(state))
            };
            Fixture {
                plain: router(config.clone()),
                with_domain: router(ApiConfig {
                    domain: Some(DOMAIN.into()),
                    ..config
                }),
            }
        })
    })
}

/// What the proxy must answer a request its headers name: the headers'
/// documented meaning, against the fixture's rows.
fn by_headers(
    id: &HeaderValue,
    port: Option<&HeaderValue>,
    token: Option<&HeaderValue>,
) -> StatusCode {
    let Ok(id) = id.to_str() else {
        return StatusCode::BAD_REQUEST;
    };
    let port = match port.map(HeaderValue::to_str) {
        None => ENVD_PORT,
        Some(Ok(port)) => match port.trim().parse::<u16>() {
            Ok(port) => port,
            Err(_) => return StatusCode::BAD_REQUEST,
        },
        Some(Err(_)) => return StatusCode::BAD_REQUEST,
    };
    let has_token = token.is_some_and(|t| t.as_bytes() == TRAFFIC_TOKEN.as_bytes());
    match id.trim() {
        PRIVATE_SANDBOX if port != ENVD_PORT && !has_token => StatusCode::FORBIDDEN,
        // Its node refuses connections, so nobody can say where it runs.
        SANDBOX | PRIVATE_SANDBOX => StatusCode::SERVICE_UNAVAILABLE,
        // Its node left the cluster (and took its VMs), or there is no row.
        _ => StatusCode::BAD_GATEWAY,
    }
}

const METHODS: [Method; 4] = [Method::GET, Method::POST, Method::PUT, Method::DELETE];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut fields = rest.split(|b| *b == b'\n');
    let mut field = || fields.next().unwrap_or_default();
    let (host, id, port, target, token) = (field(), field(), field(), field(), field());
    let sent = |bit: u8| flags & (1 << bit) != 0;
    let header = |bit: u8, value: &[u8]| -> Result<Option<HeaderValue>, ()> {
        if !sent(bit) {
            return Ok(None);
        }
        HeaderValue::from_bytes(value).map(Some).map_err(|_| ())
    };
    let (Ok(host_header), Ok(id_header), Ok(port_header), Ok(token_header)) = (
        header(2, host),
        header(3, id),
        header(4, port),
        header(5, token),
    ) else {
        return;
    };
    let target = if target.is_empty() {
        b"/".as_slice()
    } else {
        target
    };
    let uri = if sent(7) {
        let mut absolute = b"http://".to_vec();
        absolute.extend_from_slice(host);
        absolute.extend_from_slice(target);
        http::Uri::try_from(absolute)
    } else {
        http::Uri::try_from(target)
    };
    let Ok(uri) = uri else {
        return;
    };
    let method = METHODS[usize::from(flags & 0b11)].clone();
    let mut request = http::Request::builder()
        .method(method.clone())
        .uri(uri.clone());
    for (name, value) in [
        ("host", &host_header),
        ("e2b-sandbox-id", &id_header),
        ("e2b-sandbox-port", &port_header),
        ("e2b-traffic-access-token", &token_header),
    ] {
        if let Some(value) = value {
            request = request.header(name, value);
        }
    }
    let request = request.body(axum::body::Body::empty()).expect("a request");
    let fixture = fixture();
    let router = if sent(6) {
        &fixture.with_domain
    } else {
        &fixture.plain
    };
    let answer = runtime().block_on(send(router, request));
    let status = answer.status;
    let what = format!(
        "{method} {uri} host {host_header:?} id {id_header:?} port {port_header:?} token {token_header:?}"
    );

    if status.is_success() {
        assert!(
            id_header.is_none(),
            "{what}: {status} for a request its headers proxy"
        );
        assert!(
            matches!(
                (status, uri.path()),
                (StatusCode::NO_CONTENT, "/health") | (StatusCode::OK, "/openapi.json")
            ),
            "{what}: {status}"
        );
        return;
    }
    let error = e2b_error(&answer);
    if status == StatusCode::BAD_GATEWAY {
        assert!(
            error["sandboxId"].is_string(),
            "{what}: a 502 that names no sandbox: {error}"
        );
    }
    if let Some(id) = &id_header {
        let expected = by_headers(id, port_header.as_ref(), token_header.as_ref());
        assert_eq!(status, expected, "{what}: {error}");
        return;
    }
    assert!(
        [400, 401, 403, 404, 405, 501, 502, 503].contains(&status.as_u16()),
        "{what}: unexpected status: {error}"
    );
    // Without the headers, only the host or a signed URL names a sandbox.
    let named_host = {
        let mut hosts = String::from_utf8_lossy(host).to_ascii_lowercase();
        if let Some(authority) = uri.authority() {
            hosts.push(' ');
            hosts.push_str(&authority.as_str().to_ascii_lowercase());
        }
        hosts
    };
    match status {
        StatusCode::FORBIDDEN => assert!(
            named_host.contains(PRIVATE_SANDBOX),
            "{what}: a 403 for a host that does not name the private sandbox: {error}"
        ),
        StatusCode::BAD_GATEWAY => {
            let sandbox = error["sandboxId"].as_str().unwrap_or_default();
            assert!(
                !sandbox.is_empty() && named_host.contains(sandbox),
                "{what}: a 502 for a sandbox the host does not name: {error}"
            );
        }
        StatusCode::SERVICE_UNAVAILABLE => assert!(
            named_host.contains(SANDBOX)
                || named_host.contains(PRIVATE_SANDBOX)
                || uri.path() == "/files",
            "{what}: a 503 for a request that names no sandbox of the refusing node: {error}"
        ),
        _ => {}
    }
});
