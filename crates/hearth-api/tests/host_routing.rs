//! Sandbox hosts over HTTPS, as the SDKs reach them when `E2B_DOMAIN` is
//! set: `https://<port>-<id>.<domain>` on the same port as the plain-HTTP
//! API, with a certificate from hearth's local CA, over HTTP/1.1 and
//! HTTP/2; `maskRequestHost`; the traffic token; E2B's 502 for hosts of
//! sandboxes that do not run.

mod common;

use std::net::SocketAddr;

use axum::routing::get;
use common::{Harness, TestResult};
use hearth_api::ApiConfig;
use hearth_tls::{CertSource, ServerTls};
use serde_json::{Value, json};

const DOMAIN: &str = "hearth.localhost";

/// A guest service that answers with the Host it was sent; its port.
async fn host_echo() -> std::io::Result<u16> {
    let app = axum::Router::new().route(
        "/host",
        get(|headers: axum::http::HeaderMap| async move {
            let host = headers.get("host").and_then(|h| h.to_str().ok());
            axum::Json(json!({ "host": host }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(port)
}

struct Https {
    h: Harness,
    tls_dir: tempfile::TempDir,
    address: SocketAddr,
}

impl Https {
    async fn start() -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let tls_dir = tempfile::tempdir()?;
        let tls = ServerTls::new(CertSource::LocalCa {
            dir: tls_dir.path().to_owned(),
            names: vec![DOMAIN.into(), format!("*.{DOMAIN}")],
        })?;
        let config = ApiConfig {
            domain: Some(DOMAIN.into()),
            ..ApiConfig::default()
        };
        let h = Harness::with_tls(config, tls.config()).await?;
        let address: SocketAddr = h.url.trim_start_matches("http://").parse()?;
        Ok(Self {
            h,
            tls_dir,
            address,
        })
    }

    /// A client that trusts only hearth's CA and resolves `hosts` to the
    /// harness, as glibc resolves `*.localhost` to loopback.
    fn client(
        &self,
        hosts: &[&str],
        http2: bool,
    ) -> Result<reqwest::Client, Box<dyn std::error::Error + Send + Sync>> {
        let ca = std::fs::read(self.tls_dir.path().join("ca.pem"))?;
        let mut builder = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?);
        for host in hosts {
            builder = builder.resolve(host, self.address);
        }
        if !http2 {
            builder = builder.http1_only();
        }
        Ok(builder.build()?)
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.address.port())
    }
}

#[tokio::test]
async fn sandbox_hosts_answer_over_https_next_to_the_plain_api() -> TestResult {
    let s = Https::start().await?;
    let port = host_echo().await?;
    // The API stays plain HTTP on the same port.
    let id = s.h.create(json!({})).await?;
    let host = format!("{port}-{id}.{DOMAIN}");
    for http2 in [false, true] {
        let client = s.client(&[&host], http2)?;
        let response = client.get(s.url(&host, "/host")).send().await?;
        assert_eq!(response.status(), 200);
        let expected = if http2 {
            reqwest::Version::HTTP_2
        } else {
            reqwest::Version::HTTP_11
        };
        assert_eq!(response.version(), expected);
        let body: Value = response.json().await?;
        // The guest sees the host the client asked for, port included.
        assert_eq!(body["host"], format!("{host}:{}", s.address.port()));
    }
    // The API answers over HTTPS too, at a host that names no sandbox.
    let api = format!("api.{DOMAIN}");
    let listed = s
        .client(&[&api], true)?
        .get(s.url(&api, "/sandboxes"))
        .header("X-API-Key", &s.h.key)
        .send()
        .await?;
    assert_eq!(listed.status(), 200);
    Ok(())
}

#[tokio::test]
async fn hosts_of_sandboxes_that_do_not_run_get_e2bs_502() -> TestResult {
    let s = Https::start().await?;
    let port = host_echo().await?;
    let unknown = format!("{port}-nosuchsandbox.{DOMAIN}");
    let response = s
        .client(&[&unknown], true)?
        .get(s.url(&unknown, "/host"))
        .send()
        .await?;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await?;
    assert_eq!(
        body,
        json!({"sandboxId": "nosuchsandbox", "message": "The sandbox was not found", "code": 502})
    );

    let id = s.h.create(json!({})).await?;
    let host = format!("{port}-{id}.{DOMAIN}");
    let client = s.client(&[&host], true)?;
    assert_eq!(
        client.get(s.url(&host, "/host")).send().await?.status(),
        200
    );
    s.h.request(reqwest::Method::DELETE, &format!("/sandboxes/{id}"))
        .send()
        .await?;
    let killed = client.get(s.url(&host, "/host")).send().await?;
    assert_eq!(killed.status(), 502);
    let body: Value = killed.json().await?;
    assert_eq!(body["sandboxId"], id.as_str());
    Ok(())
}

#[tokio::test]
async fn a_masked_host_is_what_the_sandbox_port_sees() -> TestResult {
    let s = Https::start().await?;
    let port = host_echo().await?;
    let id =
        s.h.create(json!({"network": {"maskRequestHost": "${PORT}-app.example.test"}}))
            .await?;
    let host = format!("{port}-{id}.{DOMAIN}");
    let body: Value = s
        .client(&[&host], true)?
        .get(s.url(&host, "/host"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(body["host"], format!("{port}-app.example.test"));
    // Header routing gets the same mask.
    let body: Value =
        s.h.http
            .get(format!("{}/host", s.h.url))
            .header("E2b-Sandbox-Id", &id)
            .header("E2b-Sandbox-Port", port.to_string())
            .send()
            .await?
            .json()
            .await?;
    assert_eq!(body["host"], format!("{port}-app.example.test"));
    // The sandbox's details say it as it was given.
    let detail: Value =
        s.h.request(reqwest::Method::GET, &format!("/sandboxes/{id}"))
            .send()
            .await?
            .json()
            .await?;
    assert_eq!(
        detail["network"]["maskRequestHost"],
        "${PORT}-app.example.test"
    );
    Ok(())
}

#[tokio::test]
async fn private_sandboxes_need_their_traffic_token_by_host_too() -> TestResult {
    let s = Https::start().await?;
    let port = host_echo().await?;
    let created: Value =
        s.h.request(reqwest::Method::POST, "/v2/sandboxes")
            .json(&json!({"templateID": "base", "network": {"allowPublicTraffic": false}}))
            .send()
            .await?
            .json()
            .await?;
    let id = created["sandboxID"].as_str().ok_or("no id")?;
    let token = created["trafficAccessToken"].as_str().ok_or("no token")?;
    let host = format!("{port}-{id}.{DOMAIN}");
    let client = s.client(&[&host], true)?;
    let without = client.get(s.url(&host, "/host")).send().await?;
    assert_eq!(without.status(), 403);
    let body: Value = without.json().await?;
    assert_eq!(body["code"], 403);
    let with = client
        .get(s.url(&host, "/host"))
        .header("e2b-traffic-access-token", token)
        .send()
        .await?;
    assert_eq!(with.status(), 200);
    Ok(())
}

#[tokio::test]
async fn a_client_that_never_speaks_is_not_served_forever() -> TestResult {
    let s = Https::start().await?;
    // A TLS record header, then silence: the handshake's deadline ends it.
    let mut stream = tokio::net::TcpStream::connect(s.address).await?;
    tokio::io::AsyncWriteExt::write_all(&mut stream, &[0x16, 0x03, 0x01]).await?;
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tokio::io::AsyncReadExt::read(&mut stream, &mut buffer),
    )
    .await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    Ok(())
}
