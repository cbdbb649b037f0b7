//! Checks a `TemplateBuildStartV2` body against the shapes E2B's SDKs send
//! (wire contract §4.6) and turns it into what the node is asked to build.
//! Every problem is a 400 that names the step (numbered from 1, as the
//! node and the SDKs number them).

use hearth_proto::orchestrator::{RegistryCredentials, TemplateStep};

use crate::error::{ApiError, ApiResult};
use crate::model::builds::{BuildStart, BuildStep};
use crate::uploads::{Uploads, is_hash};

/// Steps a build may have.
pub const MAX_STEPS: usize = 1000;
/// Bytes one argument (a command, a path, a value) may have.
pub const MAX_ARG_BYTES: usize = 64 * 1024;
const MAX_IMAGE_BYTES: usize = 1024;

/// A start request that passed every check.
#[derive(Debug, Clone)]
pub struct CheckedStart {
    pub from_image: String,
    /// The reference as given; the caller resolves it.
    pub from_template: Option<String>,
    pub registry: Option<RegistryCredentials>,
    pub force: bool,
    pub steps: Vec<TemplateStep>,
    pub start_cmd: String,
    pub ready_cmd: String,
}

fn bad(message: String) -> ApiError {
    ApiError::BadRequest(message)
}

fn given(value: Option<&String>) -> Option<&str> {
    value.map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn registry(value: &serde_json::Value) -> ApiResult<RegistryCredentials> {
    let kind = value.get("type").and_then(|t| t.as_str()).unwrap_or("");
    let field = |name: &str| -> ApiResult<String> {
        value
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| {
                bad(format!(
                    "fromImageRegistry of type 'registry' needs '{name}'"
                ))
            })
    };
    match kind {
        "registry" => Ok(RegistryCredentials {
            username: field("username")?,
            password: field("password")?,
        }),
        "aws" => Err(bad(
            "AWS registry credentials are not supported by hearth yet; use a registry username and password (type 'registry')".into(),
        )),
        "gcp" => Err(bad(
            "GCP registry credentials are not supported by hearth yet; use a registry username and password (type 'registry')".into(),
        )),
        other => Err(bad(format!(
            "unknown fromImageRegistry type '{other}' (expected 'registry')"
        ))),
    }
}

fn is_mode(mode: &str) -> bool {
    mode.is_empty()
        || ((1..=4).contains(&mode.len()) && mode.bytes().all(|b| (b'0'..=b'7').contains(&b)))
}

