//! The service's Prometheus metrics, owned by [`Metrics`] (its own registry, passed to whoever
//! counts; no globals). Label values come from enums or from bounded sets (namespaces and
//! workloads), never from IPs, ports or pod names.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Why a `POST /v1/flows` was refused: the `reason` label of
/// `egress_recommender_ingest_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` header (401).
    MissingToken,
    /// A token that is not one of the accepted ones (401).
    InvalidToken,
    /// A valid token of an identity that may not use the API (403): a ServiceAccount other than
    /// the agents' (TokenReview).
    Forbidden,
    /// The accepted tokens could not be read (503).
    AuthUnavailable,
    /// An `X-Batch-Id` that is not a valid id (400).
    BadBatchId,
    /// A `Content-Encoding` other than gzip or identity (415).
    UnsupportedEncoding,
    /// A body over `--max-body-bytes` (413).
    BodyTooLarge,
    /// A body that inflates past `--max-decoded-bytes`: a gzip bomb (413).
    DecodedTooLarge,
    /// A body not sent within `--body-timeout` (408).
    BodyTimeout,
    /// A body that is not FlowRecords as JSON lines, or not valid gzip (400).
    Malformed,
    /// The cluster model is not loaded yet (503).
    NotReady,
    /// The store could not make the batch durable (503).
    StoreFailed,
    /// This replica does not hold the HA store's Lease, or has not read the store since it
    /// took it (503 with Retry-After: the agent retries, and reaches the holder).
    NotLeader,
}

impl Refusal {
    pub const ALL: [Refusal; 13] = [
        Refusal::MissingToken,
        Refusal::InvalidToken,
        Refusal::Forbidden,
        Refusal::AuthUnavailable,
        Refusal::BadBatchId,
        Refusal::UnsupportedEncoding,
        Refusal::BodyTooLarge,
        Refusal::DecodedTooLarge,
        Refusal::BodyTimeout,
        Refusal::Malformed,
        Refusal::NotReady,
        Refusal::StoreFailed,
        Refusal::NotLeader,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MissingToken => "missing_token",
            Refusal::InvalidToken => "invalid_token",
            Refusal::Forbidden => "forbidden",
            Refusal::AuthUnavailable => "auth_unavailable",
            Refusal::BadBatchId => "bad_batch_id",
            Refusal::UnsupportedEncoding => "unsupported_encoding",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::DecodedTooLarge => "decoded_too_large",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::Malformed => "malformed",
            Refusal::NotReady => "not_ready",
            Refusal::StoreFailed => "store_failed",
            Refusal::NotLeader => "not_leader",
        }
    }
}

/// Why the TokenReview authenticator refused a token: the `reason` label of
/// `egress_recommender_auth_refused_total` (ingest and the read endpoints alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthRefusal {
    /// No `Authorization: Bearer` header.
    MissingToken,
    /// The API server did not authenticate the token (unknown, expired, for another audience).
    Unauthenticated,
    /// Authenticated, but the answer names none of the audiences asked for.
    Audience,
    /// Authenticated, as an identity other than the accepted ServiceAccounts.
    ServiceAccount,
    /// The review could not be made (API unreachable or refusing): answered 503.
    ReviewFailed,
}

impl AuthRefusal {
    pub const ALL: [AuthRefusal; 5] = [
        AuthRefusal::MissingToken,
        AuthRefusal::Unauthenticated,
        AuthRefusal::Audience,
        AuthRefusal::ServiceAccount,
        AuthRefusal::ReviewFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthRefusal::MissingToken => "missing_token",
            AuthRefusal::Unauthenticated => "unauthenticated",
            AuthRefusal::Audience => "audience",
            AuthRefusal::ServiceAccount => "service_account",
            AuthRefusal::ReviewFailed => "review_failed",
        }
    }
}

/// Why a record gave no edge: the `reason` label of `egress_recommender_records_skipped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Skip {
    /// A node process: NetworkPolicy does not apply to it.
    HostProcess,
    /// A hostNetwork pod: NetworkPolicy does not apply to it either.
    HostNetwork,
    /// A pod's record that the cluster model could not resolve (unknown source, a Service port
    /// with no backend, ...); its note is kept (status, and the YAML's leading notes).
    Unresolved,
}

impl Skip {
    pub const ALL: [Skip; 3] = [Skip::HostProcess, Skip::HostNetwork, Skip::Unresolved];

