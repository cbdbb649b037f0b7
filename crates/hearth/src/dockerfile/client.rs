//! The E2B build API as the SDKs use it: register the build, upload each
//! COPY's files, start it, follow its status and logs.

use std::io::Write;
use std::path::{Component, Path};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::parse::Definition;

/// Where the API is and how to authenticate.
#[derive(Debug, Clone)]
pub struct ApiTarget {
    pub url: String,
    pub key: String,
}

/// The response when it succeeded; else an error with the API's message.
async fn check(response: reqwest::Response, what: &str) -> anyhow::Result<reqwest::Response> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    let message = body["message"].as_str().unwrap_or("no message");
    bail!("{what}: {status}: {message}")
}

/// A COPY source as a gzip'd tar of its files, named relative to `context`.
fn archive(context: &Path, source: &str) -> anyhow::Result<Vec<u8>> {
    let relative = source.trim_start_matches("./").trim_end_matches('/');
    let path = Path::new(relative);
    let safe = !relative.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
    if !safe || relative.contains(['*', '?', '[']) {
        bail!("COPY source '{source}' must be a plain path inside the build context");
    }
    let absolute = context.join(path);
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(encoder);
    tar.follow_symlinks(false);
    // Contents, names and modes only (no times, no owners): the same files
    // give the same archive, so its hash finds the cached layer of an
    // earlier build from another checkout. COPY sets owners itself.
    tar.mode(tar::HeaderMode::Deterministic);
    if absolute.is_dir() {
        tar.append_dir_all(path, &absolute)
    } else {
        tar.append_path_with_name(&absolute, path)
    }
    .with_context(|| format!("archiving COPY source '{source}'"))?;
    let mut encoder = tar.into_inner()?;
    encoder.flush()?;
    Ok(encoder.finish()?)
}

/// Builds `definition` (COPY sources from `context`) as template `name`,
/// printing the build's log as it runs.
pub async fn build(
    api: &ApiTarget,
    definition: &Definition,
    context: &Path,
    name: &str,
    cpu_count: u32,
    memory_mb: u32,
) -> anyhow::Result<String> {
    let print = |line: &str| println!("{line}");
    build_logged(api, definition, context, name, cpu_count, memory_mb, &print).await
}

/// [`build`], with each line of the build's log handed to `log`.
pub async fn build_logged(
    api: &ApiTarget,
    definition: &Definition,
    context: &Path,
    name: &str,
    cpu_count: u32,
    memory_mb: u32,
    log: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()?;
    let call = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{}{path}", api.url))
            .header("X-API-Key", &api.key)
    };
    let created: Value = check(
        call(reqwest::Method::POST, "/v3/templates")
            .json(&json!({"name": name, "cpuCount": cpu_count, "memoryMB": memory_mb}))
            .send()
            .await?,
        "registering the build",
    )
    .await?
    .json()
    .await?;
    let template_id = created["templateID"]
        .as_str()
        .context("no templateID")?
        .to_owned();
    let build_id = created["buildID"]
        .as_str()
        .context("no buildID")?
        .to_owned();
    let mut steps = Vec::new();
    for step in &definition.steps {
        let mut body = json!({"type": step.kind, "args": step.args, "force": false});
        if step.kind == "COPY" {
            let tar = archive(context, &step.args[0])?;
            let mut hasher = Sha256::new();
            hasher.update(format!("COPY {} {}", step.args[0], step.args[1]));
            hasher.update(&tar);
            let hash: String = hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let link: Value = check(
                call(
                    reqwest::Method::GET,
                    &format!("/templates/{template_id}/files/{hash}"),
                )
                .send()
                .await?,
                "asking where to upload files",
            )
            .await?
            .json()
            .await?;
            if link["present"] != Value::Bool(true) {
                let url = link["url"].as_str().context("no upload URL")?;
                check(http.put(url).body(tar).send().await?, "uploading files").await?;
            }
            body["filesHash"] = Value::String(hash);
        }
        steps.push(body);
    }
    let mut start = json!({"fromImage": definition.from_image, "force": false, "steps": steps});
    if let Some(cmd) = &definition.start_cmd {
        start["startCmd"] = Value::String(cmd.clone());
    }
    if let Some(cmd) = &definition.ready_cmd {
        start["readyCmd"] = Value::String(cmd.clone());
    }
    check(
        call(
            reqwest::Method::POST,
            &format!("/v2/templates/{template_id}/builds/{build_id}"),
        )
        .json(&start)
        .send()
        .await?,
        "starting the build",
    )
    .await?;
    let mut offset = 0usize;
    loop {
        let status: Value = check(
            call(
                reqwest::Method::GET,
                &format!("/templates/{template_id}/builds/{build_id}/status?logsOffset={offset}"),
            )
            .send()
            .await?,
            "following the build",
        )
        .await?
        .json()
        .await?;
        let entries = status["logEntries"].as_array().cloned().unwrap_or_default();
        for entry in &entries {
            log(entry["message"].as_str().unwrap_or_default());
        }
        offset += entries.len();
        match status["status"].as_str() {
            Some("ready") if entries.is_empty() => return Ok(template_id),
            Some("error") if entries.is_empty() => {
                let reason = &status["reason"];
                bail!(
                    "the build failed at step {}: {}",
                    reason["step"].as_str().unwrap_or("?"),
                    reason["message"].as_str().unwrap_or("unknown")
                );
            }
            _ => {}
        }
        if entries.is_empty() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}
