//! Real handshakes (rustls client and server over an in-memory pipe) with
//! the certificates hearth serves: its local CA's, and files that change.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use hearth_tls::{CertFiles, CertSource, Refreshed, ServerTls};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

fn roots(ca_pem: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem)? {
        roots.add(cert?)?;
    }
    Ok(roots)
}

/// A handshake for `name`, trusting `roots`: the leaf the server sent.
async fn handshake(
    server: &ServerTls,
    roots: RootCertStore,
    name: &str,
) -> anyhow::Result<CertificateDer<'static>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(server.config());
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let server_name = ServerName::try_from(name.to_owned())?;
    let (served, connected) = tokio::join!(
        acceptor.accept(server_io),
        connector.connect(server_name, client_io)
    );
    let stream = connected.with_context(|| format!("handshake for {name}"))?;
    drop(served);
    let (_, session) = stream.get_ref();
    let leaf = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .context("the server sent no certificate")?;
    Ok(leaf.clone().into_owned())
}

fn mode(path: &Path) -> anyhow::Result<u32> {
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

#[tokio::test]
async fn the_local_ca_covers_every_sandbox_host_and_is_kept() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let tls_dir = dir.path().join("tls");
    let names = vec![
        "hearth.localhost".to_owned(),
        "*.hearth.localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ];
    let source = CertSource::LocalCa {
        dir: tls_dir.clone(),
        names: names.clone(),
    };
    let first = ServerTls::new(source.clone())?;
    let ca = first.ca().context("a local CA")?.cert_path();
    assert_eq!(mode(&tls_dir)?, 0o700);
    assert_eq!(mode(&tls_dir.join("ca.key"))?, 0o600);
    let ca_pem = std::fs::read(&ca)?;

    handshake(&first, roots(&ca)?, "49983-abc123.hearth.localhost").await?;
    handshake(&first, roots(&ca)?, "api.hearth.localhost").await?;
    handshake(&first, roots(&ca)?, "hearth.localhost").await?;
    // A wildcard covers one label, and other domains not at all.
    assert!(
        handshake(&first, roots(&ca)?, "a.b.hearth.localhost")
            .await
            .is_err()
    );
    assert!(handshake(&first, roots(&ca)?, "example.com").await.is_err());

    // A second start keeps the CA clients already trust, with a new leaf.
    let second = ServerTls::new(source)?;
    assert_eq!(std::fs::read(&ca)?, ca_pem, "ca.pem was replaced");
    let leaf_one = handshake(&first, roots(&ca)?, "8080-x.hearth.localhost").await?;
    let leaf_two = handshake(&second, roots(&ca)?, "8080-x.hearth.localhost").await?;
    assert_ne!(leaf_one, leaf_two, "the second start reused the leaf");

    // The bundle is the system's CAs followed by hearth's.
    let system = dir.path().join("system.pem");
    std::fs::write(
        &system,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
    )?;
    let bundle = second
        .ca()
        .context("a local CA")?
        .write_bundle(Some(&system))?;
    let text = std::fs::read_to_string(&bundle)?;
    assert!(text.starts_with("-----BEGIN CERTIFICATE-----\nAAAA\n"));
    assert!(text.ends_with(std::str::from_utf8(&ca_pem)?));
    Ok(())
}

#[tokio::test]
async fn a_broken_ca_key_is_an_error_that_names_the_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("ca.key"), "not a key")?;
    let made = ServerTls::new(CertSource::LocalCa {
        dir: dir.path().to_owned(),
        names: vec!["hearth.localhost".into()],
    });
    match made {
        Err(error) => assert!(error.to_string().contains("ca.key"), "{error}"),
        Ok(_) => bail!("a broken CA key was accepted"),
    }
    Ok(())
}

