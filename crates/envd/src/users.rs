//! Account lookup from `/etc/passwd` and `/etc/group`.
//!
//! envd is a static binary that must run on any rootfs (glibc, musl, busybox),
//! so it reads the account databases directly instead of going through NSS.

use std::path::{Path, PathBuf};

/// A local account, as processes started for it need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: String,
    /// Supplementary groups (including the primary one).
    pub groups: Vec<u32>,
}

/// Why a user could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user '{0}' does not exist")]
    NotFound(String),
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads accounts from a root directory (normally `/`).
#[derive(Debug, Clone)]
pub struct UserDb {
    etc: PathBuf,
}

impl Default for UserDb {
    fn default() -> Self {
        Self::new("/etc")
    }
}

impl UserDb {
    pub fn new(etc: impl Into<PathBuf>) -> Self {
        Self { etc: etc.into() }
    }

    fn read(&self, file: &str) -> Result<String, UserError> {
        let path = self.etc.join(file);
        std::fs::read_to_string(&path).map_err(|source| UserError::Read { path, source })
    }

    /// Looks a user up by name.
    pub fn by_name(&self, name: &str) -> Result<User, UserError> {
        let passwd = self.read("passwd")?;
        let entry = parse_passwd(&passwd)
            .find(|e| e.name == name)
            .ok_or_else(|| UserError::NotFound(name.to_string()))?;
        let groups = self.read("group").unwrap_or_default();
        Ok(entry.into_user(&groups))
    }

    /// The name of the user with this uid, or the uid as text.
    pub fn user_name(&self, uid: u32) -> String {
        self.read("passwd")
            .ok()
            .and_then(|p| {
                parse_passwd(&p)
                    .find(|e| e.uid == uid)
                    .map(|e| e.name.to_string())
            })
            .unwrap_or_else(|| uid.to_string())
    }

    /// The name of the group with this gid, or the gid as text.
    pub fn group_name(&self, gid: u32) -> String {
        self.read("group")
            .ok()
            .and_then(|g| {
                parse_group(&g)
                    .find(|e| e.gid == gid)
                    .map(|e| e.name.to_string())
            })
            .unwrap_or_else(|| gid.to_string())
    }
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
    shell: &'a str,
}

impl PasswdEntry<'_> {
    fn into_user(self, group_file: &str) -> User {
        let mut groups = vec![self.gid];
        for group in parse_group(group_file) {
            if group.members.contains(&self.name) && !groups.contains(&group.gid) {
                groups.push(group.gid);
            }
        }
        User {
            name: self.name.to_string(),
            uid: self.uid,
            gid: self.gid,
            home: if self.home.is_empty() {
                PathBuf::from("/")
            } else {
                PathBuf::from(self.home)
            },
            shell: self.shell.to_string(),
            groups,
        }
    }
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn parse_passwd(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 7 || line.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: fields[0],
            uid: fields[2].parse().ok()?,
            gid: fields[3].parse().ok()?,
            home: fields[5],
            shell: fields[6],
        })
    })
}

fn parse_group(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 4 || line.starts_with('#') {
            return None;
        }
        Some(GroupEntry {
            name: fields[0],
            gid: fields[2].parse().ok()?,
            members: fields[3].split(',').filter(|m| !m.is_empty()).collect(),
        })
    })
}

/// Expands `~` and resolves a relative path against the user's `home`.
pub fn resolve_path(path: &str, home: &Path) -> PathBuf {
    let expanded = if path == "~" {
        home.to_path_buf()
    } else if let Some(rest) = path.strip_prefix("~/") {
        home.join(rest)
    } else {
        PathBuf::from(path)
    };
    let joined = if expanded.is_absolute() {
        expanded
    } else {
        home.join(expanded)
    };
    normalize(&joined)
}

/// Removes `.` and `..` components lexically (symlinks are not resolved).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        # comment\n\
        user:x:1000:1000::/home/user:/bin/bash\n\
        broken line\n";
    const GROUP: &str = "root:x:0:\nuser:x:1000:\nsudo:x:27:user,other\n";

    fn db() -> (tempfile::TempDir, UserDb) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("passwd"), PASSWD).expect("write passwd");
        std::fs::write(dir.path().join("group"), GROUP).expect("write group");
        let db = UserDb::new(dir.path());
        (dir, db)
    }

    #[test]
    fn finds_user_with_supplementary_groups() {
        let (_dir, db) = db();
        let user = db.by_name("user").expect("user exists");
        assert_eq!(user.uid, 1000);
        assert_eq!(user.home, PathBuf::from("/home/user"));
        assert_eq!(user.groups, vec![1000, 27]);
    }

    #[test]
    fn unknown_user_is_not_found() {
        let (_dir, db) = db();
        assert!(matches!(db.by_name("nobody"), Err(UserError::NotFound(n)) if n == "nobody"));
    }

    #[test]
    fn names_fall_back_to_numbers() {
        let (_dir, db) = db();
        assert_eq!(db.user_name(0), "root");
        assert_eq!(db.user_name(4242), "4242");
        assert_eq!(db.group_name(27), "sudo");
    }

    #[test]
    fn resolves_home_and_relative_paths() {
        let home = Path::new("/home/user");
        assert_eq!(resolve_path("~", home), PathBuf::from("/home/user"));
        assert_eq!(resolve_path("~/a", home), PathBuf::from("/home/user/a"));
        assert_eq!(resolve_path("a/../b", home), PathBuf::from("/home/user/b"));
        assert_eq!(resolve_path("/tmp/./x", home), PathBuf::from("/tmp/x"));
        assert_eq!(resolve_path("../../../..", home), PathBuf::from("/"));
    }
}
