//! A stand-in OTLP collector for the end-to-end tests:
//! `otlp_collector ADDRESS FILE` receives traces over gRPC on ADDRESS and
//! appends each span to FILE as a JSON line.

#[path = "../tests/support/collector.rs"]
mod collector;

use std::io::Write;
use std::sync::Mutex;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(address), Some(path)) = (args.next(), args.next()) else {
        return Err("usage: otlp_collector ADDRESS FILE".into());
    };
    let file = Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?,
    );
    let collector = collector::Collector::with_sink(move |span| {
        let Ok(line) = serde_json::to_string(span) else {
            return;
        };
        if let Ok(mut file) = file.lock() {
            let _ = writeln!(file, "{line}");
        }
    });
    let listener = tokio::net::TcpListener::bind(&address).await?;
    collector.serve(listener).await?;
    Ok(())
}
