//! Clones: a sandbox VM started from a template snapshot with its own
//! copy-on-write disk, tap and serial log, then initialised through envd.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::envd_client::{EnvdClient, InitParams};
use crate::error::{Result, VmmError};
use crate::template::{DISK, Template, create_overlay};
use crate::vmm::{AdoptSpec, ConsoleSink, GuestMemory, NetAttachment, VmSpec, Vmm};
use tracing::Instrument;

/// How long a guest booting afresh may take until envd answers: under TCG
/// seconds, on a busy machine tens.
const BOOT_READY_DEADLINE: Duration = Duration::from_secs(180);

/// How much of a sandbox's console output is kept (the newest bytes).
pub const CONSOLE_RING: usize = 256 * 1024;

/// What one clone needs beyond its template.
#[derive(Debug, Clone)]
pub struct CloneRequest {
    pub sandbox_id: String,
    /// Gets the clone's disk overlay, monitor socket and logs; removed when
    /// the sandbox is destroyed or the clone fails.
    pub run_dir: PathBuf,
    pub net: NetAttachment,
    /// Where the host reaches this clone's envd.
    pub envd_address: SocketAddr,
    pub init: InitParams,
    /// How long envd may take to accept `/init` and answer `/health`.
    pub ready_deadline: Duration,
    /// The sandbox's log, which gets its console's lines.
    pub log: Option<std::sync::Arc<crate::sandbox_log::SandboxLog>>,
}

/// A clone that an earlier process started and left running, to take over.
#[derive(Debug, Clone)]
pub struct AdoptRequest {
    pub sandbox_id: String,
    /// The name of the template it was cloned from.
    pub template: String,
    pub run_dir: PathBuf,
    /// Its VMM process.
    pub pid: u32,
    /// Where the host reaches this clone's envd.
    pub envd_address: SocketAddr,
    /// The token its envd was initialised with.
    pub access_token: Option<String>,
    /// How long envd may take to answer `/health`.
    pub ready_deadline: Duration,
    /// The sandbox's log, which gets its console's lines.
    pub log: Option<std::sync::Arc<crate::sandbox_log::SandboxLog>>,
}

/// Where the time of one clone went.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneTimings {
    /// Creating the disk overlay.
    pub disk: Duration,
    /// Spawning QEMU until its monitor answers.
    pub vmm_start: Duration,
    /// Loading the device state until the VM runs.
    pub restore: Duration,
    /// envd's `/init`, including waiting for the guest network.
    pub init: Duration,
    /// `/health` after `/init`.
    pub ready: Duration,
    pub total: Duration,
}

/// A running clone.
#[derive(Debug)]
pub struct Sandbox<V: Vmm> {
    pub id: String,
    pub template: String,
    pub run_dir: PathBuf,
    pub vm: V::Vm,
    pub envd: EnvdClient,
    pub timings: CloneTimings,
}

/// Starts a clone of `template`. On failure nothing is left behind: no
/// QEMU, no run directory.
pub async fn clone_sandbox<V: Vmm>(
    vmm: &V,
    template: &Template,
    request: CloneRequest,
) -> Result<Sandbox<V>> {
    start_new(vmm, template, request, Origin::Template).await
}

/// Starts a new clone (of a template or a snapshot) in a run directory of
/// its own, which goes if the clone fails.
pub(crate) async fn start_new<V: Vmm>(
    vmm: &V,
    template: &Template,
    request: CloneRequest,
    origin: Origin<'_>,
) -> Result<Sandbox<V>> {
    let wrap = |cause: VmmError| VmmError::Clone {
        sandbox: request.sandbox_id.clone(),
        template: template.name().to_owned(),
        cause: Box::new(cause),
    };
    template.check_restorable(vmm.accel()).map_err(wrap)?;
    if request.run_dir.exists() {
        return Err(wrap(VmmError::Invalid(format!(
            "run directory {} exists already",
            request.run_dir.display()
        ))));
    }
    let started = Instant::now();
    let result = start(vmm, template, &request, started, origin).await;
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&request.run_dir);
    }
    result.map_err(wrap)
}

/// Where a clone's VM comes from.
#[derive(Debug, Clone)]
pub(crate) enum Origin<'a> {
    /// The template's snapshot, with a new disk overlay.
    Template,
    /// A paused clone's snapshot, with the disk it had.
    Paused(&'a std::path::Path),
    /// A cold boot from the template's kernel over the disk the clone had
    /// (a filesystem-only pause): fresh memory, a new boot.
    Boot,
    /// A snapshot's state, with a new disk over its layer; its envd has
    /// the snapshotted clone's token, which `/init` must show.
    Snapshot {
        state: &'a std::path::Path,
        layer: &'a std::path::Path,
        previous_token: Option<String>,
    },
}

