//! Handlers of the `filesystem.Filesystem` RPCs. Blocking filesystem work
//! runs on tokio's blocking pool.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use connectrpc::{ConnectError, RequestContext, ServiceRequest, ServiceResult, ServiceStream};
use envd_proto::filesystem::__buffa::oneof::watch_dir_response::Event as WatchEvent;
use envd_proto::filesystem::*;

use super::entry::entry_info;
use super::events::{WatchError, WatchSpec, watch};
use super::ownership::create_dirs;
use crate::rpc::{keepalive_interval, request_user};
use crate::state::SharedEnvd;
use crate::users::{User, UserDb, resolve_path};

pub struct FilesystemService {
    envd: SharedEnvd,
}

/// Runs blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ConnectError> + Send + 'static,
) -> Result<T, ConnectError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ConnectError::internal(format!("filesystem task failed: {e}")))?
}

/// Maps an I/O error on `path` to the Connect code the SDKs expect.
fn io_error(path: &Path, error: io::Error) -> ConnectError {
    let shown = path.display();
    match error.kind() {
        io::ErrorKind::NotFound => {
            ConnectError::not_found(format!("path '{shown}' does not exist"))
        }
        io::ErrorKind::PermissionDenied => {
            ConnectError::permission_denied(format!("permission denied for '{shown}': {error}"))
        }
        io::ErrorKind::AlreadyExists => {
            ConnectError::already_exists(format!("path '{shown}' already exists"))
        }
        io::ErrorKind::NotADirectory => {
            ConnectError::invalid_argument(format!("path '{shown}' is not a directory"))
        }
        io::ErrorKind::StorageFull => {
            ConnectError::resource_exhausted(format!("no space left on device writing '{shown}'"))
        }
        _ => ConnectError::internal(format!("'{shown}': {error}")),
    }
}

fn watch_error(error: WatchError) -> ConnectError {
    match &error {
        WatchError::NotFound(_) => ConnectError::not_found(error.to_string()),
        WatchError::NotDirectory(_) | WatchError::NetworkMount(_) => {
            ConnectError::invalid_argument(error.to_string())
        }
        WatchError::Watch { .. } => ConnectError::internal(crate::rpc::full_text(&error)),
    }
}

fn stat(path: &Path, users: &UserDb) -> Result<EntryInfo, ConnectError> {
    entry_info(path, users).map_err(|e| io_error(path, e))
}

fn list_dir(root: &Path, depth: u32, users: &UserDb) -> Result<Vec<EntryInfo>, ConnectError> {
    let meta = std::fs::metadata(root).map_err(|e| io_error(root, e))?;
    if !meta.is_dir() {
        return Err(ConnectError::invalid_argument(format!(
            "path '{}' is not a directory",
            root.display()
        )));
    }
    let mut entries = Vec::new();
    walk(root, depth.max(1), users, &mut entries)?;
    Ok(entries)
}

fn walk(
    dir: &Path,
    depth: u32,
    users: &UserDb,
    out: &mut Vec<EntryInfo>,
) -> Result<(), ConnectError> {
    let mut children: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io_error(dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    children.sort();
    for child in children {
        // Entries can vanish while listing; skip them.
        let Ok(info) = entry_info(&child, users) else {
            continue;
        };
        let descend = depth > 1
            && !info.is_symlink
            && info.r#type.as_known() == Some(FileType::FILE_TYPE_DIRECTORY);
        out.push(info);
        if descend {
            walk(&child, depth - 1, users, out)?;
        }
    }
    Ok(())
}

fn make_dir(path: &Path, user: &User, users: &UserDb) -> Result<EntryInfo, ConnectError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            return Err(ConnectError::already_exists(format!(
                "directory '{}' already exists",
                path.display()
            )));
        }
        Ok(_) => {
            return Err(ConnectError::invalid_argument(format!(
                "path '{}' already exists and is not a directory",
                path.display()
            )));
        }
        Err(_) => {}
    }
    create_dirs(path, user).map_err(|e| io_error(path, e))?;
    stat(path, users)
}

fn move_path(
    source: &Path,
    destination: &Path,
    user: &User,
    users: &UserDb,
) -> Result<EntryInfo, ConnectError> {
    std::fs::symlink_metadata(source).map_err(|e| io_error(source, e))?;
    if let Some(parent) = destination.parent() {
        create_dirs(parent, user).map_err(|e| io_error(parent, e))?;
    }
    std::fs::rename(source, destination).map_err(|e| io_error(source, e))?;
    stat(destination, users)
}

/// Removes a file, a symlink (not its target) or a whole tree. A path that
/// does not exist is already removed: upstream envd (Go's `os.RemoveAll`)
/// succeeds there, and the SDKs' own tests remove a directory that way to
/// start from a clean one.
fn remove(path: &Path) -> Result<(), ConnectError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(path, e)),
    };
    let result = if meta.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        // Someone else removed it meanwhile: the outcome asked for.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(|e| io_error(path, e)),
    }
}

impl FilesystemService {
    pub fn new(envd: SharedEnvd) -> Self {
        Self { envd }
    }

    /// The acting user and `path` resolved for them.
    fn resolve(&self, ctx: &RequestContext, path: &str) -> Result<(User, PathBuf), ConnectError> {
        let user = request_user(&self.envd, ctx)?;
        let resolved = resolve_path(path, &user.home);
        Ok((user, resolved))
    }

