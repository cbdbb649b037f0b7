//! Sandbox-wide settings that `/init` changes and every request reads.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::filesystem::watcher::WatcherRegistry;
use crate::http::upload_limits::UploadLimits;
use crate::process::registry::ProcessRegistry;
use crate::users::{User, UserDb, UserError};

/// Settings given by the orchestrator through `/init`.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// User for requests that name none; root until `/init` says otherwise.
    pub user: Option<String>,
    /// Working directory for processes that name none (else the user's home).
    pub workdir: Option<PathBuf>,
    /// Environment variables given to every process.
    pub env_vars: HashMap<String, String>,
    /// Token every protected request must carry in `X-Access-Token`.
    pub access_token: Option<String>,
}

/// Startup options of the daemon.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Whether `/init` may set the system clock (only inside a VM).
    pub clock_sync: bool,
    /// Whether `/init` may set the hostname (only inside a VM).
    pub set_hostname: bool,
    /// Where account databases live.
    pub users: UserDb,
    /// Limits of multipart `/files` uploads.
    pub upload_limits: UploadLimits,
    /// Where the new content of files an upload overwrites waits until the
    /// whole upload has arrived; `None` is the system's temporary directory.
    pub upload_staging_dir: Option<PathBuf>,
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct Envd {
    pub options: Options,
    defaults: RwLock<Defaults>,
    pub processes: ProcessRegistry,
    pub watchers: WatcherRegistry,
    /// Told of every process started, so the scan for loopback-only ports
    /// (`port_forward.rs`) looks again at once.
    pub process_started: Arc<tokio::sync::Notify>,
}

pub type SharedEnvd = Arc<Envd>;

impl Envd {
    pub fn new(options: Options) -> SharedEnvd {
        Arc::new(Self {
            options,
            defaults: RwLock::new(Defaults::default()),
            processes: ProcessRegistry::default(),
            watchers: WatcherRegistry::default(),
            process_started: Arc::new(tokio::sync::Notify::new()),
        })
    }

    pub fn defaults(&self) -> Defaults {
        match self.defaults.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn update_defaults(&self, change: impl FnOnce(&mut Defaults)) {
        let mut guard = match self.defaults.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        change(&mut guard);
    }

    /// Resolves the named user, or the default user when `name` is empty.
    pub fn user(&self, name: Option<&str>) -> Result<User, UserError> {
        let default = self.defaults().user;
        let name = match name.filter(|n| !n.is_empty()) {
            Some(name) => name.to_string(),
            None => default.unwrap_or_else(|| "root".to_string()),
        };
        self.options.users.by_name(&name)
    }

    /// The working directory for a process of this user that names none.
    pub fn default_workdir(&self, user: &User) -> PathBuf {
        self.defaults().workdir.unwrap_or_else(|| user.home.clone())
    }
}
