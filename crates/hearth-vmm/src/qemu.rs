//! The QEMU `microvm` implementation of [`Vmm`], driven over QMP.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use qapi::qmp;
use tokio::process::{Child, Command};

use crate::accel::{Accel, QEMU};
use crate::console::ConsoleLog;
use crate::error::{Result, VmmError};
use crate::jail::{CgroupLimits, Jail, JailLease, MountPlan};
use crate::netns_exec::enter_netns_on_exec;
use crate::process::ForeignProcess;
use crate::qmp::Qmp;
use crate::vmm::{AdoptSpec, ConsoleSink, GuestMemory, StartupTimings, VmSpec, VmStatus, Vmm};

/// How long QEMU may take to open its monitor.
const MONITOR_DEADLINE: Duration = Duration::from_secs(10);
/// How long loading or saving device state may take.
const MIGRATION_DEADLINE: Duration = Duration::from_secs(60);
/// How long a VM may take to quit before it is killed.
const QUIT_DEADLINE: Duration = Duration::from_secs(10);
/// How much of a log an error quotes.
const LOG_TAIL: u64 = 1500;
/// How long an adopted VM's monitor may take to answer.
const ADOPT_DEADLINE: Duration = Duration::from_secs(5);
/// QEMU's seccomp filter: no obsolete system calls, no setuid and the like,
/// no fork or exec, no changing scheduling or affinity.
const SECCOMP: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";
/// What a jailed VMM may use beyond its guest's RAM (its own heap, device
/// state and, under TCG, the translation cache of `tb-size`).
const VMM_OVERHEAD_MIB: u64 = 256;
/// Tasks a jailed VMM may have: vCPU, I/O and worker threads.
const VMM_TASKS: u32 = 512;

/// Runs VMs as `qemu-system-x86_64 -M microvm` processes.
#[derive(Debug, Clone)]
pub struct QemuVmm {
    accel: Accel,
    binary: PathBuf,
    own_process_group: bool,
    jail: Option<std::sync::Arc<Jail>>,
}

impl QemuVmm {
    pub fn new(accel: Accel) -> Self {
        Self {
            accel,
            binary: PathBuf::from(QEMU),
            own_process_group: false,
            jail: None,
        }
    }

    /// Runs every VM's QEMU in a jail of its own (see [`crate::jail`]).
    pub fn with_jail(mut self, jail: std::sync::Arc<Jail>) -> Self {
        self.jail = Some(jail);
        self
    }

    /// The jail VMs run in, if any.
    pub fn jail(&self) -> Option<&Jail> {
        self.jail.as_deref()
    }

    /// Starts every VM in a process group of its own, so that signals for
    /// this process's group (a terminal's Ctrl-C) do not reach it: for a
    /// node that leaves its VMs running when it exits.
    pub fn with_own_process_groups(mut self) -> Self {
        self.own_process_group = true;
        self
    }
}

/// The QEMU process of a VM.
#[derive(Debug)]
enum VmProcess {
    /// Started here: waited for here, and killed if dropped.
    Child(Mutex<Child>),
    /// Started by an earlier process and adopted: not ours to wait for, so
    /// its exit is seen in `/proc` and its exit status is unknown.
    Adopted(ForeignProcess),
}

impl VmProcess {
    /// How it ended, once it has.
    fn exit(&self) -> Option<String> {
        match self {
            Self::Child(child) => {
                let mut child = child.lock().unwrap_or_else(|e| e.into_inner());
                child.try_wait().ok().flatten().map(|s| s.to_string())
            }
            Self::Adopted(process) => {
                (!process.alive()).then(|| "exited; status unknown (adopted)".to_owned())
            }
        }
    }

    /// Waits at most `timeout` for it to exit; `Ok(false)`: it still runs.
    async fn wait_exit(&mut self, name: &str, timeout: Duration) -> Result<bool> {
        match self {
            Self::Child(child) => {
                let child = child.get_mut().unwrap_or_else(|e| e.into_inner());
                match tokio::time::timeout(timeout, child.wait()).await {
                    Ok(Ok(_)) => Ok(true),
                    Ok(Err(source)) => Err(VmmError::Process {
                        vm: name.to_owned(),
                        action: "waiting for QEMU to exit",
                        source,
                    }),
                    Err(_) => Ok(false),
                }
            }
            Self::Adopted(process) => Ok(process.wait_exit(timeout).await),
        }
    }

