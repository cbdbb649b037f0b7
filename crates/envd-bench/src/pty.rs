//! PTY throughput: a terminal session that prints 10 MiB (`cat` of a file of
//! printable text), received through envd as `data.pty` events.

use std::time::Instant;

use anyhow::bail;
use base64::Engine;
use futures::StreamExt;

use crate::envd_process::{EnvdProcess, envelope};

pub async fn run(envd: &EnvdProcess, size: usize) -> anyhow::Result<()> {
    let file = std::env::temp_dir().join(format!("hearth-bench-pty-{}.txt", std::process::id()));
    let line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01\n";
    let text: Vec<u8> = line.iter().copied().cycle().take(size).collect();
    std::fs::write(&file, &text)?;
    let request = serde_json::json!({
        "process": {"cmd": "/bin/cat", "args": [file.to_string_lossy()]},
        "pty": {"size": {"cols": 200, "rows": 50}},
    });
    let started = Instant::now();
    let response = envd
        .client
        .post(envd.url("/process.Process/Start"))
        .header("content-type", "application/connect+json")
        .body(envelope(request.to_string().as_bytes()))
        .send()
        .await?;
    let mut stream = response.bytes_stream();
    let mut buffer = Vec::new();
    let mut received = 0usize;
    let mut ended = false;
    while let Some(chunk) = stream.next().await {
        buffer.extend_from_slice(&chunk?);
        while buffer.len() >= 5 {
            let len = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
            if buffer.len() < 5 + len {
                break;
            }
            let message: serde_json::Value = serde_json::from_slice(&buffer[5..5 + len])?;
            if let Some(data) = message["event"]["data"]["pty"].as_str() {
                received += base64::engine::general_purpose::STANDARD
                    .decode(data)?
                    .len();
            }
            ended |= !message["event"]["end"].is_null();
            buffer.drain(..5 + len);
        }
    }
    let elapsed = started.elapsed();
    let _ = std::fs::remove_file(&file);
    if !ended {
        bail!("PTY stream ended without an end event");
    }
    // The terminal turns each \n into \r\n, so more bytes arrive than were printed.
    if received < size {
        bail!("received {received} PTY bytes, expected at least {size}");
    }
    println!("## PTY session printing {} MiB\n", size / (1024 * 1024));
    println!("| bytes received | time | throughput |\n|---|---|---|");
    println!(
        "| {received} | {:.3} s | {:.1} MiB/s |\n",
        elapsed.as_secs_f64(),
        received as f64 / 1048576.0 / elapsed.as_secs_f64()
    );
    Ok(())
}
