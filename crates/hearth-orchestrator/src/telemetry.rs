//! The node's metrics for operators (Prometheus): how many of each sandbox
//! operation ran, how they ended and how long they took, template builds,
//! and gauges of what the node holds, refreshed when scraped.

use std::time::Instant;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::sandboxes::SandboxManager;

/// A sandbox operation on the node.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Operation {
    create,
    delete,
    pause,
    resume,
    snapshot,
}

/// How an operation or build ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    ok,
    error,
}

impl Outcome {
    pub fn of<T, E>(result: &Result<T, E>) -> Self {
        if result.is_ok() {
            Self::ok
        } else {
            Self::error
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: Operation,
    outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum SandboxState {
    running,
    paused,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: SandboxState,
}

/// The node's metrics.
#[derive(Debug)]
pub struct NodeTelemetry {
    operations: Family<OperationLabels, Counter>,
    operation_seconds: Family<OperationLabels, Histogram>,
    builds: Family<OutcomeLabels, Counter>,
    sandboxes: Family<StateLabels, Gauge>,
    slots_ready: Gauge,
    memory_committed: Gauge,
    memory_host: Gauge,
    vcpus_committed: Gauge,
    histories: Gauge,
}

impl Default for NodeTelemetry {
    fn default() -> Self {
        let telemetry = Self {
            operations: Family::default(),
            // 10 ms to ~80 s.
            operation_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.01, 2.0, 14))
            }),
            builds: Family::default(),
            sandboxes: Family::default(),
            slots_ready: Gauge::default(),
            memory_committed: Gauge::default(),
            memory_host: Gauge::default(),
            vcpus_committed: Gauge::default(),
            histories: Gauge::default(),
        };
        // Every series exists from the start, at zero, so that a rate over
        // the first of them is not missing.
        for outcome in [Outcome::ok, Outcome::error] {
            telemetry
                .builds
                .get_or_create(&OutcomeLabels { outcome })
                .inc_by(0);
            for operation in [
                Operation::create,
                Operation::delete,
                Operation::pause,
                Operation::resume,
                Operation::snapshot,
            ] {
                telemetry
                    .operations
                    .get_or_create(&OperationLabels { operation, outcome })
                    .inc_by(0);
            }
        }
        telemetry
    }
}

impl NodeTelemetry {
    /// Adds the node's metrics to `registry` (under `hearth_node_`).
    pub fn register(&self, registry: &mut Registry) {
        let node = registry.sub_registry_with_prefix("hearth_node");
        node.register(
            "sandbox_operations",
            "Sandbox operations on this node, by operation and outcome",
            self.operations.clone(),
        );
        node.register_with_unit(
            "sandbox_operation_duration",
            "How long sandbox operations took on this node",
            Unit::Seconds,
            self.operation_seconds.clone(),
        );
        node.register(
            "template_builds",
            "Template builds on this node, by outcome",
            self.builds.clone(),
        );
        node.register(
            "sandboxes",
            "Sandboxes on this node, by state",
            self.sandboxes.clone(),
        );
        node.register(
            "slots_ready",
            "Network slots made and waiting for sandboxes",
            self.slots_ready.clone(),
        );
        node.register_with_unit(
            "memory_committed",
            "Guest memory given to running sandboxes",
            Unit::Bytes,
            self.memory_committed.clone(),
        );
        node.register_with_unit(
            "memory_host",
            "The host's memory",
            Unit::Bytes,
            self.memory_host.clone(),
        );
        node.register(
            "vcpus_committed",
            "vCPUs given to running sandboxes",
            self.vcpus_committed.clone(),
        );
        node.register(
            "sandbox_histories",
            "Sandbox logs and metric series kept, of ended sandboxes too",
            self.histories.clone(),
        );
    }

    /// Counts an operation that started at `started` and ended `outcome`.
    pub fn operation(&self, operation: Operation, outcome: Outcome, started: Instant) {
        let labels = OperationLabels { operation, outcome };
        self.operations.get_or_create(&labels).inc();
        self.operation_seconds
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
    }

    pub fn build(&self, outcome: Outcome) {
        self.builds.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Sets the gauges from what `manager` holds now (before a scrape).
    pub fn refresh(&self, manager: &SandboxManager) {
        let listed = manager.list();
        let paused = listed.iter().filter(|info| info.paused).count();
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.sandboxes
            .get_or_create(&StateLabels {
                state: SandboxState::running,
            })
            .set(gauge((listed.len() - paused) as u64));
        self.sandboxes
            .get_or_create(&StateLabels {
                state: SandboxState::paused,
            })
            .set(gauge(paused as u64));
        let runtime = manager.runtime();
        self.slots_ready.set(gauge(runtime.slots.ready() as u64));
        let (vcpus, memory_mib) = manager.allocated();
        self.vcpus_committed.set(gauge(vcpus));
        self.memory_committed.set(gauge(memory_mib << 20));
        self.memory_host.set(gauge(crate::metrics::host_memory().0));
        self.histories.set(gauge(runtime.history.counts().0 as u64));
    }
}
