//! The node's gRPC API with real VMs: lifecycle, errors, 8 concurrent
//! creates, end times, a VM that dies, health. Run by `make vm-test`.

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::{
    COMMAND_TIMEOUT, Leftovers, TEST_SLOT_PREFIX, TestResult, process_running,
    runtime_and_template, test_slots,
};
use hearth_orchestrator::grpc::NodeService;
use hearth_orchestrator::{NodeLimits, SandboxManager};
use hearth_proto::orchestrator as pb;
use hearth_vmm::EnvdClient;
use hearth_vmm::envd_client::ENVD_PORT;
use pb::info_service_client::InfoServiceClient;
use pb::sandbox_service_client::SandboxServiceClient;
use tonic::Code;
use tonic::transport::Channel;

struct Node {
    client: SandboxServiceClient<Channel>,
    info: InfoServiceClient<Channel>,
    channel: Channel,
    manager: Arc<SandboxManager>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _leftovers: Leftovers,
}

impl Node {
    /// A node whose sandboxes' run directories (`ids`) are removed however
    /// the test ends.
    async fn start(limits: NodeLimits, ids: &[&str]) -> Result<Self, Box<dyn std::error::Error>> {
        let (mut runtime, template) = runtime_and_template().await?;
        runtime.keep_slots_ready(2);
        let sandboxes_dir = runtime.sandboxes_dir();
        let manager = Arc::new(SandboxManager::new(Arc::new(runtime), limits));
        manager.register_template(template);
        tokio::spawn(manager.clone().reap(Duration::from_millis(300)));
        tokio::spawn(
            manager
                .clone()
                .sample_metrics(hearth_orchestrator::sandbox_metrics::SAMPLE_PERIOD),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = NodeService::new(manager.clone(), "test-node".into());
        tokio::spawn(service.serve(listener, async {
            let _ = stopped.await;
        }));
        let channel = Channel::from_shared(format!("http://{address}"))?
            .connect()
            .await?;
        Ok(Self {
            client: SandboxServiceClient::new(channel.clone()),
            info: InfoServiceClient::new(channel.clone()),
            channel,
            manager,
            stop: Some(stop),
            _leftovers: Leftovers {
                run_dirs: ids.iter().map(|id| sandboxes_dir.join(id)).collect(),
            },
        })
    }

    /// Deletes every sandbox and the pool's slots; then no test slot may
    /// be left.
    async fn shutdown(mut self) -> TestResult {
        self.manager.delete_all().await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.manager.runtime().slots.drain().await?;
        assert!(
            test_slots().is_empty(),
            "slots are left: {:?}",
            test_slots()
        );
        Ok(())
    }
}

fn create_request(id: &str) -> pb::SandboxCreateRequest {
    pb::SandboxCreateRequest {
        sandbox: Some(pb::SandboxConfig {
            template_id: "base".into(),
            sandbox_id: id.into(),
            env_vars: [("GREETING".to_owned(), format!("hello from {id}"))].into(),
            metadata: [("purpose".to_owned(), "test".to_owned())].into(),
            default_user: "user".into(),
            ..Default::default()
        }),
        start_time: None,
        end_time: None,
    }
}

fn envd_at(host_address: &str) -> Result<EnvdClient, Box<dyn std::error::Error>> {
    Ok(EnvdClient::new(
        "test",
        std::net::SocketAddr::new(host_address.parse()?, ENVD_PORT),
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn sandbox_lifecycle_over_grpc() -> TestResult {
    let mut node = Node::start(NodeLimits::default(), &["life-1", "life-2", "life-3"]).await?;
    let health = tonic_health::pb::health_client::HealthClient::new(node.channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "hearth.orchestrator.v1.SandboxService".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let created = node
        .client
        .create(create_request("life-1"))
        .await?
        .into_inner();
    assert_eq!(created.client_id, "test-node");
    let envd = envd_at(&created.host_address)?;
    let greeting = envd
        .run(
            "sh",
            &["-c", "echo $GREETING; id -un"],
            None,
            COMMAND_TIMEOUT,
        )
        .await?;
    assert_eq!(greeting.stdout, "hello from life-1\nuser\n");

    let got = node
        .client
        .get(pb::SandboxGetRequest {
            sandbox_id: "life-1".into(),
        })
        .await?
        .into_inner();
    assert_eq!(got.sandbox_id, "life-1");
    assert_eq!(got.host_address, created.host_address);
    assert_eq!((got.vcpu, got.ram_mb), (2, 512));
    assert_eq!(
        got.config.map(|c| c.metadata.get("purpose").cloned()),
        Some(Some("test".into()))
    );
    let listed = node.client.list(()).await?.into_inner().sandboxes;
    assert_eq!(
        listed
            .iter()
            .map(|s| s.sandbox_id.as_str())
            .collect::<Vec<_>>(),
        ["life-1"]
    );

    let info = node.info.service_info(()).await?.into_inner();
    assert_eq!(info.metric_sandboxes_running, 1);
    assert_eq!(info.metric_cpu_allocated, 2);
    assert_eq!(info.metric_memory_allocated_bytes, 512 << 20);
    assert!(["kvm", "tcg"].contains(&info.accelerator.as_str()));

    // Bad input: clear codes, nothing created.
    let duplicate = node
        .client
        .create(create_request("life-1"))
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(duplicate, Some(Code::AlreadyExists));
    let mut unknown = create_request("life-2");
    if let Some(config) = unknown.sandbox.as_mut() {
        config.template_id = "no-such-template".into();
    }
    let unknown = node.client.create(unknown).await.err();
    assert_eq!(unknown.as_ref().map(|s| s.code()), Some(Code::NotFound));
    assert!(
        unknown
            .map(|s| s.message().contains("no-such-template"))
            .unwrap_or(false)
    );
    let mut bad_shape = create_request("life-3");
    if let Some(config) = bad_shape.sandbox.as_mut() {
        config.vcpu = 7;
    }
    assert_eq!(
        node.client.create(bad_shape).await.err().map(|s| s.code()),
        Some(Code::InvalidArgument)
    );
    let bad_id = create_request("../etc");
    assert_eq!(
        node.client.create(bad_id).await.err().map(|s| s.code()),
        Some(Code::InvalidArgument)
    );
    let missing = node
        .client
        .get(pb::SandboxGetRequest {
            sandbox_id: "nope".into(),
        })
        .await
        .err();
    assert_eq!(missing.map(|s| s.code()), Some(Code::NotFound));
    assert_eq!(node.client.list(()).await?.into_inner().sandboxes.len(), 1);

    // Paused and resumed: what it wrote is there, its envd answers at its
    // new address; a second pause or a resume of a running one is refused.
    let write = envd
        .run(
            "sh",
            &["-c", "echo before-pause > /tmp/mark"],
            None,
            COMMAND_TIMEOUT,
        )
        .await?;
    assert_eq!(write.exit_code, 0);
    let pause = |id: &str| pb::SandboxPauseRequest {
        sandbox_id: id.into(),
        filesystem_only: false,
        ..Default::default()
    };
    let paused = node.client.pause(pause("life-1")).await?.into_inner();
    assert!(paused.paused);
    let again = node.client.pause(pause("life-1")).await.err();
    assert_eq!(again.map(|s| s.code()), Some(Code::FailedPrecondition));
    let listed = node.client.list(()).await?.into_inner().sandboxes;
    assert!(listed.iter().any(|s| s.sandbox_id == "life-1" && s.paused));
    let resumed = node
        .client
        .resume(pb::SandboxResumeRequest {
            sandbox_id: "life-1".into(),
            end_time: None,
            fresh_boot: false,
        })
        .await?
        .into_inner();
    assert!(!resumed.paused);
    let mark = envd_at(&resumed.host_address)?
        .run("cat", &["/tmp/mark"], None, COMMAND_TIMEOUT)
        .await?;
    assert_eq!(mark.stdout, "before-pause\n");
    let running = node
        .client
        .resume(pb::SandboxResumeRequest {
            sandbox_id: "life-1".into(),
            end_time: None,
            fresh_boot: false,
        })
        .await
        .err();
    assert_eq!(running.map(|s| s.code()), Some(Code::FailedPrecondition));

    // An end time in the past makes the node remove the sandbox.
    let past = prost_types::Timestamp::from(SystemTime::now() - Duration::from_secs(1));
    node.client
        .update(pb::SandboxUpdateRequest {
            sandbox_id: "life-1".into(),
            end_time: Some(past),
            egress: None,
            allow_internet_access: None,
        })
        .await?;
    wait_until_gone(&mut node, "life-1").await?;
    assert!(
        !envd_at(&resumed.host_address)?.healthy().await,
        "the removed sandbox's envd is gone"
    );
    let deleted_again = node
        .client
        .delete(pb::SandboxDeleteRequest {
            sandbox_id: "life-1".into(),
            ..Default::default()
        })
        .await
        .err();
    assert_eq!(deleted_again.map(|s| s.code()), Some(Code::NotFound));
    node.shutdown().await
}

async fn wait_until_gone(node: &mut Node, id: &str) -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = node
            .client
            .get(pb::SandboxGetRequest {
                sandbox_id: id.into(),
            })
            .await;
        if got.as_ref().err().map(|s| s.code()) == Some(Code::NotFound) {
            return Ok(());
        }
        assert!(Instant::now() < deadline, "{id} was not removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn eight_concurrent_creates_then_deletes() -> TestResult {
    let limits = NodeLimits {
        max_starting: 3,
        start_wait: Duration::from_secs(120),
        ..NodeLimits::default()
    };
    let ids: Vec<String> = (0..8).map(|i| format!("many-{i}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let node = Node::start(limits, &id_refs).await?;
    let creates = ids.iter().map(|id| {
        let mut client = node.client.clone();
        let request = create_request(id);
        async move { client.create(request).await.map(|r| r.into_inner()) }
    });
    let created: Vec<pb::SandboxCreateResponse> = futures_join_all(creates).await?;
    let mut addresses: Vec<&str> = created.iter().map(|c| c.host_address.as_str()).collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 8, "each sandbox has its own address");
    for (id, response) in ids.iter().zip(&created) {
        let out = envd_at(&response.host_address)?
            .run("hostname", &[], None, COMMAND_TIMEOUT)
            .await?;
        assert_eq!(out.stdout.trim(), id);
    }
    let mut client = node.client.clone();
    for id in &ids {
        client
            .delete(pb::SandboxDeleteRequest {
                sandbox_id: id.clone(),
                ..Default::default()
            })
            .await?;
    }
    assert!(client.list(()).await?.into_inner().sandboxes.is_empty());
    for id in &ids {
        assert!(
            !process_running(&format!("sandboxes/{TEST_SLOT_PREFIX}/{id}/")),
            "a QEMU of {id} is left"
        );
    }
    node.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn a_vm_that_dies_is_noticed_and_cleaned_up() -> TestResult {
    let mut node = Node::start(NodeLimits::default(), &["dies"]).await?;
    node.client.create(create_request("dies")).await?;
    let pid = node
        .manager
        .runtime()
        .sandbox_dir("dies")
        .exists()
        .then(|| qemu_pid_of("dies"))
        .flatten()
        .ok_or("no QEMU for the sandbox")?;
    nix_kill(pid);
    wait_until_gone(&mut node, "dies").await?;
    // The sandbox leaves the node's table before its run directory is
    // removed, so the directory is awaited rather than checked once.
    let dir = node.manager.runtime().sandbox_dir("dies");
    let deadline = Instant::now() + Duration::from_secs(20);
    while dir.exists() {
        assert!(
            Instant::now() < deadline,
            "{} was not removed",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.shutdown().await
}

fn qemu_pid_of(id: &str) -> Option<i32> {
    let needle = format!("sandboxes/{TEST_SLOT_PREFIX}/{id}/");
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok())
        .find_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (cmdline.starts_with("qemu-system") && cmdline.contains(&needle))
                .then(|| e.file_name().to_string_lossy().parse().ok())
                .flatten()
        })
}

fn nix_kill(pid: i32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}

async fn futures_join_all<T, E: Into<Box<dyn std::error::Error>>>(
    futures: impl Iterator<Item = impl std::future::Future<Output = Result<T, E>>>,
) -> Result<Vec<T>, Box<dyn std::error::Error>> {
    let handles: Vec<_> = futures.collect();
    let mut out = Vec::new();
    for result in futures::future::join_all(handles).await {
        out.push(result.map_err(Into::into)?);
    }
    Ok(out)
}

/// A stand-in for the internet: a namespace reached from the host through a
/// veth, serving one TCP port. Removed on drop.
struct Internet {
    netns: &'static str,
}

const INTERNET_NETNS: &str = "htx-inet";
const INTERNET_ADDRESS: &str = "198.18.0.1";
const INTERNET_PORT: u16 = 18080;

impl Internet {
    fn start() -> Result<Self, Box<dyn std::error::Error>> {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", INTERNET_NETNS])
            .status();
        let internet = Self {
            netns: INTERNET_NETNS,
        };
        for args in [
            vec!["netns", "add", INTERNET_NETNS],
            vec![
                "link",
                "add",
                "htxv0",
                "type",
                "veth",
                "peer",
                "name",
                "inet0",
                "netns",
                INTERNET_NETNS,
            ],
            vec!["addr", "add", "198.18.0.2/30", "dev", "htxv0"],
            vec!["link", "set", "htxv0", "up"],
            vec![
                "-n",
                INTERNET_NETNS,
                "addr",
                "add",
                "198.18.0.1/30",
                "dev",
                "inet0",
            ],
            vec!["-n", INTERNET_NETNS, "link", "set", "inet0", "up"],
        ] {
            let status = std::process::Command::new("ip").args(&args).status()?;
            if !status.success() {
                return Err(format!("ip {args:?} failed").into());
            }
        }
        serve_in_netns(INTERNET_NETNS, INTERNET_ADDRESS, INTERNET_PORT, "inet")?;
        Ok(internet)
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", self.netns])
            .status();
    }
}

/// Answers `reply` to every connection on `address:port` inside `netns`
/// (`None`: the host's), on a thread that lives as long as the test.
fn serve_in_netns(
    netns: &str,
    address: &str,
    port: u16,
    reply: &'static str,
) -> Result<(), Box<dyn std::error::Error>> {
    let (ready, is_ready) = std::sync::mpsc::channel();
    let path = format!("/run/netns/{netns}");
    let address = format!("{address}:{port}");
    std::thread::spawn(move || {
        let bound = (|| -> std::io::Result<std::net::TcpListener> {
            let ns = std::fs::File::open(&path)?;
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            std::net::TcpListener::bind(&address)
        })();
        let listener = match bound {
            Ok(listener) => {
                let _ = ready.send(Ok(()));
                listener
            }
            Err(error) => {
                let _ = ready.send(Err(error.to_string()));
                return;
            }
        };
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = std::io::Write::write_all(&mut stream, reply.as_bytes());
        }
    });
    is_ready.recv()?.map_err(Into::into)
}

/// Whether the guest behind `envd` can open a TCP connection to
/// `address:port` and read from it.
async fn guest_reaches(
    envd: &EnvdClient,
    address: &str,
    port: u16,
) -> Result<bool, Box<dyn std::error::Error>> {
    let script = format!("exec 3<>/dev/tcp/{address}/{port} && head -c 4 <&3");
    let out = envd
        .run(
            "timeout",
            &["3", "bash", "-c", &script],
            None,
            COMMAND_TIMEOUT,
        )
        .await?;
    Ok(out.exit_code == 0 && !out.stdout.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn network_isolation_and_egress_rules() -> TestResult {
    let mut node = Node::start(NodeLimits::default(), &["net-a", "net-b"]).await?;
    let _internet = Internet::start()?;
    // A service on every host address.
    let host_listener = std::net::TcpListener::bind("0.0.0.0:18081")?;
    std::thread::spawn(move || {
        for mut stream in host_listener.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut stream, b"host");
        }
    });

    let a = node
        .client
        .create(create_request("net-a"))
        .await?
        .into_inner();
    let mut offline = create_request("net-b");
    if let Some(config) = offline.sandbox.as_mut() {
        config.allow_internet_access = Some(false);
    }
    let b = node.client.create(offline).await?.into_inner();
    let (envd_a, envd_b) = (envd_at(&a.host_address)?, envd_at(&b.host_address)?);

    assert!(
        guest_reaches(&envd_a, INTERNET_ADDRESS, INTERNET_PORT).await?,
        "internet on: A reaches out"
    );
    assert!(
        !guest_reaches(&envd_b, INTERNET_ADDRESS, INTERNET_PORT).await?,
        "internet off: B does not"
    );

    // Never the host's own services, never another sandbox.
    let a_host_side = node.manager.get("net-a")?.host_address;
    let host_veth_address = Ipv4Addr::from(u32::from(a_host_side) - 1).to_string();
    assert!(
        !guest_reaches(&envd_a, &host_veth_address, 18081).await?,
        "A reaches the host"
    );
    assert!(
        !guest_reaches(&envd_a, "198.18.0.2", 18081).await?,
        "A reaches the host's other address"
    );
    assert!(
        !guest_reaches(&envd_a, &b.host_address, ENVD_PORT).await?,
        "A reaches B"
    );
    assert!(
        !guest_reaches(&envd_b, &a.host_address, ENVD_PORT).await?,
        "B reaches A"
    );

    // Rules change live.
    node.client
        .update(pb::SandboxUpdateRequest {
            sandbox_id: "net-b".into(),
            end_time: None,
            allow_internet_access: None,
            egress: Some(pb::SandboxNetworkEgressConfig {
                allowed_cidrs: vec!["198.18.0.0/15".into()],
                denied_cidrs: vec![],
            }),
        })
        .await?;
    assert!(
        guest_reaches(&envd_b, INTERNET_ADDRESS, INTERNET_PORT).await?,
        "allowed CIDR: B reaches it"
    );
    node.client
        .update(pb::SandboxUpdateRequest {
            sandbox_id: "net-a".into(),
            end_time: None,
            allow_internet_access: None,
            egress: Some(pb::SandboxNetworkEgressConfig {
                allowed_cidrs: vec![],
                denied_cidrs: vec![format!("{INTERNET_ADDRESS}/32")],
            }),
        })
        .await?;
    assert!(
        !guest_reaches(&envd_a, INTERNET_ADDRESS, INTERNET_PORT).await?,
        "denied CIDR: A does not"
    );
    // Internet access turns on and off live, the CIDR lists kept.
    node.client
        .update(pb::SandboxUpdateRequest {
            sandbox_id: "net-b".into(),
            end_time: None,
            egress: Some(pb::SandboxNetworkEgressConfig::default()),
            allow_internet_access: Some(true),
        })
        .await?;
    assert!(
        guest_reaches(&envd_b, INTERNET_ADDRESS, INTERNET_PORT).await?,
        "internet turned on: B reaches out"
    );
    assert!(node.manager.get("net-b")?.spec.allow_internet);
    node.client
        .update(pb::SandboxUpdateRequest {
            sandbox_id: "net-b".into(),
            end_time: None,
            egress: None,
            allow_internet_access: Some(false),
        })
        .await?;
    assert!(
        !guest_reaches(&envd_b, INTERNET_ADDRESS, INTERNET_PORT).await?,
        "internet turned off again: B does not"
    );
    let bad = node
        .client
        .update(pb::SandboxUpdateRequest {
            sandbox_id: "net-a".into(),
            end_time: None,
            allow_internet_access: None,
            egress: Some(pb::SandboxNetworkEgressConfig {
                allowed_cidrs: vec!["not-a-cidr".into()],
                denied_cidrs: vec![],
            }),
        })
        .await
        .err();
    assert_eq!(bad.map(|s| s.code()), Some(Code::InvalidArgument));
    assert!(
        !guest_reaches(&envd_a, INTERNET_ADDRESS, INTERNET_PORT).await?,
        "a refused update changes nothing"
    );

    for id in ["net-a", "net-b"] {
        node.client
            .delete(pb::SandboxDeleteRequest {
                sandbox_id: id.into(),
                ..Default::default()
            })
            .await?;
    }
    node.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn metrics_and_a_flooded_console_stay_bounded() -> TestResult {
    let mut node = Node::start(NodeLimits::default(), &["flood"]).await?;
    let created = node
        .client
        .create(create_request("flood"))
        .await?
        .into_inner();
    let envd = envd_at(&created.host_address)?;
    let metrics = |node: &mut Node| {
        let mut client = node.client.clone();
        async move {
            client
                .metrics(pb::SandboxMetricsRequest {
                    sandbox_id: "flood".into(),
                })
                .await
                .map(|r| r.into_inner())
        }
    };
    let before = metrics(&mut node).await?;
    assert!(before.cpu_seconds > 0.0, "{before:?}");
    assert!(
        before.memory_rss_bytes > 0 && before.memory_pss_bytes > 0,
        "{before:?}"
    );
    let write = envd
        .run(
            "sh",
            &["-c", "head -c 33554432 /dev/urandom > /tmp/blob && sync"],
            Some("root"),
            COMMAND_TIMEOUT,
        )
        .await?;
    assert_eq!(write.exit_code, 0, "{write:?}");
    let after = metrics(&mut node).await?;
    assert!(
        after.disk_bytes >= before.disk_bytes + (24 << 20),
        "32 MiB written in the guest: disk {} → {}",
        before.disk_bytes,
        after.disk_bytes
    );
    assert!(after.cpu_seconds > before.cpu_seconds);

    // 1 MB to the serial console: the node keeps only the newest bytes.
    let flood = envd
        .run(
            "sh",
            &["-c", "head -c 1000000 /dev/zero | tr '\\0' x > /dev/ttyS0"],
            Some("root"),
            std::time::Duration::from_secs(180),
        )
        .await?;
    assert_eq!(flood.exit_code, 0, "{flood:?}");
    // The guest's UART may still be draining its buffer: wait for it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let console = loop {
        let console = node
            .client
            .console(pb::SandboxConsoleRequest {
                sandbox_id: "flood".into(),
            })
            .await?
            .into_inner();
        if console.total_bytes >= 1_000_000 || Instant::now() > deadline {
            break console;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        console.total_bytes >= 1_000_000,
        "total {}",
        console.total_bytes
    );
    assert!(console.output.len() <= hearth_vmm::sandbox::CONSOLE_RING);
    // The newest output is kept: the flood, then envd's lines about it.
    let flooded = console.output.iter().filter(|&&b| b == b'x').count();
    assert!(
        flooded >= hearth_vmm::sandbox::CONSOLE_RING / 2,
        "{flooded} bytes of the flood kept"
    );
    assert!(
        !node
            .manager
            .runtime()
            .sandbox_dir("flood")
            .join("serial.log")
            .exists()
    );
    // The sandbox's log got the flood as one cut line, and stays within
    // its bound under a flood of lines too.
    let lines = envd
        .run(
            "sh",
            &[
                "-c",
                "seq 1 20000 | sed 's/^/spam /' > /dev/ttyS0; echo flood-done > /dev/ttyS0",
            ],
            Some("root"),
            std::time::Duration::from_secs(180),
        )
        .await?;
    assert_eq!(lines.exit_code, 0, "{lines:?}");
    let done = log_lines_until(&mut node, "flood", "flood-done", 1).await?;
    assert_eq!(done[0]["logger"], "console");
    let history = node
        .manager
        .runtime()
        .history
        .get("flood")
        .ok_or("the sandbox has no history")?;
    let (bytes, dropped) = history.log.usage();
    assert!(
        bytes
            <= hearth_orchestrator::sandbox_history::HistoryLimits::default().log_bytes_per_sandbox,
        "{bytes} bytes kept"
    );
    assert!(dropped > 0, "the oldest lines went");

    // envd's process events, as E2B's envd logs them.
    let echo = envd
        .run("echo", &["still here"], None, COMMAND_TIMEOUT)
        .await?;
    assert_eq!(echo.stdout, "still here\n");
    // Earlier commands have events too: wait for the echo's own.
    let started = log_line_where(&mut node, "flood", "Process with pid", |e| {
        e["event_type"] == "process_start" && e["command"] == "echo still here"
    })
    .await?;
    assert_eq!(
        (&started["logger"], &started["level"]),
        (&"process".into(), &"info".into())
    );
    let pid = started["pid"].clone();
    let ended = log_line_where(&mut node, "flood", "Process with pid", |e| {
        e["event_type"] == "process_end" && e["pid"] == pid
    })
    .await?;
    assert_eq!(ended["exit_code"], 0, "{ended}");
    // A second of load shows in the per-second samples.
    let busy = envd
        .run(
            "timeout",
            &["2", "sh", "-c", "while :; do :; done"],
            None,
            COMMAND_TIMEOUT,
        )
        .await?;
    assert_eq!(busy.exit_code, 124, "{busy:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let series = metric_series(&mut node, "flood").await?;
        if series.iter().any(|s| s.cpu_used_pct > 10.0) {
            break;
        }
        assert!(Instant::now() < deadline, "no busy second in {series:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.client
        .delete(pb::SandboxDeleteRequest {
            sandbox_id: "flood".into(),
            // As the control plane's sweep asks.
            reason: pb::StopReason::Timeout.into(),
        })
        .await?;
    // The log outlives the sandbox, and so do its metrics, sampled every
    // second while it ran.
    let killed = log_lines_until(&mut node, "flood", "Sandbox killed", 1).await?;
    assert_eq!(killed[0]["logger"], "node");
    assert_eq!(killed[0]["kill_reason"], "timeout");
    let series = metric_series(&mut node, "flood").await?;
    assert!(series.len() >= 3, "{} samples", series.len());
    assert!(series.windows(2).all(|w| w[0].at_secs < w[1].at_secs));
    assert!(series.iter().all(|s| s.mem_total > 0 && s.cpu_count >= 1));
    assert!(series.iter().any(|s| s.cpu_used_pct > 10.0));
    node.shutdown().await
}

/// Every metric sample the node keeps of sandbox `id`.
async fn metric_series(
    node: &mut Node,
    id: &str,
) -> Result<Vec<pb::GuestMetricSample>, Box<dyn std::error::Error>> {
    Ok(node
        .client
        .metric_series(pb::SandboxMetricSeriesRequest {
            sandbox_id: id.into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .samples)
}

/// The first line of sandbox `id`'s log whose message contains `search`
/// and that `wanted` picks, once there is one (within a minute).
async fn log_line_where(
    node: &mut Node,
    id: &str,
    search: &str,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines = log_lines_until(node, id, search, 1).await?;
        if let Some(line) = lines.into_iter().find(&wanted) {
            return Ok(line);
        }
        if Instant::now() > deadline {
            return Err(format!("no line with '{search}' as wanted after a minute").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The lines of sandbox `id`'s log whose message contains `search`, once
/// there are at least `count` (the guest's console drains at its pace).
async fn log_lines_until(
    node: &mut Node,
    id: &str,
    search: &str,
    count: usize,
) -> Result<Vec<serde_json::Value>, Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines = node
            .client
            .logs(pb::SandboxLogsRequest {
                sandbox_id: id.into(),
                limit: 1000,
                search: Some(search.into()),
                ..Default::default()
            })
            .await?
            .into_inner()
            .lines;
        if lines.len() >= count || Instant::now() > deadline {
            let found = lines
                .iter()
                .map(|line| serde_json::from_str(&line.line))
                .collect::<Result<Vec<serde_json::Value>, _>>()?;
            if found.len() < count {
                return Err(format!("{} lines with '{search}' after a minute", found.len()).into());
            }
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn a_service_on_guest_localhost_is_reachable_from_the_host() -> TestResult {
    let mut node = Node::start(NodeLimits::default(), &["ports"]).await?;
    let created = node
        .client
        .create(create_request("ports"))
        .await?
        .into_inner();
    let envd = envd_at(&created.host_address)?;
    let started = envd
        .run(
            "sh",
            &[
                "-c",
                "cd /tmp && echo served > index.html && nohup python3 -m http.server 8000 --bind 127.0.0.1 >/dev/null 2>&1 &",
            ],
            None,
            COMMAND_TIMEOUT,
        )
        .await?;
    assert_eq!(started.exit_code, 0, "{started:?}");
    let url = format!("http://{}:8000/index.html", created.host_address);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        if let Ok(response) = http.get(&url).send().await
            && response.status().is_success()
        {
            break response.text().await?;
        }
        assert!(Instant::now() < deadline, "{url} never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(body, "served\n");
    node.client
        .delete(pb::SandboxDeleteRequest {
            sandbox_id: "ports".into(),
            ..Default::default()
        })
        .await?;
    node.shutdown().await
}

/// The host's memory (MemTotal) in MiB.
fn host_memory_mib() -> Result<u64, Box<dyn std::error::Error>> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let kib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .ok_or("no MemTotal in /proc/meminfo")?;
    Ok(kib / 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn template_builds_commit_memory_beside_sandboxes() -> TestResult {
    // A budget of 1500 MiB; each 512 MiB VM commits 576 with its overhead.
    let limits = NodeLimits {
        min_free_memory_mib: host_memory_mib()?.saturating_sub(1500),
        per_vm_overhead_mib: 64,
        memory_overcommit: 1.0,
        ..NodeLimits::default()
    };
    let mut node = Node::start(limits, &["beside-builds"]).await?;
    let first = node.manager.reserve_build(512)?;
    let second = node.manager.reserve_build(512)?;
    // Two builds (1152 MiB) leave no room for a sandbox or a third build.
    let refused = node
        .client
        .create(create_request("beside-builds"))
        .await
        .err();
    assert_eq!(
        refused.as_ref().map(|s| s.code()),
        Some(Code::ResourceExhausted)
    );
    assert!(refused.is_some_and(|s| s.message().contains("memory")));
    let third = node.manager.reserve_build(512);
    assert!(third.is_err_and(|e| e.to_string().contains("memory")));
    // A build that ends gives its memory back.
    drop(second);
    node.client.create(create_request("beside-builds")).await?;
    assert!(node.manager.reserve_build(512).is_err());
    node.client
        .delete(pb::SandboxDeleteRequest {
            sandbox_id: "beside-builds".into(),
            ..Default::default()
        })
        .await?;
    drop(node.manager.reserve_build(512)?);
    drop(first);
    node.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn a_node_short_of_memory_or_slots_refuses_clearly() -> TestResult {
    let limits = NodeLimits {
        min_free_memory_mib: u64::MAX,
        ..NodeLimits::default()
    };
    let mut node = Node::start(limits, &["no-memory"]).await?;
    let refused = node.client.create(create_request("no-memory")).await.err();
    assert_eq!(
        refused.as_ref().map(|s| s.code()),
        Some(Code::ResourceExhausted)
    );
    assert!(
        refused
            .map(|s| s.message().contains("memory"))
            .unwrap_or(false)
    );
    assert!(
        node.client
            .list(())
            .await?
            .into_inner()
            .sandboxes
            .is_empty()
    );
    node.shutdown().await?;

    let limits = NodeLimits {
        max_sandboxes: 1,
        ..NodeLimits::default()
    };
    let mut node = Node::start(limits, &["only-1", "only-2"]).await?;
    node.client.create(create_request("only-1")).await?;
    let refused = node.client.create(create_request("only-2")).await.err();
    assert_eq!(refused.map(|s| s.code()), Some(Code::ResourceExhausted));
    node.client
        .delete(pb::SandboxDeleteRequest {
            sandbox_id: "only-1".into(),
            ..Default::default()
        })
        .await?;
    node.client.create(create_request("only-2")).await?;
    node.client
        .delete(pb::SandboxDeleteRequest {
            sandbox_id: "only-2".into(),
            ..Default::default()
        })
        .await?;
    node.shutdown().await
}
