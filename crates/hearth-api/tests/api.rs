//! The REST API over a fake node: statuses, bodies, auth, teams, pages,
//! timeouts and failure paths that must leave nothing half-made.

mod common;

use common::{Harness, TestResult, assert_error, template};
use hearth_api::{ApiConfig, Node};
use hearth_proto::orchestrator as pb;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn health_and_openapi_need_no_key_and_everything_else_does() -> TestResult {
    let h = Harness::start().await?;
    let health = h.http.get(format!("{}/health", h.url)).send().await?;
    assert_eq!(health.status(), 204);
    let doc: Value = h
        .http
        .get(format!("{}/openapi.json", h.url))
        .send()
        .await?
        .json()
        .await?;
    assert!(doc["paths"]["/v2/sandboxes"]["post"].is_object());
    for (method, path) in [
        (Method::GET, "/v2/sandboxes"),
        (Method::POST, "/v2/sandboxes"),
        (Method::DELETE, "/sandboxes/abc"),
        (Method::GET, "/templates"),
        (Method::POST, "/api-keys"),
    ] {
        let url = format!("{}{path}", h.url);
        assert_error(h.http.request(method.clone(), &url).send().await?, 401).await?;
        let wrong = h
            .http
            .request(method, &url)
            .header("X-API-Key", "e2b_00")
            .send()
            .await?;
        assert_error(wrong, 401).await?;
    }
    Ok(())
}

