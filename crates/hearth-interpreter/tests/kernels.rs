//! The code interpreter server against real Jupyter kernels (ipykernel and
//! bash_kernel from the conformance virtualenv, HEARTH_KERNEL_PYTHON), with a
//! stand-in envd for the sandbox's variables and access token. Run by
//! `make conformance` once the virtualenv exists:
//!
//!   HEARTH_KERNEL_PYTHON=build/venv/bin/python cargo test -p hearth-interpreter --test kernels -- --ignored

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_interpreter::context::Contexts;
use hearth_interpreter::envd::Envd;
use hearth_interpreter::execution::Pace;
use hearth_interpreter::http::{App, router};
use hearth_interpreter::kernel::KernelSettings;
use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TOKEN: &str = "sandbox-token";

struct Server {
    url: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// The Python with ipykernel and bash_kernel.
fn kernel_python() -> Result<PathBuf, String> {
    let python = std::env::var("HEARTH_KERNEL_PYTHON").map_err(
        |_| "HEARTH_KERNEL_PYTHON is not set: the Python with ipykernel (make conformance sets it)",
    )?;
    Ok(PathBuf::from(python))
}

/// A kernelspec: its name and its `kernel.json`.
struct Spec {
    name: &'static str,
    json: Value,
}

/// The kernelspecs of python3 and bash.
fn standard_specs(python: &std::path::Path) -> Vec<Spec> {
    let python = python.display().to_string();
    vec![
        Spec {
            name: "python3",
            json: json!({"argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "python3", "language": "python"}),
        },
        Spec {
            name: "bash",
            json: json!({"argv": [python, "-m", "bash_kernel", "-f", "{connection_file}"],
                "display_name": "bash", "language": "bash"}),
        },
    ]
}

/// Writes kernelspecs under `dir/kernels`.
fn write_kernelspecs(dir: &std::path::Path, specs: &[Spec]) -> std::io::Result<()> {
    for spec in specs {
        std::fs::create_dir_all(dir.join("kernels").join(spec.name))?;
        std::fs::write(
            dir.join("kernels").join(spec.name).join("kernel.json"),
            spec.json.to_string(),
        )?;
    }
    Ok(())
}

/// A stand-in envd: `/envs` answers the sandbox's variables to callers
/// with the token, 401 to others.
async fn fake_envd() -> Result<SocketAddr, std::io::Error> {
    use axum::http::{HeaderMap, StatusCode};
    let app = axum::Router::new().route(
        "/envs",
        axum::routing::get(|headers: HeaderMap| async move {
            if headers.get("x-access-token").and_then(|v| v.to_str().ok()) != Some(TOKEN) {
                return (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"code": 401, "message": "invalid access token"})),
                );
            }
            (
                StatusCode::OK,
                axum::Json(json!({"SANDBOX_WIDE": "from-the-sandbox", "SHADOWED": "global"})),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(address)
}

impl Server {
    async fn start() -> Result<Self, Box<dyn std::error::Error>> {
        Self::start_with(Vec::new()).await
    }

    /// A server with python3, bash and `more` kernels.
    async fn start_with(more: Vec<Spec>) -> Result<Self, Box<dyn std::error::Error>> {
        let python = kernel_python()?;
        let dir = tempfile::tempdir()?;
        write_kernelspecs(dir.path(), &standard_specs(&python))?;
        write_kernelspecs(dir.path(), &more)?;
        std::fs::create_dir_all(dir.path().join("work"))?;
        let envd = fake_envd().await?;
        let app = Arc::new(App {
            contexts: Contexts::new(
                dir.path().join("work").display().to_string(),
                KernelSettings {
                    runtime_dir: dir.path().join("runtime"),
                    start_timeout: Duration::from_secs(60),
                    kernel_dirs: vec![dir.path().to_owned()],
                },
            ),
            ready: std::sync::atomic::AtomicBool::new(true),
            envd: Some(Envd {
                address: envd.to_string(),
                timeout: Duration::from_secs(5),
            }),
            last_sandbox_env: Default::default(),
            pace: Pace {
                keepalive: Duration::from_millis(500),
                ..Pace::default()
            },
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, router(app)).await });
        Ok(Self {
            url,
            client: reqwest::Client::new(),
            _dir: dir,
        })
    }

    /// Runs code and returns the response's lines (keepalives left out).
    async fn execute(&self, body: Value) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
        let response = self
            .client
            .post(format!("{}/execute", self.url))
            .header("X-Access-Token", TOKEN)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            return Err(format!("{status}: {text}").into());
        }
        let mut lines = Vec::new();
        for line in text.split_terminator('\n') {
            let value: Value =
                serde_json::from_str(line).map_err(|e| format!("line {line:?}: {e}"))?;
            if value["type"] != "keepalive" {
                lines.push(value);
            }
        }
        Ok(lines)
    }

    async fn run(&self, code: &str) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
        self.execute(json!({"code": code, "context_id": null, "language": null, "env_vars": null}))
            .await
    }

