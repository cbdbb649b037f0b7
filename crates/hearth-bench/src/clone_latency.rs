//! Clone latency through hearth, phase by phase.

use hearth_net::EgressPolicy;
use std::time::Duration;

use hearth_orchestrator::NodeRuntime;
use hearth_vmm::{InitParams, Template};

use crate::stats::p50_p95;

pub async fn run(
    runtime: &NodeRuntime,
    template: &Template,
    clones: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut phases: [Vec<Duration>; 6] = Default::default();
    for i in 0..clones {
        let id = format!("bench-{i}");
        let init = InitParams {
            hostname: Some(id.clone()),
            default_user: Some("user".into()),
            ..InitParams::default()
        };
        let running = runtime
            .clone_sandbox(template, &id, init, &EgressPolicy::default())
            .await?;
        let t = running.sandbox.timings;
        for (samples, value) in
            phases
                .iter_mut()
                .zip([t.disk, t.vmm_start, t.restore, t.init, t.ready, t.total])
        {
            samples.push(value);
        }
        runtime.destroy_sandbox(running).await?;
    }
    println!("clone latency through hearth over {clones} clones, p50 / p95 in ms:");
    let names = [
        "disk overlay",
        "QEMU start",
        "restore",
        "/init",
        "envd ready",
        "total",
    ];
    for (name, samples) in names.iter().zip(&phases) {
        println!("  {name:<14} {}", p50_p95(samples));
    }
    let [.., total] = phases;
    Ok(total)
}
