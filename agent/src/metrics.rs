//! The agent's Prometheus metrics, owned by one struct that is passed to whoever updates them.

use agent_common::{Counter, COUNTER_SLOTS};
use prometheus::{Encoder as _, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// Kernel loss counters exported as `events_lost_total{reason}`; a lost event must be visible.
const LOSS_REASONS: [(Counter, &str); 6] = [
    (Counter::RingFullNewFlow, "ring_full_new_flow"),
    (Counter::RingFullDns, "ring_full_dns"),
    (Counter::FlowUpdateFailed, "flow_update_failed"),
    (Counter::OutcomeUnmatched, "outcome_unmatched"),
    (Counter::SocketStorageFailed, "socket_storage_failed"),
    (Counter::DnsRateLimited, "dns_rate_limited"),
];

/// Why one delivery attempt of a batch to the recommender failed, the `reason` label of
/// `delivery_failures_total`. What the agent does for each is in `ship::client::Outcome`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryFailure {
    /// 401: the token may have rotated; kept and retried with the token read again.
    Unauthorized,
    /// 403: kept and retried (the service may be restarting with a new config).
    Forbidden,
    /// 413: the batch is split and its halves sent.
    TooLarge,
    /// Another 4xx: the service calls the batch malformed; it is set aside.
    Rejected,
    /// 429.
    Throttled,
    /// 503.
    Unavailable,
    /// Another 5xx.
    ServerError,
    /// 1xx or 3xx: a misconfigured URL; kept and retried.
    UnexpectedStatus,
    /// The connection could not be made (refused, unreachable, DNS, TLS handshake).
    Connect,
    /// No answer within the request timeout.
    Timeout,
    /// The connection failed during the exchange.
    Transport,
    /// The token file could not be read, or holds no usable token.
    Token,
}

impl DeliveryFailure {
    pub const ALL: [DeliveryFailure; 12] = [
        DeliveryFailure::Unauthorized,
        DeliveryFailure::Forbidden,
        DeliveryFailure::TooLarge,
        DeliveryFailure::Rejected,
        DeliveryFailure::Throttled,
        DeliveryFailure::Unavailable,
        DeliveryFailure::ServerError,
        DeliveryFailure::UnexpectedStatus,
        DeliveryFailure::Connect,
        DeliveryFailure::Timeout,
        DeliveryFailure::Transport,
        DeliveryFailure::Token,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DeliveryFailure::Unauthorized => "unauthorized",
            DeliveryFailure::Forbidden => "forbidden",
            DeliveryFailure::TooLarge => "too_large",
            DeliveryFailure::Rejected => "rejected",
            DeliveryFailure::Throttled => "throttled",
            DeliveryFailure::Unavailable => "unavailable",
            DeliveryFailure::ServerError => "server_error",
            DeliveryFailure::UnexpectedStatus => "unexpected_status",
            DeliveryFailure::Connect => "connect",
            DeliveryFailure::Timeout => "timeout",
            DeliveryFailure::Transport => "transport",
            DeliveryFailure::Token => "token",
        }
    }
}

/// Why records were dropped, the `reason` label of `records_dropped_total`. Each is a bound that
/// was reached; none happens silently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The spool was full and so was the in-memory backlog that merges what waits for room.
    SpoolOverflow,
    /// An output task did not keep up with the main loop and its backlog was full too.
    HandoffOverflow,
    /// Still undelivered when the agent exited, with no spool directory to keep them.
    UnsentAtExit,
}

impl DropReason {
    pub const ALL: [DropReason; 3] = [
        DropReason::SpoolOverflow,
        DropReason::HandoffOverflow,
        DropReason::UnsentAtExit,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropReason::SpoolOverflow => "spool_overflow",
            DropReason::HandoffOverflow => "handoff_overflow",
            DropReason::UnsentAtExit => "unsent_at_exit",
        }
    }
}

/// What became of one socket found at start, the `result` label of `existing_sockets_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExistingSocket {
    /// An egress connection reported as a `preexisting` flow.
    Reported,
    /// An egress connection whose flow key the kernel programs had already counted since they
    /// were attached: not reported again.
    AlreadySeen,
    /// Accepted from a local listener (or a UDP server's per-peer socket): ingress, not a flow.
    Inbound,
    /// No cgroup id came with the socket (a kernel without `INET_DIAG_CGROUP_ID`).
    Unattributed,
}