#[tokio::test]
async fn create_answers_201_with_what_the_sdks_need_and_tells_the_node_everything() -> TestResult {
    let h = Harness::start().await?;
    let response = h
        .request(Method::POST, "/v2/sandboxes")
        .json(&json!({
            "templateID": "base", "timeout": 60, "metadata": {"a": "b"}, "envVars": {"X": "1"},
            "allow_internet_access": false,
            "network": {"allowOut": ["1.1.1.1/32"], "denyOut": ["8.8.8.0/24"]},
        }))
        .send()
        .await?;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await?;
    let id = body["sandboxID"].as_str().unwrap_or_default().to_owned();
    assert_eq!(id.len(), 20);
    assert_eq!(body["templateID"], "base");
    assert_eq!(body["clientID"], "fake-node");
    assert_eq!(body["envdVersion"], "0.6.5");
    assert!(
        body["envdAccessToken"]
            .as_str()
            .is_some_and(|t| t.len() >= 32)
    );
    assert!(body["trafficAccessToken"].is_null());

    let node = h
        .node
        .state()
        .sandboxes
        .get(&id)
        .cloned()
        .ok_or("not on the node")?;
    let config = node.config.ok_or("no config")?;
    assert_eq!(config.env_vars.get("X").map(String::as_str), Some("1"));
    assert_eq!(config.metadata.get("a").map(String::as_str), Some("b"));
    assert_eq!(config.allow_internet_access, Some(false));
    assert_eq!(config.default_user, "user");
    assert_eq!(
        config.envd_access_token.as_deref(),
        body["envdAccessToken"].as_str()
    );
    let egress = config.network.and_then(|n| n.egress).ok_or("no egress")?;
    assert_eq!(egress.allowed_cidrs, ["1.1.1.1/32"]);
    assert_eq!(egress.denied_cidrs, ["8.8.8.0/24"]);
    // The node's own end is the API's plus a grace period.
    let start = node.start_time.ok_or("no start")?.seconds;
    let end = node.end_time.ok_or("no end")?.seconds;
    assert!((115..=125).contains(&(end - start)), "{}", end - start);

    let detail: Value = h
        .request(Method::GET, &format!("/sandboxes/{id}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(detail["sandboxID"], id.as_str());
    assert_eq!(detail["state"], "running");
    assert_eq!(detail["metadata"], json!({"a": "b"}));
    assert_eq!(detail["allowInternetAccess"], false);
    assert_eq!(
        (detail["cpuCount"].clone(), detail["memoryMB"].clone()),
        (json!(2), json!(512))
    );

    let kill = h
        .request(Method::DELETE, &format!("/sandboxes/{id}"))
        .send()
        .await?;
    assert_eq!(kill.status(), 204);
    assert!(h.node.state().deleted.contains(&id));
    h.expect_error(Method::DELETE, &format!("/sandboxes/{id}"), 404)
        .await?;
    h.expect_error(Method::GET, &format!("/sandboxes/{id}"), 404)
        .await?;
    Ok(())
}

#[tokio::test]
async fn bad_input_is_refused_and_leaves_no_row_and_no_vm() -> TestResult {
    let h = Harness::with_config(ApiConfig {
        max_timeout: std::time::Duration::from_secs(3600),
        ..ApiConfig::default()
    })
    .await?;
    h.node.state().failing_templates.push("broken".into());
    h.state
        .store
        .put_template(&template("broken", None))
        .await?;
    let cases: Vec<(&[u8], u16)> = vec![
        (b"{not json", 400),
        (b"[]", 400),
        (br#"{"timeout": 5}"#, 400),
        (br#"{"templateID": "nope"}"#, 404),
        (br#"{"templateID": "base", "timeout": -5}"#, 400),
        (br#"{"templateID": "base", "timeout": 3601}"#, 400),
        (
            br#"{"templateID": "base", "autoPause": true, "autoPauseMemory": false, "autoResume": {"enabled": true}}"#,
            400,
        ),
        (
            br#"{"templateID": "base", "network": {"denyOut": ["bogus"]}}"#,
            400,
        ),
        (br#"{"templateID": "broken"}"#, 500),
    ];
    for (body, status) in cases {
        let response = h
            .request(Method::POST, "/v2/sandboxes")
            .header("Content-Type", "application/json")
            .body(body.to_vec())
            .send()
            .await?;
        assert_error(response, status).await?;
    }
    assert!(h.node.state().sandboxes.is_empty());
    assert_eq!(h.state.store.count_sandboxes_of(&h.team_id).await?, 0);
    h.expect_error(Method::GET, "/no/such/path", 404).await?;
    h.expect_error(Method::PUT, "/v2/sandboxes", 405).await?;
    Ok(())
}

#[tokio::test]
async fn a_node_that_is_down_is_503_and_nothing_is_recorded() -> TestResult {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("http://{}", closed.local_addr()?);
    drop(closed);
    let (fake, _) = common::FakeNode::start().await?;
    let h = Harness::over(
        fake,
        vec![Node::new("down", &address)?],
        ApiConfig::default(),
    )
    .await?;
    let response = h
        .request(Method::POST, "/v2/sandboxes")
        .json(&json!({"templateID": "base"}))
        .send()
        .await?;
    assert_error(response, 503).await?;
    assert_eq!(h.state.store.count_sandboxes_of(&h.team_id).await?, 0);
    Ok(())
}

#[tokio::test]
async fn teams_are_isolated_and_limited() -> TestResult {
    let h = Harness::start().await?;
    let mine = h.create(json!({})).await?;
    let other = h.other_team(1).await?;
    let as_other = |method: Method, path: &str| {
        h.http
            .request(method, format!("{}{path}", h.url))
            .header("X-API-Key", &other)
    };
    let listed: Value = as_other(Method::GET, "/v2/sandboxes")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(listed, json!([]));
    for (method, path) in [
        (Method::GET, format!("/sandboxes/{mine}")),
        (Method::DELETE, format!("/sandboxes/{mine}")),
        (Method::POST, format!("/sandboxes/{mine}/timeout")),
        (Method::POST, format!("/v2/sandboxes/{mine}/connect")),
        (Method::GET, format!("/sandboxes/{mine}/logs")),
    ] {
        let response = as_other(method, &path)
            .json(&json!({"timeout": 1}))
            .send()
            .await?;
        assert_error(response, 404).await?;
    }
    assert!(h.node.state().sandboxes.contains_key(&mine));
    let detail: Value = h
        .request(Method::GET, &format!("/sandboxes/{mine}"))
        .send()
        .await?
        .json()
        .await?;
    let end = chrono::DateTime::parse_from_rfc3339(detail["endAt"].as_str().unwrap_or_default())?;
    assert!(
        end.timestamp() > chrono::Utc::now().timestamp() + 200,
        "the other team's timeout applied"
    );
    // The other team may run one sandbox.
    let first = as_other(Method::POST, "/v2/sandboxes")
        .json(&json!({"templateID": "base"}))
        .send()
        .await?;
    assert_eq!(first.status(), 201);
    let second = as_other(Method::POST, "/v2/sandboxes")
        .json(&json!({"templateID": "base"}))
        .send()
        .await?;
    assert_error(second, 429).await?;
    // A team's private template is invisible to others.
    h.state
        .store
        .put_template(&template("private", Some(&h.team_id)))
        .await?;
    let theirs = as_other(Method::POST, "/v2/sandboxes")
        .json(&json!({"templateID": "private"}))
        .send()
        .await?;
    assert_error(theirs, 404).await?;
    assert_error(
        as_other(Method::GET, "/templates/aliases/private")
            .send()
            .await?,
        403,
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn list_filters_and_pages_with_next_token() -> TestResult {
    let h = Harness::start().await?;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            h.create(json!({"metadata": {"n": i.to_string(), "user id": "a&b=c"}}))
                .await?,
        );
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = "/v2/sandboxes?limit=2".to_owned();
        if let Some(t) = &token {
            path += &format!("&nextToken={t}");
        }
        let response = h.request(Method::GET, &path).send().await?;
        assert_eq!(response.headers()["x-total-running"], "5");
        token = response
            .headers()
            .get("x-next-token")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let page: Vec<Value> = response.json().await?;
        seen.extend(
            page.iter()
                .map(|s| s["sandboxID"].as_str().unwrap_or_default().to_owned()),
        );
        pages += 1;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    let asc: Vec<Value> = h
        .request(Method::GET, "/v2/sandboxes?order=asc&limit=1")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(asc[0]["sandboxID"], ids[0].as_str());
    // The SDKs encode metadata filters twice: `user id` → `user%2520id` on the wire.
    let filtered: Vec<Value> = h
        .request(
            Method::GET,
            "/v2/sandboxes?metadata=n%3D3%26user%2520id%3Da%2526b%253Dc",
        )
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0]["sandboxID"], ids[3].as_str());
    let paused: Vec<Value> = h
        .request(Method::GET, "/v2/sandboxes?state=paused")
        .send()
        .await?
        .json()
        .await?;
    assert!(paused.is_empty());
    let v1: Vec<Value> = h
        .request(Method::GET, "/sandboxes?metadata=n%3D1")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(v1.len(), 1);
    Ok(())
}

#[tokio::test]
async fn timeouts_extend_shorten_and_kill() -> TestResult {
    let h = Harness::start().await?;
    let id = h.create(json!({"timeout": 100})).await?;
    let end = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v["endAt"].as_str().unwrap_or_default())
            .map(|t| t.timestamp_millis())
            .unwrap_or_default()
    };
    let before = end(&h
        .request(Method::GET, &format!("/sandboxes/{id}"))
        .send()
        .await?
        .json()
        .await?);
    // Connect with a shorter timeout leaves the end alone; a longer one extends it.
    let connect = h
        .request(Method::POST, &format!("/v2/sandboxes/{id}/connect"))
        .json(&json!({"timeout": 10}))
        .send()
        .await?;
    assert_eq!(connect.status(), 200);
    let same = end(&h
        .request(Method::GET, &format!("/sandboxes/{id}"))
        .send()
        .await?
        .json()
        .await?);
    assert_eq!(same, before);
    h.request(Method::POST, &format!("/v2/sandboxes/{id}/connect"))
        .json(&json!({"timeout": 1000}))
        .send()
        .await?;
    let later = end(&h
        .request(Method::GET, &format!("/sandboxes/{id}"))
        .send()
        .await?
        .json()
        .await?);
    assert!(later > before + 800_000);
    assert!(!h.node.state().updates.is_empty());
    let refresh = h
        .request(Method::POST, &format!("/sandboxes/{id}/refreshes"))
        .json(&json!({"duration": 4000}))
        .send()
        .await?;
    assert_error(refresh, 400).await?;
    // A timeout may shorten; the enforcer then kills it on the node.
    let set = h
        .request(Method::POST, &format!("/sandboxes/{id}/timeout"))
        .json(&json!({"timeout": 0}))
        .send()
        .await?;
    assert_eq!(set.status(), 204);
    hearth_api::lifecycle::kill_ended(&h.state).await;
    assert!(h.node.state().deleted.contains(&id));
    h.expect_error(Method::GET, &format!("/sandboxes/{id}"), 404)
        .await?;
    Ok(())
}

#[tokio::test]
async fn sandboxes_their_node_lost_are_forgotten() -> TestResult {
    let h = Harness::start().await?;
    let id = h.create(json!({})).await?;
    h.node.state().sandboxes.remove(&id);
    hearth_api::lifecycle::reconcile(&h.state).await;
    h.expect_error(Method::GET, &format!("/sandboxes/{id}"), 404)
        .await?;
    Ok(())
}

#[tokio::test]
async fn metrics_are_the_nodes_series_in_e2bs_shape_and_outlive_the_sandbox() -> TestResult {
    let h = Harness::start().await?;
    let id = h.create(json!({})).await?;
    let series: Vec<Value> = h
        .request(Method::GET, &format!("/sandboxes/{id}/metrics?start=101"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(series.len(), 2);
    assert_eq!(
        series[0],
        json!({
            "timestamp": "1970-01-01T00:01:41.000Z", "timestampUnix": 101, "cpuCount": 2,
            "cpuUsedPct": 20.46, "memUsed": 100 << 20, "memTotal": 512 << 20,
            "memCache": 10 << 20, "diskUsed": 1 << 30, "diskTotal": 2i64 << 30,
        })
    );
    let all: Vec<Value> = h
        .request(Method::GET, &format!("/sandboxes/{id}/metrics"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(all.len(), 3);
    for bad in ["start=5&end=4", "start=-1", "end=x"] {
        h.expect_error(Method::GET, &format!("/sandboxes/{id}/metrics?{bad}"), 400)
            .await?;
    }
    let many: Value = h
        .request(
            Method::GET,
            &format!("/sandboxes/metrics?sandbox_ids={id},unknown"),
        )
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(many["sandboxes"][&id]["timestampUnix"], 102);
    assert_eq!(many["sandboxes"].as_object().map(|m| m.len()), Some(1));
    let too_many = (0..101)
        .map(|i| format!("s{i}"))
        .collect::<Vec<_>>()
        .join(",");
    h.expect_error(
        Method::GET,
        &format!("/sandboxes/metrics?sandbox_ids={too_many}"),
        400,
    )
    .await?;
    h.request(Method::DELETE, &format!("/sandboxes/{id}"))
        .send()
        .await?
        .error_for_status()?;
    let after: Vec<Value> = h
        .request(Method::GET, &format!("/sandboxes/{id}/metrics"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(after.len(), 3);
    let other = h.other_team(1).await?;
    let status = h
        .http
        .get(format!("{}/sandboxes/{id}/metrics", h.url))
        .header("X-API-Key", &other)
        .send()
        .await?
        .status();
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test]
async fn logs_are_the_nodes_lines_asked_for_as_e2b_asks_and_outlive_the_sandbox() -> TestResult {
    let h = Harness::start().await?;
    let id = h.create(json!({})).await?;
    let v1: Value = h
        .request(Method::GET, &format!("/sandboxes/{id}/logs?start=5"))
        .send()
        .await?
        .json()
        .await?;
    // `line` is the node's JSON object as it is; the entry is made of it.
    assert_eq!(v1["logs"][1]["timestamp"], "2023-11-14T22:13:20.001Z");
    let line: Value = serde_json::from_str(v1["logs"][1]["line"].as_str().unwrap_or(""))?;
    assert_eq!(line["pid"], 7);
    assert_eq!(v1["logEntries"][1]["message"], "Process with pid 7 ended");
    assert_eq!(v1["logEntries"][1]["level"], "info");
    assert_eq!(
        v1["logEntries"][1]["fields"],
        json!({"logger": "process", "pid": "7", "exit_code": "0"})
    );
    let asked = h.node.state().log_requests.pop().ok_or("no log request")?;
    assert_eq!((asked.start_ms, asked.end_ms), (Some(5), None));
    assert_eq!((asked.limit, asked.backward), (1000, false));

    // v2: newest first by default, the window ends at the cursor; level and
    // search go to the node.
    let v2: Value = h
        .request(
            Method::GET,
            &format!("/v2/sandboxes/{id}/logs?cursor=1700000000000&level=warn&search=pid&limit=5"),
        )
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(v2["logs"][0]["message"], "Sandbox created");
    assert!(v2.get("logEntries").is_none());
    let asked = h.node.state().log_requests.pop().ok_or("no log request")?;
    assert!(asked.backward);
    assert_eq!(asked.end_ms, Some(1_700_000_000_000));
    assert_eq!(
        asked.min_level(),
        hearth_proto::orchestrator::LogLevel::Warn
    );
    assert_eq!((asked.search.as_deref(), asked.limit), (Some("pid"), 5));
    for bad in [
        "level=verbose",
        "limit=1001",
        "direction=sideways",
        "cursor=-1",
        &format!("search={}", "x".repeat(257)),
    ] {
        h.expect_error(Method::GET, &format!("/v2/sandboxes/{id}/logs?{bad}"), 400)
            .await?;
    }
    h.expect_error(Method::GET, &format!("/sandboxes/{id}/logs?start=-1"), 400)
        .await?;

    // Killed, its logs stay readable, by its team only.
    h.request(Method::DELETE, &format!("/sandboxes/{id}"))
        .send()
        .await?
        .error_for_status()?;
    h.expect_error(Method::GET, &format!("/sandboxes/{id}"), 404)
        .await?;
    let after: Value = h
        .request(Method::GET, &format!("/sandboxes/{id}/logs"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(after["logs"].as_array().map(Vec::len), Some(2));
    let other = h.other_team(1).await?;
    for path in [
        format!("/sandboxes/{id}/logs"),
        format!("/v2/sandboxes/{id}/logs"),
    ] {
        let status = h
            .http
            .get(format!("{}{path}", h.url))
            .header("X-API-Key", &other)
            .send()
            .await?
            .status();
        assert_eq!(status, 404, "{path}");
    }
    h.expect_error(Method::GET, "/sandboxes/never-was/logs", 404)
        .await?;
    let templates: Vec<Value> = h
        .request(Method::GET, "/templates")
        .send()
        .await?
        .json()
        .await?;
    let base: Vec<&Value> = templates
        .iter()
        .filter(|t| t["templateID"] == "base")
        .collect();
    assert_eq!(base.len(), 1);
    assert!(base[0]["spawnCount"].as_i64().is_some_and(|n| n >= 1));
    assert_eq!(base[0]["public"], true);
    h.expect_error(Method::DELETE, "/templates/base", 403)
        .await?;
    Ok(())
}

#[tokio::test]
async fn api_keys_are_shown_once_stored_hashed_and_revocable() -> TestResult {
    let h = Harness::start().await?;
    let created: Value = h
        .request(Method::POST, "/api-keys")
        .json(&json!({"name": "ci"}))
        .send()
        .await?
        .json()
        .await?;
    let key = created["key"].as_str().ok_or("no key")?.to_owned();
    assert!(key.starts_with("e2b_") && key.len() == 44);
    let listed: Vec<Value> = h
        .request(Method::GET, "/api-keys")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|k| k.get("key").is_none()));
    let teams: Value = h
        .http
        .get(format!("{}/teams", h.url))
        .header("X-API-Key", &key)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(teams[0]["teamID"], h.team_id.as_str());
    assert_eq!(teams[0]["apiKey"], key.as_str());
    assert_error(
        h.request(Method::POST, "/api-keys")
            .json(&json!({"name": ""}))
            .send()
            .await?,
        400,
    )
    .await?;
    let id = created["id"].as_str().ok_or("no id")?;
    assert_eq!(
        h.request(Method::DELETE, &format!("/api-keys/{id}"))
            .send()
            .await?
            .status(),
        204
    );
    let revoked = h
        .http
        .get(format!("{}/v2/sandboxes", h.url))
        .header("X-API-Key", &key)
        .send()
        .await?;
    assert_error(revoked, 401).await?;
    Ok(())
}

#[tokio::test]
async fn a_row_that_cannot_be_written_deletes_the_vm() -> TestResult {
    let h = Harness::start().await?;
    h.node.state().conflicting_store = Some(h.state.store.clone());
    let response = h
        .request(Method::POST, "/v2/sandboxes")
        .json(&json!({"templateID": "base"}))
        .send()
        .await?;
    assert_error(response, 500).await?;
    let state = h.node.state();
    assert_eq!(state.deleted.len(), 1, "the VM was not deleted");
    assert!(state.sandboxes.is_empty());
    Ok(())
}

#[tokio::test]
async fn the_node_gets_every_new_end_with_its_grace() -> TestResult {
    let h = Harness::start().await?;
    let id = h.create(json!({"timeout": 100})).await?;
    let check = |detail: Value| -> TestResult {
        let end =
            chrono::DateTime::parse_from_rfc3339(detail["endAt"].as_str().unwrap_or_default())?
                .timestamp();
        let node_end = h
            .node
            .state()
            .sandboxes
            .get(&id)
            .and_then(|s| s.end_time)
            .ok_or("no node end")?
            .seconds;
        assert!(
            (node_end - end - 60).abs() <= 1,
            "node {node_end} vs api {end}"
        );
        Ok(())
    };
    for (path, body) in [
        (
            format!("/v2/sandboxes/{id}/connect"),
            json!({"timeout": 500}),
        ),
        (format!("/sandboxes/{id}/timeout"), json!({"timeout": 30})),
        (
            format!("/sandboxes/{id}/refreshes"),
            json!({"duration": 300}),
        ),
    ] {
        let status = h
            .request(Method::POST, &path)
            .json(&body)
            .send()
            .await?
            .status();
        assert!(status.is_success(), "{path}: {status}");
        check(
            h.request(Method::GET, &format!("/sandboxes/{id}"))
                .send()
                .await?
                .json()
                .await?,
        )?;
    }
    // An extension right after the end passed wins over the enforcer.
    h.request(Method::POST, &format!("/sandboxes/{id}/timeout"))
        .json(&json!({"timeout": 0}))
        .send()
        .await?;
    h.request(Method::POST, &format!("/sandboxes/{id}/timeout"))
        .json(&json!({"timeout": 60}))
        .send()
        .await?;
    hearth_api::lifecycle::kill_ended(&h.state).await;
    assert!(h.node.state().sandboxes.contains_key(&id));
    assert_eq!(
        h.request(Method::GET, &format!("/sandboxes/{id}"))
            .send()
            .await?
            .status(),
        200
    );
    Ok(())
}

#[tokio::test]
async fn v1_create_can_skip_the_envd_token_and_v1_connect_answers_200() -> TestResult {
    let h = Harness::start().await?;
    let created: Value = h
        .request(Method::POST, "/sandboxes")
        .json(&json!({"templateID": "base", "timeout": 300, "secure": false, "allow_internet_access": true}))
        .send()
        .await?
        .json()
        .await?;
    assert!(created.get("envdAccessToken").is_none(), "{created}");
    let id = created["sandboxID"].as_str().ok_or("no id")?;
    let config = h
        .node
        .state()
        .sandboxes
        .get(id)
        .and_then(|s| s.config.clone())
        .ok_or("not on node")?;
    assert_eq!(config.envd_access_token, None);
    let connect = h
        .request(Method::POST, &format!("/sandboxes/{id}/connect"))
        .json(&json!({"timeout": 300}))
        .send()
        .await?;
    assert_eq!(connect.status(), 200);
    Ok(())
}

#[tokio::test]
async fn network_updates_reach_the_node_and_unenforced_settings_are_refused() -> TestResult {
    let h = Harness::start().await?;
    let id = h.create(json!({"allow_internet_access": false})).await?;
    let put = h
        .request(Method::PUT, &format!("/sandboxes/{id}/network"))
        .json(&json!({"allow_internet_access": true, "allowOut": ["9.9.9.9/32"]}))
        .send()
        .await?;
    assert_eq!(put.status(), 204);
    let last = h.node.state().updates.last().cloned().ok_or("no update")?;
    assert_eq!(last.allow_internet_access, Some(true));
    assert_eq!(
        last.egress.ok_or("no egress")?.allowed_cidrs,
        ["9.9.9.9/32"]
    );
    let detail: Value = h
        .request(Method::GET, &format!("/sandboxes/{id}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(detail["allowInternetAccess"], true);
    let dns = h
        .request(Method::PUT, &format!("/sandboxes/{id}/network"))
        .json(&json!({"dnsServers": ["1.1.1.1"]}))
        .send()
        .await?;
    assert_error(dns, 400).await?;
    for network in [
        json!({"egressProxy": {"address": "p:1"}}),
        json!({"rules": {"a.com": []}}),
        json!({"maskRequestHost": "bad host/${PORT}"}),
        json!({"maskRequestHost": ""}),
        json!({"httpsPorts": [8443]}),
    ] {
        let response = h
            .request(Method::POST, "/v2/sandboxes")
            .json(&json!({"templateID": "base", "network": network}))
            .send()
            .await?;
        assert_error(response, 400).await?;
    }
    h.expect_error(Method::GET, "/volumes", 501).await?;
    h.expect_error(Method::GET, "/sandboxes/%FF%FE", 400)
        .await?;
    Ok(())
}

#[tokio::test]
async fn concurrent_creates_respect_the_team_limit() -> TestResult {
    let h = Harness::start().await?;
    let key = h.other_team(2).await?;
    let creates = (0..6).map(|_| {
        h.http
            .post(format!("{}/v2/sandboxes", h.url))
            .header("X-API-Key", &key)
            .json(&json!({"templateID": "base"}))
            .send()
    });
    let statuses: Vec<u16> = futures::future::join_all(creates)
        .await
        .into_iter()
        .map(|r| r.map(|r| r.status().as_u16()).unwrap_or(0))
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        4,
        "{statuses:?}"
    );
    Ok(())
}

#[tokio::test]
async fn started_after_a_sandboxs_own_start_lists_it() -> TestResult {
    let h = Harness::start().await?;
    let id = h.create(json!({})).await?;
    let detail: Value = h
        .request(Method::GET, &format!("/sandboxes/{id}"))
        .send()
        .await?
        .json()
        .await?;
    let started_at = detail["startedAt"].as_str().unwrap_or_default().to_owned();
    let started = chrono::DateTime::parse_from_rfc3339(&started_at)?;
    let id = id.as_str();
    let listed = |after: String| {
        let request = h
            .request(Method::GET, "/v2/sandboxes")
            .query(&[("startedAfter", after)]);
        async move {
            let page: Vec<Value> = request.send().await?.json().await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                page.iter().any(|s| s["sandboxID"] == id),
            )
        }
    };
    // As JS sends it (the string it got), and as Python sends the parsed
    // datetime back (microseconds, an offset).
    assert!(
        listed(started_at.clone()).await?,
        "{started_at} left it out"
    );
    let python = started.to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
    assert!(listed(python.clone()).await?, "{python} left it out");
    // A bound past its start, at the precision startedAt is written in,
    // leaves it out.
    let later = (started + chrono::Duration::milliseconds(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert!(!listed(later.clone()).await?, "{later} listed it");
    Ok(())
}

#[tokio::test]
async fn a_paused_sandbox_is_listed_as_paused_and_a_connect_resumes_it() -> TestResult {
    let h = Harness::start().await?;
    let id = h.create(json!({"timeout": 60})).await?;
    let other = h.create(json!({})).await?;
    let pause = |id: &str| {
        h.request(Method::POST, &format!("/sandboxes/{id}/pause"))
            .json(&json!({}))
    };
    assert_eq!(pause(&id).send().await?.status(), 204);
    assert_error(pause(&id).send().await?, 409).await?;
    assert_error(pause("nope").send().await?, 404).await?;
    // Only the filesystem: the node is asked for that.
    let third = h.create(json!({})).await?;
    let fs_only = h
        .request(Method::POST, &format!("/sandboxes/{third}/pause"))
        .json(&json!({"memory": false}))
        .send()
        .await?;
    assert_eq!(fs_only.status(), 204);
    assert!(h.node.state().paused_without_memory.contains(&third));
    // The row says so: traffic does not auto-resume it.
    let rows = (
        h.state.store.sandbox(&third).await?,
        h.state.store.sandbox(&id).await?,
    );
    let (Some(fs_row), Some(memory_row)) = rows else {
        return Err("a paused sandbox has no row".into());
    };
    assert!(fs_row.paused && !fs_row.paused_memory);
    assert!(memory_row.paused && memory_row.paused_memory);
    let killed = h
        .request(Method::DELETE, &format!("/sandboxes/{third}"))
        .send()
        .await?;
    assert_eq!(killed.status(), 204);
    let detail: Value = h
        .request(Method::GET, &format!("/sandboxes/{id}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(detail["state"], "paused");
    assert_eq!(
        states(&h, "state=paused").await?,
        vec![(id.clone(), json!("paused"))]
    );
    assert_eq!(
        states(&h, "state=running").await?,
        vec![(other.clone(), json!("running"))]
    );
    assert_eq!(states(&h, "").await?.len(), 2);
    // A paused sandbox has no end: the timeout sweep leaves it.
    h.state.store.set_sandbox_end(&id, 0).await?;
    hearth_api::lifecycle::kill_ended(&h.state).await;
    assert!(h.state.store.sandbox(&id).await?.is_some());
    assert!(h.node.state().sandboxes[&id].paused);
    // The deprecated resume of a running one is refused.
    let running = h
        .request(Method::POST, &format!("/sandboxes/{other}/resume"))
        .json(&json!({}))
        .send()
        .await?;
    assert_error(running, 409).await?;
    // A connect resumes it (201) at the node's new address; a second
    // connect finds it running (200).
    let connect = |id: &str| {
        h.request(Method::POST, &format!("/v2/sandboxes/{id}/connect"))
            .json(&json!({"timeout": 120}))
    };
    let resumed = connect(&id).send().await?;
    assert_eq!(resumed.status(), 201);
    let body: Value = resumed.json().await?;
    assert_eq!(body["sandboxID"], id.as_str());
    let row = h.state.store.sandbox(&id).await?.ok_or("no row")?;
    assert!(!row.paused);
    assert!(
        row.host_address.ends_with(".resumed"),
        "{}",
        row.host_address
    );
    assert!(row.end_at > store_now() + 100_000);
    assert_eq!(connect(&id).send().await?.status(), 200);
    // Paused again, it can be killed.
    assert_eq!(pause(&id).send().await?.status(), 204);
    let killed = h
        .request(Method::DELETE, &format!("/sandboxes/{id}"))
        .send()
        .await?;
    assert_eq!(killed.status(), 204);
    assert_error(connect(&id).send().await?, 404).await?;
    Ok(())
}

fn store_now() -> i64 {
    hearth_api::store::now_ms()
}

/// (id, state) of the caller's sandboxes as `GET /v2/sandboxes?query` lists them.
async fn states(
    h: &Harness,
    query: &str,
) -> Result<Vec<(String, Value)>, Box<dyn std::error::Error + Send + Sync>> {
    let listed: Vec<Value> = h
        .request(Method::GET, &format!("/v2/sandboxes?{query}"))
        .send()
        .await?
        .json()
        .await?;
    Ok(listed
        .iter()
        .map(|s| {
            (
                s["sandboxID"].as_str().unwrap_or("").to_owned(),
                s["state"].clone(),
            )
        })
        .collect())
}

#[tokio::test]
async fn the_node_learns_the_request_id_and_why_a_sandbox_stops() -> TestResult {
    let h = Harness::start().await?;
    let created = h
        .request(Method::POST, "/sandboxes")
        .header("x-request-id", "req-for-the-node")
        .json(&json!({"templateID": "base", "timeout": 60}))
        .send()
        .await?;
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["x-request-id"], "req-for-the-node");
    assert_eq!(
        h.node.state().create_request_ids,
        vec![Some("req-for-the-node".to_owned())]
    );
    let killed: Value = created.json().await?;
    let killed = killed["sandboxID"].as_str().unwrap_or_default().to_owned();
    let timed_out = h.create(json!({"timeout": 60})).await?;
    let paused = h.create(json!({"timeout": 60})).await?;
    let auto_paused = h.create(json!({"timeout": 60, "autoPause": true})).await?;
    let kill = h
        .request(Method::DELETE, &format!("/sandboxes/{killed}"))
        .send()
        .await?;
    assert_eq!(kill.status(), 204);
    let pause = h
        .request(Method::POST, &format!("/sandboxes/{paused}/pause"))
        .send()
        .await?;
    assert_eq!(pause.status(), 204);
    for sandbox in [&timed_out, &auto_paused] {
        h.state.store.set_sandbox_end(sandbox, 0).await?;
    }
    hearth_api::lifecycle::kill_ended(&h.state).await;
    let expected = [
        (killed, pb::StopReason::Requested),
        (paused, pb::StopReason::Requested),
        (timed_out, pb::StopReason::Timeout),
        (auto_paused, pb::StopReason::Timeout),
    ];
    // The harness's own sweep may have claimed one first and be stopping it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let reasons = h.node.state().stop_reasons.clone();
        if expected.iter().all(|stop| reasons.contains(stop)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {expected:?}, the node was told {reasons:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test]
async fn an_auto_pause_sandbox_is_paused_at_its_timeout_not_killed() -> TestResult {
    let h = Harness::start().await?;
    let id = h.create(json!({"timeout": 60, "autoPause": true})).await?;
    let killed = h.create(json!({"timeout": 60})).await?;
    let fs_only = h
        .create(json!({"timeout": 60, "autoPause": true, "autoPauseMemory": false}))
        .await?;
    let detail: Value = h
        .request(Method::GET, &format!("/sandboxes/{id}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(detail["lifecycle"]["onTimeout"], "pause");
    for sandbox in [&id, &killed, &fs_only] {
        h.state.store.set_sandbox_end(sandbox, 0).await?;
    }
    hearth_api::lifecycle::kill_ended(&h.state).await;
    let row = h.state.store.sandbox(&id).await?.ok_or("no row")?;
    assert!(row.paused);
    // The harness's own sweep may have claimed it first and be pausing it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !(h.node.state().sandboxes[&id].paused && h.node.state().sandboxes[&fs_only].paused) {
        assert!(
            std::time::Instant::now() < deadline,
            "the node never paused it"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(h.state.store.sandbox(&killed).await?.is_none());
    // `autoPauseMemory: false` keeps only the filesystem.
    assert_eq!(h.node.state().paused_without_memory, vec![fs_only.clone()]);
    let fs_row = h.state.store.sandbox(&fs_only).await?.ok_or("no row")?;
    assert!(fs_row.paused && !fs_row.paused_memory);
    assert!(row.paused_memory);
    // A later sweep leaves it paused; a connect resumes it.
    hearth_api::lifecycle::kill_ended(&h.state).await;
    assert!(h.state.store.sandbox(&id).await?.is_some_and(|r| r.paused));
    let resumed = h
        .request(Method::POST, &format!("/sandboxes/{id}/connect"))
        .json(&json!({"timeout": 30}))
        .send()
        .await?;
    assert_eq!(resumed.status(), 201);
    Ok(())
}
