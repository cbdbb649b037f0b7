//! Keeping the served certificates current while hearth runs: files are
//! loaded again when they change (an ACME client renewed them), and the
//! local CA's leaf is re-issued well before it runs out. A change that
//! does not load (a half-written file, a key that does not match) leaves
//! the old certificates in place and is reported once.

use std::time::{Duration, Instant};

pub(crate) use crate::cert_files::Stamp;
use crate::local_ca::LEAF_VALIDITY;
use crate::{CertSource, ServerTls, TlsError};

/// A local leaf is re-issued this long before it would run out.
const REISSUE_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// What one check did.
#[derive(Debug)]
pub enum Refreshed {
    Unchanged,
    /// New certificates are served from the next handshake on.
    Replaced,
    /// They changed but did not load; the previous ones are still served.
    Failed(TlsError),
}

/// What the checks remember between rounds.
#[derive(Debug)]
pub struct Refresher {
    issued: Instant,
    loaded: Stamp,
    failed: Option<Stamp>,
}

impl ServerTls {
    /// Checks every `every`, logging what changed, until the task is
    /// dropped.
    pub async fn refresh(&self, every: Duration) {
        let mut refresher = self.refresher();
        loop {
            tokio::time::sleep(every).await;
            match refresher.check(self) {
                Refreshed::Unchanged => {}
                Refreshed::Replaced => tracing::info!("serving renewed TLS certificates"),
                Refreshed::Failed(error) => tracing::warn!(
                    %error,
                    "the TLS certificates changed but do not load; still serving the previous ones"
                ),
            }
        }
    }

    /// Checks that start from the certificates loaded by `new`.
    pub fn refresher(&self) -> Refresher {
        Refresher {
            issued: Instant::now(),
            loaded: self.loaded.clone(),
            failed: None,
        }
    }
}

/// The versions of `source`'s files.
pub(crate) fn stamp(source: &CertSource) -> Stamp {
    match source {
        CertSource::Files(files) => files.iter().flat_map(|f| f.stamp()).collect(),
        CertSource::LocalCa { .. } => Vec::new(),
    }
}

impl Refresher {
    /// One round: reload changed files, re-issue an old local leaf.
    pub fn check(&mut self, tls: &ServerTls) -> Refreshed {
        let loaded = match &tls.source {
            CertSource::LocalCa { names, .. } => {
                let Some(ca) = tls.ca.as_ref() else {
                    return Refreshed::Unchanged;
                };
                if self.issued.elapsed() + REISSUE_BEFORE < LEAF_VALIDITY {
                    return Refreshed::Unchanged;
                }
                ca.issue(names).map(|key| vec![key])
            }
            CertSource::Files(files) => {
                let now = stamp(&tls.source);
                if now == self.loaded || self.failed.as_ref() == Some(&now) {
                    return Refreshed::Unchanged;
                }
                let keys = files
                    .iter()
                    .map(|f| f.load())
                    .collect::<Result<Vec<_>, _>>();
                match keys {
                    Ok(_) => {
                        self.loaded = now;
                        self.failed = None;
                    }
                    // Once per version of the files, not every round.
                    Err(_) => self.failed = Some(now),
                }
                keys
            }
        };
        match loaded {
            Ok(keys) => {
                tls.store.replace(keys);
                self.issued = Instant::now();
                Refreshed::Replaced
            }
            Err(error) => Refreshed::Failed(error),
        }
    }
}
