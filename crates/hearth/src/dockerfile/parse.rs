//! A Dockerfile as template build steps, with the semantics the E2B SDKs'
//! `from_dockerfile` gives it: one FROM, then RUN, COPY/ADD, ENV/ARG,
//! WORKDIR, USER and CMD/ENTRYPOINT (the start command, ready after 20 s,
//! or when `HEALTHCHECK CMD` succeeds — hearth's reading of it);
//! Docker's defaults (root in `/`) while building, E2B's (`user` in
//! `/home/user`) afterwards unless the Dockerfile set its own.

use anyhow::{Context, bail};

/// One build step, as `TemplateStep` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub kind: &'static str,
    pub args: Vec<String>,
}

/// What a Dockerfile asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub from_image: String,
    pub steps: Vec<Step>,
    pub start_cmd: Option<String>,
    pub ready_cmd: Option<String>,
}

fn step(kind: &'static str, args: &[&str]) -> Step {
    Step {
        kind,
        args: args.iter().map(|a| (*a).to_owned()).collect(),
    }
}

/// Joins continued lines and drops comments and blank lines; returns each
/// instruction with its line number.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    for (number, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if current.is_empty() {
            start = number + 1;
        } else if trimmed.starts_with('#') {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            lines.push((start, std::mem::take(&mut current)));
        }
    }
    if !current.trim().is_empty() {
        lines.push((start, current));
    }
    lines
}

/// `["a", "b"]` (exec form) as a shell command, else the text as it is.
fn shell_form(value: &str) -> String {
    match serde_json::from_str::<Vec<String>>(value) {
        Ok(words) => words.join(" "),
        Err(_) => value.to_owned(),
    }
}

/// Splits on whitespace, keeping quoted words together (without quotes).
fn words(value: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for c in value.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, c) if c.is_whitespace() => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            (_, c) => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

fn env_pairs(value: &str, is_arg: bool) -> Vec<String> {
    let parts = words(value);
    if parts.iter().all(|p| p.contains('=')) {
        return parts
            .iter()
            .filter_map(|p| p.split_once('='))
            .flat_map(|(k, v)| [k.to_owned(), v.to_owned()])
            .collect();
    }
    match value.trim().split_once(char::is_whitespace) {
        Some((key, rest)) => vec![
            key.to_owned(),
            rest.trim().trim_matches(['"', '\'']).to_owned(),
        ],
        None if is_arg => vec![value.trim().to_owned(), String::new()],
        None => Vec::new(),
    }
}

fn copy_step(value: &str, line: usize) -> anyhow::Result<Vec<Step>> {
    let mut owner = String::new();
    let mut mode = String::new();
    let mut paths = Vec::new();
    for word in words(value) {
        if let Some(chown) = word.strip_prefix("--chown=") {
            owner = chown.to_owned();
        } else if let Some(chmod) = word.strip_prefix("--chmod=") {
            mode = chmod.to_owned();
        } else if word.starts_with("--") {
            bail!("line {line}: COPY option {word} is not supported");
        } else {
            paths.push(word);
        }
    }
    let paths = match serde_json::from_str::<Vec<String>>(value.trim()) {
        Ok(list) => list,
        Err(_) => paths,
    };
    let Some((dest, sources)) = paths.split_last().filter(|(_, s)| !s.is_empty()) else {
        bail!("line {line}: COPY needs a source and a destination");
    };
    Ok(sources
        .iter()
        .map(|source| step("COPY", &[source, dest, &owner, &mode]))
        .collect())
}

