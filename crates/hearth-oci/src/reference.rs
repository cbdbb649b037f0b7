//! Image references: parsing with Docker's normalisation rules and choosing
//! between HTTPS and plain HTTP for a registry.

use std::net::IpAddr;

use oci_client::Reference;

use crate::error::OciError;

/// Parses `reference` the way `docker pull` does: no registry means Docker
/// Hub, a single-component name there means `library/`, no tag means
/// `latest`. `Reference`'s `Display` is the normalised form.
pub(crate) fn parse(reference: &str) -> Result<Reference, OciError> {
    Reference::try_from(reference).map_err(|source| OciError::InvalidReference {
        reference: reference.to_owned(),
        source,
    })
}

/// Whether `registry` (host or host:port, as written in the reference) is
/// reached over plain HTTP: listed as insecure, or on loopback, as Docker
/// does.
pub(crate) fn uses_plain_http(registry: &str, insecure_registries: &[String]) -> bool {
    let host = host_of(registry);
    is_loopback(host)
        || insecure_registries
            .iter()
            .any(|entry| entry == registry || entry == host)
}

/// The host part of `host[:port]` or `[v6]:port`, without brackets.
fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(host, _)| host);
    }
    match registry.rsplit_once(':') {
        // A second colon means a bare IPv6 address, which has no port.
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => registry,
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalised(reference: &str) -> String {
        match parse(reference) {
            Ok(parsed) => parsed.to_string(),
            Err(err) => panic!("{reference}: {err}"),
        }
    }

    #[test]
    fn docker_hub_is_the_default_registry() {
        assert_eq!(normalised("python:3.12"), "docker.io/library/python:3.12");
        assert_eq!(normalised("python"), "docker.io/library/python:latest");
        assert_eq!(normalised("user/app:1"), "docker.io/user/app:1");
        assert_eq!(
            normalised("index.docker.io/library/debian:12"),
            "docker.io/library/debian:12"
        );
    }

    #[test]
    fn other_registries_keep_their_host() {
        assert_eq!(normalised("ghcr.io/org/app:v1"), "ghcr.io/org/app:v1");
        assert_eq!(
            normalised("127.0.0.1:5000/app"),
            "127.0.0.1:5000/app:latest"
        );
        assert_eq!(normalised("localhost/app:x"), "localhost/app:x");
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            normalised(&format!("quay.io/a/b@{digest}")),
            format!("quay.io/a/b@{digest}")
        );
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in [
            "",
            "Python:3",
            "a b",
            "app@sha256:abc",
            "registry:5000/app:t@g",
        ] {
            assert!(
                matches!(parse(bad), Err(OciError::InvalidReference { .. })),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn loopback_registries_use_plain_http() {
        for registry in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(uses_plain_http(registry, &[]), "{registry}");
        }
        for registry in [
            "docker.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[::2]:5000",
        ] {
            assert!(!uses_plain_http(registry, &[]), "{registry}");
        }
    }

    #[test]
    fn insecure_registries_match_by_host_or_host_and_port() {
        let insecure = vec!["reg.lan:5000".to_owned(), "other.lan".to_owned()];
        assert!(uses_plain_http("reg.lan:5000", &insecure));
        assert!(!uses_plain_http("reg.lan:5001", &insecure));
        assert!(uses_plain_http("other.lan:8080", &insecure));
        assert!(uses_plain_http("other.lan", &insecure));
    }
}