    fn users(&self) -> UserDb {
        self.envd.options.users.clone()
    }

    fn watch_spec(
        &self,
        ctx: &RequestContext,
        path: &str,
        recursive: bool,
        include_entry: bool,
        allow_network_mounts: bool,
    ) -> Result<WatchSpec, ConnectError> {
        let (_, root) = self.resolve(ctx, path)?;
        Ok(WatchSpec {
            root,
            recursive,
            include_entry,
            allow_network_mounts,
        })
    }
}

// The handlers return concrete types where the trait allows any encodable one.
#[allow(refining_impl_trait)]
impl Filesystem for FilesystemService {
    async fn stat(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, StatRequest>,
    ) -> ServiceResult<StatResponse> {
        let (_, path) = self.resolve(&ctx, request.to_owned_message().path.as_str())?;
        let users = self.users();
        let entry = blocking(move || stat(&path, &users)).await?;
        Ok(StatResponse {
            entry: entry.into(),
            ..Default::default()
        }
        .into())
    }

    async fn make_dir(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, MakeDirRequest>,
    ) -> ServiceResult<MakeDirResponse> {
        let (user, path) = self.resolve(&ctx, request.to_owned_message().path.as_str())?;
        let users = self.users();
        let entry = blocking(move || make_dir(&path, &user, &users)).await?;
        Ok(MakeDirResponse {
            entry: entry.into(),
            ..Default::default()
        }
        .into())
    }

    async fn r#move(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, MoveRequest>,
    ) -> ServiceResult<MoveResponse> {
        let request = request.to_owned_message();
        let (user, source) = self.resolve(&ctx, &request.source)?;
        let (_, destination) = self.resolve(&ctx, &request.destination)?;
        let users = self.users();
        let entry = blocking(move || move_path(&source, &destination, &user, &users)).await?;
        Ok(MoveResponse {
            entry: entry.into(),
            ..Default::default()
        }
        .into())
    }

    async fn list_dir(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, ListDirRequest>,
    ) -> ServiceResult<ListDirResponse> {
        let request = request.to_owned_message();
        let (_, path) = self.resolve(&ctx, &request.path)?;
        let users = self.users();
        let entries = blocking(move || list_dir(&path, request.depth, &users)).await?;
        Ok(ListDirResponse {
            entries,
            ..Default::default()
        }
        .into())
    }

    async fn remove(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, RemoveRequest>,
    ) -> ServiceResult<RemoveResponse> {
        let (_, path) = self.resolve(&ctx, request.to_owned_message().path.as_str())?;
        blocking(move || remove(&path)).await?;
        Ok(RemoveResponse::default().into())
    }

    async fn watch_dir(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, WatchDirRequest>,
    ) -> ServiceResult<ServiceStream<WatchDirResponse>> {
        let r = request.to_owned_message();
        let spec = self.watch_spec(
            &ctx,
            &r.path,
            r.recursive,
            r.include_entry,
            r.allow_network_mounts,
        )?;
        let (watch_guard, mut events) = watch(spec, self.users()).map_err(watch_error)?;
        let keepalive: Duration = keepalive_interval(&ctx);
        let respond = |event: WatchEvent| WatchDirResponse {
            event: Some(event),
            ..Default::default()
        };
        let stream = async_stream::stream! {
            let _watch_guard = watch_guard;
            yield Ok(respond(WatchEvent::Start(Box::default())));
            loop {
                match tokio::time::timeout(keepalive, events.recv()).await {
                    Ok(Some(event)) => yield Ok(respond(WatchEvent::Filesystem(Box::new(event)))),
                    Ok(None) => break,
                    Err(_idle) => yield Ok(respond(WatchEvent::Keepalive(Box::default()))),
                }
            }
        };
        let stream: ServiceStream<WatchDirResponse> = Box::pin(stream);
        Ok(stream.into())
    }

    async fn create_watcher(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, CreateWatcherRequest>,
    ) -> ServiceResult<CreateWatcherResponse> {
        let r = request.to_owned_message();
        let spec = self.watch_spec(
            &ctx,
            &r.path,
            r.recursive,
            r.include_entry,
            r.allow_network_mounts,
        )?;
        let (watch_guard, events) = watch(spec, self.users()).map_err(watch_error)?;
        let watcher_id = self.envd.watchers.add(watch_guard, events);
        Ok(CreateWatcherResponse {
            watcher_id,
            ..Default::default()
        }
        .into())
    }

    async fn get_watcher_events(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, GetWatcherEventsRequest>,
    ) -> ServiceResult<GetWatcherEventsResponse> {
        let id = request.to_owned_message().watcher_id;
        let events = self
            .envd
            .watchers
            .take_events(&id)
            .ok_or_else(|| ConnectError::not_found(format!("watcher '{id}' not found")))?;
        Ok(GetWatcherEventsResponse {
            events,
            ..Default::default()
        }
        .into())
    }

    async fn remove_watcher(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, RemoveWatcherRequest>,
    ) -> ServiceResult<RemoveWatcherResponse> {
        let id = request.to_owned_message().watcher_id;
        if !self.envd.watchers.remove(&id) {
            return Err(ConnectError::not_found(format!("watcher '{id}' not found")));
        }
        Ok(RemoveWatcherResponse::default().into())
    }
}
