//! `EntryInfo`: what the SDKs learn about a path.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use envd_proto::filesystem::{EntryInfo, FileType};

use super::mode_string::permissions;
use crate::users::UserDb;

/// Prefix of the extended attributes that hold upload metadata.
pub const METADATA_XATTR_PREFIX: &str = "user.e2b.";

fn file_type(meta: &std::fs::Metadata) -> FileType {
    let ft = meta.file_type();
    if ft.is_dir() {
        FileType::FILE_TYPE_DIRECTORY
    } else if ft.is_symlink() {
        FileType::FILE_TYPE_SYMLINK
    } else {
        FileType::FILE_TYPE_FILE
    }
}

/// Describes `path` without following it if it is a symlink; a symlink's
/// `type` is that of its target, with `isSymlink` and `symlinkTarget` set.
pub fn entry_info(path: &Path, users: &UserDb) -> io::Result<EntryInfo> {
    let meta = std::fs::symlink_metadata(path)?;
    let is_symlink = meta.file_type().is_symlink();
    let (kind, symlink_target) = if is_symlink {
        let target = std::fs::canonicalize(path)
            .or_else(|_| std::fs::read_link(path))
            .ok()
            .map(|t| t.to_string_lossy().into_owned());
        let kind = std::fs::metadata(path).map_or(FileType::FILE_TYPE_SYMLINK, |m| file_type(&m));
        (kind, target)
    } else {
        (file_type(&meta), None)
    };
    let name = path
        .file_name()
        .map_or_else(|| "/".to_string(), |n| n.to_string_lossy().into_owned());
    Ok(EntryInfo {
        name,
        r#type: kind.into(),
        path: path.to_string_lossy().into_owned(),
        size: meta.size() as i64,
        mode: meta.mode() & 0o777,
        permissions: permissions(meta.mode()),
        owner: users.user_name(meta.uid()),
        group: users.group_name(meta.gid()),
        modified_time: buffa_types::google::protobuf::Timestamp {
            seconds: meta.mtime(),
            nanos: meta.mtime_nsec() as i32,
            ..Default::default()
        }
        .into(),
        symlink_target,
        metadata: if is_symlink {
            Default::default()
        } else {
            read_metadata(path).into_iter().collect()
        },
        is_symlink,
        ..Default::default()
    })
}

/// Upload metadata stored as `user.e2b.<key>` extended attributes.
pub fn read_metadata(path: &Path) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    let Ok(names) = xattr::list(path) else {
        return out;
    };
    for name in names {
        let name = name.to_string_lossy();
        if let Some(key) = name.strip_prefix(METADATA_XATTR_PREFIX)
            && let Ok(Some(value)) = xattr::get(path, name.as_ref())
        {
            out.insert(
                key.to_string(),
                String::from_utf8_lossy(&value).into_owned(),
            );
        }
    }
    out
}
