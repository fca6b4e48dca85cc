//! Properties over generated inputs: the parsers never panic, cgroup paths round-trip to the pod
//! they were built from, and the deltas the agent writes merge back to the kernel's totals.

use agent::cgroup::path::{parse_pod_cgroup, QosClass};
use agent::clock::BootClock;
use agent::flows::{to_record, Aggregator};
use agent::identity::CgroupIdentity;
use agent_common::{FlowKey, FlowValue};
use proptest::prelude::*;

fn qos() -> impl Strategy<Value = QosClass> {
    prop_oneof![
        Just(QosClass::Guaranteed),
        Just(QosClass::Burstable),
        Just(QosClass::BestEffort)
    ]
}

proptest! {
    #[test]
    fn cgroup_paths_never_panic(path in "[/a-z0-9_.:-]{0,120}") {
        let _ = parse_pod_cgroup(&path);
    }

    #[test]
    fn dns_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), extra in 0u32..64) {
        for transport in [6, 17] {
            let _ = agent::dns::parse_answer(transport, &bytes, bytes.len() as u32 + extra);
        }
    }

    #[test]
    fn generated_pod_cgroups_round_trip(
        uid in "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        cid in "[0-9a-f]{64}",
        qos in qos(),
        systemd in any::<bool>(),
        runtime in prop_oneof![Just("cri-containerd"), Just("crio"), Just("docker")],
        prefix in prop_oneof![Just(""), Just("/kubelet.slice"), Just("/docker/0123abcd")],
        with_container in any::<bool>(),
    ) {
        let path = if systemd {
            let (parent, pod_prefix) = match qos {
                QosClass::Guaranteed => (String::new(), "kubepods".to_owned()),
                QosClass::Burstable => ("/kubepods-burstable.slice".into(), "kubepods-burstable".into()),
                QosClass::BestEffort => ("/kubepods-besteffort.slice".into(), "kubepods-besteffort".into()),
            };
            let container = if with_container { format!("/{runtime}-{cid}.scope") } else { String::new() };
            format!("{prefix}/kubepods.slice{parent}/{pod_prefix}-pod{}.slice{container}", uid.replace('-', "_"))
        } else {
            let parent = match qos {
                QosClass::Guaranteed => "",
                QosClass::Burstable => "/burstable",
                QosClass::BestEffort => "/besteffort",
            };
            let container = if with_container { format!("/{cid}") } else { String::new() };
            format!("{prefix}/kubepods{parent}/pod{uid}{container}")
        };
        let parsed = parse_pod_cgroup(&path).unwrap();
        prop_assert_eq!(parsed.pod_uid, uid);
        prop_assert_eq!(parsed.qos, qos);
        prop_assert_eq!(parsed.container_id, with_container.then_some(cid));
    }

    /// However the kernel's counters grow between polls, merging every record written gives the
    /// kernel's final totals and interval.
    #[test]
    fn deltas_merge_back_to_the_totals(steps in proptest::collection::vec((0u64..5, 0u32..3, 1u64..1000), 1..30)) {
        let mut key = FlowKey { family: agent_common::AF_INET, protocol: agent_common::IPPROTO_TCP, dport: 443, ..Default::default() };
        key.daddr[..4].copy_from_slice(&[198, 18, 0, 10]);
        let clock = BootClock::with_offset(1_700_000_000_000_000_000);
        let mut agg = Aggregator::new();
        let mut value = FlowValue { first_seen_ns: 1_000, last_seen_ns: 1_000, count: 1, ..Default::default() };
        let mut merged: Option<flow_model::FlowRecord> = None;
        for (connects, established, dt) in steps {
            value.count += connects;
            value.established += established;
            if connects > 0 {
                value.last_seen_ns += dt;
            }
            for delta in agg.poll(&[(key, value)]).deltas {
                let source = CgroupIdentity::Host.source(&Default::default());
                let record = to_record(&delta, "n", source, vec![], &clock).unwrap();
                match &mut merged {
                    Some(m) => m.merge(&record),
                    None => merged = Some(record),
                }
            }
        }
        let merged = merged.unwrap();
        prop_assert_eq!(merged.count, value.count);
        prop_assert_eq!(merged.outcomes.established, u64::from(value.established));
        prop_assert_eq!(merged.first_seen, clock.to_timestamp(value.first_seen_ns));
        prop_assert_eq!(merged.last_seen, clock.to_timestamp(value.last_seen_ns));
    }
}