pub(crate) async fn start<V: Vmm>(
    vmm: &V,
    template: &Template,
    request: &CloneRequest,
    started: Instant,
    origin: Origin<'_>,
) -> Result<Sandbox<V>> {
    std::fs::create_dir_all(&request.run_dir)
        .map_err(VmmError::io("creating", &request.run_dir))?;
    let disk = request.run_dir.join(DISK);
    match &origin {
        Origin::Template => create_overlay(&disk, &template.disk(), "qcow2").await?,
        Origin::Snapshot { layer, .. } => create_overlay(&disk, layer, "qcow2").await?,
        Origin::Paused(_) | Origin::Boot => {}
    }
    let disk_done = started.elapsed();
    let spec = VmSpec {
        name: format!("sandbox {}", request.sandbox_id),
        run_dir: request.run_dir.clone(),
        accel: vmm.accel(),
        boot: template.boot(),
        vcpus: template.meta.vcpus,
        memory_mib: template.meta.memory_mib,
        memory: if matches!(origin, Origin::Boot) {
            GuestMemory::Anonymous
        } else {
            GuestMemory::CloneOf(template.memory_file())
        },
        disk: Some(disk),
        net: Some(request.net.clone()),
        console: ConsoleSink::Ring(CONSOLE_RING, request.log.clone()),
    };
    let booting = matches!(origin, Origin::Boot);
    let restoring = tracing::info_span!("restore VM", sandbox_id = %request.sandbox_id);
    let (vm, previous_token) = async {
        Ok::<_, VmmError>(match origin {
            Origin::Template => (
                vmm.clone_from_template(&spec, &template.device_state())
                    .await?,
                None,
            ),
            // A resumed clone's envd has the token `/init` sets again.
            Origin::Paused(snapshot) => (vmm.restore_sandbox(&spec, snapshot).await?, None),
            Origin::Boot => (vmm.start(&spec).await?, None),
            Origin::Snapshot {
                state,
                previous_token,
                ..
            } => (vmm.restore_sandbox(&spec, state).await?, previous_token),
        })
    }
    .instrument(restoring)
    .await?;
    let restored = Instant::now();
    let envd = EnvdClient::new(&spec.name, request.envd_address)?;
    let ready = async {
        let deadline = restored
            + if booting {
                request.ready_deadline.max(BOOT_READY_DEADLINE)
            } else {
                request.ready_deadline
            };
        let initialiser = envd.clone().with_access_token(previous_token);
        init_until(&initialiser, &request.init, deadline).await?;
        let initialised = Instant::now();
        let envd = envd.with_access_token(request.init.access_token.clone());
        envd.wait_healthy(deadline, || None).await?;
        Ok::<_, VmmError>((envd, initialised))
    }
    .instrument(tracing::info_span!("envd init", otel.kind = "client"))
    .await;
    let (envd, initialised) = match ready {
        Ok(ready) => ready,
        Err(error) => {
            let _ = vmm.kill(vm).await;
            return Err(error);
        }
    };
    let startup = vmm.startup_timings(&vm);
    Ok(Sandbox {
        id: request.sandbox_id.clone(),
        template: template.name().to_owned(),
        run_dir: request.run_dir.clone(),
        envd,
        timings: CloneTimings {
            disk: disk_done,
            vmm_start: startup.vmm_start,
            restore: startup.restore,
            init: initialised - restored,
            ready: initialised.elapsed(),
            total: started.elapsed(),
        },
        vm,
    })
}

/// `/init`, retried while the guest's network path comes up.
async fn init_until(envd: &EnvdClient, params: &InitParams, deadline: Instant) -> Result<()> {
    loop {
        match envd.init(params).await {
            Ok(()) => return Ok(()),
            Err(VmmError::Envd { vm, message }) if Instant::now() > deadline => {
                return Err(VmmError::Envd {
                    vm,
                    message: format!("never accepted /init before the deadline; last: {message}"),
                });
            }
            Err(error) if Instant::now() > deadline => return Err(error),
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Takes over a clone an earlier process left running: its VMM must be
/// process `pid` running the VM of `run_dir`, and its envd must answer
/// `/health`. When envd does not, the VM is killed; the run directory stays
/// (the caller cleans up). Its console ring starts empty.
pub async fn adopt_sandbox<V: Vmm>(vmm: &V, request: AdoptRequest) -> Result<Sandbox<V>> {
    let name = format!("sandbox {}", request.sandbox_id);
    let vm = vmm
        .adopt(&AdoptSpec {
            name: name.clone(),
            run_dir: request.run_dir.clone(),
            pid: request.pid,
            console: ConsoleSink::Ring(CONSOLE_RING, request.log.clone()),
        })
        .await?;
    let healthy = async {
        let envd = EnvdClient::new(&name, request.envd_address)?
            .with_access_token(request.access_token.clone());
        envd.wait_healthy(Instant::now() + request.ready_deadline, || None)
            .await?;
        Ok::<_, VmmError>(envd)
    }
    .await;
    match healthy {
        Ok(envd) => Ok(Sandbox {
            id: request.sandbox_id,
            template: request.template,
            run_dir: request.run_dir,
            vm,
            envd,
            timings: CloneTimings::default(),
        }),
        Err(error) => {
            let _ = vmm.kill(vm).await;
            Err(error)
        }
    }
}

/// Lets go of a clone without stopping it (its run directory stays), so
/// that a later process can adopt it.
pub fn detach<V: Vmm>(vmm: &V, sandbox: Sandbox<V>) {
    vmm.detach(sandbox.vm);
}

/// Stops a clone: kills its VM and removes its run directory (disk overlay,
/// socket, logs).
pub async fn destroy<V: Vmm>(vmm: &V, sandbox: Sandbox<V>) -> Result<()> {
    let Sandbox { vm, run_dir, .. } = sandbox;
    let killed = vmm.kill(vm).await;
    let removed = std::fs::remove_dir_all(&run_dir).map_err(VmmError::io("removing", &run_dir));
    killed.and(removed)
}
