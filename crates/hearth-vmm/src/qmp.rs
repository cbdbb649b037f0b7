//! A QMP connection with a deadline on every command, over the `qapi`
//! crate's generated, typed commands.

use std::path::Path;
use std::time::{Duration, Instant};

use qapi::futures::{QapiService, QmpStreamTokio};
use qapi::qmp;
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;

use crate::error::{Result, VmmError};
use crate::line_bound::LineBound;

/// How long one QMP command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest QMP message read (answers and events are a few KiB).
const MAX_LINE: usize = 1 << 20;

type Writer = QmpStreamTokio<OwnedWriteHalf>;

/// An open, negotiated QMP monitor of one VM.
pub struct Qmp {
    vm: String,
    service: QapiService<Writer>,
    events: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp")
            .field("vm", &self.vm)
            .finish_non_exhaustive()
    }
}

impl Qmp {
    /// Connects to the monitor socket, retrying until QEMU has created it or
    /// `deadline` passes.
    pub async fn connect(vm: &str, socket: &Path, deadline: Instant) -> Result<Self> {
        let stream = loop {
            match UnixStream::connect(socket).await {
                Ok(stream) => break stream,
                Err(error) if Instant::now() < deadline => {
                    tracing::trace!(%error, "QMP socket not ready");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(_) => {
                    return Err(VmmError::Timeout {
                        vm: vm.to_owned(),
                        what: "the QMP socket",
                        after: deadline.saturating_duration_since(Instant::now()),
                    });
                }
            }
        };
        let negotiate = async {
            let (read, write) = stream.into_split();
            let negotiation =
                QmpStreamTokio::open_split(LineBound::new(read, MAX_LINE), write).await?;
            negotiation.negotiate().await
        };
        let stream = tokio::time::timeout(COMMAND_TIMEOUT, negotiate)
            .await
            .map_err(|_| VmmError::Timeout {
                vm: vm.to_owned(),
                what: "the QMP greeting",
                after: COMMAND_TIMEOUT,
            })?
            .map_err(|e| VmmError::Qmp {
                vm: vm.to_owned(),
                command: "qmp_capabilities",
                message: e.to_string(),
            })?;
        let (service, events) = stream.spawn_tokio();
        Ok(Self {
            vm: vm.to_owned(),
            service,
            events,
        })
    }

    /// Runs one command with the default deadline.
    pub async fn execute<C>(&self, command: C) -> Result<C::Ok>
    where
        C: qapi::Command + Send + 'static,
        Writer: futures::Sink<qapi::Execute<C, u32>, Error = std::io::Error> + Unpin,
    {
        self.execute_within(command, COMMAND_TIMEOUT).await
    }

    pub async fn execute_within<C>(&self, command: C, timeout: Duration) -> Result<C::Ok>
    where
        C: qapi::Command + Send + 'static,
        Writer: futures::Sink<qapi::Execute<C, u32>, Error = std::io::Error> + Unpin,
    {
        let name = C::NAME;
        match tokio::time::timeout(timeout, self.service.execute(command)).await {
            Err(_) => Err(VmmError::Timeout {
                vm: self.vm.clone(),
                what: name,
                after: timeout,
            }),
            Ok(Err(error)) => Err(VmmError::Qmp {
                vm: self.vm.clone(),
                command: name,
                message: error.to_string(),
            }),
            Ok(Ok(value)) => Ok(value),
        }
    }

    /// The VM's run state.
    pub async fn status(&self) -> Result<qmp::RunState> {
        Ok(self.execute(qmp::query_status {}).await?.status)
    }

    /// Turns on `x-ignore-shared`: RAM in a shared file backend is not
    /// written to (or read from) the migration stream.
    pub async fn ignore_shared_memory(&self) -> Result<()> {
        self.set_capabilities(&[(qmp::MigrationCapability::x_ignore_shared, true)])
            .await
    }

    /// Migration with the RAM in it, at fixed offsets of the file
    /// (`mapped-ram`), every page written (zero ones too: the RAM it is
    /// loaded over is a template's, not zeros). Both ends ask for it.
    /// The pages move over `channels` threads at once (`multifd`): loading
    /// a page over a template's copy-on-write RAM costs a fault and a copy,
    /// and those run in parallel.
    pub async fn migrate_ram_mapped(&self, channels: u8) -> Result<()> {
        self.set_capabilities(&[
            (qmp::MigrationCapability::x_ignore_shared, false),
            (qmp::MigrationCapability::mapped_ram, true),
            (qmp::MigrationCapability::multifd, channels > 1),
        ])
        .await?;
        self.execute(qmp::migrate_set_parameters(qmp::MigrateSetParameters {
            zero_page_detection: Some(qmp::ZeroPageDetection::none),
            multifd_channels: (channels > 1).then_some(channels),
            // QEMU throttles a migration to 128 MiB/s unless told otherwise,
            // which made writing 512 MiB of RAM to a local file take 4 s.
            max_bandwidth: Some(UNTHROTTLED_BYTES_PER_SECOND),
            ..Default::default()
        }))
        .await
        .map(drop)
    }

    async fn set_capabilities(
        &self,
        capabilities: &[(qmp::MigrationCapability, bool)],
    ) -> Result<()> {
        self.execute(qmp::migrate_set_capabilities {
            capabilities: capabilities
                .iter()
                .map(|(capability, state)| qmp::MigrationCapabilityStatus {
                    capability: *capability,
                    state: *state,
                })
                .collect(),
        })
        .await
        .map(drop)
    }
}

/// A migration rate no local file reaches (1 TiB/s).
const UNTHROTTLED_BYTES_PER_SECOND: u64 = 1 << 40;

impl Drop for Qmp {
    fn drop(&mut self) {
        self.events.abort();
    }
}
