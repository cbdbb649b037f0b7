//! The sandbox proxy over a fake node whose sandboxes live at 127.0.0.1
//! (one slot, which each create reuses) unless a test gives them other
//! loopback addresses: routing by header, by host and by signed URL,
//! streaming, upgrades, the traffic token, the headers that stop, routes
//! checked against the node, exchanges that end with their sandbox, and
//! E2B's 502 bodies.

mod common;

use axum::body::Body;
use axum::routing::{get, post};
use common::{Harness, TestResult, assert_error};
use futures::StreamExt;
use hearth_proto::orchestrator as pb;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

/// A "guest service" on a loopback port; returns the port. `/held` sends
/// one chunk, then the rest only once `release` is notified.
async fn guest_service() -> std::io::Result<u16> {
    guest_service_with(Arc::new(Notify::new())).await
}

fn echo(uri: axum::http::Uri, headers: axum::http::HeaderMap) -> axum::Json<Value> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    axum::Json(json!({
        "uri": uri.to_string(),
        "token": header("x-access-token"),
        "host": header("host"),
        "secret": header("x-secret"),
        "cookie": header("cookie"),
        "apiKey": header("x-api-key"),
        "authorization": header("authorization"),
    }))
}

async fn guest_service_with(release: Arc<Notify>) -> std::io::Result<u16> {
    let app =
        axum::Router::new()
            .route(
                "/echo",
                get(
                    |uri: axum::http::Uri, headers: axum::http::HeaderMap| async move {
                        echo(uri, headers)
                    },
                ),
            )
            .route(
                "/held",
                get(move || {
                    let release = release.clone();
                    async move {
                        let chunks = futures::stream::unfold(0, move |n| {
                            let release = release.clone();
                            async move {
                                match n {
                                    0 => Some((Ok::<_, std::io::Error>(b"first".to_vec()), 1)),
                                    1 => {
                                        release.notified().await;
                                        Some((Ok(b"second".to_vec()), 2))
                                    }
                                    _ => None,
                                }
                            }
                        });
                        Body::from_stream(chunks)
                    }
                }),
            )
            .route(
                "/count",
                post(|body: Body| async move {
                    let mut stream = body.into_data_stream();
                    let mut total = 0usize;
                    while let Some(chunk) = stream.next().await {
                        total += chunk.map(|c| c.len()).unwrap_or(0);
                    }
                    total.to_string()
                }),
            )
            .route(
                "/big",
                get(|| async {
                    let chunks = futures::stream::iter(
                        (0..320).map(|_| Ok::<_, std::io::Error>(vec![7u8; 64 * 1024])),
                    );
                    Body::from_stream(chunks)
                }),
            );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(axum::serve(listener, app).into_future());
    Ok(port)
}

/// A service that answers any request with 101 and then upper-cases what
/// it receives.
async fn upgrade_service() -> std::io::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if conn.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                // Only a real upgrade request is switched.
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if !head.contains("\r\nupgrade: shout\r\n")
                    || !head.contains("\r\nconnection: upgrade\r\n")
                {
                    let _ = conn
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let _ = conn
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: shout\r\n\r\n")
                    .await;
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0
                        || conn
                            .write_all(&buf[..n].to_ascii_uppercase())
                            .await
                            .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    Ok(port)
}

/// A connection through the proxy to `port` of sandbox `id`, upgraded
/// (the guest's 101 received).
async fn upgraded(
    h: &Harness,
    id: &str,
    port: u16,
) -> Result<tokio::net::TcpStream, Box<dyn std::error::Error + Send + Sync>> {
    let address = h.url.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&address).await?;
    conn.write_all(
        format!(
            "GET /socket HTTP/1.1\r\nHost: {address}\r\nConnection: Upgrade\r\nUpgrade: shout\r\n\
             E2b-Sandbox-Id: {id}\r\nE2b-Sandbox-Port: {port}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).await? == 0 {
            return Err("closed before the response head".into());
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(format!("not upgraded: {}", String::from_utf8_lossy(&head)).into());
    }
    Ok(conn)
}

fn to_sandbox(h: &Harness, path: &str, id: &str, port: u16) -> reqwest::RequestBuilder {
    h.http
        .get(format!("{}{path}", h.url))
        .header("E2b-Sandbox-Id", id)
        .header("E2b-Sandbox-Port", port.to_string())
}

