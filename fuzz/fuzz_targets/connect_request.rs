//! Arbitrary bytes as the body of Connect requests: envelope framing
//! (streaming methods), JSON and binary decoding (all codecs), for methods
//! that cannot touch the host (no process is started, signalled or fed, no
//! file is changed). The router must answer every input without panicking,
//! with a Connect-shaped response.
#![no_main]

#[path = "envd_harness.rs"]
mod envd_harness;


use http_body_util::BodyExt;
use envd_harness::{router, runtime};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const PROCEDURES: [&str; 5] = [
    "/process.Process/Connect",     // server streaming: one envelope in
    "/process.Process/StreamInput", // client streaming: envelopes in (no process exists)
    "/process.Process/List",
    "/filesystem.Filesystem/Stat",
    "/filesystem.Filesystem/GetWatcherEvents",
];
const CONTENT_TYPES: [&str; 5] = [
    "application/connect+json",
    "application/connect+proto",
    "application/json",
    "application/proto",
    "text/plain",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let procedure = PROCEDURES[usize::from(selector) % PROCEDURES.len()];
    let content_type = CONTENT_TYPES[usize::from(selector / 8) % CONTENT_TYPES.len()];
    let request = http::Request::post(procedure)
        .header("content-type", content_type)
        .header("connect-protocol-version", "1")
        .body(axum::body::Body::from(body.to_vec()))
        .expect("request");
    runtime().block_on(async {
        let response = router().clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let response_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        // Streaming answers are well-formed envelopes ending in end-of-stream.
        if status == 200 && response_type.starts_with("application/connect+") {
            let mut rest = &bytes[..];
            let mut last_flag = None;
            while !rest.is_empty() {
                assert!(rest.len() >= 5, "truncated envelope header");
                let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
                assert!(rest.len() >= 5 + len, "truncated envelope");
                last_flag = Some(rest[0]);
                rest = &rest[5 + len..];
            }
            assert_eq!(last_flag, Some(2), "stream must end with an end-of-stream envelope");
        }
        // JSON error bodies are objects with a string code.
        if status.is_client_error() && response_type.starts_with("application/json") && !bytes.is_empty() {
            let text = std::str::from_utf8(&bytes).expect("utf-8 error body");
            assert!(text.starts_with('{') && text.contains("\"code\""), "error body: {text}");
        }
    });
});
