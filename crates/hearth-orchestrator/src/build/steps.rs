//! A build's steps as the SDKs send them (`TemplateStep`), checked, and the
//! cache key of the disk layer each one produces.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::BuildFailure;

/// At most this many steps in one build.
pub const MAX_STEPS: usize = 1000;
/// At most this many bytes in one step's arguments.
const MAX_ARGS_BYTES: usize = 256 << 10;

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// Unpack the uploaded archive's `src` at `dest`.
    Copy {
        src: String,
        dest: String,
        /// `user` or `user:group`; the build's current user when `None`.
        owner: Option<String>,
        /// Octal, e.g. `0755`; the archive's modes when `None`.
        mode: Option<String>,
        /// The uploaded archive on this host.
        archive: PathBuf,
    },
    Run {
        command: String,
        user: Option<String>,
    },
    Env(Vec<(String, String)>),
    Workdir(String),
    User(String),
}

/// One step of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// From 1, as the SDKs number the builder's calls (`reason.step`).
    pub number: usize,
    pub kind: StepKind,
    /// Run it even when its layer is cached.
    pub force: bool,
    /// What the key hashes: the type, arguments and files hash.
    identity: Vec<String>,
}

impl Step {
    /// The step name the SDKs map back to the builder call.
    pub fn name(&self) -> String {
        self.number.to_string()
    }

    /// A line for the build log, like a Dockerfile instruction.
    pub fn describe(&self) -> String {
        let text = match &self.kind {
            StepKind::Copy { src, dest, .. } => format!("COPY {src} {dest}"),
            StepKind::Run { command, user } => match user {
                Some(user) => format!("RUN (as {user}) {command}"),
                None => format!("RUN {command}"),
            },
            StepKind::Env(pairs) => {
                let pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("ENV {}", pairs.join(" "))
            }
            StepKind::Workdir(path) => format!("WORKDIR {path}"),
            StepKind::User(user) => format!("USER {user}"),
        };
        format!("[{}] {}", self.number, shorten(&text, 300))
    }

    /// The key of the layer this step makes on top of the layer `parent`.
    pub fn layer_key(&self, parent: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"hearth-step-1\0");
        hasher.update(parent.as_bytes());
        for part in &self.identity {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        hex(&hasher.finalize()[..16])
    }
}

/// A key over `parts`, each length-prefixed so no two lists collide.
pub fn hash_parts<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex(&hasher.finalize()[..16])
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max).collect();
    format!("{cut}…")
}

/// The step as the control plane forwarded it.
#[derive(Debug, Clone, Default)]
pub struct RawStep {
    pub kind: String,
    pub args: Vec<String>,
    pub files_hash: String,
    pub force: bool,
    /// COPY: where the uploaded archive is (`file://…`).
    pub files_url: String,
}

fn invalid(number: usize, message: impl Into<String>) -> BuildFailure {
    BuildFailure::new(number.to_string(), message)
}

/// Checks the steps and gives them their numbers.
pub fn parse(raw: &[RawStep]) -> Result<Vec<Step>, BuildFailure> {
    if raw.len() > MAX_STEPS {
        return Err(BuildFailure::new(
            "base",
            format!("a build has at most {MAX_STEPS} steps, not {}", raw.len()),
        ));
    }
    raw.iter()
        .enumerate()
        .map(|(index, step)| parse_one(index + 1, step))
        .collect()
}