#[tokio::test]
async fn requests_reach_the_sandbox_port_by_header_or_host_and_stream() -> TestResult {
    let h = Harness::start().await?;
    let port = guest_service().await?;
    let id = h.create(json!({})).await?;
    let echoed: Value = to_sandbox(&h, "/echo?a=1&b=two", &id, port)
        .header("X-Access-Token", "passed-through")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(echoed["uri"], "/echo?a=1&b=two");
    assert_eq!(echoed["token"], "passed-through");
    let by_host: Value = h
        .http
        .get(format!("{}/echo?via=host", h.url))
        .header("Host", format!("{port}-{id}.sandboxes.test"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(by_host["uri"], "/echo?via=host");

    // 20 MiB each way, in chunks, without the proxy holding it all.
    let upload =
        futures::stream::iter((0..320).map(|_| Ok::<_, std::io::Error>(vec![1u8; 64 * 1024])));
    let counted = h
        .http
        .post(format!("{}/count", h.url))
        .header("E2b-Sandbox-Id", &id)
        .header("E2b-Sandbox-Port", port.to_string())
        .body(reqwest::Body::wrap_stream(upload))
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(counted, (320 * 64 * 1024).to_string());
    let mut download = to_sandbox(&h, "/big", &id, port)
        .send()
        .await?
        .bytes_stream();
    let mut total = 0;
    while let Some(chunk) = download.next().await {
        let chunk = chunk?;
        assert!(chunk.iter().all(|b| *b == 7));
        total += chunk.len();
    }
    assert_eq!(total, 320 * 64 * 1024);
    Ok(())
}

#[tokio::test]
async fn unknown_sandboxes_and_closed_ports_get_e2bs_502() -> TestResult {
    let h = Harness::start().await?;
    let missing = to_sandbox(&h, "/health", "nosuchsandbox", 49983)
        .send()
        .await?;
    assert_eq!(missing.status(), 502);
    let body: Value = missing.json().await?;
    assert_eq!(
        body,
        json!({"sandboxId": "nosuchsandbox", "message": "The sandbox was not found", "code": 502})
    );
    let id = h.create(json!({})).await?;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = closed.local_addr()?.port();
    drop(closed);
    let refused = to_sandbox(&h, "/", &id, port).send().await?;
    assert_eq!(refused.status(), 502);
    let body: Value = refused.json().await?;
    assert_eq!(body["sandboxId"], id.as_str());
    assert_eq!(body["code"], 502);
    let bad_port = h
        .http
        .get(format!("{}/", h.url))
        .header("E2b-Sandbox-Id", &id)
        .header("E2b-Sandbox-Port", "http")
        .send()
        .await?;
    assert_error(bad_port, 400).await?;
    // Once killed, the sandbox is gone for the proxy too.
    h.request(reqwest::Method::DELETE, &format!("/sandboxes/{id}"))
        .send()
        .await?;
    assert_eq!(to_sandbox(&h, "/", &id, port).send().await?.status(), 502);
    Ok(())
}

#[tokio::test]
async fn restricted_sandboxes_need_the_traffic_token_on_their_ports() -> TestResult {
    let h = Harness::start().await?;
    let port = guest_service().await?;
    let created: Value = h
        .request(reqwest::Method::POST, "/v2/sandboxes")
        .json(&json!({"templateID": "base", "network": {"allowPublicTraffic": false}}))
        .send()
        .await?
        .json()
        .await?;
    let id = created["sandboxID"].as_str().ok_or("no id")?;
    let token = created["trafficAccessToken"]
        .as_str()
        .ok_or("no traffic token")?;
    assert_error(to_sandbox(&h, "/echo", id, port).send().await?, 403).await?;
    let wrong = to_sandbox(&h, "/echo", id, port).header("E2B-Traffic-Access-Token", "nope");
    assert_error(wrong.send().await?, 403).await?;
    let right = to_sandbox(&h, "/echo", id, port).header("E2B-Traffic-Access-Token", token);
    assert_eq!(right.send().await?.status(), 200);
    Ok(())
}

#[tokio::test]
async fn upgrades_are_spliced_both_ways() -> TestResult {
    let h = Harness::start().await?;
    let port = upgrade_service().await?;
    let id = h.create(json!({})).await?;
    let mut conn = upgraded(&h, &id, port).await?;
    for word in ["hello", "both ways"] {
        conn.write_all(word.as_bytes()).await?;
        let mut got = vec![0u8; word.len()];
        conn.read_exact(&mut got).await?;
        assert_eq!(got, word.to_uppercase().as_bytes());
    }
    Ok(())
}

#[tokio::test]
async fn http2_clients_are_proxied_too() -> TestResult {
    let h = Harness::start().await?;
    let port = guest_service().await?;
    let id = h.create(json!({})).await?;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build()?;
    let response = h2
        .get(format!("{}/echo?over=h2", h.url))
        .header("E2b-Sandbox-Id", &id)
        .header("E2b-Sandbox-Port", port.to_string())
        .send()
        .await?;
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let echoed: Value = response.json().await?;
    assert_eq!(echoed["uri"], "/echo?over=h2");
    let api = h2
        .get(format!("{}/v2/sandboxes", h.url))
        .header("X-API-Key", &h.key)
        .send()
        .await?;
    assert_eq!(api.status(), 200);
    Ok(())
}

#[tokio::test]
async fn the_proxy_alone_carries_sandbox_traffic_only() -> TestResult {
    let h = Harness::start().await?;
    let port = guest_service().await?;
    let id = h.create(json!({})).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let proxy_url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(hearth_api::server::serve_proxy(
        h.state.clone(),
        listener,
        None,
    ));
    let echoed: Value = h
        .http
        .get(format!("{proxy_url}/echo?alone=1"))
        .header("E2b-Sandbox-Id", &id)
        .header("E2b-Sandbox-Port", port.to_string())
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(echoed["uri"], "/echo?alone=1");
    // The API is not served there.
    let api = h
        .http
        .get(format!("{proxy_url}/v2/sandboxes"))
        .header("X-API-Key", &h.key)
        .send()
        .await?;
    assert_error(api, 400).await?;
    Ok(())
}

#[tokio::test]
async fn responses_stream_without_waiting_for_their_end() -> TestResult {
    let h = Harness::start().await?;
    let release = Arc::new(Notify::new());
    let port = guest_service_with(release.clone()).await?;
    let id = h.create(json!({})).await?;
    let mut body = to_sandbox(&h, "/held", &id, port)
        .send()
        .await?
        .bytes_stream();
    // A proxy that buffered the response would never pass on the first
    // chunk: the guest sends the rest only after the client has it.
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), body.next())
        .await
        .map_err(|_| "the first chunk did not arrive before the response ended")?
        .ok_or("no body")??;
    assert_eq!(&first[..], b"first");
    release.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk?);
    }
    assert_eq!(rest, b"second");
    Ok(())
}

