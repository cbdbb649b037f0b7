//! Commands in a guest whose output matters as it is written: template
//! build steps stream every line to the build log, and a template's start
//! command is left running in the background when the snapshot is taken.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;

use crate::envd_client::EnvdClient;
use crate::error::{Result, VmmError};

/// A Connect envelope's header: flags and length.
const ENVELOPE_HEADER: usize = 5;
/// envd never sends larger messages; a bigger length means a broken stream.
const MAX_MESSAGE: usize = 16 << 20;

/// What to run in the guest, as envd's `process.Process/Start` takes it.
#[derive(Debug, Clone, Default)]
pub struct ProcessSpec {
    pub cmd: String,
    pub args: Vec<String>,
    pub envs: BTreeMap<String, String>,
    /// Empty: envd's default (the user's home).
    pub cwd: Option<String>,
    /// Empty: envd's default user.
    pub user: Option<String>,
}

impl ProcessSpec {
    /// `sh -c script` (bash when the guest has it, for the same semantics as
    /// E2B's builder) as `user`.
    pub fn shell(shell: &str, script: &str, user: &str) -> Self {
        Self {
            cmd: shell.to_owned(),
            args: vec!["-c".into(), script.to_owned()],
            user: Some(user.to_owned()),
            ..Self::default()
        }
    }
}

/// Which of the process's streams a chunk of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Splits a byte stream into Connect envelopes as the chunks arrive.
#[derive(Debug, Default)]
struct Envelopes {
    buffer: Vec<u8>,
}

impl Envelopes {
    fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next whole envelope's flags and JSON message, if one is buffered.
    fn next(&mut self) -> std::result::Result<Option<(u8, serde_json::Value)>, String> {
        if self.buffer.len() < ENVELOPE_HEADER {
            return Ok(None);
        }
        let length = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if length > MAX_MESSAGE {
            return Err(format!("a message of {length} bytes is over the limit"));
        }
        if self.buffer.len() < ENVELOPE_HEADER + length {
            return Ok(None);
        }
        let flags = self.buffer[0];
        let value = serde_json::from_slice(&self.buffer[ENVELOPE_HEADER..ENVELOPE_HEADER + length])
            .map_err(|e| format!("invalid JSON message: {e}"))?;
        self.buffer.drain(..ENVELOPE_HEADER + length);
        Ok(Some((flags, value)))
    }
}

/// One event of a `Start` stream.
enum Event {
    Started,
    Output(OutputStream, Vec<u8>),
    Ended(i32),
    Other,
}

fn event(flags: u8, value: &serde_json::Value) -> std::result::Result<Event, String> {
    if flags & 0x02 != 0 {
        return match value.get("error") {
            Some(error) => Err(format!("stream ended with an error: {error}")),
            None => Ok(Event::Other),
        };
    }
    let Some(event) = value.get("event") else {
        return Ok(Event::Other);
    };
    if event.get("start").is_some() {
        return Ok(Event::Started);
    }
    if let Some(data) = event.get("data") {
        for (key, stream) in [
            ("stdout", OutputStream::Stdout),
            ("stderr", OutputStream::Stderr),
        ] {
            if let Some(encoded) = data.get(key).and_then(|v| v.as_str()) {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|e| format!("bad {key}: {e}"))?;
                return Ok(Event::Output(stream, bytes));
            }
        }
    }
    if let Some(end) = event.get("end") {
        // proto3 JSON leaves a zero exit code out.
        let code = end
            .get("exitCode")
            .and_then(|v| v.as_i64())
            .and_then(|v| i32::try_from(v).ok())
            .unwrap_or(0);
        return Ok(Event::Ended(code));
    }
    Ok(Event::Other)
}

impl EnvdClient {
    fn start_request(
        &self,
        spec: &ProcessSpec,
        lifetime: Option<Duration>,
    ) -> Result<reqwest::RequestBuilder> {
        let mut process =
            serde_json::json!({ "cmd": spec.cmd, "args": spec.args, "envs": spec.envs });
        if let Some(cwd) = &spec.cwd {
            process["cwd"] = serde_json::Value::String(cwd.clone());
        }
        let message = serde_json::json!({ "process": process, "stdin": false });
        let json = serde_json::to_vec(&message).map_err(|e| self.error(e.to_string()))?;
        let length = u32::try_from(json.len())
            .map_err(|_| self.error("the command is too large to send"))?;
        let mut body = Vec::with_capacity(json.len() + ENVELOPE_HEADER);
        body.push(0);
        body.extend_from_slice(&length.to_be_bytes());
        body.extend_from_slice(&json);
        let mut request = self
            .authorised(
                self.http
                    .post(format!("{}/process.Process/Start", self.base)),
            )
            .header("content-type", "application/connect+json")
            .header("connect-protocol-version", "1")
            .body(body);
        if let Some(lifetime) = lifetime {
            // envd kills the process at this deadline; the request gets a
            // little longer so the `end` event still arrives.
            request = request
                .timeout(lifetime + Duration::from_secs(10))
                .header("connect-timeout-ms", lifetime.as_millis().to_string());
        }
        if let Some(user) = &spec.user {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:"));
            request = request.header("authorization", format!("Basic {basic}"));
        }
        Ok(request)
    }

