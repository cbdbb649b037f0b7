//! What a failing or hung node, or a busy team can do to the control
//! plane (it reads no guest: metrics come from the node, whose reads of
//! envd are bounded): internal detail stays in the log behind a request id, a hung node
//! stalls neither placement nor timeouts, a create past its deadline is
//! undone, and a team's limit holds under concurrent creates.

mod common;

use std::time::{Duration, Instant};

use common::{FakeNode, Harness, TestResult, assert_error};
use hearth_api::config::NodeDeadlines;
use hearth_api::{ApiConfig, Node};
use reqwest::Method;
use serde_json::{Value, json};

/// The error body's message, after checking it is E2B's shape with
/// `status`.
async fn error_message(
    response: reqwest::Response,
    status: u16,
) -> Result<(String, String), Box<dyn std::error::Error + Send + Sync>> {
    assert_eq!(response.status().as_u16(), status);
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = response.json().await?;
    assert_eq!(body["code"], status, "{body}");
    Ok((
        body["message"].as_str().unwrap_or_default().to_owned(),
        request_id,
    ))
}

#[tokio::test]
async fn internal_failures_give_a_short_message_and_the_request_id() -> TestResult {
    let h = Harness::start().await?;
    // Every answer carries an id, made up when the client sent none.
    let ok = h.request(Method::GET, "/v2/sandboxes").send().await?;
    assert_eq!(ok.status(), 200);
    let id = ok.headers().get("x-request-id").cloned();
    assert!(id.is_some_and(|v| v.len() >= 16));
    let missing = h.request(Method::GET, "/no/such/path").send().await?;
    assert!(missing.headers().contains_key("x-request-id"));

    // A node failing with a host path in its words.
    h.node.state().failing_templates.push("broken".into());
    h.state
        .store
        .put_template(&common::template("broken", None))
        .await?;
    let response = h
        .request(Method::POST, "/v2/sandboxes")
        .header("X-Request-Id", "client-chosen-42")
        .json(&json!({"templateID": "broken"}))
        .send()
        .await?;
    let (message, request_id) = error_message(response, 500).await?;
    assert_eq!(request_id, "client-chosen-42");
    assert!(message.contains("client-chosen-42"), "{message}");
    for detail in ["/var/lib", "device.state", "snapshot", "node:"] {
        assert!(!message.contains(detail), "{message}");
    }
    assert!(message.len() < 200, "{message}");

    // An id that is not plain text is replaced, not echoed.
    let response = h
        .request(Method::POST, "/v2/sandboxes")
        .header("X-Request-Id", "a b\"c")
        .json(&json!({"templateID": "broken"}))
        .send()
        .await?;
    let (message, request_id) = error_message(response, 500).await?;
    assert!(!request_id.is_empty() && request_id != "a b\"c");
    assert!(message.contains(&request_id));

    // A database failure.
    h.state.store.close().await;
    let response = h.request(Method::GET, "/v2/sandboxes").send().await?;
    let (message, request_id) = error_message(response, 500).await?;
    assert!(message.contains(&request_id), "{message}");
    for detail in ["database", "pool", "sqlx", "sqlite", "closed"] {
        assert!(!message.to_lowercase().contains(detail), "{message}");
    }
    Ok(())
}

#[tokio::test]
async fn an_unreachable_node_is_a_503_that_names_no_address() -> TestResult {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = closed.local_addr()?.to_string();
    drop(closed);
    let (fake, _) = FakeNode::start().await?;
    let h = Harness::over(
        fake,
        vec![Node::new("down", &format!("http://{address}"))?],
        ApiConfig::default(),
    )
    .await?;
    let response = h
        .request(Method::POST, "/v2/sandboxes")
        .json(&json!({"templateID": "base"}))
        .send()
        .await?;
    assert_eq!(
        response
            .headers()
            .get("should-retry")
            .and_then(|v| v.to_str().ok()),
        Some("false")
    );
    let (message, _) = error_message(response, 503).await?;
    assert!(!message.contains(&address), "{message}");
    Ok(())
}

/// A node that accepts connections and never answers (a stopped process,
/// a host under water).
async fn hung_node() -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    Ok(address)
}

fn quick_node_deadlines() -> ApiConfig {
    ApiConfig {
        node_deadlines: NodeDeadlines {
            create: Duration::from_secs(2),
            probe: Duration::from_millis(500),
            sweep: Duration::from_secs(1),
        },
        ..ApiConfig::default()
    }
}