#[tokio::test]
async fn hop_by_hop_headers_stop_at_the_proxy() -> TestResult {
    let h = Harness::start().await?;
    let port = guest_service().await?;
    let id = h.create(json!({})).await?;
    let echoed: Value = to_sandbox(&h, "/echo", &id, port)
        .header("Connection", "x-secret")
        .header("X-Secret", "1")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        echoed["secret"], "",
        "a header named by Connection was forwarded"
    );
    // HTTP/2 requests reach the guest with a Host and joined cookies, as
    // HTTP/1.1 ones do.
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build()?;
    let echoed: Value = h2
        .get(format!("{}/echo", h.url))
        .header("E2b-Sandbox-Id", &id)
        .header("E2b-Sandbox-Port", port.to_string())
        .header("Cookie", "a=1")
        .header("Cookie", "b=2")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(echoed["host"], h.url.trim_start_matches("http://"));
    assert_eq!(echoed["cookie"], "a=1; b=2");
    Ok(())
}

#[tokio::test]
async fn a_killed_sandbox_takes_its_upgraded_connections_with_it() -> TestResult {
    let h = Harness::start().await?;
    let port = upgrade_service().await?;
    let id = h.create(json!({})).await?;
    let mut conn = upgraded(&h, &id, port).await?;
    h.request(reqwest::Method::DELETE, &format!("/sandboxes/{id}"))
        .send()
        .await?;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), conn.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the spliced connection outlived its sandbox: {read:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_control_planes_credentials_stop_at_the_proxy() -> TestResult {
    let h = Harness::start().await?;
    let port = guest_service().await?;
    let id = h.create(json!({})).await?;
    let echoed: Value = to_sandbox(&h, "/echo", &id, port)
        .header("X-API-Key", &h.key)
        .header("Authorization", format!("Bearer {}", h.key))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(echoed["apiKey"], "", "the API key reached the guest");
    assert_eq!(echoed["authorization"], "", "the API key reached the guest");
    // What the guest needs passes: envd's token and the user of a call.
    let echoed: Value = to_sandbox(&h, "/echo", &id, port)
        .header("X-API-Key", &h.key)
        .header("X-Access-Token", "envd-token")
        .header("Authorization", "Basic dXNlcjo=")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(echoed["apiKey"], "");
    assert_eq!(echoed["token"], "envd-token");
    assert_eq!(echoed["authorization"], "Basic dXNlcjo=");
    Ok(())
}

#[tokio::test]
async fn a_stale_id_never_reaches_the_next_sandbox_at_its_slot() -> TestResult {
    let h = Harness::start().await?;
    let port = guest_service().await?;
    let old = h.create(json!({})).await?;
    assert_eq!(
        to_sandbox(&h, "/echo", &old, port).send().await?.status(),
        200
    );
    // Its VM dies on the node; its row stays until reconciliation. The
    // next sandbox gets the same slot address (the fake node has one).
    h.node.state().sandboxes.remove(&old);
    let new = h.create(json!({})).await?;
    let stale = to_sandbox(&h, "/echo", &old, port).send().await?;
    assert_eq!(stale.status(), 502);
    let body: Value = stale.json().await?;
    assert_eq!(
        body,
        json!({"sandboxId": old, "message": "The sandbox was not found", "code": 502})
    );
    assert_eq!(
        to_sandbox(&h, "/echo", &new, port).send().await?.status(),
        200
    );
    // The route check refused it, not a missing row.
    let row = h
        .request(reqwest::Method::GET, &format!("/sandboxes/{old}"))
        .send()
        .await?;
    assert_eq!(row.status(), 200);
    Ok(())
}

#[tokio::test]
async fn routes_this_control_plane_never_saw_are_checked_with_the_node() -> TestResult {
    let h = Harness::start().await?;
    let port = guest_service().await?;
    let node = h.state.nodes.all().first().ok_or("no node")?.name.clone();
    // Rows as another control plane writes them: the node runs the first
    // sandbox, not the second.
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let (running, gone) = (format!("runs{suffix}"), format!("gone{suffix}"));
    for id in [&running, &gone] {
        let mut row = common::record(id);
        row.node = node.clone();
        h.state.store.insert_sandbox(&row).await?;
    }
    h.node.state().sandboxes.insert(
        running.clone(),
        pb::RunningSandbox {
            sandbox_id: running.clone(),
            host_address: "127.0.0.1".into(),
            ..Default::default()
        },
    );
    assert_eq!(
        to_sandbox(&h, "/echo", &running, port)
            .send()
            .await?
            .status(),
        200
    );
    let missing = to_sandbox(&h, "/echo", &gone, port).send().await?;
    assert_eq!(missing.status(), 502);
    let body: Value = missing.json().await?;
    assert_eq!(body["message"], "The sandbox was not found");
    Ok(())
}

type ByteStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// `/held` of sandbox `id` through the proxy, its first chunk read; the
/// guest never sends the rest.
async fn held_stream(
    h: &Harness,
    id: &str,
    port: u16,
) -> Result<ByteStream, Box<dyn std::error::Error + Send + Sync>> {
    let mut body = Box::pin(
        to_sandbox(h, "/held", id, port)
            .send()
            .await?
            .bytes_stream(),
    );
    let first = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .map_err(|_| "the first chunk did not arrive")?
        .ok_or("no body")??;
    assert_eq!(&first[..], b"first");
    Ok(body)
}

/// Asserts that `body` fails within a few seconds: cut off, not ended as
/// if it were whole (a client would take a clean end for the full body).
async fn ends_soon(mut body: ByteStream, what: &str) -> TestResult {
    let next = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .map_err(|_| format!("the stream of a sandbox that was {what} is still open"))?;
    assert!(
        matches!(next, Some(Err(_))),
        "the stream of a sandbox that was {what} did not fail: {next:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_sandboxs_streams_end_when_it_does() -> TestResult {
    let h = Harness::start().await?;
    // Its `/held` sends one chunk and then nothing, forever.
    let port = guest_service().await?;

    let id = h.create(json!({})).await?;
    let body = held_stream(&h, &id, port).await?;
    let killed = h
        .request(reqwest::Method::DELETE, &format!("/sandboxes/{id}"))
        .send()
        .await?;
    assert_eq!(killed.status(), 204);
    ends_soon(body, "killed").await?;

    let id = h.create(json!({})).await?;
    let body = held_stream(&h, &id, port).await?;
    let shortened = h
        .request(reqwest::Method::POST, &format!("/sandboxes/{id}/timeout"))
        .json(&json!({"timeout": 0}))
        .send()
        .await?;
    assert_eq!(shortened.status(), 204);
    hearth_api::lifecycle::kill_ended(&h.state).await;
    ends_soon(body, "timed out").await?;

    // The VM dies under the node, which reconciliation learns.
    let id = h.create(json!({})).await?;
    let body = held_stream(&h, &id, port).await?;
    h.node.state().sandboxes.remove(&id);
    hearth_api::lifecycle::reconcile(&h.state).await;
    ends_soon(body, "lost by its node").await?;
    Ok(())
}

#[tokio::test]
async fn an_upload_in_flight_ends_with_its_sandbox() -> TestResult {
    let h = Harness::start().await?;
    let port = guest_service().await?;
    let id = h.create(json!({})).await?;
    let (chunks, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let upload = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let sending = tokio::spawn(
        h.http
            .post(format!("{}/count", h.url))
            .header("E2b-Sandbox-Id", &id)
            .header("E2b-Sandbox-Port", port.to_string())
            .body(reqwest::Body::wrap_stream(upload))
            .send(),
    );
    chunks.send(Ok(vec![1u8; 64 * 1024])).await?;
    chunks.send(Ok(vec![1u8; 64 * 1024])).await?;
    let killed = h
        .request(reqwest::Method::DELETE, &format!("/sandboxes/{id}"))
        .send()
        .await?;
    assert_eq!(killed.status(), 204);
    // The body is still open (`chunks` lives on): only the kill ends it.
    let answer = tokio::time::timeout(Duration::from_secs(5), sending)
        .await
        .map_err(|_| "the upload outlived its sandbox")??;
    // E2B's 502, or the connection closed; never the guest's count.
    if let Ok(response) = answer {
        assert_eq!(response.status(), 502);
    }
    drop(chunks);
    Ok(())
}

/// A stand-in envd on port 49983 of a loopback address of its own
/// (127.x.y.z: Linux routes all of 127/8 to lo), answering with its name
/// and what it got. Returns the address.
async fn fake_envd(name: &'static str) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let files = move |method: axum::http::Method,
                      uri: axum::http::Uri,
                      headers: axum::http::HeaderMap,
                      body: bytes::Bytes| async move {
        axum::Json(json!({
            "sandbox": name,
            "method": method.as_str(),
            "uri": uri.to_string(),
            "token": headers.get("x-access-token").and_then(|v| v.to_str().ok()).unwrap_or(""),
            "body": String::from_utf8_lossy(&body),
        }))
    };
    let app = axum::Router::new().route("/files", get(files).post(files));
    for _ in 0..50 {
        let random = uuid::Uuid::new_v4();
        let [a, b, c, ..] = *random.as_bytes();
        let address = format!("127.{}.{}.{}", 1 + a % 254, 1 + b % 254, 1 + c % 254);
        if let Ok(listener) =
            tokio::net::TcpListener::bind((address.as_str(), hearth_api::proxy::ENVD_PORT)).await
        {
            tokio::spawn(axum::serve(listener, app).into_future());
            return Ok(address);
        }
    }
    Err("no loopback address had port 49983 free".into())
}

/// A signed `/files` URL as the SDKs make it (`e2b/sandbox/signature.py`,
/// `SandboxBase._file_url`): every parameter percent-encoded, `username`
/// only when a user is given, `signature_expiration` only when one is used.
fn signed_url(
    base: &str,
    path: &str,
    operation: &str,
    user: Option<&str>,
    token: &str,
    expiration: Option<i64>,
) -> String {
    use base64::Engine;
    use sha2::Digest;
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let mut raw = format!("{path}:{operation}:{}:{token}", user.unwrap_or(""));
    if let Some(expiration) = expiration {
        raw.push_str(&format!(":{expiration}"));
    }
    let digest = sha2::Sha256::digest(raw.as_bytes());
    let padded = base64::engine::general_purpose::STANDARD.encode(digest);
    let signature = format!("v1_{}", padded.trim_end_matches('='));
    let mut url = format!("{base}/files?path={}", enc(path));
    if let Some(user) = user {
        url.push_str(&format!("&username={}", enc(user)));
    }
    url.push_str(&format!("&signature={}", enc(&signature)));
    if let Some(expiration) = expiration {
        url.push_str(&format!("&signature_expiration={expiration}"));
    }
    url
}

/// Creates a sandbox; returns its id and envd access token.
async fn create_with_token(
    h: &Harness,
) -> Result<(String, String), Box<dyn std::error::Error + Send + Sync>> {
    let created: Value = h
        .request(reqwest::Method::POST, "/v2/sandboxes")
        .json(&json!({"templateID": "base"}))
        .send()
        .await?
        .json()
        .await?;
    let id = created["sandboxID"].as_str().ok_or("no sandbox id")?;
    let token = created["envdAccessToken"]
        .as_str()
        .ok_or("no envd access token")?;
    Ok((id.to_owned(), token.to_owned()))
}

#[tokio::test]
async fn signed_file_urls_find_their_sandbox_without_any_header() -> TestResult {
    let h = Harness::start().await?;
    let (a_address, b_address) = (fake_envd("a").await?, fake_envd("b").await?);
    h.node.state().addresses.extend([a_address, b_address]);
    let (a, a_token) = create_with_token(&h).await?;
    let (_b, b_token) = create_with_token(&h).await?;
    let now = chrono::Utc::now().timestamp();

    // `download_url(path, user="user", use_signature_expiration=60)`,
    // fetched by a plain client: no sandbox header, the API's host.
    let download = signed_url(
        &h.url,
        "/home/user/a b+c.txt",
        "read",
        Some("user"),
        &a_token,
        Some(now + 60),
    );
    let got: Value = h.http.get(&download).send().await?.json().await?;
    assert_eq!(got["sandbox"], "a");
    assert_eq!(got["method"], "GET");
    assert_eq!(got["uri"], download.trim_start_matches(h.url.as_str()));
    // envd checks the signature itself; the proxy adds no token.
    assert_eq!(got["token"], "");

    // `upload_url(path)` for the default user: no username, no expiry.
    let upload = signed_url(&h.url, "/tmp/up.txt", "write", None, &b_token, None);
    let got: Value = h
        .http
        .post(&upload)
        .body("payload")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(got["sandbox"], "b");
    assert_eq!(got["body"], "payload");

    // What matches no running sandbox goes nowhere.
    let read_url = signed_url(&h.url, "/tmp/x", "read", None, &a_token, None);
    assert_error(h.http.post(&read_url).send().await?, 401).await?;
    let tampered = read_url.replace("path=%2Ftmp%2Fx", "path=%2Ftmp%2Fy");
    assert_error(h.http.get(&tampered).send().await?, 401).await?;
    let expired = signed_url(&h.url, "/tmp/x", "read", None, &a_token, Some(now - 10));
    assert_error(h.http.get(&expired).send().await?, 401).await?;
    let unsigned = format!("{}/files?path=%2Ftmp%2Fx", h.url);
    assert_error(h.http.get(&unsigned).send().await?, 400).await?;
    let killed = h
        .request(reqwest::Method::DELETE, &format!("/sandboxes/{a}"))
        .send()
        .await?;
    assert_eq!(killed.status(), 204);
    assert_error(h.http.get(&download).send().await?, 401).await?;
    Ok(())
}
