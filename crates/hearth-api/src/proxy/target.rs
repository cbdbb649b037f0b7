//! Which sandbox port a request is for: named by the `E2b-Sandbox-Id` and
//! `E2b-Sandbox-Port` headers (what the SDKs send on every sandbox request)
//! or by a host `<port>-<sandboxID>.<domain>`.

use axum::extract::Request;
use axum::http::header;

use super::ENVD_PORT;

/// The sandbox and port a request names.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Sandbox {
        id: String,
        port: u16,
    },
    /// It names a sandbox, but not in a form that can be routed.
    Invalid(String),
}

/// The sandbox and port a request names by header or host, if any.
pub fn target(request: &Request, domain: Option<&str>) -> Option<Target> {
    let headers = request.headers();
    if let Some(id) = headers.get("e2b-sandbox-id") {
        let Ok(id) = id.to_str() else {
            return Some(Target::Invalid("E2b-Sandbox-Id is not text".into()));
        };
        let port = match headers.get("e2b-sandbox-port").map(|p| p.to_str()) {
            None => ENVD_PORT,
            Some(Ok(p)) => match p.trim().parse() {
                Ok(port) => port,
                Err(_) => return Some(Target::Invalid(format!("invalid E2b-Sandbox-Port '{p}'"))),
            },
            Some(Err(_)) => return Some(Target::Invalid("E2b-Sandbox-Port is not text".into())),
        };
        return Some(Target::Sandbox {
            id: id.trim().to_owned(),
            port,
        });
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host())?;
    host_target(host, domain)
}

/// `<port>-<sandboxID>.<domain>[:<listen port>]`; without a configured
/// domain any domain is taken, since API hosts never have that shape. The
/// domain may carry the listen port (`hearth.localhost:3000`): the SDKs put
/// it into sandbox hosts as given.
fn host_target(host: &str, domain: Option<&str>) -> Option<Target> {
    let (label, rest) = without_port(host).split_once('.')?;
    if domain.is_some_and(|d| !rest.eq_ignore_ascii_case(without_port(d))) {
        return None;
    }
    let (port, id) = label.split_once('-')?;
    let port: u16 = port.parse().ok()?;
    let valid_id = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric());
    valid_id.then(|| Target::Sandbox {
        id: id.to_ascii_lowercase(),
        port,
    })
}

/// `name` of `name:port`.
fn without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn request(headers: &[(&str, &str)]) -> Request {
        let mut builder = axum::http::Request::builder().uri("/files");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Body::empty()).unwrap_or_default()
    }

    #[test]
    fn headers_name_the_sandbox_and_port() {
        let r = request(&[("E2b-Sandbox-Id", "abc"), ("E2b-Sandbox-Port", "49999")]);
        assert_eq!(
            target(&r, None),
            Some(Target::Sandbox {
                id: "abc".into(),
                port: 49999
            })
        );
        let r = request(&[("E2b-Sandbox-Id", "abc")]);
        assert_eq!(
            target(&r, None),
            Some(Target::Sandbox {
                id: "abc".into(),
                port: ENVD_PORT
            })
        );
        let r = request(&[("E2b-Sandbox-Id", "abc"), ("E2b-Sandbox-Port", "http")]);
        assert!(matches!(target(&r, None), Some(Target::Invalid(_))));
    }

    #[test]
    fn hosts_name_the_sandbox_and_port() {
        let r = request(&[("Host", "8080-abc123.sb.example.com:3000")]);
        assert_eq!(
            target(&r, Some("sb.example.com")),
            Some(Target::Sandbox {
                id: "abc123".into(),
                port: 8080
            })
        );
        assert_eq!(target(&r, Some("other.com")), None);
        // A domain with the port in it, as `hearth up` gives the SDKs.
        let r = request(&[("Host", "49983-abc123.hearth.localhost:3000")]);
        assert_eq!(
            target(&r, Some("hearth.localhost:3000")),
            Some(Target::Sandbox {
                id: "abc123".into(),
                port: 49983
            })
        );
        let r = request(&[("Host", "api.hearth.localhost:3000")]);
        assert_eq!(target(&r, Some("hearth.localhost:3000")), None);
        assert_eq!(target(&request(&[("Host", "127.0.0.1:3000")]), None), None);
        assert_eq!(target(&request(&[("Host", "api.example.com")]), None), None);
        assert_eq!(
            target(&request(&[("Host", "x-abc.example.com")]), None),
            None
        );
    }
}
