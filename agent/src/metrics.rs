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
    dns_names_cached: IntGauge,
    dns_tcp_bytes_held: IntGauge,
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
            flows_tracked: {
                let g = IntGauge::new(
                    "egress_agent_flows_tracked",
                    "Entries in the kernel's flow table at the last poll.",
                )
                .expect("valid metric name");
                registry.register(Box::new(g.clone())).expect("registered once");
                g
            },
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
            dns_names_cached: gauge(
                "egress_agent_dns_names_cached",
                "(source, address, name) triples remembered from DNS answers (bounded).",
            ),
            dns_tcp_bytes_held: gauge(
                "egress_agent_dns_tcp_bytes_held",
                "Bytes of DNS-over-TCP streams held until their messages are complete (bounded).",
            ),
            registry,
        };
        // Export every series from the start, so that absence means zero rather than unknown.
        for (_, reason) in LOSS_REASONS {
            m.events_lost.with_label_values(&[reason]);
        }
        for result in DnsResult::ALL {
            m.dns_answers.with_label_values(&[result.label()]);
        }
        m
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
        self.flows_tracked
            .set(i64::try_from(live_entries).unwrap_or(i64::MAX));
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

/// Counters only go up; the kernel reports absolute values, so add the difference.
fn advance(counter: &IntCounter, absolute: u64) {
    let current = counter.get();
    if absolute > current {
        counter.inc_by(absolute - current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn exports_every_series_and_mirrors_kernel_counters() {
        let m = Metrics::new();
        let text = m.encode();
        for series in [
            "egress_agent_flows_observed_total",
            "egress_agent_records_written_total",
            "egress_agent_flow_map_evictions_total",
            "egress_agent_udp_replies_skipped_total",
            "egress_agent_pods_file_reload_errors_total",
            "egress_agent_events_lost_total{reason=\"ring_full_dns\"}",
            "egress_agent_dns_answers_total{result=\"parsed\"}",
            "egress_agent_dns_answers_total{result=\"rejected\"}",
            "egress_agent_dns_answers_total{result=\"cut\"}",
            "egress_agent_events_lost_total{reason=\"socket_storage_failed\"}",
            "egress_agent_dns_names_cached",
            "egress_agent_dns_tcp_bytes_held",
        ] {
            assert_eq!(value(&text, series), Some(0), "{series}\n{text}");
        }

        let mut k = [0u64; COUNTER_SLOTS as usize];
        k[Counter::RingFullNewFlow as usize] = 4;
        k[Counter::FlowInserted as usize] = 100;
        m.kernel_counters(&k, 90, 0);
        k[Counter::RingFullNewFlow as usize] = 6;
        k[Counter::FlowInserted as usize] = 120;
        k[Counter::UdpRepliesSkipped as usize] = 7;
        m.kernel_counters(&k, 100, 15);
        // A smaller reading (cannot happen for a live map) never decrements.
        m.kernel_counters(&[0; COUNTER_SLOTS as usize], 0, 0);
        m.dns_answer(DnsResult::Rejected);
        m.records_written(3);
        m.flows_observed(2);
        m.pods_file_reload_error();
        let text = m.encode();
        assert_eq!(
            value(
                &text,
                "egress_agent_events_lost_total{reason=\"ring_full_new_flow\"}"
            ),
            Some(6)
        );
        assert_eq!(
            value(&text, "egress_agent_flow_map_evictions_total"),
            Some(20)
        );
        assert_eq!(
            value(&text, "egress_agent_dns_answers_total{result=\"rejected\"}"),
            Some(1)
        );
        assert_eq!(
            value(&text, "egress_agent_udp_replies_skipped_total"),
            Some(7)
        );
        assert_eq!(value(&text, "egress_agent_records_written_total"), Some(3));
        assert_eq!(value(&text, "egress_agent_flows_observed_total"), Some(2));
        assert_eq!(
            value(&text, "egress_agent_pods_file_reload_errors_total"),
            Some(1)
        );
    }
}
