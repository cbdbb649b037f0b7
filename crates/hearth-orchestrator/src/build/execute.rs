//! Running a build's steps and its start command in the build VM.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hearth_vmm::template::DISK;
use hearth_vmm::{GuestDefaults, ProcessSpec};

use super::build_vm::BuildVm;
use super::layers::LayerMeta;
use super::steps::{Step, StepKind};
use super::{
    BuildFailure, BuildLog, BuildSpec, DEFAULT_READY, FINALIZE, READY_DEADLINE, READY_INTERVAL,
    TemplateBuilder, guest_steps, image_rootfs, log, shorten, uuid_like,
};
use crate::error::{NodeError, Result};

impl TemplateBuilder {
    /// Runs the steps in the VM, freezing and caching each one's layer, then
    /// the start and ready commands.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run_steps(
        &self,
        spec: &BuildSpec,
        vm: &mut BuildVm,
        steps: &[Step],
        keys: &[String],
        names: &[String],
        mut below: LayerMeta,
        staging: &Path,
        disk_mib: u64,
        log: &BuildLog,
    ) -> Result<(Vec<String>, GuestDefaults, u64), BuildFailure> {
        let mut context = below.context.clone();
        let ca_env = self.ca_env();
        for (i, step) in steps.iter().enumerate() {
            log.info(Some(&step.name()), step.describe());
            context = self.run_step(vm, step, context, &ca_env, log).await?;
            let next = names.get(i + 1).cloned().unwrap_or_else(|| DISK.to_owned());
            let size = disk_mib.max(below.disk_size_mib);
            let frozen = match vm.freeze(self.runtime(), &next, size).await {
                Ok(frozen) => frozen,
                Err(e) => {
                    tracing::warn!(template = %spec.template_id, "freezing a layer failed");
                    return Err(BuildFailure::internal(step.name(), "the build VM", e));
                }
            };
            let mut chain = below.chain.clone();
            chain.push(frozen.clone());
            let meta = LayerMeta {
                chain,
                context: context.clone(),
                disk_size_mib: size,
                init: below.init.clone(),
            };
            if let Err(error) = self.layers.publish(&keys[i], &staging.join(&frozen), &meta) {
                log.warn(
                    Some(&step.name()),
                    format!("the step's layer was not cached: {error}"),
                );
            }
            below = meta;
        }
        self.finalize(spec, vm, &context, &ca_env, log).await?;
        // The template's sandboxes find the CA certificates its rootfs got
        // (under the template's own env vars).
        for (name, value) in crate::runtime::guest_ca_env(self.settings.ca_bundle.as_deref()) {
            context.env.entry(name).or_insert(value);
        }
        Ok((below.chain.clone(), context, below.disk_size_mib))
    }

    /// Where the extra CA certificates are, for tools that do not read
    /// the system bundle (pip reads `/etc/pip.conf` too; steps that replace
    /// it still get this).
    fn ca_env(&self) -> BTreeMap<String, String> {
        let mut env = crate::runtime::guest_ca_env(self.settings.ca_bundle.as_deref());
        if !env.is_empty() {
            env.insert("PIP_CERT".into(), image_rootfs::SYSTEM_CA_BUNDLE.into());
        }
        env
    }

    async fn run_step(
        &self,
        vm: &BuildVm,
        step: &Step,
        mut context: GuestDefaults,
        ca_env: &BTreeMap<String, String>,
        log: &BuildLog,
    ) -> Result<GuestDefaults, BuildFailure> {
        let name = step.name();
        let user = context
            .user
            .clone()
            .unwrap_or_else(|| image_rootfs::SANDBOX_USER.into());
        let fail = |message: String| BuildFailure::new(&name, message);
        let vm_error = |e: NodeError| BuildFailure::internal(&name, "the build VM", e);
        let mut env = ca_env.clone();
        env.extend(context.env.clone());
        match &step.kind {
            StepKind::Run {
                command,
                user: as_user,
            } => {
                let mut process =
                    ProcessSpec::shell(&vm.shell, command, as_user.as_deref().unwrap_or(&user));
                process.envs = env;
                process.cwd = context.workdir.clone();
                let code = self
                    .stream(vm, &process, &name, log)
                    .await
                    .map_err(vm_error)?;
                if code != 0 {
                    return Err(fail(format!(
                        "the command '{}' exited with code {code}",
                        shorten(command)
                    )));
                }
            }
            StepKind::Copy {
                src,
                dest,
                owner,
                mode,
                archive,
            } => {
                let prepared = prepare_archive(archive, vm.dir())
                    .await
                    .map_err(|e| fail(format!("reading the uploaded files: {e}")))?;
                let guest_archive = format!("/tmp/hearth-copy-{}.tar", step.number);
                let uploaded = vm.upload(&prepared, &guest_archive).await;
                let _ = std::fs::remove_file(&prepared);
                uploaded.map_err(vm_error)?;
                let owner = match owner {
                    Some(owner) if owner.contains(':') => owner.clone(),
                    Some(owner) => format!("{owner}:{owner}"),
                    None => format!("{user}:{user}"),
                };
                let process = guest_steps::copy(
                    &guest_archive,
                    &glob_base(src),
                    dest,
                    context.workdir.as_deref(),
                    &user,
                    &owner,
                    mode.as_deref(),
                );
                let code = self
                    .stream(vm, &process, &name, log)
                    .await
                    .map_err(vm_error)?;
                if code != 0 {
                    return Err(fail(format!("copying {src} to {dest} failed")));
                }
            }
            StepKind::Env(pairs) => {
                for (key, value) in pairs {
                    context.env.insert(key.clone(), value.clone());
                }
            }
            StepKind::Workdir(path) => {
                let mut output = Vec::new();
                let process = guest_steps::workdir(path, context.workdir.as_deref(), &user);
                let code = vm
                    .run(&process, Duration::from_secs(120), |stream, bytes| {
                        if stream == hearth_vmm::OutputStream::Stdout {
                            output.extend_from_slice(bytes);
                        }
                    })
                    .await
                    .map_err(vm_error)?;
                let absolute = String::from_utf8_lossy(&output).trim().to_owned();
                if code != 0 || !absolute.starts_with('/') {
                    return Err(fail(format!("cannot make the working directory {path}")));
                }
                context.workdir = Some(absolute);
            }
            StepKind::User(new_user) => {
                let code = self
                    .stream(vm, &guest_steps::user(new_user), &name, log)
                    .await
                    .map_err(vm_error)?;
                if code != 0 {
                    return Err(fail(format!("cannot create the user {new_user}")));
                }
                context.user = Some(new_user.clone());
            }
        }
        Ok(context)
    }

    /// Runs `process`, sending each line it prints to the build log.
    async fn stream(
        &self,
        vm: &BuildVm,
        process: &ProcessSpec,
        step: &str,
        log: &BuildLog,
    ) -> Result<i32> {
        let mut lines = log::LineSplitter::new(log.clone(), step.to_owned());
        let code = vm
            .run(process, self.settings.timeout, |stream, bytes| {
                lines.push(stream, bytes)
            })
            .await;
        lines.flush();
        code
    }

    async fn finalize(
        &self,
        spec: &BuildSpec,
        vm: &BuildVm,
        context: &GuestDefaults,
        ca_env: &BTreeMap<String, String>,
        log: &BuildLog,
    ) -> Result<(), BuildFailure> {
        let fail = |message: String| BuildFailure::new(FINALIZE, message);
        let user = context
            .user
            .clone()
            .unwrap_or_else(|| image_rootfs::SANDBOX_USER.into());
        let mut env = ca_env.clone();
        env.extend(context.env.clone());
        let Some(start) = spec.start_cmd.as_deref().filter(|c| !c.trim().is_empty()) else {
            if let Some(ready) = spec.ready_cmd.as_deref().filter(|c| !c.trim().is_empty()) {
                return self.wait_ready(vm, ready, &user, &env, context, log).await;
            }
            return Ok(());
        };
        log.info(Some(FINALIZE), format!("starting: {}", shorten(start)));
        let mut process = ProcessSpec::shell(&vm.shell, start, &user);
        process.envs = env.clone();
        process.cwd = context.workdir.clone();
        vm.start_detached(&process)
            .await
            .map_err(|e| fail(format!("the start command could not start: {e}")))?;
        let ready = spec
            .ready_cmd
            .as_deref()
            .filter(|c| !c.trim().is_empty())
            .unwrap_or(DEFAULT_READY);
        self.wait_ready(vm, ready, &user, &env, context, log).await
    }

    async fn wait_ready(
        &self,
        vm: &BuildVm,
        ready: &str,
        user: &str,
        env: &BTreeMap<String, String>,
        context: &GuestDefaults,
        log: &BuildLog,
    ) -> Result<(), BuildFailure> {
        log.info(Some(FINALIZE), format!("waiting for: {}", shorten(ready)));
        let mut process = ProcessSpec::shell(&vm.shell, ready, user);
        process.envs = env.clone();
        process.cwd = context.workdir.clone();
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            let code = self
                .stream(vm, &process, FINALIZE, log)
                .await
                .map_err(|e| BuildFailure::internal(FINALIZE, "the build VM", e))?;
            if code == 0 {
                log.info(Some(FINALIZE), "ready".into());
                return Ok(());
            }
            if Instant::now() + READY_INTERVAL > deadline {
                return Err(BuildFailure::new(
                    FINALIZE,
                    format!(
                        "the ready command '{}' did not succeed within {} s",
                        shorten(ready),
                        READY_DEADLINE.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(READY_INTERVAL).await;
        }
    }
}

/// The part of a COPY source before its first glob pattern (the client
/// expanded the pattern when it made the archive).
fn glob_base(source: &str) -> String {
    let mut base = Vec::new();
    for part in source.split('/') {
        if part.contains(['*', '?', '[', '{']) {
            break;
        }
        base.push(part);
    }
    base.join("/")
}

/// The uploaded archive as a plain tar next to it (gzip undone on the
/// host, so the guest needs no gzip).
async fn prepare_archive(archive: &Path, dir: &Path) -> std::io::Result<PathBuf> {
    let archive = archive.to_owned();
    let plain = dir.join(format!("copy-{}.tar", uuid_like()));
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut file = std::fs::File::open(&archive)?;
        let mut magic = [0u8; 2];
        let read = file.read(&mut magic)?;
        let source = std::fs::File::open(&archive)?;
        let mut target = std::fs::File::create(&plain)?;
        if read == 2 && magic == [0x1f, 0x8b] {
            let mut decoder = flate2::read::GzDecoder::new(source);
            std::io::copy(&mut decoder, &mut target)?;
        } else {
            let mut source = source;
            std::io::copy(&mut source, &mut target)?;
        }
        Ok(plain)
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_patterns_are_cut_from_copy_sources() {
        assert_eq!(glob_base("app/"), "app/");
        assert_eq!(glob_base("app/*.py"), "app");
        assert_eq!(glob_base("requirements.txt"), "requirements.txt");
        assert_eq!(glob_base("src/**/x"), "src");
    }
}