/// A CA (its PEM) and a function writing leaves it signs for names.
struct TestCa {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new() -> anyhow::Result<Self> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        let pem = params.self_signed(&key)?.pem();
        Ok(Self {
            pem,
            issuer: rcgen::Issuer::new(params, key),
        })
    }

    /// Writes a leaf for `names` and its key to `cert` and `key`.
    fn write_leaf(&self, names: &[&str], files: &CertFiles) -> anyhow::Result<()> {
        let key = rcgen::KeyPair::generate()?;
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        let cert = params.signed_by(&key, &self.issuer)?;
        // As renewals do: new files moved over the old ones.
        let staged = files.cert.with_extension("new");
        std::fs::write(&staged, cert.pem())?;
        std::fs::rename(&staged, &files.cert)?;
        std::fs::write(&staged, key.serialize_pem())?;
        std::fs::rename(&staged, &files.key)?;
        Ok(())
    }
}

#[tokio::test]
async fn files_are_chosen_by_sni_and_reloaded_when_they_change() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new()?;
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.pem)?;
    let api = CertFiles {
        cert: dir.path().join("api.pem"),
        key: dir.path().join("api.key"),
    };
    let sandboxes = CertFiles {
        cert: dir.path().join("wild.pem"),
        key: dir.path().join("wild.key"),
    };
    ca.write_leaf(&["api.example.test"], &api)?;
    ca.write_leaf(&["*.sb.example.test"], &sandboxes)?;

    let tls = ServerTls::new(CertSource::Files(vec![api.clone(), sandboxes.clone()]))?;
    handshake(&tls, roots(&ca_path)?, "api.example.test").await?;
    let before = handshake(&tls, roots(&ca_path)?, "3000-abc.sb.example.test").await?;

    let mut refresher = tls.refresher();
    assert!(matches!(refresher.check(&tls), Refreshed::Unchanged));
    // A key that does not match its certificate is not taken, and said once.
    std::fs::copy(&api.key, &sandboxes.key)?;
    match refresher.check(&tls) {
        Refreshed::Failed(error) => assert!(error.to_string().contains("wild"), "{error}"),
        other => bail!("a mismatched pair: {other:?}"),
    }
    assert!(matches!(refresher.check(&tls), Refreshed::Unchanged));
    let during = handshake(&tls, roots(&ca_path)?, "3000-abc.sb.example.test").await?;
    assert_eq!(
        during, before,
        "a broken pair replaced the served certificate"
    );

    // A renewal is served from the next handshake, without a restart.
    ca.write_leaf(&["*.sb.example.test"], &sandboxes)?;
    assert!(matches!(refresher.check(&tls), Refreshed::Replaced));
    let after = handshake(&tls, roots(&ca_path)?, "3000-abc.sb.example.test").await?;
    assert_ne!(after, before, "the renewed certificate is not served");
    handshake(&tls, roots(&ca_path)?, "api.example.test").await?;

    // The task that runs the checks does the same on its own.
    let tls = Arc::new(tls);
    let task = tokio::spawn({
        let tls = tls.clone();
        async move { tls.refresh(Duration::from_millis(20)).await }
    });
    ca.write_leaf(&["*.sb.example.test"], &sandboxes)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while handshake(&tls, roots(&ca_path)?, "3000-abc.sb.example.test").await? == after {
        if tokio::time::Instant::now() > deadline {
            task.abort();
            bail!("the refresh task did not serve the renewal within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    Ok(())
}

#[tokio::test]
async fn files_that_do_not_load_name_what_is_wrong() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let files = CertFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    let missing = ServerTls::new(CertSource::Files(vec![files.clone()]));
    assert!(matches!(missing, Err(ref e) if e.to_string().contains("cert.pem")));
    std::fs::write(&files.cert, "no pem here")?;
    std::fs::write(&files.key, "no pem here")?;
    let empty = ServerTls::new(CertSource::Files(vec![files.clone()]));
    assert!(matches!(empty, Err(ref e) if e.to_string().contains("no PEM certificate")));
    assert!(ServerTls::new(CertSource::Files(Vec::new())).is_err());
    Ok(())
}