/// One step, checked; COPY steps get the URL their node reads the files at.
async fn step(
    number: usize,
    step: &BuildStep,
    uploads: &Uploads,
    template_id: &str,
) -> ApiResult<TemplateStep> {
    let kind = step.kind.trim().to_ascii_uppercase();
    let at = |problem: String| bad(format!("step {number} ({kind}): {problem}"));
    let mut args = step.args.clone().unwrap_or_default();
    if let Some(long) = args.iter().position(|a| a.len() > MAX_ARG_BYTES) {
        return Err(at(format!(
            "argument {} is longer than {MAX_ARG_BYTES} bytes",
            long + 1
        )));
    }
    let nonempty = |i: usize, what: &str| -> ApiResult<()> {
        if args.get(i).is_some_and(|a| !a.trim().is_empty()) {
            Ok(())
        } else {
            Err(at(format!("{what} must not be empty")))
        }
    };
    let mut files_hash = String::new();
    let mut files_url = String::new();
    match kind.as_str() {
        "COPY" => {
            if !(2..=4).contains(&args.len()) {
                return Err(at(format!(
                    "expected the arguments [source, destination, user, mode], got {}",
                    args.len()
                )));
            }
            nonempty(0, "the source")?;
            nonempty(1, "the destination")?;
            args.resize(4, String::new());
            if !is_mode(&args[3]) {
                return Err(at(format!(
                    "mode '{}' is not an octal file mode like 0644",
                    args[3]
                )));
            }
            let Some(hash) = given(step.files_hash.as_ref()) else {
                return Err(at("filesHash is required".into()));
            };
            if !is_hash(hash) {
                return Err(at(format!(
                    "filesHash '{hash}' is not 64 lowercase hex digits"
                )));
            }
            if !uploads.present(template_id, hash).await {
                return Err(at(format!(
                    "the files with hash {hash} were never uploaded; upload them first (GET /templates/{template_id}/files/{hash})"
                )));
            }
            files_url = uploads
                .file_url(template_id, hash)
                .ok_or_else(|| at("no place for its files".into()))?;
            files_hash = hash.to_owned();
        }
        "RUN" => {
            if !(1..=2).contains(&args.len()) {
                return Err(at(format!(
                    "expected the arguments [command] or [command, user], got {}",
                    args.len()
                )));
            }
            nonempty(0, "the command")?;
        }
        "ENV" => {
            if args.len() < 2 || !args.len().is_multiple_of(2) {
                return Err(at(format!(
                    "expected name and value pairs, got {} arguments",
                    args.len()
                )));
            }
            if let Some(i) = args.iter().step_by(2).position(|k| k.trim().is_empty()) {
                return Err(at(format!("variable {} has no name", i + 1)));
            }
        }
        "WORKDIR" | "USER" => {
            if args.len() != 1 {
                return Err(at(format!("expected one argument, got {}", args.len())));
            }
            nonempty(
                0,
                if kind == "USER" {
                    "the user"
                } else {
                    "the path"
                },
            )?;
        }
        _ => {
            return Err(bad(format!(
                "step {number}: unknown type '{}' (expected COPY, RUN, ENV, WORKDIR or USER)",
                step.kind
            )));
        }
    }
    Ok(TemplateStep {
        r#type: kind,
        args,
        files_hash,
        force: step.force.unwrap_or(false),
        files_url,
    })
}

fn command(value: Option<&String>, name: &str) -> ApiResult<String> {
    let command = value.cloned().unwrap_or_default();
    if command.len() > MAX_ARG_BYTES {
        return Err(bad(format!("{name} is longer than {MAX_ARG_BYTES} bytes")));
    }
    Ok(command)
}

/// Checks the whole body for the template `template_id`.
pub async fn check(
    body: &BuildStart,
    uploads: &Uploads,
    template_id: &str,
) -> ApiResult<CheckedStart> {
    let image = given(body.from_image.as_ref());
    let template = given(body.from_template.as_ref());
    let (from_image, from_template) = match (image, template) {
        (Some(_), Some(_)) => {
            return Err(bad("give either fromImage or fromTemplate, not both".into()));
        }
        (None, None) => {
            return Err(bad(
                "a build needs a base: give fromImage or fromTemplate".into()
            ));
        }
        (Some(image), None) => {
            if image.len() > MAX_IMAGE_BYTES || image.contains(char::is_whitespace) {
                return Err(bad(format!(
                    "fromImage '{image}' is not an image reference"
                )));
            }
            (image.to_owned(), None)
        }
        (None, Some(template)) => (String::new(), Some(template.to_owned())),
    };
    let registry = match &body.from_image_registry {
        None | Some(serde_json::Value::Null) => None,
        Some(_) if from_template.is_some() => {
            return Err(bad(
                "fromImageRegistry applies to fromImage, not fromTemplate".into(),
            ));
        }
        Some(value) => Some(registry(value)?),
    };
    let given_steps = body.steps.as_deref().unwrap_or_default();
    if given_steps.len() > MAX_STEPS {
        return Err(bad(format!(
            "a build has at most {MAX_STEPS} steps, this one has {}",
            given_steps.len()
        )));
    }
    let mut steps = Vec::with_capacity(given_steps.len());
    for (i, s) in given_steps.iter().enumerate() {
        steps.push(step(i + 1, s, uploads, template_id).await?);
    }
    Ok(CheckedStart {
        from_image,
        from_template,
        registry,
        force: body.force.unwrap_or(false),
        steps,
        start_cmd: command(body.start_cmd.as_ref(), "startCmd")?,
        ready_cmd: command(body.ready_cmd.as_ref(), "readyCmd")?,
    })
}
