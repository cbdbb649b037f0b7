//! The sandbox proxy over a fake node whose sandboxes live at 127.0.0.1:
//! routing by header and by host, streaming, upgrades, the traffic token
//! and E2B's 502 bodies.

mod common;

use axum::body::Body;
use axum::routing::{get, post};
use common::{Harness, TestResult, assert_error};
use futures::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;

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
    tokio::spawn(hearth_api::server::serve_proxy(h.state.clone(), listener));
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
