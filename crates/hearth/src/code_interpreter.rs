//! The `code-interpreter-v1` template (the code-interpreter SDKs' default):
//! `templates/code-interpreter` of this repository, built into the binary,
//! plus the static `hearth-interpreter`, built through the API like any
//! Dockerfile. Every step is cached by the template builder, keyed by its
//! inputs, so building it again when nothing changed takes seconds.

use std::path::Path;

use anyhow::Context;

use crate::dockerfile;

/// The template's name: what `Sandbox.create()` of the SDKs asks for.
pub const TEMPLATE: &str = "code-interpreter-v1";

/// The build context's files beside the binary: (path, contents).
const FILES: &[(&str, &str)] = &[
    (
        "Dockerfile",
        include_str!("../../../templates/code-interpreter/Dockerfile"),
    ),
    (
        "requirements.txt",
        include_str!("../../../templates/code-interpreter/requirements.txt"),
    ),
    (
        "ipython_kernel_config.py",
        include_str!("../../../templates/code-interpreter/ipython_kernel_config.py"),
    ),
    (
        "kernels/deno/kernel.json",
        include_str!("../../../templates/code-interpreter/kernels/deno/kernel.json"),
    ),
    (
        "startup/00-hearth-data.py",
        include_str!("../../../templates/code-interpreter/startup/00-hearth-data.py"),
    ),
    (
        "startup/01-hearth-charts.py",
        include_str!("../../../templates/code-interpreter/startup/01-hearth-charts.py"),
    ),
];

/// Builds (or finds cached) the template with `interpreter` as its server;
/// the build log goes to `log` line by line. Returns the template's ID.
pub async fn build(
    api: &dockerfile::ApiTarget,
    interpreter: &Path,
    log: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<String> {
    let context = tempfile::tempdir().context("making the build context")?;
    for (path, contents) in FILES {
        let target = context.path().join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, contents).with_context(|| format!("writing {path}"))?;
    }
    let binary = context.path().join("hearth-interpreter");
    std::fs::copy(interpreter, &binary)
        .with_context(|| format!("copying {}", interpreter.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755))?;
    let definition = dockerfile::parse(FILES[0].1)?;
    dockerfile::build_logged(api, &definition, context.path(), TEMPLATE, 2, 1024, log).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_definition_parses_and_names_every_file_it_copies() -> anyhow::Result<()> {
        let definition = dockerfile::parse(FILES[0].1)?;
        assert_eq!(definition.from_image, "e2bdev/base");
        assert!(
            definition
                .ready_cmd
                .as_deref()
                .is_some_and(|c| c.contains(":49999/health"))
        );
        for step in definition.steps.iter().filter(|s| s.kind == "COPY") {
            let source = &step.args[0];
            let known = source == "hearth-interpreter"
                || FILES
                    .iter()
                    .any(|(path, _)| path == source || path.starts_with(&format!("{source}/")));
            assert!(known, "COPY {source} is not embedded");
        }
        Ok(())
    }
}