    /// Sends `request` (a `Start`) and hands each event of its stream to
    /// `handle` until that returns the outcome.
    async fn follow<T>(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
        mut handle: impl FnMut(Event) -> Option<std::result::Result<T, String>> + Send,
    ) -> Result<T> {
        let fail = |m: String| self.error(format!("{what}: {m}"));
        let mut response = request.send().await.map_err(|e| fail(e.to_string()))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = crate::envd_body::error_text(response).await;
            return Err(fail(format!("envd answered {status}: {body}")));
        }
        let mut envelopes = Envelopes::default();
        loop {
            let Some(chunk) = response.chunk().await.map_err(|e| fail(e.to_string()))? else {
                return Err(fail("the stream closed early".into()));
            };
            envelopes.push(&chunk);
            while let Some((flags, value)) = envelopes.next().map_err(&fail)? {
                if let Some(outcome) = handle(event(flags, &value).map_err(&fail)?) {
                    return outcome.map_err(fail);
                }
            }
        }
    }

    /// Runs the process, handing each chunk of its output to `on_output`
    /// as it arrives; returns its exit code. envd kills it after `timeout`.
    pub async fn run_streaming(
        &self,
        spec: &ProcessSpec,
        timeout: Duration,
        mut on_output: impl FnMut(OutputStream, &[u8]) + Send,
    ) -> Result<i32> {
        let request = self.start_request(spec, Some(timeout))?;
        self.follow(
            request,
            &format!("running {}", spec.cmd),
            |event| match event {
                Event::Output(stream, bytes) => {
                    on_output(stream, &bytes);
                    None
                }
                Event::Ended(code) => Some(Ok(code)),
                Event::Started | Event::Other => None,
            },
        )
        .await
    }

    /// Starts the process with no deadline and returns once envd reports it
    /// started; it keeps running after the connection closes.
    pub async fn start_detached(&self, spec: &ProcessSpec) -> Result<()> {
        let request = self
            .start_request(spec, None)?
            .timeout(Duration::from_secs(60));
        self.follow(
            request,
            &format!("starting {}", spec.cmd),
            |event| match event {
                Event::Started => Some(Ok(())),
                Event::Ended(code) => Some(Err(format!("it exited at once with code {code}"))),
                Event::Output(..) | Event::Other => None,
            },
        )
        .await
    }

    /// Copies the host file `source` to `path` in the guest, owned by
    /// `user` (envd's `POST /files` with a raw, streamed body).
    pub async fn upload(&self, source: &std::path::Path, path: &str, user: &str) -> Result<()> {
        let file = tokio::fs::File::open(source)
            .await
            .map_err(VmmError::io("opening", source))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let response = self
            .authorised(self.http.post(format!("{}/files", self.base)))
            .query(&[("path", path), ("username", user)])
            .header("content-type", "application/octet-stream")
            .timeout(Duration::from_secs(3600))
            .body(body)
            .send()
            .await
            .map_err(|e| self.error(format!("uploading {path}: {e}")))?;
        if !response.status().is_success() {
            let status = response.status();
            let text = crate::envd_body::error_text(response).await;
            return Err(VmmError::Envd {
                vm: self.vm.clone(),
                message: format!("uploading {path}: envd answered {status}: {text}"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(flags: u8, json: &str) -> Vec<u8> {
        let mut out = vec![flags];
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(json.as_bytes());
        out
    }

    #[test]
    fn envelopes_split_across_chunks_are_joined() -> std::result::Result<(), String> {
        let mut bytes = envelope(0, r#"{"event":{"data":{"stdout":"aGk="}}}"#);
        bytes.extend(envelope(0, r#"{"event":{"end":{"exitCode":3}}}"#));
        let mut envelopes = Envelopes::default();
        let mut seen = Vec::new();
        for chunk in bytes.chunks(3) {
            envelopes.push(chunk);
            while let Some((flags, value)) = envelopes.next()? {
                seen.push(match event(flags, &value)? {
                    Event::Output(OutputStream::Stdout, b) => String::from_utf8_lossy(&b).into(),
                    Event::Ended(code) => format!("end {code}"),
                    _ => "other".to_owned(),
                });
            }
        }
        assert_eq!(seen, ["hi", "end 3"]);
        Ok(())
    }

    #[test]
    fn an_oversized_length_is_refused() {
        let mut envelopes = Envelopes::default();
        envelopes.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert!(envelopes.next().is_err());
    }
}
