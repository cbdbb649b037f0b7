//! How clients reach sandboxes from `hearth up`: by host, as against E2B's
//! cloud. Sandboxes are `https://<port>-<id>.<domain>`; the domain defaults
//! to `hearth.localhost:<listen port>` (browsers resolve `*.localhost` to
//! loopback themselves, glibc does with nss-myhostname), and the
//! certificate comes from files or from hearth's local CA.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use hearth_orchestrator::DataDir;
use hearth_tls::{CertFiles, CertSource, ServerTls};

/// Where the local CA lives in the data directory.
const TLS_DIR: &str = "tls";
/// This host's trusted CAs (Debian's ca-certificates), the base of the
/// bundle `SSL_CERT_FILE` names.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `hearth up`'s TLS flags.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// A PEM certificate chain to serve (repeat with --tls-key for several;
    /// each handshake gets the first that covers its name). Reloaded when
    /// the file changes. Without it, hearth's local CA issues one.
    #[arg(long = "tls-cert", requires = "tls_keys")]
    pub tls_certs: Vec<PathBuf>,
    /// The PEM private key of the --tls-cert at the same position.
    #[arg(long = "tls-key", requires = "tls_certs")]
    pub tls_keys: Vec<PathBuf>,
}

/// `hearth.localhost:<port>`: resolves to this host for browsers (and for
/// programs once nss-myhostname is on); the port is the listen port, as
/// the SDKs put the domain into sandbox hosts as given.
pub fn default_domain(listen: SocketAddr) -> String {
    format!("hearth.localhost:{}", listen.port())
}

/// The certificates to serve: the files given, else the local CA's, for
/// `domain` and its wildcard (and loopback, for clients that use it).
pub fn tls(
    data: &DataDir,
    args: &TlsArgs,
    domain: &str,
    listen: SocketAddr,
) -> anyhow::Result<ServerTls> {
    let source = if args.tls_certs.is_empty() {
        CertSource::LocalCa {
            dir: data.root().join(TLS_DIR),
            names: local_names(domain, listen),
        }
    } else {
        if args.tls_certs.len() != args.tls_keys.len() {
            bail!(
                "{} --tls-cert but {} --tls-key: give each certificate its key",
                args.tls_certs.len(),
                args.tls_keys.len()
            );
        }
        let pairs = args.tls_certs.iter().zip(&args.tls_keys);
        CertSource::Files(
            pairs
                .map(|(cert, key)| CertFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                })
                .collect(),
        )
    };
    ServerTls::new(source).context("loading the TLS certificates")
}

fn local_names(domain: &str, listen: SocketAddr) -> Vec<String> {
    let host = domain_host(domain);
    let mut names = vec![host.to_owned(), format!("*.{host}"), "localhost".to_owned()];
    let loopback: [IpAddr; 2] = [[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()];
    for ip in loopback.into_iter().chain([listen.ip()]) {
        if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
            names.push(ip.to_string());
        }
    }
    names
}

/// The domain without a port.
fn domain_host(domain: &str) -> &str {
    match domain.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => domain,
    }
}

/// What clients on this host need to trust hearth's certificates: the
/// local CA's `ca.pem` (`NODE_EXTRA_CA_CERTS`, browsers) and a bundle of
/// the system's CAs plus it (`SSL_CERT_FILE`, which replaces the system's
/// for Python's httpx and the SDK's transport). `None` with certificate
/// files: those chain to a CA clients trust already.
#[derive(Debug, Clone)]
pub struct TrustFiles {
    pub ca: PathBuf,
    pub bundle: PathBuf,
}

pub fn trust_files(tls: &ServerTls) -> anyhow::Result<Option<TrustFiles>> {
    let Some(ca) = tls.ca() else {
        return Ok(None);
    };
    let system = Path::new(SYSTEM_CA_BUNDLE);
    let bundle = ca
        .write_bundle(system.exists().then_some(system))
        .context("writing the CA bundle")?;
    Ok(Some(TrustFiles {
        ca: ca.cert_path(),
        bundle,
    }))
}

/// Whether programs on this host resolve sandbox hosts of `domain` to
/// loopback (glibc does for `*.localhost` with nss-myhostname); `Err` says
/// what they get instead.
pub async fn sandbox_hosts_resolve(domain: &str) -> Result<(), String> {
    let probe = format!("49983-doctor.{}", domain_host(domain));
    match tokio::net::lookup_host((probe.as_str(), 0)).await {
        Ok(addresses) => {
            let addresses: Vec<SocketAddr> = addresses.collect();
            if !addresses.is_empty() && addresses.iter().all(|a| a.ip().is_loopback()) {
                Ok(())
            } else {
                Err(format!("{probe} resolves to {addresses:?}, not loopback"))
            }
        }
        Err(error) => Err(format!("{probe} does not resolve: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_certificate_covers_the_domain_without_its_port() {
        let listen: SocketAddr = ([127, 0, 0, 1], 3000).into();
        let domain = default_domain(listen);
        assert_eq!(domain, "hearth.localhost:3000");
        assert_eq!(
            local_names(&domain, listen),
            [
                "hearth.localhost",
                "*.hearth.localhost",
                "localhost",
                "127.0.0.1",
                "::1"
            ]
        );
        let any: SocketAddr = ([0, 0, 0, 0], 3000).into();
        let names = local_names("sb.example.com", any);
        assert_eq!(names[..2], ["sb.example.com", "*.sb.example.com"]);
        assert!(!names.contains(&"0.0.0.0".to_owned()));
        let lan: SocketAddr = ([192, 168, 1, 5], 3000).into();
        assert!(local_names("sb.example.com", lan).contains(&"192.168.1.5".to_owned()));
    }

    #[test]
    fn certificates_and_keys_come_in_pairs() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let data = DataDir::new(dir.path());
        let args = TlsArgs {
            tls_certs: vec!["a.pem".into(), "b.pem".into()],
            tls_keys: vec!["a.key".into()],
        };
        let listen: SocketAddr = ([127, 0, 0, 1], 3000).into();
        let error = tls(&data, &args, "hearth.localhost", listen)
            .err()
            .context("unpaired files were accepted")?;
        assert!(error.to_string().contains("--tls-key"), "{error}");
        Ok(())
    }
}
