//! Contexts: a kernel each, with its language and working directory. State
//! persists within a context and never crosses to another; executions in
//! one context queue, in different contexts they run at once. Each
//! language has one default context, made on first use.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

use serde::Serialize;
use tokio::sync::{Mutex, OwnedMutexGuard, RwLock};

use crate::kernel::{Kernel, KernelError, KernelSettings};
use crate::language::Language;

/// What the SDKs see of a context.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ContextInfo {
    pub id: String,
    pub language: String,
    pub cwd: String,
}

/// How many executions may wait for one context's turn; more are refused
/// (each holds its code, up to the request body limit).
pub const MAX_WAITING: usize = 32;

/// The environment variables of a sandbox (envd's, which every process
/// in it gets), by name.
pub type SandboxEnv = BTreeMap<String, String>;

/// A context's kernel and what it has been told.
pub struct Session {
    pub kernel: Option<Kernel>,
    /// The kernel process's environment as this server left it: what it
    /// started with, then what executions set.
    pub env: BTreeMap<String, String>,
    /// The sandbox's variables as last seen, for a kernel started without
    /// a request (a restart).
    pub sandbox_env: SandboxEnv,
}

impl Session {
    /// A new kernel: its environment is what it started with.
    pub fn set_kernel(&mut self, kernel: Kernel) {
        self.env = kernel.started_with().clone();
        self.kernel = Some(kernel);
    }

    /// The kernel is gone (or going): nothing is known of a next one.
    pub fn clear_kernel(&mut self) {
        self.kernel = None;
        self.env.clear();
    }
}

/// A place in a context's queue; dropped, it leaves the queue.
pub struct Waiting {
    context: Arc<Context>,
}

