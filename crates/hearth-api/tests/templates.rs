//! Template builds over a fake node, the way the SDKs drive them: request a
//! build, upload COPY files to the signed URL, start it, poll its status
//! and logs, start sandboxes from it by name and tag, and delete it.

mod common;

use std::time::Duration;

use common::fake_node::BuildPlan;
use common::{FakeNode, Harness, TestResult, assert_error};
use hearth_api::{ApiConfig, Node};
use reqwest::Method;
use serde_json::{Value, json};

type Error = Box<dyn std::error::Error + Send + Sync>;

const HASH: &str = "4afdded2d0a3f0a0c5d0e6b7b8f3a9c1e2d4f5a6b7c8d9e0f1a2b3c4d5e6d9d7";

/// The start of a gzip stream: all an upload is checked for.
fn gzip() -> Vec<u8> {
    let mut body = vec![0x1f, 0x8b, 8, 0];
    body.resize(700, 7);
    body
}

/// A gzip stream of `len` bytes.
fn gzip_of(len: usize) -> Vec<u8> {
    let mut body = gzip();
    body.resize(len, 9);
    body
}

/// An uncompressed tar: a header block with the `ustar` magic.
fn tar() -> Vec<u8> {
    let mut body = vec![0u8; 1024];
    body[257..262].copy_from_slice(b"ustar");
    body
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

impl Harness {
    async fn request_build(&self, body: Value) -> Result<Value, Error> {
        let response = self
            .request(Method::POST, "/v3/templates")
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if status != 202 {
            return Err(format!("build request answered {status}: {body}").into());
        }
        Ok(body)
    }

    async fn file_link(&self, template_id: &str, hash: &str) -> Result<Value, Error> {
        let response = self
            .request(
                Method::GET,
                &format!("/templates/{template_id}/files/{hash}"),
            )
            .send()
            .await?;
        assert_eq!(response.status(), 201);
        Ok(response.json().await?)
    }

    /// Uploads `body` for `hash`, as the SDK does (no API key).
    async fn upload(&self, template_id: &str, hash: &str, body: Vec<u8>) -> Result<(), Error> {
        let link = self.file_link(template_id, hash).await?;
        let url = link["url"].as_str().ok_or("no upload url")?;
        let response = self.http.put(url).body(body).send().await?;
        assert_eq!(response.status(), 200, "{}", response.text().await?);
        Ok(())
    }

    async fn start_build(
        &self,
        template_id: &str,
        build_id: &str,
        body: &Value,
    ) -> Result<reqwest::Response, Error> {
        Ok(self
            .request(
                Method::POST,
                &format!("/v2/templates/{template_id}/builds/{build_id}"),
            )
            .json(body)
            .send()
            .await?)
    }

    async fn build_status(
        &self,
        template_id: &str,
        build_id: &str,
        offset: usize,
    ) -> Result<Value, Error> {
        let response = self
            .request(
                Method::GET,
                &format!("/templates/{template_id}/builds/{build_id}/status?logsOffset={offset}"),
            )
            .send()
            .await?;
        assert_eq!(response.status(), 200);
        Ok(response.json().await?)
    }

    /// Polls like the Python SDK until the build ends and a poll brings no
    /// more log entries; the last answer and every entry seen.
    async fn wait_build(
        &self,
        template_id: &str,
        build_id: &str,
    ) -> Result<(Value, Vec<Value>), Error> {
        let mut offset = 0;
        let mut entries = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.build_status(template_id, build_id, offset).await?;
            let page = status["logEntries"].as_array().cloned().unwrap_or_default();
            assert_eq!(
                status["logs"].as_array().map(Vec::len),
                Some(page.len()),
                "{status}"
            );
            offset += page.len();
            entries.extend(page.iter().cloned());
            let done = matches!(status["status"].as_str(), Some("ready" | "error"));
            if done && page.is_empty() {
                return Ok((status, entries));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("the build did not end: {status}").into());
            }
            if !done {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Polls until the build has `status`.
    async fn wait_for(&self, template_id: &str, build_id: &str, want: &str) -> TestResult {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let status = self.build_status(template_id, build_id, 0).await?;
            if status["status"] == want {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("never {want}: {status}").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Requests, uploads for and starts a build of `name`; returns the
    /// template and build IDs.
    async fn build(&self, name: &str) -> Result<(String, String), Error> {
        let requested = self.request_build(json!({ "name": name })).await?;
        let template_id = requested["templateID"].as_str().ok_or("no id")?.to_owned();
        let build_id = requested["buildID"].as_str().ok_or("no build")?.to_owned();
        let start = self
            .start_build(
                &template_id,
                &build_id,
                &json!({"fromImage": "e2bdev/base", "steps": [{"type": "RUN", "args": ["true"]}]}),
            )
            .await?;
        assert_eq!(start.status(), 202, "{}", start.text().await?);
        Ok((template_id, build_id))
    }

    fn node_name(&self) -> String {
        self.state.nodes.all()[0].name.clone()
    }
}

async fn wait_until(mut check: impl FnMut() -> bool) -> TestResult {
    for _ in 0..500 {
        if check() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err("timed out waiting".into())
}

#[tokio::test]
async fn the_sdk_flow_builds_a_template_that_sandboxes_start_from_by_name_and_tag() -> TestResult {
    let (a, address_a) = FakeNode::start().await?;
    let (b, address_b) = FakeNode::start().await?;
    let (name_a, name_b) = (unique("a"), unique("b"));
    let h = Harness::over(
        a.clone(),
        vec![
            Node::new(&name_a, &address_a)?,
            Node::new(&name_b, &address_b)?,
        ],
        ApiConfig::default(),
    )
    .await?;
    a.state().build_plan = BuildPlan::Succeed { lines: 150 };
    let name = unique("my-app");

    // 1. Request the build.
    let requested = h
        .request_build(json!({
            "name": format!("{name}:v1"), "tags": ["stable"], "cpuCount": 2, "memoryMB": 1024,
        }))
        .await?;
    let template_id = requested["templateID"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let build_id = requested["buildID"].as_str().unwrap_or_default().to_owned();
    assert_eq!(template_id.len(), 20);
    assert!(uuid::Uuid::parse_str(&build_id).is_ok());
    assert_eq!(requested["tags"], json!(["v1", "stable"]));
    assert_eq!(requested["names"], json!([name]));
    assert_eq!(requested["aliases"], json!([name]));
    assert_eq!(requested["public"], false);
    let waiting = h.build_status(&template_id, &build_id, 0).await?;
    assert_eq!(waiting["status"], "waiting");
    assert_eq!(waiting["logEntries"], json!([]));

    // 2. Upload the COPY step's files to the signed URL.
    let link = h.file_link(&template_id, HASH).await?;
    assert_eq!(link["present"], false);
    let url = link["url"].as_str().unwrap_or_default();
    assert!(url.starts_with(&format!(
        "{}/templates/{template_id}/files/{HASH}/upload?",
        h.url
    )));
    // Larger than any buffered body limit: uploads stream to disk.
    let put = h.http.put(url).body(gzip_of(3 << 20)).send().await?;
    assert_eq!(put.status(), 200);
    let link = h.file_link(&template_id, HASH).await?;
    assert_eq!(link, json!({"present": true}));

    // 3. Start it.
    let start = h
        .start_build(
            &template_id,
            &build_id,
            &json!({
                "fromImage": "e2bdev/base", "force": false,
                "steps": [
                    {"type": "COPY", "args": ["requirements.txt", "/app/", "", ""], "filesHash": HASH, "force": false, "forceUpload": null},
                    {"type": "RUN", "args": ["pip install -r /app/requirements.txt", "root"], "force": false},
                    {"type": "ENV", "args": ["A", "1", "B", "2"]},
                    {"type": "WORKDIR", "args": ["/app"]},
                    {"type": "USER", "args": ["user"]},
                    {"type": "COPY", "args": ["b", "/b"], "filesHash": HASH},
                ],
                "startCmd": "python -m http.server 8000",
                "readyCmd": "[ -n \"$(ss -Htuln sport = :8000)\" ]",
            }),
        )
        .await?;
    assert_eq!(start.status(), 202, "{}", start.text().await?);

    // 4. Poll like the SDK until ready: every log line arrives, in order.
    let (last, entries) = h.wait_build(&template_id, &build_id).await?;
    assert_eq!(last["status"], "ready");
    assert!(last.get("reason").is_none());
    assert_eq!(entries.len(), 150);
    assert_eq!(entries[0]["message"], "line 0");
    assert_eq!(entries[0]["step"], "base");
    assert_eq!(entries[149]["message"], "line 149");
    assert_eq!(entries[9]["level"], "warn");
    assert!(entries.iter().all(|e| e["timestamp"].as_str().is_some()));
    // `limit` and `level` page and filter.
    let warnings: Value = h
        .request(
            Method::GET,
            &format!("/templates/{template_id}/builds/{build_id}/status?level=warn&limit=5"),
        )
        .send()
        .await?
        .json()
        .await?;
    let warnings = warnings["logEntries"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(warnings.len(), 5);
    assert!(warnings.iter().all(|e| e["level"] == "warn"));

    // The node got the build as the SDK described it.
    let request = a
        .state()
        .builds
        .last()
        .cloned()
        .ok_or("no build on node a")?;
    assert!(b.state().builds.is_empty());
    assert_eq!(request.template_id, template_id);
    assert_eq!(request.build_id, build_id);
    assert_eq!((request.vcpu, request.ram_mb), (2, 1024));
    assert_eq!(request.from_image, "e2bdev/base");
    assert_eq!(request.team_id, h.team_id);
    assert_eq!(request.start_cmd, "python -m http.server 8000");
    assert_eq!(request.steps.len(), 6);
    assert_eq!(request.steps[0].r#type, "COPY");
    assert_eq!(request.steps[0].files_hash, HASH);
    let path = request.steps[0]
        .files_url
        .strip_prefix("file://")
        .ok_or("not a file URL")?;
    assert!(path.ends_with(&format!("/{template_id}/{HASH}")));
    assert_eq!(std::fs::read(path)?, gzip_of(3 << 20));
    assert_eq!(
        request.steps[1].args,
        ["pip install -r /app/requirements.txt", "root"]
    );
    assert_eq!(request.steps[5].args, ["b", "/b", "", ""]);

    // 5. Listed ready, with its build.
    let templates: Vec<Value> = h
        .request(Method::GET, "/templates")
        .send()
        .await?
        .json()
        .await?;
    let listed = templates
        .iter()
        .find(|t| t["templateID"] == template_id.as_str())
        .ok_or("not listed")?;
    assert_eq!(listed["buildStatus"], "ready");
    assert_eq!(listed["buildID"], build_id.as_str());
    assert_eq!(listed["envdVersion"], "0.6.5");
    assert_eq!(listed["diskSizeMB"], 2048);
    assert_eq!(listed["buildCount"], 1);
    let detail: Value = h
        .request(Method::GET, &format!("/templates/{name}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(detail["templateID"], template_id.as_str());
    assert_eq!(detail["builds"][0]["buildID"], build_id.as_str());
    assert_eq!(detail["builds"][0]["status"], "ready");
    assert_eq!(detail["builds"][0]["memoryMB"], 1024);
    assert!(detail["builds"][0]["finishedAt"].is_string());

    // 6. A sandbox from its name runs that build on the node that built it,
    // even when another node has more room.
    let base = h.create(json!({})).await?;
    assert!(a.state().sandboxes.contains_key(&base));
    let sandbox = h.create(json!({ "templateID": name })).await?;
    let on_a = a
        .state()
        .sandboxes
        .get(&sandbox)
        .cloned()
        .ok_or("not on a")?;
    let config = on_a.config.ok_or("no config")?;
    assert_eq!(config.template_id, template_id);
    assert_eq!(config.build_id, build_id);
    assert_eq!(config.envd_version, "0.6.5");
    assert!(b.state().sandboxes.is_empty());
    let info: Value = h
        .request(Method::GET, &format!("/sandboxes/{sandbox}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(info["alias"], name.as_str());

    // 7. Tags: the requested ones point at the build.
    let tags: Vec<Value> = h
        .request(Method::GET, &format!("/templates/{template_id}/tags"))
        .send()
        .await?
        .json()
        .await?;
    let mut tag_names: Vec<&str> = tags.iter().filter_map(|t| t["tag"].as_str()).collect();
    tag_names.sort_unstable();
    assert_eq!(tag_names, ["stable", "v1"]);
    assert!(tags.iter().all(|t| t["buildID"] == build_id.as_str()));
    let assigned = h
        .request(Method::POST, "/templates/tags")
        .json(&json!({"target": format!("{name}:v1"), "tags": ["prod", "Prod"]}))
        .send()
        .await?;
    assert_eq!(assigned.status(), 201);
    let assigned: Value = assigned.json().await?;
    assert_eq!(assigned, json!({"tags": ["prod"], "buildID": build_id}));
    h.create(json!({ "templateID": format!("{name}:prod") }))
        .await?;
    h.create(json!({ "templateID": format!("{name}:{build_id}") }))
        .await?;
    let removed = h
        .request(Method::DELETE, "/templates/tags")
        .json(&json!({"name": name, "tags": ["prod"]}))
        .send()
        .await?;
    assert_eq!(removed.status(), 204);
    let gone = h
        .request(Method::POST, "/v2/sandboxes")
        .json(&json!({ "templateID": format!("{name}:prod") }))
        .send()
        .await?;
    assert_error(gone, 404).await?;

    // 8. The logs endpoint pages by time, both ways.
    let forward: Value = h
        .request(
            Method::GET,
            &format!("/templates/{template_id}/builds/{build_id}/logs?cursor=0&limit=10"),
        )
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(forward["logs"].as_array().map(Vec::len), Some(10));
    assert_eq!(forward["logs"][0]["message"], "line 0");
    let backward: Value = h
        .request(
            Method::GET,
            &format!(
                "/templates/{template_id}/builds/{build_id}/logs?direction=backward&limit=2&level=info"
            ),
        )
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(backward["logs"][0]["message"], "line 149");
    assert_eq!(backward["logs"][1]["message"], "line 148");

    // 9. A rebuild of the name is a new build of the same template.
    let again = h.request_build(json!({ "name": name })).await?;
    assert_eq!(again["templateID"], template_id.as_str());
    assert_eq!(again["tags"], json!(["default"]));
    assert_ne!(again["buildID"], build_id.as_str());
    Ok(())
}

#[tokio::test]
async fn a_failing_build_reports_its_step_and_a_refused_one_blames_the_base() -> TestResult {
    let h = Harness::start().await?;
    h.node.state().build_plan = BuildPlan::Fail {
        lines: 12,
        message: "command failed: exit status 100".into(),
        step: "9".into(),
    };
    let (template_id, build_id) = h.build(&unique("broken")).await?;
    let (last, entries) = h.wait_build(&template_id, &build_id).await?;
    assert_eq!(last["status"], "error");
    assert_eq!(entries.len(), 12);
    let reason = &last["reason"];
    assert_eq!(reason["message"], "command failed: exit status 100");
    assert_eq!(reason["step"], "9");
    // The failing step's warnings, from the page that carried them.
    let first: Value = h.build_status(&template_id, &build_id, 0).await?;
    assert_eq!(
        first["reason"]["logEntries"],
        json!([first["logEntries"][9]])
    );
    assert_eq!(first["logEntries"][9]["level"], "warn");
    // A template with no ready build starts nothing.
    let none = h
        .request(Method::POST, "/v2/sandboxes")
        .json(&json!({ "templateID": template_id }))
        .send()
        .await?;
    assert_error(none, 404).await?;
    let listed: Value = h
        .request(Method::GET, &format!("/templates/{template_id}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(listed["builds"][0]["status"], "error");

    h.node.state().build_plan =
        BuildPlan::Refuse(tonic::Code::InvalidArgument, "no such image".into());
    let (template_id, build_id) = h.build(&unique("refused")).await?;
    let (last, _) = h.wait_build(&template_id, &build_id).await?;
    assert_eq!(last["status"], "error");
    assert_eq!(last["reason"]["step"], "base");
    assert!(
        last["reason"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no such image")),
        "{last}"
    );
    // A node that is gone is blamed on the base too, without its detail.
    h.node.state().build_plan = BuildPlan::Refuse(tonic::Code::Internal, "/secret/path".into());
    let (template_id, build_id) = h.build(&unique("internal")).await?;
    let (last, _) = h.wait_build(&template_id, &build_id).await?;
    assert_eq!(last["reason"]["step"], "base");
    assert!(
        last["reason"]["message"]
            .as_str()
            .is_some_and(|m| !m.contains("/secret/path")),
        "{last}"
    );
    Ok(())
}

/// Asserts the status and that the message mentions `part`.
async fn refused(response: reqwest::Response, status: u16, part: &str) -> TestResult {
    assert_eq!(response.status().as_u16(), status, "for '{part}'");
    let body: Value = response.json().await?;
    assert_eq!(body["code"], status);
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(part), "'{message}' lacks '{part}'");
    Ok(())
}

#[tokio::test]
async fn bad_build_requests_are_refused_with_what_is_wrong() -> TestResult {
    let h = Harness::start().await?;
    let (existing_id, _) = h.build(&unique("existing")).await?;
    let other = h.other_team(10).await?;
    let theirs = unique("theirs");
    let response = h
        .http
        .post(format!("{}/v3/templates", h.url))
        .header("X-API-Key", &other)
        .json(&json!({ "name": theirs }))
        .send()
        .await?;
    assert_eq!(response.status(), 202);
    let cases = [
        (json!({}), 400, "name is required"),
        (json!({"name": "Bad Name"}), 400, "invalid template name"),
        (json!({"name": "team/app"}), 400, "namespace"),
        (json!({"name": "ok:bad tag"}), 400, "invalid tag"),
        (
            json!({"name": "ok", "tags": ["6f1c1a8e-3b9a-4c56-9d2e-0b1f2a3c4d5e"]}),
            400,
            "UUID",
        ),
        (json!({"name": "ok", "cpuCount": 0}), 400, "cpuCount"),
        (json!({"name": "ok", "cpuCount": 9}), 400, "cpuCount"),
        (json!({"name": "ok", "memoryMB": 127}), 400, "memoryMB"),
        (json!({"name": "ok", "memoryMB": 1025}), 400, "memoryMB"),
        (json!({"name": "ok", "memoryMB": 32768}), 400, "memoryMB"),
        (json!({"name": "ok", "teamID": "someone"}), 400, "teamID"),
        (
            json!({"name": "ok", "minFreeDiskMb": 10}),
            400,
            "minFreeDiskMb",
        ),
        (json!({"name": "base"}), 403, "already used"),
        (json!({"name": theirs}), 403, "another team"),
        (json!({"name": existing_id}), 409, "template ID"),
    ];
    for (body, status, part) in cases {
        let response = h
            .request(Method::POST, "/v3/templates")
            .json(&body)
            .send()
            .await?;
        refused(response, status, part).await?;
    }

    let requested = h
        .request_build(json!({"name": unique("bad-steps")}))
        .await?;
    let template_id = requested["templateID"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let build_id = requested["buildID"].as_str().unwrap_or_default().to_owned();
    for (path, status, part) in [
        (
            format!("/templates/{template_id}/files/abc"),
            400,
            "64 lowercase hex",
        ),
        (
            format!("/templates/{template_id}/files/{}", HASH.to_uppercase()),
            400,
            "hex",
        ),
        (
            format!("/templates/nosuchtemplate/files/{HASH}"),
            404,
            "not found",
        ),
    ] {
        refused(h.request(Method::GET, &path).send().await?, status, part).await?;
    }
    h.upload(&template_id, HASH, tar()).await?;
    let missing = "f".repeat(64);
    let copy = |hash: &str| json!({"type": "COPY", "args": ["a", "/a", "", ""], "filesHash": hash});
    let image = |steps: Value| json!({"fromImage": "ubuntu:24.04", "steps": steps});
    let long = "x".repeat(64 * 1024 + 1);
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"type": "RUN", "args": ["true"]}))
        .collect();
    let cases = [
        (json!({"steps": []}), 400, "fromImage or fromTemplate"),
        (
            json!({"fromImage": "ubuntu", "fromTemplate": "base"}),
            400,
            "not both",
        ),
        (
            json!({"fromImage": "ubuntu", "fromImageRegistry": {"type": "aws", "awsAccessKeyId": "a", "awsSecretAccessKey": "b", "awsRegion": "c"}}),
            400,
            "AWS registry credentials are not supported by hearth yet",
        ),
        (
            json!({"fromImage": "ubuntu", "fromImageRegistry": {"type": "gcp", "serviceAccountJson": "{}"}}),
            400,
            "not supported by hearth yet",
        ),
        (
            json!({"fromImage": "ubuntu", "fromImageRegistry": {"type": "registry", "username": "u"}}),
            400,
            "password",
        ),
        (
            image(json!([{"type": "FROB", "args": []}])),
            400,
            "step 1: unknown type",
        ),
        (
            image(json!([{"type": "RUN", "args": ["true"]}, copy(&missing)])),
            400,
            "step 2 (COPY): the files with hash",
        ),
        (
            image(json!([{"type": "COPY", "args": ["a", "/a"]}])),
            400,
            "filesHash is required",
        ),
        (
            image(json!([{"type": "COPY", "args": ["a", "/a", "", "999"], "filesHash": HASH}])),
            400,
            "octal",
        ),
        (
            image(json!([{"type": "COPY", "args": ["a"], "filesHash": HASH}])),
            400,
            "step 1 (COPY)",
        ),
        (
            image(json!([{"type": "RUN", "args": []}])),
            400,
            "step 1 (RUN)",
        ),
        (
            image(json!([{"type": "RUN", "args": ["a", "b", "c"]}])),
            400,
            "step 1 (RUN)",
        ),
        (
            image(json!([{"type": "RUN", "args": [" "]}])),
            400,
            "the command must not be empty",
        ),
        (
            image(json!([{"type": "ENV", "args": ["A"]}])),
            400,
            "step 1 (ENV)",
        ),
        (
            image(json!([{"type": "ENV", "args": ["", "v"]}])),
            400,
            "no name",
        ),
        (
            image(json!([{"type": "WORKDIR", "args": ["/a", "/b"]}])),
            400,
            "step 1 (WORKDIR)",
        ),
        (
            image(json!([{"type": "USER", "args": []}])),
            400,
            "step 1 (USER)",
        ),
        (
            image(json!([{"type": "RUN", "args": [long]}])),
            400,
            "longer than 65536",
        ),
        (image(json!(many)), 400, "at most 1000 steps"),
        (json!({"fromTemplate": "nosuchtemplate"}), 404, "not found"),
        (json!({"fromTemplate": template_id}), 404, "no ready build"),
    ];
    for (body, status, part) in cases {
        let response = h.start_build(&template_id, &build_id, &body).await?;
        refused(response, status, part).await?;
    }
    for (path, status, part) in [
        (
            format!("/v2/templates/{template_id}/builds/nope"),
            400,
            "UUID",
        ),
        (
            format!(
                "/v2/templates/{template_id}/builds/{}",
                uuid::Uuid::new_v4()
            ),
            404,
            "not found",
        ),
    ] {
        let response = h
            .request(Method::POST, &path)
            .json(&image(json!([])))
            .send()
            .await?;
        refused(response, status, part).await?;
    }
    assert_eq!(
        h.build_status(&template_id, &build_id, 0).await?["status"],
        "waiting"
    );
    let builds_before = h.node.state().builds.len();
    // A good start, then the same again.
    let body = image(json!([copy(HASH)]));
    let first = h.start_build(&template_id, &build_id, &body).await?;
    assert_eq!(first.status(), 202);
    let second = h.start_build(&template_id, &build_id, &body).await?;
    refused(second, 400, "started already").await?;
    h.wait_build(&template_id, &build_id).await?;
    assert_eq!(h.node.state().builds.len(), builds_before + 1);
    Ok(())
}

/// Sends `head` and `body` on a raw connection (for framing reqwest will
/// not produce) and returns the response's status.
async fn raw_put(h: &Harness, head: String, body: &[u8]) -> Result<u16, Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = h.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await?;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {text:?}"))?;
    Ok(status)
}

#[tokio::test]
async fn uploads_need_a_good_signature_an_exact_length_and_an_archive() -> TestResult {
    let h = Harness::with_config(ApiConfig {
        max_upload_bytes: 4096,
        ..ApiConfig::default()
    })
    .await?;
    let requested = h.request_build(json!({"name": unique("uploads")})).await?;
    let template_id = requested["templateID"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let link = h.file_link(&template_id, HASH).await?;
    let url = link["url"].as_str().unwrap_or_default().to_owned();
    let base = format!("{}/templates/{template_id}/files/{HASH}/upload", h.url);
    let expires = chrono::Utc::now().timestamp() + 600;

    let forged = format!("{base}?expires={expires}&signature={}", "0".repeat(64));
    refused(
        h.http.put(&forged).body(gzip()).send().await?,
        403,
        "signature",
    )
    .await?;
    let unsigned = format!("{base}?expires={expires}");
    refused(
        h.http.put(&unsigned).body(gzip()).send().await?,
        403,
        "signature",
    )
    .await?;
    // Another hash's URL does not carry this one.
    let other = h.file_link(&template_id, &"e".repeat(64)).await?;
    let swapped = other["url"]
        .as_str()
        .unwrap_or_default()
        .replace(&"e".repeat(64), HASH);
    refused(
        h.http.put(&swapped).body(gzip()).send().await?,
        403,
        "signature",
    )
    .await?;
    let past = chrono::Utc::now().timestamp() - 1;
    let signature = h.state.uploads.sign(&template_id, HASH, past);
    let expired = format!("{base}?expires={past}&signature={signature}");
    refused(
        h.http.put(&expired).body(gzip()).send().await?,
        403,
        "expired",
    )
    .await?;

    refused(
        h.http.put(&url).body(vec![b'x'; 5000]).send().await?,
        413,
        "at most 4096",
    )
    .await?;
    refused(
        h.http
            .put(&url)
            .body(b"hello, not an archive".to_vec())
            .send()
            .await?,
        400,
        "archive",
    )
    .await?;
    refused(
        h.http.put(&url).body(vec![b'x'; 1000]).send().await?,
        400,
        "archive",
    )
    .await?;

    let target = url.trim_start_matches(&h.url).to_owned();
    let short = raw_put(
        &h,
        format!("PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"),
        &gzip()[..100],
    )
    .await?;
    assert_eq!(short, 400);
    let chunked = raw_put(
        &h,
        format!("PUT {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
        b"4\r\n\x1f\x8b\x08\x00\r\n0\r\n\r\n",
    )
    .await?;
    assert_eq!(chunked, 411);
    assert_eq!(h.file_link(&template_id, HASH).await?["present"], false);
    // Nothing half-written is left beside the uploads.
    let dir = h.state.uploads.dir().join(&template_id);
    let leftovers = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers, 0);

    let ok = h.http.put(&url).body(tar()).send().await?;
    assert_eq!(ok.status(), 200);
    assert_eq!(h.file_link(&template_id, HASH).await?["present"], true);
    Ok(())
}

#[tokio::test]
async fn templates_are_the_teams_own_unless_public() -> TestResult {
    let h = Harness::start().await?;
    let name = unique("private");
    let (template_id, build_id) = h.build(&name).await?;
    h.wait_build(&template_id, &build_id).await?;
    let other = h.other_team(10).await?;
    let as_other = |method: Method, path: &str| {
        h.http
            .request(method, format!("{}{path}", h.url))
            .header("X-API-Key", &other)
    };
    for (method, path) in [
        (Method::GET, format!("/templates/{template_id}")),
        (Method::GET, format!("/templates/{name}")),
        (Method::DELETE, format!("/templates/{template_id}")),
        (Method::PATCH, format!("/v2/templates/{template_id}")),
        (Method::GET, format!("/templates/{template_id}/tags")),
        (
            Method::GET,
            format!("/templates/{template_id}/files/{HASH}"),
        ),
        (
            Method::GET,
            format!("/templates/{template_id}/builds/{build_id}/status"),
        ),
        (
            Method::GET,
            format!("/templates/{template_id}/builds/{build_id}/logs"),
        ),
        (
            Method::POST,
            format!("/v2/templates/{template_id}/builds/{build_id}"),
        ),
    ] {
        let response = as_other(method, &path)
            .json(&json!({"public": true}))
            .send()
            .await?;
        assert_error(response, 404).await?;
    }
    let create = as_other(Method::POST, "/v2/sandboxes")
        .json(&json!({ "templateID": name }))
        .send()
        .await?;
    assert_error(create, 404).await?;
    let tag = as_other(Method::POST, "/templates/tags")
        .json(&json!({"target": name, "tags": ["mine"]}))
        .send()
        .await?;
    assert_error(tag, 404).await?;
    let listed: Vec<Value> = as_other(Method::GET, "/templates")
        .send()
        .await?
        .json()
        .await?;
    assert!(
        listed
            .iter()
            .all(|t| t["templateID"] != template_id.as_str())
    );

    // Made public, every team sees and starts it; only its team changes it.
    let patched = h
        .request(Method::PATCH, &format!("/v2/templates/{template_id}"))
        .json(&json!({"public": true}))
        .send()
        .await?;
    assert_eq!(patched.status(), 200);
    assert_eq!(patched.json::<Value>().await?, json!({"names": [name]}));
    let listed: Vec<Value> = as_other(Method::GET, "/templates")
        .send()
        .await?
        .json()
        .await?;
    let public = listed
        .iter()
        .find(|t| t["templateID"] == template_id.as_str())
        .ok_or("not listed to others")?;
    assert_eq!(public["public"], true);
    let create = as_other(Method::POST, "/v2/sandboxes")
        .json(&json!({ "templateID": name }))
        .send()
        .await?;
    assert_eq!(create.status(), 201);
    for (method, path) in [
        (Method::DELETE, format!("/templates/{template_id}")),
        (Method::PATCH, format!("/templates/{template_id}")),
        (Method::GET, format!("/templates/{template_id}/tags")),
        (
            Method::GET,
            format!("/templates/{template_id}/builds/{build_id}/status"),
        ),
    ] {
        let response = as_other(method, &path)
            .json(&json!({"public": false}))
            .send()
            .await?;
        assert_error(response, 403).await?;
    }
    let rebuild = as_other(Method::POST, "/v3/templates")
        .json(&json!({ "name": name }))
        .send()
        .await?;
    refused(rebuild, 403, "another team").await?;
    let v1 = h
        .request(Method::PATCH, &format!("/templates/{template_id}"))
        .json(&json!({"public": false}))
        .send()
        .await?;
    assert_eq!(v1.status(), 200);
    let hidden = as_other(Method::GET, &format!("/templates/{template_id}"))
        .send()
        .await?;
    assert_error(hidden, 404).await?;
    Ok(())
}

#[tokio::test]
async fn deleting_a_template_cancels_its_build_and_forgets_it_everywhere() -> TestResult {
    let h = Harness::start().await?;
    h.node.state().build_plan = BuildPlan::Hang { lines: 3 };
    let name = unique("doomed");
    let requested = h.request_build(json!({ "name": name })).await?;
    let template_id = requested["templateID"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let build_id = requested["buildID"].as_str().unwrap_or_default().to_owned();
    h.upload(&template_id, HASH, gzip()).await?;
    let start = h
        .start_build(
            &template_id,
            &build_id,
            &json!({"fromImage": "ubuntu", "steps": [{"type": "COPY", "args": ["a", "/a"], "filesHash": HASH}]}),
        )
        .await?;
    assert_eq!(start.status(), 202);
    h.wait_for(&template_id, &build_id, "building").await?;
    assert_eq!(h.state.builds.in_flight(), 1);
    let dir = h.state.uploads.dir().join(&template_id);
    assert!(dir.exists());

    let deleted = h
        .request(Method::DELETE, &format!("/templates/{name}"))
        .send()
        .await?;
    assert_eq!(deleted.status(), 204);
    wait_until(|| h.node.state().cancelled_builds.contains(&build_id)).await?;
    assert!(h.node.state().deleted_templates.contains(&template_id));
    assert_eq!(h.state.builds.in_flight(), 0);
    assert!(!dir.exists());
    h.expect_error(Method::GET, &format!("/templates/{template_id}"), 404)
        .await?;
    h.expect_error(
        Method::GET,
        &format!("/templates/{template_id}/builds/{build_id}/status"),
        404,
    )
    .await?;
    // The name is free again.
    h.request_build(json!({ "name": name })).await?;
    Ok(())
}

#[tokio::test]
async fn a_template_with_running_sandboxes_is_not_deleted() -> TestResult {
    let h = Harness::start().await?;
    let name = unique("busy");
    let (template_id, build_id) = h.build(&name).await?;
    h.wait_build(&template_id, &build_id).await?;
    let sandbox = h.create(json!({ "templateID": name })).await?;
    let refused_delete = h
        .request(Method::DELETE, &format!("/templates/{template_id}"))
        .send()
        .await?;
    refused(refused_delete, 400, "running sandboxes").await?;
    assert!(h.node.state().deleted_templates.is_empty());
    let kill = h
        .request(Method::DELETE, &format!("/sandboxes/{sandbox}"))
        .send()
        .await?;
    assert_eq!(kill.status(), 204);
    let deleted = h
        .request(Method::DELETE, &format!("/templates/{template_id}"))
        .send()
        .await?;
    assert_eq!(deleted.status(), 204);
    assert_eq!(h.node.state().deleted_templates, [template_id]);
    Ok(())
}

#[tokio::test]
async fn builds_over_the_limit_wait_for_a_slot() -> TestResult {
    let h = Harness::with_config(ApiConfig {
        max_concurrent_builds: 1,
        ..ApiConfig::default()
    })
    .await?;
    h.node.state().build_plan = BuildPlan::Hang { lines: 1 };
    let (first, first_build) = h.build(&unique("first")).await?;
    h.wait_for(&first, &first_build, "building").await?;
    let (second, second_build) = h.build(&unique("second")).await?;
    let mut waiting = Value::Null;
    for _ in 0..100 {
        waiting = h.build_status(&second, &second_build, 0).await?;
        if waiting["logEntries"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(waiting["status"], "waiting");
    assert!(
        waiting["logEntries"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("free build slot")),
        "{waiting}"
    );
    assert_eq!(h.node.state().builds.len(), 1);
    let deleted = h
        .request(Method::DELETE, &format!("/templates/{first}"))
        .send()
        .await?;
    assert_eq!(deleted.status(), 204);
    h.wait_for(&second, &second_build, "building").await?;
    assert_eq!(h.node.state().builds.len(), 2);
    let deleted = h
        .request(Method::DELETE, &format!("/templates/{second}"))
        .send()
        .await?;
    assert_eq!(deleted.status(), 204);
    Ok(())
}

#[tokio::test]
async fn builds_past_their_deadline_fail_and_are_cancelled_on_the_node() -> TestResult {
    let h = Harness::with_config(ApiConfig {
        build_timeout: Duration::from_secs(1),
        ..ApiConfig::default()
    })
    .await?;
    h.node.state().build_plan = BuildPlan::Hang { lines: 2 };
    let (template_id, build_id) = h.build(&unique("slow")).await?;
    let (last, entries) = h.wait_build(&template_id, &build_id).await?;
    assert_eq!(last["status"], "error");
    assert_eq!(entries.len(), 2);
    assert!(
        last["reason"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("did not finish within 1 s")),
        "{last}"
    );
    assert_eq!(last["reason"]["step"], "1");
    wait_until(|| h.node.state().cancelled_builds.contains(&build_id)).await?;
    Ok(())
}

#[tokio::test]
async fn builds_a_previous_process_left_running_end_as_interrupted() -> TestResult {
    let h = Harness::start().await?;
    let started = h.request_build(json!({"name": unique("orphan")})).await?;
    let (template_id, build_id) = (
        started["templateID"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        started["buildID"].as_str().unwrap_or_default().to_owned(),
    );
    // Started by "an earlier process": claimed, but no task of this one runs it.
    assert!(
        h.state
            .store
            .claim_build_start(&build_id, &h.node_name())
            .await?
    );
    assert!(h.state.store.mark_building(&build_id).await?);
    let untouched = h
        .request_build(json!({"name": unique("unstarted")}))
        .await?;
    assert_eq!(hearth_api::builds::interrupt_leftovers(&h.state).await?, 1);
    let status = h.build_status(&template_id, &build_id, 0).await?;
    assert_eq!(status["status"], "error");
    assert_eq!(status["reason"]["message"], hearth_api::builds::INTERRUPTED);
    let waiting = h
        .build_status(
            untouched["templateID"].as_str().unwrap_or_default(),
            untouched["buildID"].as_str().unwrap_or_default(),
            0,
        )
        .await?;
    assert_eq!(waiting["status"], "waiting");
    Ok(())
}

#[tokio::test]
async fn tags_are_checked_and_the_default_tag_stays() -> TestResult {
    let h = Harness::start().await?;
    let name = unique("tagged");
    let (template_id, build_id) = h.build(&name).await?;
    h.wait_build(&template_id, &build_id).await?;
    let tags: Value = h
        .request(Method::GET, &format!("/templates/{name}/tags"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(tags[0]["tag"], "default");
    assert_eq!(tags[0]["buildID"], build_id.as_str());
    for (method, body, status, part) in [
        (
            Method::POST,
            json!({"target": name, "tags": []}),
            400,
            "at least one tag",
        ),
        (
            Method::POST,
            json!({"target": name, "tags": ["a b"]}),
            400,
            "invalid tag",
        ),
        (
            Method::POST,
            json!({"tags": ["x"]}),
            400,
            "target is required",
        ),
        (
            Method::POST,
            json!({"target": format!("{name}:nope"), "tags": ["x"]}),
            404,
            "tag 'nope' does not exist",
        ),
        (
            Method::POST,
            json!({"target": "base", "tags": ["x"]}),
            403,
            "another team",
        ),
        (
            Method::DELETE,
            json!({"name": name, "tags": ["default"]}),
            400,
            "cannot delete the 'default' tag",
        ),
        (
            Method::DELETE,
            json!({"name": format!("{name}:v1"), "tags": ["x"]}),
            400,
            "must not contain a tag",
        ),
        (
            Method::DELETE,
            json!({"name": "nosuchtemplate", "tags": ["x"]}),
            404,
            "not found",
        ),
    ] {
        let response = h
            .request(method, "/templates/tags")
            .json(&body)
            .send()
            .await?;
        refused(response, status, part).await?;
    }
    // Whether a name (and tag) exists, as `Template.exists` asks.
    for (alias, status) in [
        (name.clone(), 200),
        (format!("{name}:default"), 200),
        (format!("{name}:nope"), 404),
        ("nosuchtemplate".to_owned(), 404),
        ("Bad Name".to_owned(), 400),
    ] {
        let path = format!("/templates/aliases/{}", alias.replace(' ', "%20"));
        let response = h.request(Method::GET, &path).send().await?;
        assert_eq!(response.status().as_u16(), status, "{alias}");
    }
    // A newer build moves `default`; `name:<older build>` still starts the old one.
    let (_, second) = h.build(&name).await?;
    h.wait_build(&template_id, &second).await?;
    let sandbox = h.create(json!({ "templateID": name })).await?;
    let config = h
        .node
        .state()
        .sandboxes
        .get(&sandbox)
        .and_then(|s| s.config.clone());
    assert_eq!(config.map(|c| c.build_id), Some(second.clone()));
    let old = h
        .create(json!({ "templateID": format!("{name}:{build_id}") }))
        .await?;
    let config = h
        .node
        .state()
        .sandboxes
        .get(&old)
        .and_then(|s| s.config.clone());
    assert_eq!(config.map(|c| c.build_id), Some(build_id));
    Ok(())
}

#[tokio::test]
async fn the_legacy_v2_request_and_base_still_work() -> TestResult {
    let h = Harness::start().await?;
    let name = unique("legacy");
    let response = h
        .request(Method::POST, "/v2/templates")
        .json(&json!({"alias": name, "cpuCount": 1, "memoryMB": 512}))
        .send()
        .await?;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await?;
    assert_eq!(body["aliases"], json!([name]));
    assert_eq!(body["cpuCount"], 1);
    assert_eq!(body["memoryMB"], 512);
    let listed: Vec<Value> = h
        .request(Method::GET, "/v2/templates")
        .send()
        .await?
        .json()
        .await?;
    let new = listed
        .iter()
        .find(|t| t["templateID"] == body["templateID"])
        .ok_or("not listed")?;
    assert_eq!(new["buildStatus"], "waiting");
    assert_eq!(new["buildID"], "00000000-0000-0000-0000-000000000000");
    let base = listed
        .iter()
        .find(|t| t["templateID"] == "base")
        .ok_or("no base")?;
    assert_eq!(base["buildStatus"], "ready");
    let doc: Value = h
        .request(Method::GET, "/openapi.json")
        .send()
        .await?
        .json()
        .await?;
    for (path, method) in [
        ("/v3/templates", "post"),
        ("/templates/{templateID}/files/{hash}/upload", "put"),
        ("/v2/templates/{templateID}/builds/{buildID}", "post"),
        ("/templates/{templateID}/builds/{buildID}/status", "get"),
        ("/templates/tags", "delete"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{path} {method}");
    }
    let detail: Value = h
        .request(Method::GET, "/templates/base")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(detail["builds"][0]["status"], "ready");
    // A build from `base` runs where there is room and names base to the node.
    let requested = h
        .request_build(json!({"name": unique("from-base")}))
        .await?;
    let template_id = requested["templateID"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let build_id = requested["buildID"].as_str().unwrap_or_default().to_owned();
    let start = h
        .start_build(&template_id, &build_id, &json!({"fromTemplate": "base"}))
        .await?;
    assert_eq!(start.status(), 202);
    h.wait_build(&template_id, &build_id).await?;
    let request = h.node.state().builds.last().cloned().ok_or("no build")?;
    assert_eq!(
        (request.from_template.as_str(), request.from_image.as_str()),
        ("base", "")
    );
    // Both log sources read the one log; another source is refused.
    let logs = |source: &str| {
        h.request(
            Method::GET,
            &format!("/templates/{template_id}/builds/{build_id}/logs?source={source}"),
        )
        .send()
    };
    let persistent: Value = logs("persistent").await?.json().await?;
    let temporary: Value = logs("temporary").await?.json().await?;
    assert!(persistent["logs"].as_array().is_some_and(|l| !l.is_empty()));
    assert_eq!(persistent, temporary);
    refused(
        logs("elsewhere").await?,
        400,
        "source must be persistent or temporary",
    )
    .await?;
    // The v1 build start (the old CLI's) is refused as not offered, not lost.
    let v1 = h
        .request(
            Method::POST,
            &format!("/templates/{template_id}/builds/{build_id}"),
        )
        .json(&json!({}))
        .send()
        .await?;
    refused(v1, 501, "POST /v2/templates/{templateID}/builds/{buildID}").await?;
    Ok(())
}