    /// A new Python context's id.
    async fn new_context(&self) -> Result<String, Box<dyn std::error::Error>> {
        let (_, body) = self.post("/contexts", Some(json!({}))).await?;
        Ok(serde_json::from_str::<Value>(&body)?["id"]
            .as_str()
            .ok_or("no id")?
            .to_owned())
    }

    async fn post(&self, path: &str, body: Option<Value>) -> Result<(u16, String), reqwest::Error> {
        let mut request = self.client.post(format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        Ok((response.status().as_u16(), response.text().await?))
    }
}

fn of_type<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["type"] == kind).collect()
}

fn stdout(lines: &[Value]) -> String {
    of_type(lines, "stdout")
        .iter()
        .filter_map(|l| l["text"].as_str())
        .collect()
}

fn main_text(lines: &[Value]) -> Option<String> {
    of_type(lines, "result")
        .into_iter()
        .find(|r| r["is_main_result"] == true)
        .and_then(|r| r["text"].as_str().map(str::to_owned))
}

#[tokio::test]
#[ignore = "needs ipykernel (HEARTH_KERNEL_PYTHON); run by make conformance"]
async fn state_output_results_and_errors_of_the_default_python_context() -> TestResult {
    let server = Server::start().await?;
    let first = server
        .run("x = 41\nprint('hello'); import sys; print('oops', file=sys.stderr)")
        .await?;
    assert_eq!(stdout(&first), "hello\n");
    assert_eq!(of_type(&first, "stderr")[0]["text"], "oops\n");
    assert!(
        of_type(&first, "stderr")[0]["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(
        of_type(&first, "number_of_executions")[0]["execution_count"],
        1
    );
    assert_eq!(
        first.last().map(|l| l["type"].clone()),
        Some(json!("end_of_execution"))
    );
    // State persists; the cell's value is the main result.
    let second = server.run("x + 1").await?;
    assert_eq!(main_text(&second).as_deref(), Some("42"));
    assert_eq!(
        of_type(&second, "number_of_executions")[0]["execution_count"],
        2
    );
    // Several displays, then the value; a string's quotes come off.
    let shown = server
        .run("from IPython.display import display, HTML\ndisplay(1)\ndisplay(HTML('<b>b</b>'))\n'text'")
        .await?;
    let results = of_type(&shown, "result");
    assert_eq!(results.len(), 3, "{shown:?}");
    assert_eq!(
        (
            results[0]["text"].clone(),
            results[0]["is_main_result"].clone()
        ),
        (json!("1"), json!(false))
    );
    assert_eq!(results[1]["html"], "<b>b</b>");
    assert_eq!(results[1]["extra"], json!({}));
    assert_eq!(main_text(&shown).as_deref(), Some("text"));
    // An error: its name, value and traceback; the context goes on.
    let failed = server.run("1 / 0").await?;
    let errors = of_type(&failed, "error");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["name"], "ZeroDivisionError");
    assert_eq!(errors[0]["value"], "division by zero");
    assert!(
        errors[0]["traceback"]
            .as_str()
            .is_some_and(|t| t.contains("ZeroDivisionError"))
    );
    assert_eq!(main_text(&server.run("x").await?).as_deref(), Some("41"));
    Ok(())
}