    pub fn as_str(self) -> &'static str {
        match self {
            Skip::HostProcess => "host_process",
            Skip::HostNetwork => "host_network",
            Skip::Unresolved => "unresolved",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    /// `result`: `accepted` (new, made durable) or `duplicate` (an id already acknowledged).
    pub batches: IntCounterVec,
    pub refused: IntCounterVec,
    /// Tokens the TokenReview authenticator refused, by [`AuthRefusal`].
    pub auth_refused: IntCounterVec,
    /// Records of accepted batches (duplicates are not counted again).
    pub records: IntCounter,
    pub skipped: IntCounterVec,
    /// Distinct edges learned.
    pub edges: IntGauge,
    /// HA store: 1 while this replica holds the Lease and takes batches, else 0.
    pub leader: IntGauge,
    /// Workloads per learning state (set when scraped).
    pub workloads: IntGaugeVec,
    pub commit_seconds: Histogram,
    /// Batches made durable by one commit (group commit).
    pub commit_batches: Histogram,
    pub store_errors: IntCounter,
    /// Monitor mode: flows (records) the baseline denies, by source namespace and workload.
    pub unexpected: IntCounterVec,
    /// Monitor mode: the connections those flows stand for (their counts).
    pub unexpected_connections: IntCounterVec,
    /// Unresolved flows past `--max-uncovered-flows`: counted, not kept.
    pub uncovered_dropped: IntCounter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("registers");
            c
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("registers");
            c
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric");
            registry.register(Box::new(h.clone())).expect("registers");
            h
        };
        let edges = IntGauge::new(
            "egress_recommender_edges",
            "Distinct edges (source workload, peer, port, protocol) learned.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(edges.clone()))
            .expect("registers");
        let leader = IntGauge::new(
            "egress_recommender_store_leader",
            "1 while this replica holds the HA store's Lease and takes batches (--store kubernetes).",
        )
        .expect("valid metric");
        registry
            .register(Box::new(leader.clone()))
            .expect("registers");
        let workloads = IntGaugeVec::new(
            Opts::new(
                "egress_recommender_workloads",
                "Workloads by learning state (learning, stabilizing, stable).",
            ),
            &["state"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(workloads.clone()))
            .expect("registers");
        let metrics = Metrics {
            batches: counter_vec(
                "egress_recommender_ingest_batches_total",
                "Batches of POST /v1/flows acknowledged: accepted (made durable) or duplicate (id already acknowledged).",
                &["result"],
            ),
            refused: counter_vec(
                "egress_recommender_ingest_refused_total",
                "Batches of POST /v1/flows refused, by reason.",
                &["reason"],
            ),
            auth_refused: counter_vec(
                "egress_recommender_auth_refused_total",
                "Requests whose bearer token the TokenReview authenticator refused, by reason.",
                &["reason"],
            ),
            records: counter(
                "egress_recommender_ingest_records_total",
                "FlowRecords of accepted batches.",
            ),
            skipped: counter_vec(
                "egress_recommender_records_skipped_total",
                "FlowRecords that gave no edge, by reason.",
                &["reason"],
            ),
            edges,
            leader,
            workloads,
            commit_seconds: histogram(
                "egress_recommender_store_commit_seconds",
                "Time to make one group of batches durable.",
                prometheus::exponential_buckets(0.0005, 2.0, 14).expect("buckets"),
            ),
            commit_batches: histogram(
                "egress_recommender_store_commit_batches",
                "Batches made durable by one commit.",
                prometheus::exponential_buckets(1.0, 2.0, 12).expect("buckets"),
            ),
            store_errors: counter(
                "egress_recommender_store_errors_total",
                "Commits that failed (their batches were refused with 503 and are retried by agents).",
            ),
            unexpected: counter_vec(
                "egress_recommender_unexpected_egress_total",
                "Monitor mode: flows that the baseline policies deny, by source namespace and workload.",
                &["namespace", "workload"],
            ),
            unexpected_connections: counter_vec(
                "egress_recommender_unexpected_egress_connections_total",
                "Monitor mode: connections of the flows that the baseline policies deny.",
                &["namespace", "workload"],
            ),
            uncovered_dropped: counter(
                "egress_recommender_uncovered_dropped_total",
                "Unresolved flows not kept because --max-uncovered-flows was reached.",
            ),
            registry,
        };
        // Every reason is present from the start, so that rate() sees the first one.
        for reason in Refusal::ALL {
            metrics.refused.with_label_values(&[reason.as_str()]);
        }
        for reason in AuthRefusal::ALL {
            metrics.auth_refused.with_label_values(&[reason.as_str()]);
        }
        for reason in Skip::ALL {
            metrics.skipped.with_label_values(&[reason.as_str()]);
        }
        for result in ["accepted", "duplicate"] {
            metrics.batches.with_label_values(&[result]);
        }
        metrics
    }

    pub fn refuse(&self, reason: Refusal) {
        self.refused.with_label_values(&[reason.as_str()]).inc();
    }

    pub fn refuse_auth(&self, reason: AuthRefusal) {
        self.auth_refused
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding never fails");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
