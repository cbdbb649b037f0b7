//! `GET /openapi.json`: hearth's own description of the API it serves.

use axum::Json;
use serde_json::{Value, json};

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A response with a JSON body of `schema`.
fn body(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn error(description: &str) -> Value {
    body(description, schema_ref("Error"))
}

/// One operation: its summary, its success status and body, and the
/// errors it documents.
fn op(summary: &str, ok: (&str, Value), errors: &[(&str, &str)], request: Option<&str>) -> Value {
    let mut responses = serde_json::Map::new();
    responses.insert(ok.0.to_owned(), ok.1);
    responses.insert("401".into(), error("Missing or invalid X-API-Key"));
    for (status, description) in errors {
        responses.insert((*status).to_owned(), error(description));
    }
    let mut operation = json!({ "summary": summary, "responses": responses });
    if let Some(schema) = request {
        operation["requestBody"] =
            json!({ "content": { "application/json": { "schema": schema_ref(schema) } } });
    }
    operation
}

fn no_content() -> (&'static str, Value) {
    ("204", json!({ "description": "Done" }))
}

fn object(properties: &[(&str, &str)], required: &[&str]) -> Value {
    let props: serde_json::Map<String, Value> = properties
        .iter()
        .map(|(name, ty)| {
            let schema = match *ty {
                "map" => json!({ "type": "object", "additionalProperties": { "type": "string" } }),
                "strings" => json!({ "type": "array", "items": { "type": "string" } }),
                "date-time" => json!({ "type": "string", "format": "date-time" }),
                other if other.starts_with("[#") => {
                    json!({ "type": "array", "items": schema_ref(other.trim_start_matches("[#")) })
                }
                other if other.starts_with('#') => schema_ref(&other[1..]),
                other => json!({ "type": other }),
            };
            ((*name).to_owned(), schema)
        })
        .collect();
    json!({ "type": "object", "properties": props, "required": required })
}

pub fn spec() -> Value {
    let sandbox = ("201", body("The sandbox", schema_ref("Sandbox")));
    let connected = (
        "200",
        body("The sandbox, still running", schema_ref("Sandbox")),
    );
    let listed = (
        "200",
        body(
            "Sandboxes; X-Next-Token names the next page",
            json!({ "type": "array", "items": schema_ref("ListedSandbox") }),
        ),
    );
    let not_found = [("404", "No such sandbox (or another team's)")];
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "hearth",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Self-hosted sandboxes for AI agents, compatible with E2B's SDKs. \
                Authenticate with the X-API-Key header. Sandbox traffic goes to the same server \
                with the E2b-Sandbox-Id and E2b-Sandbox-Port headers, or to the host \
                <port>-<sandboxID>.<domain>. Every API response carries X-Request-Id (the \
                client's, or a new one); server errors quote it in their message.",
        },
        "components": {
            "securitySchemes": { "ApiKeyAuth": { "type": "apiKey", "in": "header", "name": "X-API-Key" } },
            "schemas": {
                "Error": object(&[("code", "integer"), ("message", "string")], &["code", "message"]),
                "NewSandbox": object(&[
                    ("templateID", "string"), ("timeout", "integer"), ("secure", "boolean"),
                    ("allow_internet_access", "boolean"), ("network", "#NetworkConfig"),
                    ("metadata", "map"), ("envVars", "map"),
                ], &["templateID"]),
                "NetworkConfig": object(&[
                    ("allowPublicTraffic", "boolean"), ("allowOut", "strings"), ("denyOut", "strings"),
                ], &[]),
                "NetworkUpdate": object(&[
                    ("allowOut", "strings"), ("denyOut", "strings"), ("allow_internet_access", "boolean"),
                ], &[]),
                "Sandbox": object(&[
                    ("templateID", "string"), ("sandboxID", "string"), ("clientID", "string"),
                    ("envdVersion", "string"), ("envdAccessToken", "string"),
                    ("trafficAccessToken", "string"), ("domain", "string"), ("alias", "string"),
                ], &["templateID", "sandboxID", "clientID", "envdVersion"]),
                "ListedSandbox": object(&[
                    ("templateID", "string"), ("sandboxID", "string"), ("clientID", "string"),
                    ("alias", "string"), ("startedAt", "date-time"), ("endAt", "date-time"),
                    ("cpuCount", "integer"), ("memoryMB", "integer"), ("diskSizeMB", "integer"),
                    ("state", "string"), ("envdVersion", "string"), ("metadata", "map"),
                ], &["templateID", "sandboxID", "clientID", "startedAt", "endAt", "cpuCount",
                     "memoryMB", "diskSizeMB", "state", "envdVersion"]),
                "SandboxMetric": object(&[
                    ("timestamp", "date-time"), ("timestampUnix", "integer"), ("cpuCount", "integer"),
                    ("cpuUsedPct", "number"), ("memUsed", "integer"), ("memTotal", "integer"),
                    ("memCache", "integer"), ("diskUsed", "integer"), ("diskTotal", "integer"),
                ], &["timestamp", "timestampUnix", "cpuCount", "cpuUsedPct", "memUsed", "memTotal",
                     "memCache", "diskUsed", "diskTotal"]),
                "Template": object(&[
                    ("templateID", "string"), ("buildID", "string"), ("cpuCount", "integer"),
                    ("memoryMB", "integer"), ("diskSizeMB", "integer"), ("public", "boolean"),
                    ("aliases", "strings"), ("names", "strings"), ("createdAt", "date-time"),
                    ("updatedAt", "date-time"), ("spawnCount", "integer"), ("envdVersion", "string"),
                    ("buildStatus", "string"),
                ], &["templateID", "buildID", "public", "aliases"]),
                "TemplateBuildRequestV3": object(&[
                    ("name", "string"), ("tags", "strings"), ("alias", "string"), ("teamID", "string"),
                    ("cpuCount", "integer"), ("memoryMB", "integer"), ("minFreeDiskMb", "integer"),
                ], &[]),
                "TemplateRequestResponseV3": object(&[
                    ("templateID", "string"), ("buildID", "string"), ("public", "boolean"),
                    ("names", "strings"), ("tags", "strings"), ("aliases", "strings"),
                ], &["templateID", "buildID", "public", "names", "tags", "aliases"]),
                "TemplateBuildRequestV2": object(&[
                    ("alias", "string"), ("teamID", "string"), ("cpuCount", "integer"), ("memoryMB", "integer"),
                ], &["alias"]),
                "TemplateStep": object(&[
                    ("type", "string"), ("args", "strings"), ("filesHash", "string"), ("force", "boolean"),
                ], &["type"]),
                "TemplateBuildStartV2": object(&[
                    ("fromImage", "string"), ("fromTemplate", "string"), ("fromImageRegistry", "object"),
                    ("force", "boolean"), ("steps", "[#TemplateStep"), ("startCmd", "string"),
                    ("readyCmd", "string"),
                ], &[]),
                "TemplateBuildFileUpload": object(&[("present", "boolean"), ("url", "string")], &["present"]),
                "BuildLogEntry": object(&[
                    ("timestamp", "date-time"), ("level", "string"), ("message", "string"), ("step", "string"),
                ], &["timestamp", "level", "message"]),
                "BuildStatusReason": object(&[
                    ("message", "string"), ("step", "string"), ("logEntries", "[#BuildLogEntry"),
                ], &["message"]),
                "TemplateBuildInfo": object(&[
                    ("templateID", "string"), ("buildID", "string"), ("status", "string"),
                    ("logs", "strings"), ("logEntries", "[#BuildLogEntry"), ("reason", "#BuildStatusReason"),
                ], &["templateID", "buildID", "status", "logs", "logEntries"]),
                "TemplateBuildLogsResponse": object(&[("logs", "[#BuildLogEntry")], &["logs"]),
                "TemplateBuild": object(&[
                    ("buildID", "string"), ("status", "string"), ("createdAt", "date-time"),
                    ("updatedAt", "date-time"), ("finishedAt", "date-time"), ("cpuCount", "integer"),
                    ("memoryMB", "integer"), ("diskSizeMB", "integer"), ("envdVersion", "string"),
                ], &["buildID", "status", "createdAt", "updatedAt", "cpuCount", "memoryMB"]),
                "TemplateWithBuilds": object(&[
                    ("templateID", "string"), ("public", "boolean"), ("aliases", "strings"),
                    ("names", "strings"), ("createdAt", "date-time"), ("updatedAt", "date-time"),
                    ("lastSpawnedAt", "date-time"), ("spawnCount", "integer"), ("builds", "[#TemplateBuild"),
                ], &["templateID", "public", "aliases", "names", "createdAt", "updatedAt", "spawnCount", "builds"]),
                "TemplateUpdateRequest": object(&[("public", "boolean")], &[]),
                "AssignTemplateTagsRequest": object(&[("target", "string"), ("tags", "strings")], &["target", "tags"]),
                "AssignedTemplateTags": object(&[("tags", "strings"), ("buildID", "string")], &["tags", "buildID"]),
                "DeleteTemplateTagsRequest": object(&[("name", "string"), ("tags", "strings")], &["name", "tags"]),
                "TemplateTag": object(&[
                    ("tag", "string"), ("buildID", "string"), ("createdAt", "date-time"),
                ], &["tag", "buildID", "createdAt"]),
                "TeamAPIKey": object(&[
                    ("id", "string"), ("key", "string"), ("name", "string"), ("createdAt", "date-time"),
                    ("lastUsed", "date-time"),
                ], &["id", "name", "createdAt"]),
                "NewTeamAPIKey": object(&[("name", "string")], &["name"]),
                "Timeout": object(&[("timeout", "integer")], &["timeout"]),
                "Refresh": object(&[("duration", "integer")], &[]),
                "Connect": object(&[("timeout", "integer")], &[]),
            },
        },
        "security": [{ "ApiKeyAuth": [] }],
        "paths": {
            "/health": { "get": { "summary": "The API is up", "security": [], "responses": { "204": { "description": "Up" } } } },
            "/openapi.json": { "get": { "summary": "This document", "security": [], "responses": { "200": { "description": "OpenAPI 3" } } } },
            "/sandboxes": {
                "post": op("Create a sandbox (v1; `secure: false` skips the envd token)", sandbox.clone(), &[("400", "Bad request"), ("404", "Unknown template"), ("429", "The team's sandbox limit"), ("503", "No node has room")], Some("NewSandbox")),
                "get": op("List the team's sandboxes (v1; `metadata` filter)", listed.clone(), &[("400", "Bad filter")], None),
            },
            "/v2/sandboxes": {
                "post": op("Create a sandbox", sandbox, &[("400", "Bad request"), ("404", "Unknown template"), ("429", "The team's sandbox limit"), ("503", "No node has room")], Some("NewSandbox")),
                "get": op("List sandboxes: query state, metadata, template, startedAfter, order, limit (≤ 100), nextToken", listed, &[("400", "Bad filter")], None),
            },
            "/sandboxes/{sandboxID}": {
                "get": op("A sandbox's details", ("200", body("SandboxDetail", schema_ref("ListedSandbox"))), &not_found, None),
                "delete": op("Kill a sandbox", no_content(), &not_found, None),
            },
            "/sandboxes/{sandboxID}/connect": { "post": op("Connect; `timeout` only extends", connected.clone(), &not_found, Some("Connect")) },
            "/v2/sandboxes/{sandboxID}/connect": { "post": op("Connect; `timeout` only extends", connected, &not_found, Some("Connect")) },
            "/sandboxes/{sandboxID}/timeout": { "post": op("End the sandbox `timeout` seconds from now", no_content(), &not_found, Some("Timeout")) },
            "/sandboxes/{sandboxID}/refreshes": { "post": op("Keep the sandbox alive `duration` (default 15, ≤ 3600) more seconds", no_content(), &not_found, Some("Refresh")) },
            "/sandboxes/{sandboxID}/network": { "put": op("Change egress rules", no_content(), &not_found, Some("NetworkUpdate")) },
            "/sandboxes/{sandboxID}/metrics": { "get": op("CPU, memory and disk use, sampled now (query start, end)", ("200", body("Samples", json!({ "type": "array", "items": schema_ref("SandboxMetric") }))), &not_found, None) },
            "/sandboxes/metrics": { "get": op("Metrics of several sandboxes (query sandbox_ids, comma-separated, ≤ 100)", ("200", body("By sandbox id", json!({ "type": "object" }))), &[("400", "Bad query")], None) },
            "/sandboxes/{sandboxID}/logs": { "get": op("The sandbox's console (query limit)", ("200", body("logs and logEntries", json!({ "type": "object" }))), &not_found, None) },
            "/v2/sandboxes/{sandboxID}/logs": { "get": op("The sandbox's console (query limit, direction, search)", ("200", body("logs", json!({ "type": "object" }))), &not_found, None) },
            "/templates": { "get": op("Templates the team may use: its own and the public ones (buildStatus: the newest build's)", ("200", body("Templates", json!({ "type": "array", "items": schema_ref("Template") }))), &[], None) },
            "/v2/templates": {
                "get": op("Templates the team may use", ("200", body("Templates", json!({ "type": "array", "items": schema_ref("Template") }))), &[], None),
                "post": op("Request a template build (deprecated; `alias` is the name)", ("202", body("TemplateLegacy", json!({ "type": "object" }))), &[("400", "Bad name or shape"), ("403", "The name is another team's"), ("409", "The name is a template ID")], Some("TemplateBuildRequestV2")),
            },
            "/v3/templates": { "post": op("Request a build of a new template or of the team's template of that name (`name` or `name:tag`; `tags`; cpuCount 1–8, default 2; memoryMB 128–16384 and even, default 1024). The build waits for its start.", ("202", body("The template and build", schema_ref("TemplateRequestResponseV3"))), &[("400", "Bad name, tag or shape"), ("403", "The name is another team's"), ("409", "The name is a template ID")], Some("TemplateBuildRequestV3")) },
            "/templates/{templateID}": {
                "get": op("A template and its builds, newest first (query limit ≤ 100, nextToken; X-Next-Token names the next page)", ("200", body("TemplateWithBuilds", schema_ref("TemplateWithBuilds"))), &[("404", "No such template")], None),
                "delete": op("Delete one of the team's templates: cancels its builds, makes its nodes forget it, removes its tags, names and uploads", no_content(), &[("400", "The team runs sandboxes from it"), ("403", "Another team's (public) template"), ("404", "No such template")], None),
                "patch": op("Make the team's template public or private (deprecated; answers null)", ("200", json!({ "description": "Updated" })), &[("403", "Another team's"), ("404", "No such template")], Some("TemplateUpdateRequest")),
            },
            "/v2/templates/{templateID}": { "patch": op("Make the team's template public or private", ("200", body("names", json!({ "type": "object" }))), &[("403", "Another team's"), ("404", "No such template")], Some("TemplateUpdateRequest")) },
            "/templates/{templateID}/files/{hash}": { "get": op("Where to upload a COPY step's files (hash: 64 hex digits): present, or a signed upload URL valid for an hour", ("201", body("TemplateBuildFileUpload", schema_ref("TemplateBuildFileUpload"))), &[("400", "Bad hash"), ("403", "Another team's template"), ("404", "No such template")], None) },
            "/templates/{templateID}/files/{hash}/upload": { "put": {
                "summary": "Upload a COPY step's files (a tar or tar.gz) to the URL files/{hash} gave; no API key, the URL's signature is its authority. Needs Content-Length.",
                "security": [],
                "parameters": [
                    { "name": "expires", "in": "query", "required": true, "schema": { "type": "integer" } },
                    { "name": "signature", "in": "query", "required": true, "schema": { "type": "string" } },
                ],
                "requestBody": { "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } },
                "responses": {
                    "200": { "description": "Stored" },
                    "400": error("Wrong length, or not a tar or gzip archive"),
                    "403": error("Bad signature, or the URL expired"),
                    "404": error("The template was deleted"),
                    "408": error("The upload took too long"),
                    "411": error("No Content-Length"),
                    "413": error("Over the size limit (1 GiB by default)"),
                },
            } },
            "/v2/templates/{templateID}/builds/{buildID}": { "post": op("Start a waiting build: exactly one of fromImage and fromTemplate; steps COPY [src, dest, user, mode] with an uploaded filesHash, RUN [cmd] or [cmd, user], ENV [k, v, …], WORKDIR [path], USER [user]; at most 1000 steps, 64 KiB per argument. It runs in the background.", ("202", json!({ "description": "Started" })), &[("400", "Bad steps or base, or not waiting"), ("403", "Another team's template"), ("404", "No such template, build or base template"), ("503", "No node answers")], Some("TemplateBuildStartV2")) },
            "/templates/{templateID}/builds/{buildID}/status": { "get": op("A build's status and log entries from logsOffset (query logsOffset, limit ≤ 100, level: that level and above)", ("200", body("TemplateBuildInfo", schema_ref("TemplateBuildInfo"))), &[("400", "Bad query"), ("403", "Another team's template"), ("404", "No such template or build")], None) },
            "/templates/{templateID}/builds/{buildID}/logs": { "get": op("A build's log entries from a time (query cursor: Unix ms, direction forward|backward, limit ≤ 100, level, source)", ("200", body("TemplateBuildLogsResponse", schema_ref("TemplateBuildLogsResponse"))), &[("400", "Bad query"), ("403", "Another team's template"), ("404", "No such template or build")], None) },
            "/templates/tags": {
                "post": op("Point tags at the build `target` (name:tag) names", ("201", body("AssignedTemplateTags", schema_ref("AssignedTemplateTags"))), &[("400", "Bad tags"), ("403", "Another team's template"), ("404", "No such template or tag")], Some("AssignTemplateTagsRequest")),
                "delete": op("Remove tags from a template (not `default`)", no_content(), &[("400", "Bad tags or name"), ("403", "Another team's template"), ("404", "No such template")], Some("DeleteTemplateTagsRequest")),
            },
            "/templates/{templateID}/tags": { "get": op("A template's tags", ("200", body("Tags", json!({ "type": "array", "items": schema_ref("TemplateTag") }))), &[("403", "Another team's template"), ("404", "No such template")], None) },
            "/templates/aliases/{alias}": { "get": op("Whether a name (or name:tag) exists", ("200", body("templateID and public", json!({ "type": "object" }))), &[("400", "Bad name"), ("403", "Another team's"), ("404", "No such name or tag")], None) },
            "/teams": { "get": op("The caller's team", ("200", body("Teams", json!({ "type": "array" }))), &[], None) },
            "/api-keys": {
                "get": op("The team's API keys (masked)", ("200", body("Keys", json!({ "type": "array", "items": schema_ref("TeamAPIKey") }))), &[], None),
                "post": op("Create an API key; the key is shown only here", ("201", body("The new key", schema_ref("TeamAPIKey"))), &[("400", "Bad name")], Some("NewTeamAPIKey")),
            },
            "/api-keys/{apiKeyID}": {
                "patch": op("Rename an API key", ("200", json!({ "description": "Renamed" })), &[("404", "No such key")], Some("NewTeamAPIKey")),
                "delete": op("Delete an API key", no_content(), &[("404", "No such key")], None),
            },
        },
    })
}

pub async fn document() -> Json<Value> {
    Json(spec())
}