#[tokio::test]
#[ignore = "needs ipykernel (HEARTH_KERNEL_PYTHON); run by make conformance"]
async fn contexts_are_isolated_restartable_and_removable() -> TestResult {
    let server = Server::start().await?;
    let cwd = tempfile::tempdir()?;
    let (status, body) = server
        .post(
            "/contexts",
            Some(json!({"language": "python", "cwd": cwd.path()})),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let context: Value = serde_json::from_str(&body)?;
    assert_eq!(context["language"], "python");
    assert_eq!(context["cwd"], cwd.path().display().to_string());
    let id = context["id"].as_str().ok_or("no id")?.to_owned();
    let in_context = |code: &str| json!({"code": code, "context_id": id});
    server.execute(in_context("secret = 7")).await?;
    let pwd = server.execute(in_context("import os; os.getcwd()")).await?;
    assert_eq!(main_text(&pwd), Some(cwd.path().display().to_string()));
    // The default context does not see it.
    let other = server.run("secret").await?;
    assert_eq!(of_type(&other, "error")[0]["name"], "NameError");
    // Listed in creation order: the default (made by the run above) is
    // after the new one.
    let listed: Vec<Value> = server
        .client
        .get(format!("{}/contexts", server.url))
        .send()
        .await?
        .json()
        .await?;
    let ids: Vec<&str> = listed.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids.first(), Some(&id.as_str()));
    assert_eq!(listed.len(), 2);
    // A restart keeps the id and loses the state.
    let (status, body) = server
        .post(&format!("/contexts/{id}/restart"), None)
        .await?;
    assert_eq!((status, body.as_str()), (200, "null"));
    let after = server.execute(in_context("secret")).await?;
    assert_eq!(of_type(&after, "error")[0]["name"], "NameError");
    // Removed: gone from the list, executions in it are 404.
    let removed = server
        .client
        .delete(format!("{}/contexts/{id}", server.url))
        .send()
        .await?;
    assert_eq!(removed.status(), 200);
    let gone = server.execute(in_context("1")).await;
    assert!(gone.is_err_and(|e| e.to_string().starts_with("404") && e.to_string().contains(&id)));
    // A cwd that does not exist, or a language nobody installed: 400.
    let (status, body) = server
        .post("/contexts", Some(json!({"cwd": "/nonexistent/dir"})))
        .await?;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server
        .post("/contexts", Some(json!({"language": "java"})))
        .await?;
    assert!(
        status == 400 && body.contains("no kernel for java"),
        "{status} {body}"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs ipykernel (HEARTH_KERNEL_PYTHON); run by make conformance"]
async fn env_vars_apply_to_one_execution_over_the_sandboxs_own() -> TestResult {
    let server = Server::start().await?;
    let read = "import os; print(os.environ.get('SANDBOX_WIDE'), os.environ.get('SHADOWED'), os.environ.get('ONLY_NOW'))";
    let with = server
        .execute(json!({"code": read, "env_vars": {"SHADOWED": "mine", "ONLY_NOW": "it's \"quoted\"\n"}}))
        .await?;
    assert_eq!(stdout(&with), "from-the-sandbox mine it's \"quoted\"\n\n");
    // Any text is data, characters beyond the BMP included.
    let wide = server
        .execute(json!({"code": "import os; print(os.environ['WIDE'])", "env_vars": {"WIDE": "\u{1f600} é $(x) '\\"}}))
        .await?;
    assert_eq!(stdout(&wide), "\u{1f600} é $(x) '\\\n");
    let without = server.run(read).await?;
    assert_eq!(stdout(&without), "from-the-sandbox global None\n");
    // Helper code counts no executions: three runs, three counted.
    assert_eq!(
        of_type(&without, "number_of_executions")[0]["execution_count"],
        3
    );
    // Without the sandbox's token envd refuses, and so does the server.
    let refused = server
        .client
        .post(format!("{}/execute", server.url))
        .json(&json!({"code": "1"}))
        .send()
        .await?;
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.text().await?, "invalid access token");
    // A name no language can set is refused before anything runs.
    let bad = server
        .execute(json!({"code": "1", "env_vars": {"A-B": "x"}}))
        .await;
    assert!(bad.is_err_and(|e| e.to_string().starts_with("400")));
    Ok(())
}

#[tokio::test]
#[ignore = "needs ipykernel (HEARTH_KERNEL_PYTHON); run by make conformance"]
async fn a_client_that_gives_up_interrupts_its_execution() -> TestResult {
    let server = Server::start().await?;
    server.run("counter = 1").await?;
    let started = Instant::now();
    let timed_out = server
        .client
        .post(format!("{}/execute", server.url))
        .header("X-Access-Token", TOKEN)
        .timeout(Duration::from_secs(2))
        .json(&json!({"code": "import time\ntime.sleep(120)\ncounter = 2"}))
        .send()
        .await;
    let gave_up = match timed_out {
        Ok(response) => response.text().await.is_err(),
        Err(_) => true,
    };
    assert!(gave_up, "the request should have timed out");
    // The sleep was interrupted: the next execution runs within seconds,
    // and the rest of the cell never ran.
    let next = server.run("counter").await?;
    assert_eq!(main_text(&next).as_deref(), Some("1"));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs ipykernel (HEARTH_KERNEL_PYTHON); run by make conformance"]
async fn contexts_run_at_once_and_executions_in_one_queue() -> TestResult {
    let server = Arc::new(Server::start().await?);
    let (status, body) = server.post("/contexts", Some(json!({}))).await?;
    assert_eq!(status, 200, "{body}");
    let other: Value = serde_json::from_str(&body)?;
    server.run("import time").await?;
    server
        .execute(json!({"code": "import time", "context_id": other["id"]}))
        .await?;
    let started = Instant::now();
    let sleep = |context: Option<Value>| {
        let server = server.clone();
        async move {
            server
                .execute(json!({"code": "time.sleep(2); time.time()", "context_id": context}))
                .await
                .map_err(|e| e.to_string())
        }
    };
    // Two contexts: side by side (~2 s, not ~4 s).
    let (a, b) = tokio::join!(sleep(None), sleep(Some(other["id"].clone())));
    a?;
    b?;
    let parallel = started.elapsed();
    assert!(parallel < Duration::from_millis(3800), "{parallel:?}");
    // One context: one after the other.
    let started = Instant::now();
    let (a, b) = tokio::join!(sleep(None), sleep(None));
    let (a, b) = (a?, b?);
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let (ta, tb): (f64, f64) = (
        main_text(&a).ok_or("no value")?.parse()?,
        main_text(&b).ok_or("no value")?.parse()?,
    );
    assert!((ta - tb).abs() >= 1.9, "{ta} {tb}");
    Ok(())
}

#[tokio::test]
#[ignore = "needs bash_kernel (HEARTH_KERNEL_PYTHON); run by make conformance"]
async fn bash_runs_in_a_context_of_its_own() -> TestResult {
    let server = Server::start().await?;
    let lines = server
        .execute(json!({"code": "X=3; echo $((X * 14)) $ONLY_NOW", "language": "bash", "env_vars": {"ONLY_NOW": "$(whoami)"}}))
        .await?;
    assert_eq!(stdout(&lines), "42 $(whoami)\n");
    let later = server
        .execute(json!({"code": "echo \"$X-${ONLY_NOW:-unset}\"", "language": "bash"}))
        .await?;
    assert_eq!(stdout(&later), "3-unset\n");
    let listed: Vec<Value> = server
        .client
        .get(format!("{}/contexts", server.url))
        .send()
        .await?
        .json()
        .await?;
    assert!(listed.iter().any(|c| c["language"] == "bash"));
    Ok(())
}

#[tokio::test]
#[ignore = "needs ipykernel (HEARTH_KERNEL_PYTHON); run by make conformance"]
async fn bad_requests_are_refused_with_what_is_wrong() -> TestResult {
    let server = Server::start().await?;
    let cases: Vec<(&str, u16, &str)> = vec![
        ("{not json", 400, "malformed request body"),
        (
            r#"{"code": "1", "context_id": "x", "language": "python"}"#,
            400,
            "Only one of context_id or language",
        ),
        (
            r#"{"code": "1", "language": "cobol"}"#,
            400,
            "unknown language 'cobol'",
        ),
        (
            r#"{"code": "1", "context_id": "nope"}"#,
            404,
            "Context nope not found",
        ),
    ];
    for (body, status, message) in cases {
        let response = server
            .client
            .post(format!("{}/execute", server.url))
            .header("X-Access-Token", TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        assert_eq!(response.status().as_u16(), status, "{body}");
        let text = response.text().await?;
        assert!(text.contains(message), "{body}: {text}");
    }
    // A huge output streams through (several MB, in order, nothing lost).
    let lines = server
        .run("for i in range(200):\n    print(str(i).rjust(8) + 'x' * 40000)")
        .await?;
    let out = stdout(&lines);
    assert_eq!(out.lines().count(), 200);
    assert!(
        out.lines()
            .enumerate()
            .all(|(i, l)| l.trim_start().starts_with(&format!("{i}x")))
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs ipykernel (HEARTH_KERNEL_PYTHON); run by make conformance"]
async fn a_restart_or_removal_ends_what_runs_without_waiting_for_it() -> TestResult {
    let server = Arc::new(Server::start().await?);
    let id = server.new_context().await?;
    server
        .execute(json!({"code": "kept = 1", "context_id": id}))
        .await?;
    let long = {
        let (server, id) = (server.clone(), id.clone());
        tokio::spawn(async move {
            server
                .execute(json!({"code": "import time; time.sleep(60)", "context_id": id}))
                .await
                .map_err(|e| e.to_string())
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let (status, _) = server
        .post(&format!("/contexts/{id}/restart"), None)
        .await?;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let ended = long.await??;
    assert_eq!(of_type(&ended, "error")[0]["name"], "KernelDied");
    let after = server
        .execute(json!({"code": "kept", "context_id": id}))
        .await?;
    assert_eq!(of_type(&after, "error")[0]["name"], "NameError");
    // Removal while something runs and another waits: both end.
    let running = {
        let (server, id) = (server.clone(), id.clone());
        tokio::spawn(async move {
            server
                .execute(json!({"code": "import time; time.sleep(60)", "context_id": id}))
                .await
                .map_err(|e| e.to_string())
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let queued = {
        let (server, id) = (server.clone(), id.clone());
        tokio::spawn(async move {
            server
                .execute(json!({"code": "1", "context_id": id}))
                .await
                .map_err(|e| e.to_string())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let removed = server
        .client
        .delete(format!("{}/contexts/{id}", server.url))
        .send()
        .await?;
    assert_eq!(removed.status(), 200);
    assert_eq!(of_type(&running.await??, "error")[0]["name"], "KernelDied");
    assert_eq!(
        of_type(&queued.await??, "error")[0]["name"],
        "ContextRemoved"
    );
    Ok(())
}

/// The resident memory of this process (the server runs in it), in KiB.
fn resident_kib() -> Result<u64, Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("no value")?.parse()?)
}

#[tokio::test]
#[ignore = "needs ipykernel (HEARTH_KERNEL_PYTHON); run by make conformance"]
async fn a_client_that_does_not_read_holds_up_output_within_a_bounded_budget() -> TestResult {
    let server = Server::start().await?;
    server.run("chunk = 'y' * (1 << 20)").await?;
    let before = resident_kib()?;
    // 300 MiB of output, 1 MiB a message, to a client that reads nothing
    // for a while: the server holds at most its budget of it (a single
    // message is as large as the kernel makes it; ipykernel sends what
    // was printed since its last flush).
    let mut response = server
        .client
        .post(format!("{}/execute", server.url))
        .header("X-Access-Token", TOKEN)
        .json(&json!({"code": "for i in range(300):\n    print(chunk, flush=True)"}))
        .send()
        .await?;
    let mut peak = before;
    let paused = Instant::now();
    while paused.elapsed() < Duration::from_secs(6) {
        peak = peak.max(resident_kib()?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let grown_mib = peak.saturating_sub(before) / 1024;
    assert!(grown_mib < 64, "the server held {grown_mib} MiB of output");
    // Read now: all of it comes, and the end (each line has one 'y' in
    // its "type"; the text is 'y's).
    let (mut lines, mut ys, mut tail) = (0, 0, Vec::new());
    while let Some(chunk) = response.chunk().await? {
        lines += chunk.iter().filter(|b| **b == b'\n').count();
        ys += chunk.iter().filter(|b| **b == b'y').count();
        tail.extend_from_slice(&chunk);
        tail.drain(..tail.len().saturating_sub(64));
    }
    let tail = String::from_utf8_lossy(&tail);
    assert!(
        tail.ends_with("{\"type\":\"end_of_execution\"}\n"),
        "{tail}"
    );
    assert_eq!(ys - lines, 300 << 20, "{lines} lines");
    assert_eq!(
        main_text(&server.run("6 * 7").await?).as_deref(),
        Some("42")
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs ipykernel (HEARTH_KERNEL_PYTHON); run by make conformance"]
async fn a_context_takes_a_bounded_queue_of_executions() -> TestResult {
    let server = Arc::new(Server::start().await?);
    let id = server.new_context().await?;
    let send = |code: &str| {
        server
            .client
            .post(format!("{}/execute", server.url))
            .header("X-Access-Token", TOKEN)
            .json(&json!({"code": code, "context_id": id}))
            .send()
    };
    let running = send("import time; time.sleep(60)").await?;
    assert_eq!(running.status(), 200);
    // Headers come once an execution has its place in the queue.
    let mut waiting = Vec::new();
    for _ in 0..32 {
        let response = send("1").await?;
        assert_eq!(response.status(), 200);
        waiting.push(response);
    }
    let refused = send("1").await?;
    assert_eq!(refused.status(), 429);
    assert!(
        refused
            .text()
            .await?
            .contains("32 executions are already waiting")
    );
    // The running one ends (its kernel killed); the queue drains in turn.
    let (status, _) = server
        .post(&format!("/contexts/{id}/restart"), None)
        .await?;
    assert_eq!(status, 200);
    drop(running);
    for response in waiting {
        let text = response.text().await?;
        assert!(text.contains(r#""is_main_result":true"#), "{text}");
    }
    Ok(())
}

/// A kernelspec for `language`'s kernel `name` that starts python's kernel
/// after `delay` seconds, or (no delay) a program that does not exist.
fn stand_in_spec(name: &'static str, delay: Option<u32>) -> Result<Spec, String> {
    let python = kernel_python()?.display().to_string();
    let argv = match delay {
        Some(seconds) => json!([
            "/bin/sh",
            "-c",
            format!("sleep {seconds}; exec \"$0\" -m ipykernel_launcher -f \"$1\""),
            python,
            "{connection_file}"
        ]),
        None => json!(["/nonexistent/bin/kernel", "{connection_file}"]),
    };
    Ok(Spec {
        name,
        json: json!({"argv": argv, "display_name": name, "language": name}),
    })
}

#[tokio::test]
#[ignore = "needs ipykernel (HEARTH_KERNEL_PYTHON); run by make conformance"]
async fn a_default_context_that_starts_slowly_streams_from_the_start() -> TestResult {
    // R's kernel here is Python's, 4 s late.
    let server = Server::start_with(vec![stand_in_spec("ir", Some(4))?]).await?;
    let started = Instant::now();
    let response = server
        .client
        .post(format!("{}/execute", server.url))
        .header("X-Access-Token", TOKEN)
        .json(&json!({"code": "6 * 7", "language": "r"}))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    // The headers (and a keepalive) come before the kernel is up.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let text = response.text().await?;
    let lines: Vec<Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(main_text(&lines).as_deref(), Some("42"), "{text}");
    assert!(started.elapsed() >= Duration::from_secs(4));
    Ok(())
}

#[tokio::test]
#[ignore = "needs ipykernel (HEARTH_KERNEL_PYTHON); run by make conformance"]
async fn a_kernel_that_cannot_start_is_reported_without_the_servers_detail() -> TestResult {
    let server = Server::start_with(vec![stand_in_spec("java", None)?]).await?;
    let (status, body) = server
        .post("/contexts", Some(json!({"language": "java"})))
        .await?;
    assert_eq!(
        (status, body.as_str()),
        (500, "cannot start the java kernel")
    );
    let lines = server
        .execute(json!({"code": "1", "language": "java"}))
        .await?;
    let errors = of_type(&lines, "error");
    assert_eq!(errors.len(), 1, "{lines:?}");
    assert_eq!(errors[0]["value"], "cannot start the java kernel");
    assert_eq!(
        lines.last().map(|l| l["type"].clone()),
        Some(json!("end_of_execution"))
    );
    Ok(())
}

/// The children of process `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Whether `pid` is a process that has not been reaped and is not a zombie.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

#[tokio::test]
#[ignore = "needs ipykernel (HEARTH_KERNEL_PYTHON); run by make conformance"]
async fn kernels_die_with_the_server() -> TestResult {
    let python = kernel_python()?;
    let dir = tempfile::tempdir()?;
    write_kernelspecs(dir.path(), &standard_specs(&python))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_hearth-interpreter"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--envd", "none"])
        .args(["--default-language", "python", "--cwd"])
        .arg(dir.path())
        .arg("--kernels-dir")
        .arg(dir.path())
        .arg("--runtime-dir")
        .arg(dir.path().join("runtime"))
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let pid = server.id();
    let health = format!("http://127.0.0.1:{port}/health");
    let deadline = Instant::now() + Duration::from_secs(90);
    let kernels = loop {
        let ready = reqwest::get(&health)
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break children_of(pid);
        }
        if Instant::now() > deadline {
            let _ = server.kill();
            let _ = server.wait();
            return Err("the server's default context did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(kernels.len(), 1, "{kernels:?}");
    server.kill()?;
    server.wait()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(kernels[0]) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !running(kernels[0]),
        "kernel {} outlived its server",
        kernels[0]
    );
    Ok(())
}

/// Deno (HEARTH_KERNEL_DENO, fetched by make conformance as the template
/// installs it) with its kernelspec as the template has it.
fn deno_spec() -> Result<Spec, String> {
    let deno = std::env::var("HEARTH_KERNEL_DENO").map_err(
        |_| "HEARTH_KERNEL_DENO is not set: the deno binary (make conformance fetches it)",
    )?;
    let template: Value = serde_json::from_str(include_str!(
        "../../../templates/code-interpreter/kernels/deno/kernel.json"
    ))
    .map_err(|e| e.to_string())?;
    let mut json = template;
    json["argv"][0] = json!(deno);
    let cache = std::env::temp_dir().join("hearth-test-deno-cache");
    json["env"]["DENO_DIR"] = json!(cache.display().to_string());
    Ok(Spec { name: "deno", json })
}

#[tokio::test]
#[ignore = "needs ipykernel and deno (HEARTH_KERNEL_PYTHON, HEARTH_KERNEL_DENO); run by make conformance"]
async fn javascript_and_typescript_run_on_denos_kernel() -> TestResult {
    let server = Server::start_with(vec![deno_spec()?]).await?;
    let js = |code: &str, language: &str| json!({"code": code, "language": language});
    let first = server
        .execute(js(
            "let a = 40;\nconsole.log('to stdout');\na + 2",
            "javascript",
        ))
        .await?;
    assert_eq!(stdout(&first), "to stdout\n", "{first:?}");
    assert_eq!(main_text(&first).as_deref(), Some("42"), "{first:?}");
    // State persists in the context; TypeScript has a context of its own.
    assert_eq!(
        main_text(&server.execute(js("a * 2", "js")).await?).as_deref(),
        Some("80")
    );
    let typed = server
        .execute(js("const n: number = 5;\nn * 2", "typescript"))
        .await?;
    assert_eq!(main_text(&typed).as_deref(), Some("10"));
    let other = server.execute(js("typeof a", "ts")).await?;
    assert_eq!(main_text(&other).as_deref(), Some("undefined"), "{other:?}");
    // Errors: name and message.
    let failed = server
        .execute(js("throw new TypeError('boom')", "javascript"))
        .await?;
    let errors = of_type(&failed, "error");
    assert_eq!(errors.len(), 1, "{failed:?}");
    assert_eq!(
        (errors[0]["name"].clone(), errors[0]["value"].clone()),
        (json!("TypeError"), json!("boom"))
    );
    // The sandbox's variables and one execution's own.
    let read = "console.log(Deno.env.get('SANDBOX_WIDE'), Deno.env.get('ONLY_NOW') ?? 'unset')";
    let with = server
        .execute(json!({"code": read, "language": "javascript", "env_vars": {"ONLY_NOW": "it's \"quoted\" \u{1f600}"}}))
        .await?;
    assert_eq!(
        stdout(&with),
        "from-the-sandbox it's \"quoted\" \u{1f600}\n"
    );
    let without = server.execute(js(read, "javascript")).await?;
    assert_eq!(stdout(&without), "from-the-sandbox unset\n");
    // Code that keeps printing in the background does not keep its
    // execution open.
    let started = Instant::now();
    let ticking = server
        .execute(js(
            "const t = setInterval(() => console.log('tick'), 20);\n'started'",
            "js",
        ))
        .await?;
    assert_eq!(main_text(&ticking).as_deref(), Some("started"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    server.execute(js("clearInterval(t)", "js")).await?;
    Ok(())
}
