//! Arbitrary bytes as a multipart `/files` upload. The first line of the
//! input is the boundary, the rest the body. The `path` query pins the only
//! file an upload may write to a scratch file, so the fuzzer cannot write
//! elsewhere on the host. envd must answer without panicking: 200 with one
//! entry, or a JSON error.
#![no_main]

#[path = "envd_harness.rs"]
mod envd_harness;

use std::sync::OnceLock;

use http_body_util::BodyExt;
use envd_harness::{router, runtime};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

fn scratch() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("hearth-fuzz-upload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir.join("target.bin").to_string_lossy().into_owned()
    })
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let boundary = String::from_utf8_lossy(&data[..split]).replace(['\r', '\n'], "");
    let body = data.get(split + 1..).unwrap_or_default().to_vec();
    let Ok(content_type) = http::HeaderValue::from_str(&format!("multipart/form-data; boundary={boundary}")) else {
        return;
    };
    let request = http::Request::post(format!("/files?path={}", scratch()))
        .header("content-type", content_type)
        .body(axum::body::Body::from(body))
        .expect("request");
    runtime().block_on(async {
        let response = router().clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        let json: serde_json_value::Value = match serde_json_value::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => panic!("non-JSON answer ({status}): {e}"),
        };
        if status == 200 {
            let entries = json.as_array().expect("entries");
            assert_eq!(entries.len(), 1, "{json}");
            assert_eq!(entries[0]["path"], scratch());
        } else {
            assert!(status.is_client_error(), "unexpected status {status}: {json}");
            assert_eq!(json["code"], status.as_u16());
        }
    });
});
