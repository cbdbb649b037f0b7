//! Snapshots and forks over a fake node: a snapshot is a template of its
//! team that lists apart, pages, filters, starts sandboxes on its node and
//! is deleted as a template; a fork is a snapshot and its sandboxes.

mod common;

use common::{Harness, TestResult, assert_error};
use reqwest::Method;
use serde_json::{Value, json};

async fn snapshot(
    h: &Harness,
    sandbox: &str,
    body: Value,
) -> Result<reqwest::Response, reqwest::Error> {
    h.request(Method::POST, &format!("/sandboxes/{sandbox}/snapshots"))
        .json(&body)
        .send()
        .await
}

async fn listed(
    h: &Harness,
    query: &str,
) -> Result<(Vec<String>, Option<String>), Box<dyn std::error::Error + Send + Sync>> {
    let response = h
        .request(Method::GET, &format!("/snapshots{query}"))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let next = response
        .headers()
        .get("x-next-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Vec<Value> = response.json().await?;
    let ids = body
        .iter()
        .filter_map(|s| s["snapshotID"].as_str().map(str::to_owned))
        .collect();
    Ok((ids, next))
}

#[tokio::test]
async fn snapshots_are_the_teams_templates_listed_apart() -> TestResult {
    let h = Harness::start().await?;
    let source = h.create(json!({"timeout": 120})).await?;
    let named = snapshot(&h, &source, json!({"name": "snap-a"})).await?;
    assert_eq!(named.status(), 201);
    let named: Value = named.json().await?;
    let snap = named["snapshotID"].as_str().ok_or("no id")?.to_owned();
    assert_eq!(named["names"], json!(["snap-a"]));
    assert_eq!(h.node.state().snapshots.get(&snap), Some(&source));
    // The name is taken now; bad requests change nothing.
    assert_error(snapshot(&h, &source, json!({"name": "snap-a"})).await?, 409).await?;
    assert_error(snapshot(&h, &source, json!({"name": "a:b"})).await?, 400).await?;
    assert_error(snapshot(&h, &source, json!({"memory": false})).await?, 400).await?;
    assert_error(snapshot(&h, "nope", json!({})).await?, 404).await?;
    assert_eq!(h.node.state().snapshots.len(), 1);
    // A template build cannot take a snapshot's name.
    let build = h
        .request(Method::POST, "/v3/templates")
        .json(&json!({"name": "snap-a"}))
        .send()
        .await?;
    assert_error(build, 409).await?;

    // Listed, filtered by sandbox and name, paged newest first.
    let second = snapshot(&h, &source, json!({}))
        .await?
        .json::<Value>()
        .await?;
    let second = second["snapshotID"].as_str().ok_or("no id")?.to_owned();
    assert_eq!(listed(&h, "").await?.0, vec![second.clone(), snap.clone()]);
    assert_eq!(listed(&h, "?name=snap-a").await?.0, vec![snap.clone()]);
    assert!(listed(&h, "?name=snap-b").await?.0.is_empty());
    assert_eq!(
        listed(&h, &format!("?sandboxID={source}")).await?.0.len(),
        2
    );
    assert!(listed(&h, "?sandboxID=other").await?.0.is_empty());
    let (first_page, next) = listed(&h, "?limit=1").await?;
    assert_eq!(first_page, vec![second.clone()]);
    let next = next.ok_or("no next token")?;
    let (last_page, after) = listed(&h, &format!("?limit=1&nextToken={next}")).await?;
    assert_eq!((last_page, after), (vec![snap.clone()], None));
    h.expect_error(Method::GET, "/snapshots?nextToken=junk", 400)
        .await?;
    // Not among the team's templates, and not another team's to see.
    let templates: Vec<Value> = h
        .request(Method::GET, "/templates")
        .send()
        .await?
        .json()
        .await?;
    assert!(templates.iter().all(|t| t["templateID"] != snap.as_str()));
    let other = h.other_team(5).await?;
    let theirs: Vec<Value> = h
        .http
        .get(format!("{}/snapshots", h.url))
        .header("X-API-Key", &other)
        .send()
        .await?
        .json()
        .await?;
    assert!(theirs.is_empty());

    // A create names it by id or name; the node starts it from the snapshot.
    let from = h.create(json!({"templateID": "snap-a"})).await?;
    let detail: Value = h
        .request(Method::GET, &format!("/sandboxes/{from}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(detail["templateID"], snap.as_str());
    let config = h.node.state().sandboxes[&from]
        .config
        .clone()
        .ok_or("no config")?;
    assert_eq!(config.template_id, snap);
    // Deleted as a template, while a sandbox from it runs; then it is gone.
    let delete = |id: &str| {
        h.request(Method::DELETE, &format!("/templates/{id}"))
            .send()
    };
    assert_eq!(delete(&snap).await?.status(), 204);
    assert!(!h.node.state().snapshots.contains_key(&snap));
    assert_error(delete(&snap).await?, 404).await?;
    assert_eq!(listed(&h, "").await?.0, vec![second]);
    assert!(h.node.state().sandboxes.contains_key(&from));
    Ok(())
}

#[tokio::test]
async fn a_fork_starts_count_sandboxes_from_a_snapshot_that_then_goes() -> TestResult {
    let h = Harness::start().await?;
    let source = h
        .create(json!({"timeout": 120, "metadata": {"kind": "source"}}))
        .await?;
    let fork = |path: String, body: Value| h.request(Method::POST, &path).json(&body).send();
    let answer = fork(
        format!("/sandboxes/{source}/fork"),
        json!({"count": 2, "timeout": 60}),
    )
    .await?;
    assert_eq!(answer.status(), 201);
    let forks: Vec<Value> = answer.json().await?;
    let ids: Vec<&str> = forks
        .iter()
        .filter_map(|f| f["sandbox"]["sandboxID"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{forks:?}");
    assert!(ids[0] != ids[1] && !ids.contains(&source.as_str()));
    for id in &ids {
        let detail: Value = h
            .request(Method::GET, &format!("/sandboxes/{id}"))
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(detail["metadata"], json!({"kind": "source"}));
        assert!(detail["envdAccessToken"].is_string());
    }
    // The snapshot served its purpose: gone from the node and the lists.
    assert!(h.node.state().snapshots.is_empty());
    assert!(listed(&h, "").await?.0.is_empty());
    // One by default, on /v2 as well; the source runs on.
    let one: Vec<Value> = fork(format!("/v2/sandboxes/{source}/fork"), json!({}))
        .await?
        .json()
        .await?;
    assert_eq!(one.len(), 1);
    assert!(h.node.state().sandboxes.contains_key(&source));
    for count in [0, 101] {
        assert_error(
            fork(format!("/sandboxes/{source}/fork"), json!({"count": count})).await?,
            400,
        )
        .await?;
    }
    assert_error(fork("/sandboxes/nope/fork".into(), json!({})).await?, 404).await?;
    Ok(())
}

#[tokio::test]
async fn paused_sandboxes_and_snapshots_count_against_the_teams_limit() -> TestResult {
    let h = Harness::with_config(hearth_api::ApiConfig {
        team_max_kept: 2,
        ..hearth_api::ApiConfig::default()
    })
    .await?;
    let (a, b, c) = (
        h.create(json!({})).await?,
        h.create(json!({})).await?,
        h.create(json!({})).await?,
    );
    let pause = |id: &str| {
        h.request(Method::POST, &format!("/sandboxes/{id}/pause"))
            .json(&json!({}))
            .send()
    };
    assert_eq!(pause(&a).await?.status(), 204);
    let snap = snapshot(&h, &b, json!({})).await?;
    assert_eq!(snap.status(), 201);
    let snap: Value = snap.json().await?;
    // Full: a pause and a snapshot are refused, and change nothing.
    assert_error(pause(&c).await?, 429).await?;
    assert_error(snapshot(&h, &c, json!({})).await?, 429).await?;
    assert!(!h.node.state().sandboxes[&c].paused);
    assert_eq!(h.node.state().snapshots.len(), 1);
    // A fork's snapshot is its own business: it goes at once.
    let forked = h
        .request(Method::POST, &format!("/sandboxes/{c}/fork"))
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(forked.status(), 201);
    let forked: Vec<Value> = forked.json().await?;
    assert!(forked[0]["sandbox"]["sandboxID"].is_string(), "{forked:?}");
    assert_eq!(h.node.state().snapshots.len(), 1);
    // Room again once the snapshot is deleted.
    let deleted = h
        .request(
            Method::DELETE,
            &format!("/templates/{}", snap["snapshotID"].as_str().ok_or("no id")?),
        )
        .send()
        .await?;
    assert_eq!(deleted.status(), 204);
    assert_eq!(pause(&c).await?.status(), 204);
    Ok(())
}