impl Waiting {
    /// The context's session, once the executions before have finished.
    pub async fn turn(self) -> OwnedMutexGuard<Session> {
        self.context.session.clone().lock_owned().await
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.context.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Context {
    pub info: ContextInfo,
    pub language: Language,
    is_default: bool,
    /// Removed from the list: executions still queued for it end at their
    /// turn.
    pub removed: AtomicBool,
    /// The kernel's pid, for a restart or removal that must not wait for a
    /// running execution.
    pid: AtomicI32,
    /// Executions waiting for their turn (at most [`MAX_WAITING`]).
    waiting: AtomicUsize,
    session: Arc<Mutex<Session>>,
}

impl Context {
    /// A place in the queue for the context's turn; `None` when
    /// [`MAX_WAITING`] executions wait already.
    pub fn queue(self: &Arc<Self>) -> Option<Waiting> {
        let before = self.waiting.fetch_add(1, Ordering::Relaxed);
        let place = Waiting {
            context: self.clone(),
        };
        (before < MAX_WAITING).then_some(place)
    }

    /// Starts a kernel for this context with the sandbox's variables.
    pub async fn start_kernel(
        &self,
        settings: &KernelSettings,
        sandbox_env: &SandboxEnv,
    ) -> Result<Kernel, KernelError> {
        let spec = Kernel::spec_for(self.language, settings).await?;
        let kernel =
            Kernel::start(spec, &PathBuf::from(&self.info.cwd), settings, sandbox_env).await?;
        self.pid.store(kernel.pid(), Ordering::Relaxed);
        Ok(kernel)
    }

    /// The kernel is gone: a later restart or removal must not signal its
    /// pid (another process may have it by then).
    pub fn forget_kernel(&self) {
        self.pid.store(0, Ordering::Relaxed);
    }

    /// Kills the kernel now, whatever it runs (its execution ends with an
    /// error; the session gets a new kernel when next used).
    fn kill_kernel(&self) {
        crate::kernel::kill_group(self.pid.swap(0, Ordering::Relaxed));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("Context {0} not found")]
    NotFound(String),
    #[error("the working directory must be an absolute path, not '{0}'")]
    RelativeCwd(String),
    #[error("the working directory {0} does not exist")]
    MissingCwd(String),
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// Every context of this server, in the order they were made.
pub struct Contexts {
    list: RwLock<Vec<Arc<Context>>>,
    /// Held while a default context is made, so that two first uses of a
    /// language make one.
    making_default: Mutex<()>,
    pub default_cwd: String,
    pub settings: KernelSettings,
}

impl Contexts {
    pub fn new(default_cwd: String, settings: KernelSettings) -> Self {
        Self {
            list: RwLock::new(Vec::new()),
            making_default: Mutex::new(()),
            default_cwd,
            settings,
        }
    }

    /// Makes a context with a kernel of its own, started before it is
    /// listed.
    pub async fn create(
        &self,
        language: Language,
        cwd: Option<&str>,
        sandbox_env: &SandboxEnv,
    ) -> Result<Arc<Context>, ContextError> {
        self.make(language, cwd, false, sandbox_env).await
    }

    async fn make(
        &self,
        language: Language,
        cwd: Option<&str>,
        is_default: bool,
        sandbox_env: &SandboxEnv,
    ) -> Result<Arc<Context>, ContextError> {
        let cwd = cwd
            .filter(|c| !c.is_empty())
            .unwrap_or(&self.default_cwd)
            .to_owned();
        if !cwd.starts_with('/') {
            return Err(ContextError::RelativeCwd(cwd));
        }
        if !std::path::Path::new(&cwd).is_dir() {
            return Err(ContextError::MissingCwd(cwd));
        }
        let context = Arc::new(Context {
            info: ContextInfo {
                id: uuid::Uuid::new_v4().to_string(),
                language: language.as_str().to_owned(),
                cwd,
            },
            language,
            is_default,
            removed: AtomicBool::new(false),
            pid: AtomicI32::new(0),
            waiting: AtomicUsize::new(0),
            session: Arc::new(Mutex::new(Session {
                kernel: None,
                env: BTreeMap::new(),
                sandbox_env: sandbox_env.clone(),
            })),
        });
        let kernel = context.start_kernel(&self.settings, sandbox_env).await?;
        context.session.lock().await.set_kernel(kernel);
        self.list.write().await.push(context.clone());
        Ok(context)
    }

    /// The default context of `language`, made now if there is none.
    pub async fn default_for(
        &self,
        language: Language,
        sandbox_env: &SandboxEnv,
    ) -> Result<Arc<Context>, ContextError> {
        if let Some(found) = self.find_default(language).await {
            return Ok(found);
        }
        let _making = self.making_default.lock().await;
        if let Some(found) = self.find_default(language).await {
            return Ok(found);
        }
        self.make(language, None, true, sandbox_env).await
    }

    pub async fn find_default(&self, language: Language) -> Option<Arc<Context>> {
        let list = self.list.read().await;
        list.iter()
            .find(|c| c.is_default && c.language == language)
            .cloned()
    }

    pub async fn get(&self, id: &str) -> Result<Arc<Context>, ContextError> {
        let list = self.list.read().await;
        list.iter()
            .find(|c| c.info.id == id)
            .cloned()
            .ok_or_else(|| ContextError::NotFound(id.to_owned()))
    }

    pub async fn list(&self) -> Vec<ContextInfo> {
        self.list
            .read()
            .await
            .iter()
            .map(|c| c.info.clone())
            .collect()
    }

    /// A fresh kernel for the context, same id: its state is gone. The
    /// kernel is killed at once (a running execution ends with an error);
    /// an idle context gets its new kernel now, a busy one from its next
    /// execution, so a restart never waits behind a queue.
    pub async fn restart(&self, id: &str) -> Result<(), ContextError> {
        let context = self.get(id).await?;
        context.kill_kernel();
        if let Ok(mut session) = context.session.clone().try_lock_owned() {
            session.clear_kernel();
            let sandbox_env = session.sandbox_env.clone();
            session.set_kernel(context.start_kernel(&self.settings, &sandbox_env).await?);
        }
        Ok(())
    }

    /// Removes the context and kills its kernel.
    pub async fn remove(&self, id: &str) -> Result<(), ContextError> {
        let context = {
            let mut list = self.list.write().await;
            let index = list
                .iter()
                .position(|c| c.info.id == id)
                .ok_or_else(|| ContextError::NotFound(id.to_owned()))?;
            list.remove(index)
        };
        // Executions queued for it end when their turn comes.
        context.removed.store(true, Ordering::Relaxed);
        context.kill_kernel();
        if let Ok(mut session) = context.session.clone().try_lock_owned() {
            session.clear_kernel();
        }
        Ok(())
    }
}