#[tokio::test]
async fn a_hung_node_stalls_neither_placement_nor_timeouts() -> TestResult {
    let (fake, good) = FakeNode::start().await?;
    let hung = hung_node().await?;
    let good_name = format!("good-{}", uuid::Uuid::new_v4());
    let hung_name = format!("hung-{}", uuid::Uuid::new_v4());
    let h = Harness::over(
        fake,
        vec![Node::new(&hung_name, &hung)?, Node::new(&good_name, &good)?],
        quick_node_deadlines(),
    )
    .await?;

    // Placement skips the node that does not answer.
    let started = Instant::now();
    let id = h.create(json!({})).await?;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(h.node.state().sandboxes.contains_key(&id));

    // Timeouts: one sandbox ended on each node; the hung node's delete
    // times out without holding up the other's.
    // Ids of their own: tests may share a PostgreSQL.
    let stuck_id = format!("stuck-{}", uuid::Uuid::new_v4().simple());
    let kept_id = format!("kept-{}", uuid::Uuid::new_v4().simple());
    let mut stuck = common::record(&stuck_id);
    stuck.node = hung_name.clone();
    stuck.end_at = 0;
    h.state.store.insert_sandbox(&stuck).await?;
    h.state.store.set_sandbox_end(&id, 0).await?;
    let started = Instant::now();
    hearth_api::lifecycle::kill_ended(&h.state).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(h.node.state().deleted.contains(&id));
    assert!(h.state.store.sandbox(&stuck_id).await?.is_none());

    // Reconciliation: the answering node's lost sandbox is forgotten while
    // the hung node is skipped.
    let lost = h.create(json!({})).await?;
    h.node.state().sandboxes.remove(&lost);
    let mut kept = common::record(&kept_id);
    kept.node = hung_name;
    h.state.store.insert_sandbox(&kept).await?;
    let started = Instant::now();
    hearth_api::lifecycle::reconcile(&h.state).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(h.state.store.sandbox(&lost).await?.is_none());
    assert!(h.state.store.sandbox(&kept_id).await?.is_some());
    h.state.store.delete_sandbox(&kept_id).await?;
    Ok(())
}

#[tokio::test]
async fn a_create_past_its_deadline_is_a_503_and_is_deleted_on_the_node() -> TestResult {
    let h = Harness::with_config(quick_node_deadlines()).await?;
    h.node.state().create_delay = Some(Duration::from_secs(30));
    let started = Instant::now();
    let response = h
        .request(Method::POST, "/v2/sandboxes")
        .json(&json!({"templateID": "base"}))
        .send()
        .await?;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        response
            .headers()
            .get("should-retry")
            .and_then(|v| v.to_str().ok()),
        Some("false")
    );
    assert_error(response, 503).await?;
    assert_eq!(h.state.store.count_sandboxes_of(&h.team_id).await?, 0);
    // The control plane asked the node to delete what it may have started.
    assert_eq!(h.node.state().delete_asked.len(), 1);
    Ok(())
}

#[tokio::test]
async fn concurrent_slow_creates_fill_the_team_limit_exactly() -> TestResult {
    let h = Harness::start().await?;
    // Slow creates: all of them are in flight at once.
    h.node.state().create_delay = Some(Duration::from_millis(300));
    let key = h.other_team(3).await?;
    let creates = (0..10).map(|_| {
        h.http
            .post(format!("{}/v2/sandboxes", h.url))
            .header("X-API-Key", &key)
            .json(&json!({"templateID": "base"}))
            .send()
    });
    let mut created = 0;
    let mut limited = 0;
    for response in futures::future::join_all(creates).await {
        match response?.status().as_u16() {
            201 => created += 1,
            429 => limited += 1,
            other => panic!("create answered {other}"),
        }
    }
    assert_eq!((created, limited), (3, 7));
    let refused = h
        .http
        .post(format!("{}/v2/sandboxes", h.url))
        .header("X-API-Key", &key)
        .json(&json!({"templateID": "base"}))
        .send()
        .await?;
    let (message, _) = error_message(refused, 429).await?;
    assert!(
        message.contains("maximum number of concurrent sandboxes"),
        "{message}"
    );
    assert!(message.contains('3'), "{message}");
    Ok(())
}

#[tokio::test]
async fn a_teams_limit_can_be_changed() -> TestResult {
    let h = Harness::start().await?;
    let key = h.other_team(1).await?;
    let create = || {
        h.http
            .post(format!("{}/v2/sandboxes", h.url))
            .header("X-API-Key", &key)
            .json(&json!({"templateID": "base"}))
            .send()
    };
    assert_eq!(create().await?.status(), 201);
    assert_eq!(create().await?.status(), 429);
    let Some((team, _)) = h.state.store.authenticate(&key).await? else {
        return Err("the key does not authenticate".into());
    };
    assert!(
        h.state
            .store
            .set_team_max_sandboxes(&team.team_id, 2)
            .await?
    );
    assert_eq!(create().await?.status(), 201);
    assert_eq!(create().await?.status(), 429);
    Ok(())
}
