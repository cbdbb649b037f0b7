//! `sandbox.json`: what a restarted node needs to adopt a sandbox that is
//! still running, kept in the sandbox's run directory.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sandboxes::SandboxInfo;

/// The file in a sandbox's run directory.
pub const RECORD_FILE: &str = "sandbox.json";
/// Version of the record's layout; another is not adopted.
const LAYOUT: u32 = 1;

/// A running sandbox as a later start of the node finds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub layout: u32,
    /// The sandbox as `Get` reports it: spec (metadata, end time, envd
    /// access token, egress rules), build, shape, start time.
    pub info: SandboxInfo,
    /// Its network slot's index in the node's slot naming.
    pub slot: u32,
    /// Its QEMU process.
    pub qemu_pid: u32,
}

/// Why a record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{context} {}: {source}", .path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", .path.display())]
    Format {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: layout {found}, not {LAYOUT}", .path.display())]
    Layout { path: PathBuf, found: u32 },
}

impl SandboxRecord {
    pub fn new(info: SandboxInfo, slot: u32, qemu_pid: u32) -> Self {
        Self {
            layout: LAYOUT,
            info,
            slot,
            qemu_pid,
        }
    }

    /// Reads the record of the sandbox whose run directory is `run_dir`.
    pub fn read(run_dir: &Path) -> Result<Self, RecordError> {
        let path = run_dir.join(RECORD_FILE);
        let bytes = std::fs::read(&path).map_err(|source| RecordError::Io {
            context: "reading",
            path: path.clone(),
            source,
        })?;
        let record: Self =
            serde_json::from_slice(&bytes).map_err(|source| RecordError::Format {
                path: path.clone(),
                source,
            })?;
        if record.layout != LAYOUT {
            return Err(RecordError::Layout {
                path,
                found: record.layout,
            });
        }
        Ok(record)
    }

    /// Writes the record into `run_dir`, replacing the one there at once:
    /// a crash leaves the old record or the new one, never half of one. The
    /// file is readable by its owner only (it holds envd's access token).
    pub fn write(&self, run_dir: &Path) -> Result<(), RecordError> {
        let path = run_dir.join(RECORD_FILE);
        let temporary = run_dir.join(format!(".{RECORD_FILE}.tmp"));
        let io = |context: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| RecordError::Io {
                context,
                path,
                source,
            }
        };
        let json = serde_json::to_vec_pretty(self).map_err(|source| RecordError::Format {
            path: path.clone(),
            source,
        })?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(io("creating", &temporary))?;
        file.write_all(&json)
            .and_then(|()| file.sync_all())
            .map_err(io("writing", &temporary))?;
        drop(file);
        std::fs::rename(&temporary, &path).map_err(io("replacing", &path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandboxes::SandboxSpec;
    use std::net::Ipv4Addr;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, SystemTime};

    fn scratch() -> std::io::Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!("hearth-record-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    fn info() -> SandboxInfo {
        SandboxInfo {
            spec: SandboxSpec {
                sandbox_id: "sbx-1".into(),
                template_id: "base".into(),
                metadata: [("purpose".to_owned(), "test".to_owned())].into(),
                access_token: Some("secret".into()),
                allowed_cidrs: vec!["8.8.8.8/32".into()],
                end_time: Some(SystemTime::UNIX_EPOCH + Duration::new(1_900_000_000, 5)),
                ..SandboxSpec::default()
            },
            build_id: "b1".into(),
            vcpus: 2,
            memory_mib: 512,
            start_time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            end_time: Some(SystemTime::UNIX_EPOCH + Duration::new(1_900_000_000, 5)),
            host_address: Ipv4Addr::new(10, 21, 0, 6),
            paused: false,
        }
    }

    #[test]
    fn a_record_reads_back_as_written_and_is_private() -> Result<(), Box<dyn std::error::Error>> {
        let dir = scratch()?;
        let record = SandboxRecord::new(info(), 1, 4242);
        record.write(&dir)?;
        let mode = std::fs::metadata(dir.join(RECORD_FILE))?
            .permissions()
            .mode();
        let read = SandboxRecord::read(&dir)?;
        // Rewriting replaces it whole.
        let mut later = read.clone();
        later.info.end_time = None;
        later.write(&dir)?;
        let reread = SandboxRecord::read(&dir)?;
        std::fs::remove_dir_all(&dir)?;
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!((read.slot, read.qemu_pid), (1, 4242));
        assert_eq!(read.info.spec.metadata, record.info.spec.metadata);
        assert_eq!(read.info.spec.access_token.as_deref(), Some("secret"));
        assert_eq!(read.info.spec.allowed_cidrs, ["8.8.8.8/32"]);
        assert_eq!(read.info.end_time, record.info.end_time);
        assert_eq!(read.info.start_time, record.info.start_time);
        assert_eq!(read.info.host_address, record.info.host_address);
        assert_eq!(reread.info.end_time, None);
        Ok(())
    }

    #[test]
    fn missing_corrupt_or_foreign_records_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = scratch()?;
        let missing = SandboxRecord::read(&dir);
        std::fs::write(dir.join(RECORD_FILE), b"{\"layout\": 1, \"info\":")?;
        let corrupt = SandboxRecord::read(&dir);
        let mut other = SandboxRecord::new(info(), 1, 4242);
        other.layout = 99;
        other.write(&dir)?;
        let foreign = SandboxRecord::read(&dir);
        std::fs::remove_dir_all(&dir)?;
        assert!(matches!(missing, Err(RecordError::Io { .. })));
        assert!(matches!(corrupt, Err(RecordError::Format { .. })));
        assert!(matches!(
            foreign,
            Err(RecordError::Layout { found: 99, .. })
        ));
        Ok(())
    }
}