pub fn parse(text: &str) -> anyhow::Result<Definition> {
    let lines = logical_lines(text);
    let mut from = None;
    let mut steps = vec![step("USER", &["root"]), step("WORKDIR", &["/"])];
    let (mut user_set, mut workdir_set) = (false, false);
    let (mut start_cmd, mut ready_cmd) = (None, None);
    let mut health_set = false;
    for (line, text) in lines {
        let (instruction, value) = text
            .split_once(char::is_whitespace)
            .map_or((text.as_str(), ""), |(i, v)| (i, v.trim()));
        match instruction.to_ascii_uppercase().as_str() {
            "FROM" => {
                if from.is_some() {
                    bail!("line {line}: multi-stage Dockerfiles are not supported");
                }
                let image = value
                    .split_whitespace()
                    .find(|w| !w.starts_with("--"))
                    .context(format!("line {line}: FROM needs an image"))?;
                from = Some(image.to_owned());
            }
            "RUN" => steps.push(step("RUN", &[&shell_form(value)])),
            "COPY" | "ADD" => steps.extend(copy_step(value, line)?),
            "WORKDIR" => {
                steps.push(step("WORKDIR", &[value]));
                workdir_set = true;
            }
            "USER" => {
                steps.push(step("USER", &[value]));
                user_set = true;
            }
            kind @ ("ENV" | "ARG") => {
                let pairs = env_pairs(value, kind == "ARG");
                if !pairs.is_empty() {
                    steps.push(Step {
                        kind: "ENV",
                        args: pairs,
                    });
                }
            }
            "CMD" | "ENTRYPOINT" => {
                start_cmd = Some(shell_form(value));
                if !health_set {
                    ready_cmd = Some("sleep 20".to_owned());
                }
            }
            // The start command is ready when the health check passes
            // (its options, such as --interval, are the builder's own).
            "HEALTHCHECK" => {
                let words: Vec<&str> = value
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                match words.first().map(|w| w.to_ascii_uppercase()).as_deref() {
                    Some("NONE") => {}
                    Some("CMD") => {
                        let command =
                            value[value.find(words[0]).map_or(0, |i| i + words[0].len())..].trim();
                        if command.is_empty() {
                            bail!("line {line}: HEALTHCHECK CMD needs a command");
                        }
                        ready_cmd = Some(shell_form(command));
                        health_set = true;
                    }
                    _ => bail!("line {line}: HEALTHCHECK takes CMD <command> or NONE"),
                }
            }
            _ => {} // EXPOSE, LABEL, … change nothing in a sandbox.
        }
    }
    let Some(from_image) = from else {
        bail!("the Dockerfile has no FROM");
    };
    if !user_set {
        steps.push(step("USER", &["user"]));
    }
    if !workdir_set {
        steps.push(step("WORKDIR", &["/home/user"]));
    }
    Ok(Definition {
        from_image,
        steps,
        start_cmd,
        ready_cmd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dockerfile_becomes_steps() -> anyhow::Result<()> {
        let definition = parse(
            "# comment\nFROM python:3.12-slim AS base\nENV A=1 B=\"two words\"\nARG VERSION\n\
             RUN apt-get update && \\\n    apt-get install -y curl\nCOPY --chown=user:user app/ lib.py /srv/\n\
             WORKDIR /srv\nEXPOSE 8000\nCMD [\"python3\", \"-m\", \"http.server\"]\n",
        )?;
        assert_eq!(definition.from_image, "python:3.12-slim");
        let kinds: Vec<&str> = definition.steps.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [
                "USER", "WORKDIR", "ENV", "ENV", "RUN", "COPY", "COPY", "WORKDIR", "USER"
            ]
        );
        assert_eq!(definition.steps[2].args, ["A", "1", "B", "two words"]);
        assert_eq!(definition.steps[3].args, ["VERSION", ""]);
        assert_eq!(
            definition.steps[4].args,
            ["apt-get update &&  apt-get install -y curl"]
        );
        assert_eq!(definition.steps[5].args, ["app/", "/srv/", "user:user", ""]);
        assert_eq!(
            definition.steps[6].args,
            ["lib.py", "/srv/", "user:user", ""]
        );
        assert_eq!(
            definition.start_cmd.as_deref(),
            Some("python3 -m http.server")
        );
        assert_eq!(definition.ready_cmd.as_deref(), Some("sleep 20"));
        Ok(())
    }

    #[test]
    fn a_health_check_is_the_ready_command() -> anyhow::Result<()> {
        for text in [
            "FROM x\nHEALTHCHECK --interval=5s CMD curl -fs http://127.0.0.1:1/health\nCMD serve\n",
            "FROM x\nCMD serve\nHEALTHCHECK CMD [\"curl\", \"-fs\", \"http://127.0.0.1:1/health\"]\n",
        ] {
            let definition = parse(text)?;
            assert_eq!(definition.start_cmd.as_deref(), Some("serve"));
            assert_eq!(
                definition.ready_cmd.as_deref(),
                Some("curl -fs http://127.0.0.1:1/health")
            );
        }
        assert!(parse("FROM x\nHEALTHCHECK CMD\n").is_err());
        assert!(parse("FROM x\nHEALTHCHECK curl\n").is_err());
        assert_eq!(
            parse("FROM x\nHEALTHCHECK NONE\nCMD serve\n")?
                .ready_cmd
                .as_deref(),
            Some("sleep 20")
        );
        Ok(())
    }

    #[test]
    fn bad_dockerfiles_are_refused() {
        assert!(parse("RUN true").is_err());
        assert!(parse("FROM a\nFROM b").is_err());
        assert!(parse("FROM a\nCOPY onlyone").is_err());
        assert!(parse("FROM a\nCOPY --link a b").is_err());
    }
}