impl ExistingSocket {
    pub const ALL: [ExistingSocket; 4] = [
        ExistingSocket::Reported,
        ExistingSocket::AlreadySeen,
        ExistingSocket::Inbound,
        ExistingSocket::Unattributed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ExistingSocket::Reported => "reported",
            ExistingSocket::AlreadySeen => "already_seen",
            ExistingSocket::Inbound => "inbound",
            ExistingSocket::Unattributed => "unattributed",
        }
    }
}

/// Why a network namespace could not be scanned for existing sockets, the `reason` label of
/// `netns_scan_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetnsScanFailure {
    /// The namespace file could not be opened.
    Open,
    /// `setns` failed (it needs CAP_SYS_ADMIN).
    Enter,
    /// The sock_diag netlink dump failed.
    SockDiag,
}

impl NetnsScanFailure {
    pub const ALL: [NetnsScanFailure; 3] = [
        NetnsScanFailure::Open,
        NetnsScanFailure::Enter,
        NetnsScanFailure::SockDiag,
    ];

    pub fn label(self) -> &'static str {
        match self {
            NetnsScanFailure::Open => "open",
            NetnsScanFailure::Enter => "enter",
            NetnsScanFailure::SockDiag => "sock_diag",
        }
    }
}

/// Result of handling one DNS answer, the `result` label of `dns_answers_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsResult {
    Parsed,
    Rejected,
    /// Incomplete (cut by the capture, or a piece of its TCP stream never arrived): named from
    /// the part received.
    Cut,
}

impl DnsResult {
    const ALL: [DnsResult; 3] = [DnsResult::Parsed, DnsResult::Rejected, DnsResult::Cut];