    /// Kills it and waits until it is gone.
    async fn kill(mut self, name: &str) -> Result<()> {
        match &mut self {
            Self::Child(child) => {
                let child = child.get_mut().unwrap_or_else(|e| e.into_inner());
                if let Err(error) = child.start_kill() {
                    // Already reaped is fine; anything else is reported.
                    if error.kind() != std::io::ErrorKind::InvalidInput {
                        return Err(VmmError::Process {
                            vm: name.to_owned(),
                            action: "killing QEMU",
                            source: error,
                        });
                    }
                }
            }
            Self::Adopted(process) => {
                process
                    .signal(nix::sys::signal::Signal::SIGKILL)
                    .map_err(|source| VmmError::Process {
                        vm: name.to_owned(),
                        action: "killing QEMU",
                        source,
                    })?;
            }
        }
        match self.wait_exit(name, QUIT_DEADLINE).await {
            Ok(true) | Err(_) => Ok(()),
            Ok(false) => Err(VmmError::Timeout {
                vm: name.to_owned(),
                what: "QEMU to die after SIGKILL",
                after: QUIT_DEADLINE,
            }),
        }
    }

    /// Lets it run on after this handle is gone.
    fn detach(self) {
        match self {
            // The handle would kill the child when dropped; it is only a pid
            // (and maybe a pidfd), so it is leaked instead.
            Self::Child(child) => std::mem::forget(child),
            Self::Adopted(_) => {}
        }
    }
}

/// A console ring and the task that fills it from QEMU's console socket;
/// dropping it closes the connection.
#[derive(Debug)]
struct Console {
    log: std::sync::Arc<ConsoleLog>,
    reader: tokio::task::JoinHandle<()>,
}

