//! The series of pod metadata: the API watch of this node's pods, and the flows that could not be
//! named after their pod.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::Metrics;

/// Why a pod's flow was reported without the pod's metadata (namespace, name, workload, labels),
/// the `reason` label of `flows_unnamed_total`. The record still carries the pod UID and container
/// id from the cgroup path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unnamed {
    /// The pods file does not list the pod, no pod source was configured (`--pods-from none`),
    /// or the API watch does not have it and nothing waits (`--pod-wait 0`).
    NotListed,
    /// The API watch did not show the pod within `--pod-wait`.
    Timeout,
    /// Too many flows were already waiting for their pods; the oldest went out unnamed.
    HoldFull,
    /// The agent stopped while the flow was still waiting for its pod.
    Shutdown,
}

impl Unnamed {
    pub const ALL: [Unnamed; 4] = [
        Unnamed::NotListed,
        Unnamed::Timeout,
        Unnamed::HoldFull,
        Unnamed::Shutdown,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Unnamed::NotListed => "not_listed",
            Unnamed::Timeout => "timeout",
            Unnamed::HoldFull => "hold_full",
            Unnamed::Shutdown => "shutdown",
        }
    }
}

pub(super) struct PodMetrics {
    flows_unnamed: IntCounterVec,
    flows_held: IntGauge,
    pods_known: IntGauge,
    watch_errors: IntCounter,
}

impl PodMetrics {
    pub(super) fn register(registry: &Registry) -> PodMetrics {
        let flows_unnamed = IntCounterVec::new(
            Opts::new(
                "egress_agent_flows_unnamed_total",
                "FlowRecords of a pod reported without the pod's metadata (only its UID and \
                 container id), by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric name");
        let flows_held = IntGauge::new(
            "egress_agent_flows_held",
            "FlowRecords of pods the API watch has not shown yet, held until it does (bounded \
             in time by --pod-wait and in number).",
        )
        .expect("valid metric name");
        let pods_known = IntGauge::new(
            "egress_agent_pods_known",
            "Pods whose metadata the agent holds (this node's, from the pods file or the API; \
             deleted pods are kept a while for their last flows).",
        )
        .expect("valid metric name");
        let watch_errors = IntCounter::new(
            "egress_agent_pod_watch_errors_total",
            "Errors of the API watch of this node's pods (each retried with backoff; a 410 Gone \
             relists).",
        )
        .expect("valid metric name");
        for c in [&flows_held, &pods_known] {
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
        }
        registry
            .register(Box::new(flows_unnamed.clone()))
            .expect("registered once");
        registry
            .register(Box::new(watch_errors.clone()))
            .expect("registered once");
        for reason in Unnamed::ALL {
            flows_unnamed.with_label_values(&[reason.label()]);
        }
        PodMetrics {
            flows_unnamed,
            flows_held,
            pods_known,
            watch_errors,
        }
    }
}

impl Metrics {
    pub fn flows_unnamed(&self, reason: Unnamed, n: u64) {
        self.pods
            .flows_unnamed
            .with_label_values(&[reason.label()])
            .inc_by(n);
    }

    pub fn flows_held(&self, n: usize) {
        self.pods.flows_held.set(super::saturating_i64(n as u64));
    }

    pub fn pods_known(&self, n: usize) {
        self.pods.pods_known.set(super::saturating_i64(n as u64));
    }

    pub fn pod_watch_error(&self) {
        self.pods.watch_errors.inc();
    }
}