fn parse_one(number: usize, raw: &RawStep) -> Result<Step, BuildFailure> {
    let size: usize = raw.args.iter().map(String::len).sum();
    if size > MAX_ARGS_BYTES {
        return Err(invalid(number, "the step's arguments are too long"));
    }
    let args = &raw.args;
    let kind_name = raw.kind.to_ascii_uppercase();
    let kind = match kind_name.as_str() {
        "COPY" | "ADD" => {
            let (Some(src), Some(dest)) = (args.first(), args.get(1)) else {
                return Err(invalid(number, "COPY needs a source and a destination"));
            };
            if raw.files_hash.is_empty() {
                return Err(invalid(number, "COPY needs the hash of its files"));
            }
            let Some(archive) = raw.files_url.strip_prefix("file://") else {
                return Err(invalid(
                    number,
                    "the files of this COPY are not available to the node",
                ));
            };
            let mode = args.get(3).filter(|m| !m.is_empty()).cloned();
            if let Some(mode) = &mode {
                let octal = !mode.is_empty()
                    && mode.len() <= 4
                    && mode.bytes().all(|b| (b'0'..=b'7').contains(&b));
                if !octal {
                    return Err(invalid(number, format!("COPY mode '{mode}' is not octal")));
                }
            }
            StepKind::Copy {
                src: src.clone(),
                dest: dest.clone(),
                owner: args.get(2).filter(|o| !o.is_empty()).cloned(),
                mode,
                archive: PathBuf::from(archive),
            }
        }
        "RUN" => {
            let Some(command) = args.first().filter(|c| !c.trim().is_empty()) else {
                return Err(invalid(number, "RUN needs a command"));
            };
            StepKind::Run {
                command: command.clone(),
                user: args.get(1).filter(|u| !u.is_empty()).cloned(),
            }
        }
        "ENV" | "ARG" => {
            if args.is_empty() || !args.len().is_multiple_of(2) {
                return Err(invalid(number, "ENV needs name and value pairs"));
            }
            let pairs: Vec<(String, String)> = args
                .chunks(2)
                .map(|pair| (pair[0].clone(), pair[1].clone()))
                .collect();
            if let Some((name, _)) = pairs.iter().find(|(name, _)| !valid_env_name(name)) {
                return Err(invalid(
                    number,
                    format!("'{name}' is not an environment variable name"),
                ));
            }
            StepKind::Env(pairs)
        }
        "WORKDIR" => match args.first().filter(|p| !p.is_empty()) {
            Some(path) => StepKind::Workdir(path.clone()),
            None => return Err(invalid(number, "WORKDIR needs a path")),
        },
        "USER" => match args.first().filter(|u| valid_user_name(u)) {
            Some(user) => StepKind::User(user.clone()),
            None => return Err(invalid(number, "USER needs a valid user name")),
        },
        other => {
            return Err(invalid(
                number,
                format!("unknown step type '{other}' (COPY, RUN, ENV, WORKDIR or USER)"),
            ));
        }
    };
    let mut identity = vec![kind_name];
    identity.extend(args.iter().cloned());
    identity.push(raw.files_hash.clone());
    Ok(Step {
        number,
        kind,
        force: raw.force,
        identity,
    })
}

fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A name `useradd` takes (and that is safe inside a shell word).
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        && !name.starts_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: &str, args: &[&str]) -> RawStep {
        RawStep {
            kind: kind.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            ..RawStep::default()
        }
    }

    #[test]
    fn steps_parse_with_their_numbers() -> Result<(), BuildFailure> {
        let mut copy = raw("COPY", &["app/", "/home/user/app/", "", "0755"]);
        copy.files_hash = "ab".repeat(32);
        copy.files_url = "file:///uploads/t/abab".into();
        let steps = parse(&[
            raw("RUN", &["echo hi", "root"]),
            copy,
            raw("ENV", &["A", "1", "B", "two words"]),
            raw("WORKDIR", &["/app"]),
            raw("USER", &["user"]),
        ])?;
        assert_eq!(steps[0].number, 1);
        assert_eq!(
            steps[0].kind,
            StepKind::Run {
                command: "echo hi".into(),
                user: Some("root".into())
            }
        );
        assert!(
            matches!(&steps[1].kind, StepKind::Copy { mode: Some(m), owner: None, archive, .. }
            if m == "0755" && archive == &PathBuf::from("/uploads/t/abab"))
        );
        assert_eq!(
            steps[2].kind,
            StepKind::Env(vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into())
            ])
        );
        assert_eq!(steps[4].describe(), "[5] USER user");
        Ok(())
    }

    #[test]
    fn malformed_steps_name_their_number() {
        for (step, needle) in [
            (raw("RUN", &[]), "RUN needs a command"),
            (raw("ENV", &["A"]), "pairs"),
            (raw("ENV", &["1A", "x"]), "not an environment variable"),
            (raw("USER", &["bad user"]), "valid user name"),
            (raw("COPY", &["a", "/b"]), "hash"),
            (raw("FROB", &["x"]), "unknown step type"),
        ] {
            let failure = parse(&[raw("RUN", &["true"]), step]).err();
            let failure = failure.unwrap_or_else(|| BuildFailure::new("none", "parsed"));
            assert_eq!(failure.step, "2", "{needle}");
            assert!(failure.message.contains(needle), "{}", failure.message);
        }
    }

    #[test]
    fn keys_follow_the_parent_and_the_step() -> Result<(), BuildFailure> {
        let steps = parse(&[raw("RUN", &["a"]), raw("RUN", &["b"])])?;
        assert_ne!(steps[0].layer_key("p"), steps[0].layer_key("q"));
        assert_ne!(steps[0].layer_key("p"), steps[1].layer_key("p"));
        assert_eq!(
            steps[0].layer_key("p"),
            parse(&[raw("RUN", &["a"])])?[0].layer_key("p")
        );
        // force changes what runs, not what the layer is.
        let mut forced = raw("RUN", &["a"]);
        forced.force = true;
        assert_eq!(steps[0].layer_key("p"), parse(&[forced])?[0].layer_key("p"));
        Ok(())
    }
}