    fn label(self) -> &'static str {
        match self {
            DnsResult::Parsed => "parsed",
            DnsResult::Rejected => "rejected",
            DnsResult::Cut => "cut",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    flows_observed: IntCounter,
    records_written: IntCounter,
    events_lost: IntCounterVec,
    flow_map_evictions: IntCounter,
    flows_evicted_unreported: IntCounter,
    udp_replies_skipped: IntCounter,
    flows_tracked: IntGauge,
    dns_answers: IntCounterVec,
    pods_file_reload_errors: IntCounter,
    cgroups_unresolved: IntCounter,
    ship: ShipMetrics,
    existing_sockets: IntCounterVec,
    netns_scanned: IntCounter,
    netns_scan_failures: IntCounterVec,
    dns_names_cached: IntGauge,
    dns_tcp_bytes_held: IntGauge,
    pods: pods::PodMetrics,
}

/// The series of delivery to the recommender (`ship`).
struct ShipMetrics {
    batches_sent: IntCounter,
    batches_acknowledged: IntCounter,
    batches_retried: IntCounter,
    batches_split: IntCounter,
    batches_set_aside: IntCounter,
    records_acknowledged: IntCounter,
    delivery_failures: IntCounterVec,
    records_dropped: IntCounterVec,
    record_bytes_dropped: IntCounterVec,
    spool_bytes: IntGauge,
    spool_batches: IntGauge,
    backlog_records: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric name");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let counter_vec = |name: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric name");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric name");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let m = Self {
            flows_observed: counter(
                "egress_agent_flows_observed_total",
                "Distinct flow keys (cgroup, destination, port, protocol) observed.",
            ),
            records_written: counter(
                "egress_agent_records_written_total",
                "FlowRecords written to the flows output.",
            ),
            events_lost: counter_vec(
                "egress_agent_events_lost_total",
                "Kernel events lost, by reason (from the kernel programs' loss counters).",
                "reason",
            ),
            flow_map_evictions: counter(
                "egress_agent_flow_map_evictions_total",
                "Flow keys evicted from the kernel's LRU flow table.",
            ),
            flows_evicted_unreported: counter(
                "egress_agent_flows_evicted_unreported_total",
                "Flow keys evicted from the kernel's flow table before the agent ever read them: \
                 their traffic was never reported.",
            ),
            udp_replies_skipped: counter(
                "egress_agent_udp_replies_skipped_total",
                "Datagrams unconnected UDP sockets sent back to peers that sent to them first \
                 (replies, which stateful policy allows): not recorded as flows.",
            ),
            flows_tracked: gauge(
                "egress_agent_flows_tracked",
                "Entries in the kernel's flow table at the last poll.",
            ),
            dns_answers: counter_vec(
                "egress_agent_dns_answers_total",
                "DNS answers seen, by result (parsed or rejected).",
                "result",
            ),
            pods_file_reload_errors: counter(
                "egress_agent_pods_file_reload_errors_total",
                "Reloads of the pods file that failed (the previous version stays in use).",
            ),
            cgroups_unresolved: counter(
                "egress_agent_cgroups_unresolved_total",
                "cgroups gone before their path could be read; their flows are reported as the node's.",
            ),
            ship: ShipMetrics {
                batches_sent: counter(
                    "egress_agent_batches_sent_total",
                    "Delivery attempts of a batch to the recommender (POST /v1/flows), resends included.",
                ),
                batches_acknowledged: counter(
                    "egress_agent_batches_acknowledged_total",
                    "Batches the recommender acknowledged (2xx: durable there).",
                ),
                batches_retried: counter(
                    "egress_agent_batches_retried_total",
                    "Failed delivery attempts after which the batch was kept to be sent again.",
                ),
                batches_split: counter(
                    "egress_agent_batches_split_total",
                    "Batches the recommender found too large (413), split in two and resent.",
                ),
                batches_set_aside: counter(
                    "egress_agent_batches_set_aside_total",
                    "Batches the recommender refused as malformed (4xx): kept aside in the spool's \
                     rejected/ directory (bounded), never retried.",
                ),
                records_acknowledged: counter(
                    "egress_agent_records_acknowledged_total",
                    "FlowRecords in batches the recommender acknowledged.",
                ),
                delivery_failures: counter_vec(
                    "egress_agent_delivery_failures_total",
                    "Failed delivery attempts, by reason.",
                    "reason",
                ),
                records_dropped: counter_vec(
                    "egress_agent_records_dropped_total",
                    "FlowRecords dropped because a bound was reached, by reason.",
                    "reason",
                ),
                record_bytes_dropped: counter_vec(
                    "egress_agent_records_dropped_bytes_total",
                    "JSON bytes of the FlowRecords counted in egress_agent_records_dropped_total.",
                    "reason",
                ),
                spool_bytes: gauge(
                    "egress_agent_spool_bytes",
                    "Bytes of the batches waiting in the spool for delivery.",
                ),
                spool_batches: gauge(
                    "egress_agent_spool_batches",
                    "Batches waiting in the spool for delivery.",
                ),
                backlog_records: gauge(
                    "egress_agent_spool_backlog_records",
                    "FlowRecords merged in memory while the spool is full, waiting for room.",
                ),
            },
            existing_sockets: counter_vec(
                "egress_agent_existing_sockets_total",
                "Sockets found at start (established TCP, connected UDP), by what became of them.",
                "result",
            ),
            netns_scanned: counter(
                "egress_agent_netns_scanned_total",
                "Network namespaces scanned for sockets that existed before the agent started.",
            ),
            netns_scan_failures: counter_vec(
                "egress_agent_netns_scan_failures_total",
                "Network namespaces that could not be scanned for existing sockets, by reason.",
                "reason",
            ),
            dns_names_cached: gauge(
                "egress_agent_dns_names_cached",
                "(source, address, name) triples remembered from DNS answers (bounded).",
            ),
            dns_tcp_bytes_held: gauge(
                "egress_agent_dns_tcp_bytes_held",
                "Bytes of DNS-over-TCP streams held until their messages are complete (bounded).",
            ),
            pods: pods::PodMetrics::register(&registry),
            registry,
        };
        // Export every series from the start, so that absence means zero rather than unknown.
        for (_, reason) in LOSS_REASONS {
            m.events_lost.with_label_values(&[reason]);
        }
        for result in DnsResult::ALL {
            m.dns_answers.with_label_values(&[result.label()]);
        }
        for reason in DeliveryFailure::ALL {
            m.ship
                .delivery_failures
                .with_label_values(&[reason.label()]);
        }
        for reason in DropReason::ALL {
            m.ship.records_dropped.with_label_values(&[reason.label()]);
            m.ship
                .record_bytes_dropped
                .with_label_values(&[reason.label()]);
        }
        for result in ExistingSocket::ALL {
            m.existing_sockets.with_label_values(&[result.label()]);
        }
        for reason in NetnsScanFailure::ALL {
            m.netns_scan_failures.with_label_values(&[reason.label()]);
        }
        m
    }

    pub fn batch_sent(&self) {
        self.ship.batches_sent.inc();
    }

    pub fn batch_acknowledged(&self, records: u64) {
        self.ship.batches_acknowledged.inc();
        self.ship.records_acknowledged.inc_by(records);
    }

    /// A failed attempt; `retried` when the batch is kept to be sent again.
    pub fn delivery_failed(&self, reason: DeliveryFailure, retried: bool) {
        self.ship
            .delivery_failures
            .with_label_values(&[reason.label()])
            .inc();
        if retried {
            self.ship.batches_retried.inc();
        }
    }

    pub fn batch_split(&self) {
        self.ship.batches_split.inc();
    }

    pub fn batch_set_aside(&self) {
        self.ship.batches_set_aside.inc();
    }

    pub fn records_dropped(&self, reason: DropReason, records: u64, bytes: u64) {
        self.ship
            .records_dropped
            .with_label_values(&[reason.label()])
            .inc_by(records);
        self.ship
            .record_bytes_dropped
            .with_label_values(&[reason.label()])
            .inc_by(bytes);
    }

    pub fn spool_size(&self, bytes: u64, batches: usize) {
        self.ship.spool_bytes.set(saturating_i64(bytes));
        self.ship.spool_batches.set(saturating_i64(batches as u64));
    }

    pub fn backlog_records(&self, records: usize) {
        self.ship
            .backlog_records
            .set(saturating_i64(records as u64));
    }

    pub fn existing_sockets(&self, result: ExistingSocket, n: u64) {
        self.existing_sockets
            .with_label_values(&[result.label()])
            .inc_by(n);
    }

    pub fn netns_scanned(&self, n: u64) {
        self.netns_scanned.inc_by(n);
    }

    pub fn netns_scan_failure(&self, reason: NetnsScanFailure) {
        self.netns_scan_failures
            .with_label_values(&[reason.label()])
            .inc();
    }

    pub fn flows_observed(&self, n: u64) {
        self.flows_observed.inc_by(n);
    }

    pub fn records_written(&self, n: u64) {
        self.records_written.inc_by(n);
    }

    pub fn dns_answer(&self, result: DnsResult) {
        self.dns_answers.with_label_values(&[result.label()]).inc();
    }

    /// What the DNS side holds: cached names and bytes of TCP streams being reassembled.
    pub fn dns_memory(&self, names_cached: usize, tcp_bytes_held: usize) {
        self.dns_names_cached
            .set(i64::try_from(names_cached).unwrap_or(i64::MAX));
        self.dns_tcp_bytes_held
            .set(i64::try_from(tcp_bytes_held).unwrap_or(i64::MAX));
    }

    pub fn pods_file_reload_error(&self) {
        self.pods_file_reload_errors.inc();
    }

    /// Brings the unresolved-cgroup counter up to the identity cache's running total.
    pub fn cgroups_unresolved(&self, total: u64) {
        advance(&self.cgroups_unresolved, total);
    }

    /// Mirrors the kernel's cumulative counters. `live_entries` is the flow table's current size and
    /// `forgotten` the number of keys the agent saw leave the table. The agent never deletes keys,
    /// so every key inserted and no longer present was evicted; those the agent never saw were
    /// evicted before their first report.
    pub fn kernel_counters(
        &self,
        counters: &[u64; COUNTER_SLOTS as usize],
        live_entries: u64,
        forgotten: u64,
    ) {
        for (index, reason) in LOSS_REASONS {
            advance(
                &self.events_lost.with_label_values(&[reason]),
                counters[index as usize],
            );
        }
        advance(
            &self.udp_replies_skipped,
            counters[Counter::UdpRepliesSkipped as usize],
        );
        let evicted = counters[Counter::FlowInserted as usize].saturating_sub(live_entries);
        advance(&self.flow_map_evictions, evicted);
        advance(
            &self.flows_evicted_unreported,
            evicted.saturating_sub(forgotten),
        );
        self.flows_tracked.set(saturating_i64(live_entries));
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for valid families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Counters only go up; the kernel reports absolute values, so add the difference.
fn advance(counter: &IntCounter, absolute: u64) {
    let current = counter.get();
    if absolute > current {
        counter.inc_by(absolute - current);
    }
}

mod pods;
pub use pods::Unnamed;

#[cfg(test)]
mod tests;
