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
        "egress_agent_flows_unnamed_total{reason=\"not_listed\"}",
        "egress_agent_flows_unnamed_total{reason=\"timeout\"}",
        "egress_agent_flows_unnamed_total{reason=\"hold_full\"}",
        "egress_agent_flows_unnamed_total{reason=\"shutdown\"}",
        "egress_agent_flows_held",
        "egress_agent_pods_known",
        "egress_agent_pod_watch_errors_total",
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