impl Console {
    fn follow(
        capacity: usize,
        lines: Option<std::sync::Arc<crate::sandbox_log::SandboxLog>>,
        socket: PathBuf,
    ) -> Self {
        let log = std::sync::Arc::new(ConsoleLog::new(capacity).with_lines(lines));
        let reader = tokio::spawn(log.clone().follow_owned(socket, MONITOR_DEADLINE));
        Self { log, reader }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A running QEMU process and its monitor.
#[derive(Debug)]
pub struct QemuVm {
    name: String,
    run_dir: PathBuf,
    pid: u32,
    process: VmProcess,
    qmp: Qmp,
    timings: StartupTimings,
    console: Option<Console>,
    /// Its uid and cgroup, when jailed; released once QEMU has exited.
    jail: Option<JailLease>,
    /// The disk image it writes to (changed by [`Vmm::snapshot_disk`]).
    disk_top: Mutex<Option<PathBuf>>,
}

impl QemuVm {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The QEMU process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn serial_log(&self) -> PathBuf {
        self.run_dir.join("serial.log")
    }

    /// The console ring of a VM started with [`ConsoleSink::Ring`].
    pub fn console(&self) -> Option<&ConsoleLog> {
        self.console.as_ref().map(|c| c.log.as_ref())
    }

    /// The run directory (disk overlay, sockets, logs).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Its jail uid and cgroup, when jailed.
    pub fn jail(&self) -> Option<&JailLease> {
        self.jail.as_ref()
    }

    /// Whether QEMU has exited, and how.
    fn exit_status(&self) -> Option<String> {
        self.process.exit()
    }

    /// Fails if QEMU has exited, quoting its logs.
    fn ensure_alive(&self) -> Result<()> {
        match self.exit_status() {
            Some(status) => Err(exited_error(&self.name, &self.run_dir, status)),
            None => Ok(()),
        }
    }

    /// Polls the run state until `done` accepts it, QEMU exits or `deadline`.
    async fn wait_for_state(
        &self,
        what: &'static str,
        deadline: Instant,
        done: impl Fn(&qmp::RunState) -> bool,
    ) -> Result<qmp::RunState> {
        loop {
            self.ensure_alive()?;
            match self.qmp.status().await {
                Ok(state) if done(&state) => return Ok(state),
                Ok(_) => {}
                // The monitor closes as QEMU exits: report the exit instead.
                Err(error) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    self.ensure_alive()?;
                    return Err(error);
                }
            }
            if Instant::now() > deadline {
                return Err(VmmError::Timeout {
                    vm: self.name.clone(),
                    what,
                    after: MIGRATION_DEADLINE,
                });
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

fn exited_error(name: &str, run_dir: &Path, status: impl ToString) -> VmmError {
    let mut tail = log_tail(&run_dir.join("qemu.log"));
    if tail.is_empty() {
        tail = log_tail(&run_dir.join("serial.log"));
    }
    VmmError::QemuExited {
        vm: name.to_owned(),
        status: status.to_string(),
        log_tail: tail,
    }
}

/// The last bytes of a log, as one line.
pub fn log_tail(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(LOG_TAIL)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// How a VM's QEMU is started, beyond its [`VmSpec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Launch {
    /// Wait for device state (`-incoming defer`).
    pub incoming: bool,
    /// The tap, opened by hearth and inherited (a jailed QEMU cannot open
    /// it); `None`: QEMU opens it by name.
    pub tap_fd: Option<i32>,
}

/// QEMU's command line for `spec`.
pub fn command_line(spec: &VmSpec, launch: Launch) -> Vec<String> {
    let mib = spec.memory_mib;
    let mut args: Vec<String> = vec![
        "-name".into(),
        format!("{},debug-threads=on", spec.name.replace(',', "_")),
        "-M".into(),
        "microvm,memory-backend=ram0".into(),
        "-accel".into(),
        spec.accel.qemu_arg().into(),
        "-cpu".into(),
        spec.accel.cpu_model().into(),
        "-smp".into(),
        spec.vcpus.to_string(),
        "-m".into(),
        format!("{mib}M"),
        "-object".into(),
        match &spec.memory {
            GuestMemory::Anonymous => format!("memory-backend-ram,id=ram0,size={mib}M"),
            GuestMemory::TemplateFile(path) => format!(
                "memory-backend-file,id=ram0,size={mib}M,mem-path={},share=on",
                path.display()
            ),
            GuestMemory::CloneOf(path) => format!(
                "memory-backend-file,id=ram0,size={mib}M,mem-path={},share=off,readonly=on,rom=off",
                path.display()
            ),
        },
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-sandbox".into(),
        SECCOMP.into(),
        // Start paused: booting and restoring both end with `cont`.
        "-S".into(),
        "-kernel".into(),
        spec.boot.kernel.display().to_string(),
        "-initrd".into(),
        spec.boot.initramfs.display().to_string(),
        "-append".into(),
        spec.boot.cmdline.clone(),
        "-serial".into(),
        match spec.console {
            ConsoleSink::File => format!("file:{}", spec.serial_log().display()),
            ConsoleSink::Ring(..) => format!(
                "unix:{},server=on,wait=off",
                spec.console_socket().display()
            ),
        },
        "-qmp".into(),
        format!(
            "unix:{},server=on,wait=off",
            spec.run_dir.join("qmp.sock").display()
        ),
    ];
    if let Some(disk) = &spec.disk {
        args.extend([
            "-drive".into(),
            format!("id=root,file={},format=qcow2,if=none", disk.display()),
            "-device".into(),
            "virtio-blk-device,drive=root".into(),
        ]);
    }
    if let Some(net) = &spec.net {
        args.extend([
            "-netdev".into(),
            match launch.tap_fd {
                Some(fd) => format!("tap,id=net0,fd={fd}"),
                None => format!("tap,id=net0,ifname={},script=no,downscript=no", net.tap),
            },
            "-device".into(),
            format!("virtio-net-device,netdev=net0,mac={}", net.mac),
        ]);
    }
    if launch.incoming {
        args.extend(["-incoming".into(), "defer".into()]);
    }
    args
}

impl QemuVmm {
    /// Spawns QEMU (paused) and connects to its monitor; `read_only` are
    /// files beyond the spec's that a jailed QEMU reads (device state).
    async fn spawn(&self, spec: &VmSpec, incoming: bool, read_only: &[&Path]) -> Result<QemuVm> {
        std::fs::create_dir_all(&spec.run_dir).map_err(VmmError::io("creating", &spec.run_dir))?;
        let socket = spec.run_dir.join("qmp.sock");
        let _ = std::fs::remove_file(&socket);
        let log_path = spec.run_dir.join("qemu.log");
        let log = std::fs::File::create(&log_path).map_err(VmmError::io("creating", &log_path))?;
        let mut command = Command::new(&self.binary);
        let mut launch = Launch {
            incoming,
            tap_fd: None,
        };
        // Kept open until QEMU has inherited it.
        let mut tap: Option<std::os::fd::OwnedFd> = None;
        let jail = match &self.jail {
            Some(jail) => {
                let (lease, setup, tap_fd) = self.confine(jail, spec, read_only)?;
                launch.tap_fd = tap_fd.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
                tap = tap_fd;
                Some((lease, setup))
            }
            None => None,
        };
        command
            .args(command_line(spec, launch))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        if self.own_process_group {
            command.process_group(0);
        }
        if let Some(netns) = spec.net.as_ref().and_then(|n| n.netns.as_deref()) {
            enter_netns_on_exec(&mut command, netns)?;
        }
        let lease = jail.map(|(lease, setup)| {
            setup.install(&mut command);
            lease
        });
        let spawned = Instant::now();
        let spawn = command.spawn();
        drop(tap);
        let mut child = spawn.map_err(|source| VmmError::Spawn {
            vm: spec.name.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        let deadline = Instant::now() + MONITOR_DEADLINE;
        let qmp = loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(exited_error(&spec.name, &spec.run_dir, status));
            }
            if socket.exists() {
                match Qmp::connect(&spec.name, &socket, deadline).await {
                    Ok(qmp) => break qmp,
                    Err(error) => {
                        let _ = child.kill().await;
                        return Err(error);
                    }
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill().await;
                return Err(VmmError::Timeout {
                    vm: spec.name.clone(),
                    what: "QEMU's monitor socket",
                    after: MONITOR_DEADLINE,
                });
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        tracing::debug!(vm = %spec.name, pid, accel = %spec.accel, "QEMU started");
        let console = match &spec.console {
            ConsoleSink::File => None,
            ConsoleSink::Ring(capacity, lines) => Some(Console::follow(
                *capacity,
                lines.clone(),
                spec.console_socket(),
            )),
        };
        Ok(QemuVm {
            name: spec.name.clone(),
            run_dir: spec.run_dir.clone(),
            pid,
            process: VmProcess::Child(Mutex::new(child)),
            qmp,
            timings: StartupTimings {
                vmm_start: spawned.elapsed(),
                restore: Duration::ZERO,
            },
            console,
            jail: lease,
            disk_top: Mutex::new(spec.disk.clone()),
        })
    }

    /// Prepares `spec`'s jail: a uid and cgroup, its files made its own or
    /// bound read-only into its file tree, its tap opened.
    fn confine(
        &self,
        jail: &std::sync::Arc<Jail>,
        spec: &VmSpec,
        read_only: &[&Path],
    ) -> Result<(
        JailLease,
        crate::jail::ChildSetup,
        Option<std::os::fd::OwnedFd>,
    )> {
        let limits = CgroupLimits {
            memory_bytes: (u64::from(spec.memory_mib) + VMM_OVERHEAD_MIB) << 20,
            cpus: u32::from(spec.vcpus),
            pids: VMM_TASKS,
        };
        let lease = jail.lease(&spec.run_dir, &limits)?;
        let mut plan = MountPlan::new(&jail.config().root)?;
        plan.bind_dir(&spec.run_dir, false, false)?;
        for file in [&spec.boot.kernel, &spec.boot.initramfs] {
            plan.bind_file(file, true, false)?;
        }
        match &spec.memory {
            GuestMemory::Anonymous => {}
            GuestMemory::TemplateFile(path) => {
                if !path.exists() {
                    std::fs::File::create(path).map_err(VmmError::io("creating", path))?;
                }
                lease.give(path, 0o600)?;
                plan.bind_file(path, false, false)?;
            }
            GuestMemory::CloneOf(path) => plan.bind_file(path, true, false)?,
        }
        if let Some(disk) = &spec.disk {
            lease.give(disk, 0o600)?;
            plan.bind_file(disk, false, false)?;
            for below in crate::jail::backing_chain(disk)? {
                plan.bind_file(&below, true, false)?;
            }
        }
        for file in read_only {
            plan.bind_file(file, true, false)?;
        }
        let tap = match &spec.net {
            Some(net) => Some(crate::jail::open_tap(net.netns.as_deref(), &net.tap)?),
            None => None,
        };
        let inherit = tap
            .as_ref()
            .map(std::os::fd::AsRawFd::as_raw_fd)
            .into_iter()
            .collect();
        let setup = lease.child_setup(plan, inherit)?;
        Ok((lease, setup, tap))
    }

    fn check_accel(&self, spec: &VmSpec) -> Result<()> {
        if spec.accel != self.accel {
            return Err(VmmError::Invalid(format!(
                "{}: asked for {} but this host runs VMs under {}",
                spec.name, spec.accel, self.accel
            )));
        }
        Ok(())
    }

    /// A VM over its template's RAM file (copy-on-write) that runs from
    /// `state`: a template's device state, or a paused clone's snapshot.
    async fn start_restored(&self, spec: &VmSpec, state: &Path, ram: RamInState) -> Result<QemuVm> {
        self.check_accel(spec)?;
        if !matches!(spec.memory, GuestMemory::CloneOf(_)) {
            return Err(VmmError::Invalid(format!(
                "{}: a clone maps its template's RAM file",
                spec.name
            )));
        }
        let mut vm = self.spawn(spec, true, &[state]).await?;
        let restoring = Instant::now();
        if let Err(error) = self.restore(&vm, state, ram).await {
            let _ = self.kill(vm).await;
            return Err(error);
        }
        vm.timings.restore = restoring.elapsed();
        Ok(vm)
    }

    /// Loads `state` into a VM started with `-incoming defer` and runs it;
    /// `ram` says whether the file holds RAM (a clone's snapshot) or only
    /// device state (a template's, whose RAM is its file).
    async fn restore(&self, vm: &QemuVm, state: &Path, ram: RamInState) -> Result<()> {
        let deadline = Instant::now() + MIGRATION_DEADLINE;
        match ram {
            RamInState::None => vm.qmp.ignore_shared_memory().await?,
            RamInState::Mapped => vm.qmp.migrate_ram_mapped(migration_channels()).await?,
        }
        vm.qmp
            .execute(qmp::migrate_incoming {
                uri: Some(format!("file:{}", state.display())),
                channels: None,
                exit_on_error: Some(true),
            })
            .await?;
        vm.wait_for_state("the device state to load", deadline, |s| {
            !matches!(s, qmp::RunState::inmigrate)
        })
        .await?;
        vm.qmp.execute(qmp::cont {}).await?;
        Ok(())
    }
}

impl Vmm for QemuVmm {
    type Vm = QemuVm;

    fn accel(&self) -> Accel {
        self.accel
    }

    async fn start(&self, spec: &VmSpec) -> Result<QemuVm> {
        self.check_accel(spec)?;
        let vm = self.spawn(spec, false, &[]).await?;
        if let Err(error) = vm.qmp.execute(qmp::cont {}).await {
            let _ = self.kill(vm).await;
            return Err(error);
        }
        Ok(vm)
    }

    async fn clone_from_template(&self, spec: &VmSpec, device_state: &Path) -> Result<QemuVm> {
        self.start_restored(spec, device_state, RamInState::None)
            .await
    }

    async fn snapshot_template(&self, vm: &QemuVm, device_state: &Path) -> Result<()> {
        vm.qmp.execute(qmp::stop {}).await?;
        vm.qmp.ignore_shared_memory().await?;
        migrate_to_file(vm, device_state).await
    }

    async fn snapshot_sandbox(&self, vm: &QemuVm, snapshot: &Path) -> Result<()> {
        vm.qmp.execute(qmp::stop {}).await?;
        vm.qmp.migrate_ram_mapped(migration_channels()).await?;
        migrate_to_file(vm, snapshot).await
    }

    async fn restore_sandbox(&self, spec: &VmSpec, snapshot: &Path) -> Result<QemuVm> {
        self.start_restored(spec, snapshot, RamInState::Mapped)
            .await
    }

    async fn snapshot_disk(&self, vm: &QemuVm, new_top: &Path) -> Result<()> {
        vm.ensure_alive()?;
        // QEMU opens the new top itself, as the VM's uid.
        if let Some(lease) = &vm.jail {
            lease.give(new_top, 0o600)?;
        }
        let frozen = vm
            .qmp
            .execute(qmp::blockdev_snapshot_sync(qmp::BlockdevSnapshotSync {
                device: Some("root".into()),
                node_name: None,
                snapshot_file: new_top.display().to_string(),
                snapshot_node_name: None,
                format: Some("qcow2".into()),
                // The caller made the file, with a relative backing name.
                mode: Some(qmp::NewImageMode::existing),
            }))
            .await
            .map(drop);
        if frozen.is_ok() {
            let mut top = vm.disk_top.lock().unwrap_or_else(|e| e.into_inner());
            let old = top.replace(new_top.to_owned());
            // The old top is a finished layer now: other VMs (other uids)
            // may be built on it before this one ends.
            if let (Some(lease), Some(old)) = (&vm.jail, old) {
                lease.give_back(&old)?;
            }
        }
        frozen
    }

    fn share(&self, vm: &QemuVm, path: &Path) -> Result<()> {
        match &vm.jail {
            Some(lease) => lease.give_back(path),
            None => Ok(()),
        }
    }

    fn startup_timings(&self, vm: &QemuVm) -> StartupTimings {
        vm.timings
    }

    async fn pause(&self, vm: &QemuVm) -> Result<()> {
        vm.qmp.execute(qmp::stop {}).await.map(drop)
    }

    async fn resume(&self, vm: &QemuVm) -> Result<()> {
        vm.qmp.execute(qmp::cont {}).await.map(drop)
    }

    async fn status(&self, vm: &QemuVm) -> Result<VmStatus> {
        if vm.exit_status().is_some() {
            return Ok(VmStatus::Exited);
        }
        Ok(match vm.qmp.status().await {
            Ok(qmp::RunState::running) => VmStatus::Running,
            Ok(qmp::RunState::paused | qmp::RunState::prelaunch | qmp::RunState::postmigrate) => {
                VmStatus::Paused
            }
            Ok(qmp::RunState::inmigrate) => VmStatus::Restoring,
            Ok(_) => VmStatus::Other,
            Err(_) if vm.exit_status().is_some() => VmStatus::Exited,
            Err(error) => return Err(error),
        })
    }

    async fn stop(&self, vm: QemuVm) -> Result<()> {
        // `quit` may see the monitor close before it answers.
        let _ = vm.qmp.execute(qmp::quit {}).await;
        let QemuVm {
            mut process,
            name,
            jail,
            ..
        } = vm;
        // The jail is released (cgroup removed, files given back) once QEMU
        // is gone, whichever way it went.
        let _jail = jail;
        if process.wait_exit(&name, QUIT_DEADLINE).await? {
            return Ok(());
        }
        tracing::warn!(vm = %name, "QEMU did not quit in time; killing it");
        process.kill(&name).await
    }

    async fn kill(&self, vm: QemuVm) -> Result<()> {
        let QemuVm {
            process,
            name,
            jail,
            ..
        } = vm;
        let _jail = jail;
        process.kill(&name).await
    }

    async fn adopt(&self, spec: &AdoptSpec) -> Result<QemuVm> {
        let refuse = |reason: String| VmmError::NotAdoptable {
            vm: spec.name.clone(),
            reason,
        };
        let process = ForeignProcess::find(spec.pid)
            .ok_or_else(|| refuse(format!("process {} does not run", spec.pid)))?;
        // The run directory names one sandbox: a reused pid cannot match.
        let marker = format!("{}/", spec.run_dir.display());
        if !process.command_line().contains(&marker) {
            return Err(refuse(format!(
                "process {} is not the VMM of {}",
                spec.pid,
                spec.run_dir.display()
            )));
        }
        let socket = spec.run_dir.join("qmp.sock");
        let qmp = Qmp::connect(&spec.name, &socket, Instant::now() + ADOPT_DEADLINE)
            .await
            .map_err(|e| refuse(format!("its monitor does not answer: {e}")))?;
        match qmp.status().await {
            Ok(qmp::RunState::running) => {}
            Ok(state) => return Err(refuse(format!("the VM is {state:?}, not running"))),
            Err(error) => return Err(refuse(format!("its monitor does not answer: {error}"))),
        }
        let console = match &spec.console {
            // QEMU writes the file itself.
            ConsoleSink::File => None,
            ConsoleSink::Ring(capacity, lines) => Some(Console::follow(
                *capacity,
                lines.clone(),
                spec.console_socket(),
            )),
        };
        tracing::debug!(vm = %spec.name, pid = spec.pid, "QEMU adopted");
        let jail = self.jail.as_ref().and_then(|jail| {
            crate::jail::process_uid(spec.pid).and_then(|uid| jail.adopt(uid, &spec.run_dir))
        });
        Ok(QemuVm {
            name: spec.name.clone(),
            run_dir: spec.run_dir.clone(),
            pid: spec.pid,
            process: VmProcess::Adopted(process),
            qmp,
            timings: StartupTimings::default(),
            console,
            jail,
            disk_top: Mutex::new(None),
        })
    }

    fn detach(&self, vm: QemuVm) {
        let QemuVm {
            name,
            process,
            qmp,
            console,
            jail,
            ..
        } = vm;
        if let Some(jail) = jail {
            jail.keep();
        }
        // Closing the monitor and console connections lets QEMU accept the
        // next process's.
        drop(qmp);
        drop(console);
        process.detach();
        tracing::debug!(vm = %name, "QEMU detached; it runs on");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::{BootSource, NetAttachment};

    fn spec(memory: GuestMemory) -> VmSpec {
        VmSpec {
            name: "t".into(),
            run_dir: "/run/t".into(),
            accel: Accel::Tcg,
            boot: BootSource {
                kernel: "/k".into(),
                initramfs: "/i".into(),
                cmdline: "console=ttyS0".into(),
            },
            vcpus: 2,
            memory_mib: 512,
            memory,
            disk: Some("/run/t/disk.qcow2".into()),
            net: Some(NetAttachment {
                netns: None,
                tap: "tap0".into(),
                mac: "02:00:00:00:00:01".into(),
            }),
            console: ConsoleSink::File,
        }
    }

    fn has_pair(args: &[String], flag: &str, value: &str) -> bool {
        args.windows(2).any(|w| w[0] == flag && w[1] == value)
    }

    #[test]
    fn a_clone_maps_template_ram_privately_and_waits_for_state() {
        let args = command_line(
            &spec(GuestMemory::CloneOf("/t/memory.ram".into())),
            Launch {
                incoming: true,
                tap_fd: None,
            },
        );
        assert!(has_pair(
            &args,
            "-object",
            "memory-backend-file,id=ram0,size=512M,mem-path=/t/memory.ram,share=off,readonly=on,rom=off"
        ));
        assert!(has_pair(&args, "-incoming", "defer"));
        assert!(args.iter().any(|a| a == "-S"));
        assert!(has_pair(&args, "-accel", "tcg,thread=multi,tb-size=128"));
        assert!(has_pair(
            &args,
            "-netdev",
            "tap,id=net0,ifname=tap0,script=no,downscript=no"
        ));
        assert!(has_pair(&args, "-serial", "file:/run/t/serial.log"));
    }

    #[test]
    fn a_template_shares_its_ram_file_and_boots() {
        let args = command_line(
            &spec(GuestMemory::TemplateFile("/t/memory.ram".into())),
            Launch::default(),
        );
        assert!(has_pair(
            &args,
            "-object",
            "memory-backend-file,id=ram0,size=512M,mem-path=/t/memory.ram,share=on"
        ));
        assert!(!args.iter().any(|a| a == "-incoming"));
        assert!(has_pair(&args, "-append", "console=ttyS0"));
    }
}

/// What a VM's saved state holds besides its devices.
#[derive(Debug, Clone, Copy)]
enum RamInState {
    /// Nothing: the RAM is the template's file.
    None,
    /// The RAM, at fixed offsets (`mapped-ram`).
    Mapped,
}

/// Threads that move a sandbox's RAM to or from its snapshot: one per core,
/// up to four (more only contend for the page cache).
fn migration_channels() -> u8 {
    std::thread::available_parallelism()
        .map_or(1, |cores| cores.get().min(4))
        .try_into()
        .unwrap_or(1)
}

/// Migrates the (stopped) VM to `file` and waits until it is written.
async fn migrate_to_file(vm: &QemuVm, file: &Path) -> Result<()> {
    let deadline = Instant::now() + MIGRATION_DEADLINE;
    vm.qmp
        .execute(qmp::migrate {
            uri: Some(format!("file:{}", file.display())),
            channels: None,
            detach: None,
            resume: None,
        })
        .await?;
    loop {
        vm.ensure_alive()?;
        let info = vm.qmp.execute(qmp::query_migrate {}).await?;
        match info.status {
            Some(qmp::MigrationStatus::completed) => return Ok(()),
            Some(qmp::MigrationStatus::failed | qmp::MigrationStatus::cancelled) => {
                return Err(VmmError::Qmp {
                    vm: vm.name.clone(),
                    command: "migrate",
                    message: info.error_desc.unwrap_or_else(|| "migration failed".into()),
                });
            }
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(VmmError::Timeout {
                vm: vm.name.clone(),
                what: "the VM's state to be written",
                after: MIGRATION_DEADLINE,
            });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
