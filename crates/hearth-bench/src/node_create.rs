//! Create latency through the node's gRPC API (in-process node, ready slot
//! pool), next to a raw clone of the same template on a ready slot, in the
//! same run; then slot creation time and pool refill rate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_net::{NetSlot, SlotPool};
use hearth_orchestrator::grpc::NodeService;
use hearth_orchestrator::{NodeLimits, NodeRuntime, SandboxManager};
use hearth_proto::orchestrator as pb;
use hearth_vmm::envd_client::ENVD_PORT;
use hearth_vmm::{CloneRequest, InitParams, NetAttachment, Template};
use pb::sandbox_service_client::SandboxServiceClient;

use crate::stats::{p50_p95, percentile};

const POOL: usize = 8;

pub async fn run(runtime: NodeRuntime, template: Template, creates: usize) -> anyhow::Result<()> {
    slot_costs(&runtime).await?;
    let mut runtime = runtime;
    runtime.keep_slots_ready(POOL);
    let manager = Arc::new(SandboxManager::new(
        Arc::new(runtime),
        NodeLimits {
            max_starting: POOL,
            start_wait: Duration::from_secs(120),
            ..NodeLimits::default()
        },
    ));
    manager.register_template(template.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(NodeService::new(manager.clone(), "bench".into()).serve(
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let result = measure(&manager, &template, address, creates).await;
    manager.delete_all().await;
    let _ = stop.send(());
    let _ = server.await;
    manager.runtime().slots.drain().await?;
    result
}

async fn wait_for_pool(pool: &SlotPool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool.ready() < POOL && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn request(id: &str) -> pb::SandboxCreateRequest {
    pb::SandboxCreateRequest {
        sandbox: Some(pb::SandboxConfig {
            template_id: template_name(),
            sandbox_id: id.into(),
            default_user: "user".into(),
            ..Default::default()
        }),
        start_time: None,
        end_time: None,
    }
}

fn template_name() -> String {
    hearth_orchestrator::BASE_TEMPLATE.into()
}

async fn measure(
    manager: &Arc<SandboxManager>,
    template: &Template,
    address: SocketAddr,
    creates: usize,
) -> anyhow::Result<()> {
    let mut client = SandboxServiceClient::connect(format!("http://{address}")).await?;
    let pool = manager.runtime().slots.clone();
    let mut raw = Vec::new();
    let mut sequential = Vec::new();
    for i in 0..creates {
        // Interleaved, so both see the same machine.
        wait_for_pool(&pool).await;
        raw.push(raw_clone(manager.runtime(), template, &format!("bench-raw-{i}")).await?);
        wait_for_pool(&pool).await;
        let id = format!("bench-node-{i}");
        let started = Instant::now();
        client.create(request(&id)).await?;
        sequential.push(started.elapsed());
        client
            .delete(pb::SandboxDeleteRequest {
                sandbox_id: id,
                ..Default::default()
            })
            .await?;
    }
    println!(
        "create through the node's gRPC API, {creates} one at a time, ready slot pool, p50 / p95 in ms:"
    );
    println!("  {:<22} {}", "gRPC Create", p50_p95(&sequential));
    println!("  {:<22} {}", "raw clone (same run)", p50_p95(&raw));
    let ratio = percentile(&sequential, 0.5).as_secs_f64() / percentile(&raw, 0.5).as_secs_f64();
    println!("  gRPC create p50 / raw clone p50: {ratio:.2}");

    wait_for_pool(&pool).await;
    let concurrent: Vec<_> = (0..POOL)
        .map(|i| {
            let mut client = client.clone();
            async move {
                let started = Instant::now();
                client
                    .create(request(&format!("bench-many-{i}")))
                    .await
                    .map(|_| started.elapsed())
            }
        })
        .collect();
    let times: Vec<Duration> = futures::future::join_all(concurrent)
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    for i in 0..POOL {
        client
            .delete(pb::SandboxDeleteRequest {
                sandbox_id: format!("bench-many-{i}"),
                ..Default::default()
            })
            .await?;
    }
    println!(
        "  {POOL} concurrent creates: p50 {:.1} ms, p99 {:.1} ms, p99/p50 {:.2}",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() / percentile(&times, 0.5).as_secs_f64()
    );
    Ok(())
}

/// A clone on a ready slot without the node's bookkeeping or gRPC.
async fn raw_clone(
    runtime: &NodeRuntime,
    template: &Template,
    id: &str,
) -> anyhow::Result<Duration> {
    let slot = runtime.slots.take().await?;
    let request = CloneRequest {
        sandbox_id: id.into(),
        run_dir: runtime.sandbox_dir(id),
        net: NetAttachment {
            netns: Some(slot.netns_path()),
            tap: hearth_net::TAP_NAME.into(),
            mac: hearth_net::GUEST_MAC.into(),
        },
        envd_address: SocketAddr::new(slot.sandbox_address.into(), ENVD_PORT),
        init: InitParams {
            hostname: Some(id.into()),
            default_user: Some("user".into()),
            ..InitParams::default()
        },
        ready_deadline: Duration::from_secs(30),
        log: None,
    };
    let started = Instant::now();
    let result = hearth_vmm::clone_sandbox(&runtime.vmm, template, request).await;
    let elapsed = started.elapsed();
    match result {
        Ok(sandbox) => {
            hearth_vmm::destroy(&runtime.vmm, sandbox).await?;
            runtime.slots.give_back(slot).await?;
            Ok(elapsed)
        }
        Err(error) => {
            let _ = slot.destroy().await;
            Err(error.into())
        }
    }
}

/// Creating slots one by one, and filling an empty pool.
async fn slot_costs(runtime: &NodeRuntime) -> anyhow::Result<()> {
    let mut times = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let slot = NetSlot::create_free(&runtime.naming, 0).await?;
        times.push(started.elapsed());
        slot.destroy().await?;
    }
    println!(
        "network slot creation (netlink), 10 runs, p50 / p95 in ms: {}",
        p50_p95(&times)
    );
    let pool = SlotPool::new(runtime.naming.clone(), POOL);
    let started = Instant::now();
    let refill = tokio::spawn(pool.clone().refill());
    wait_for_pool(&pool).await;
    let elapsed = started.elapsed();
    refill.abort();
    pool.drain().await?;
    println!(
        "slot pool refill from empty to {POOL}: {:.0} ms, {:.1} slots/s",
        elapsed.as_secs_f64() * 1e3,
        POOL as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
