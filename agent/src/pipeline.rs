//! The agent's state between the kernel and the output: kernel events in, FlowRecords out.
//!
//! Everything here is plain data and synchronous, so it can be driven by tests with made-up
//! events and tables; `run` owns the I/O (kernel maps, timers, signals, writer, the API watch).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_common::{FlowKey, FlowValue, COUNTER_SLOTS};
use flow_model::FlowRecord;

use crate::clock::BootClock;
use crate::dns::{Decoded, DnsCache, DnsDecoder, Limits};
use crate::flows::{destination_of, to_record, Aggregator, FlowDelta};
use crate::held::{unnamed_pod, Held, MAX_HELD};
use crate::identity::IdentityCache;
use crate::kernel::KernelEvent;
use crate::metrics::{DnsResult, ExistingSocket, Metrics, Unnamed};
use crate::pod_source::PodSource;
use crate::pods::PodIndex;

/// How long a record of a pod the API has not shown yet waits for it, unless set otherwise.
pub const DEFAULT_POD_WAIT: Duration = Duration::from_secs(30);

pub struct Pipeline {
    node: String,
    identities: IdentityCache,
    pods: PodSource,
    /// Records of pods the API watch has not shown yet (only with the API as the pod source).
    held: Held,
    dns: DnsCache,
    /// DNS records to answers (TCP streams reassembled).
    dns_decoder: DnsDecoder,
    aggregator: Aggregator,
    /// Keys seen leaving the flow table since start (see `Metrics::kernel_counters`).
    forgotten: u64,
    metrics: Arc<Metrics>,
}

impl Pipeline {
    pub fn new(
        node: String,
        identities: IdentityCache,
        pods: PodSource,
        dns: DnsCache,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            node,
            identities,
            pods,
            held: Held::new(DEFAULT_POD_WAIT, MAX_HELD),
            dns,
            dns_decoder: DnsDecoder::new(Limits::default()),
            aggregator: Aggregator::new(),
            forgotten: 0,
            metrics,
        }
    }

    /// How long a record of a pod the API has not shown yet waits for it (`--pod-wait`), and how
    /// many such records may wait at once.
    pub fn with_pod_wait(mut self, wait: Duration, max_held: usize) -> Self {
        self.held = Held::new(wait, max_held);
        self
    }

    /// Sends `record` to `out`, or holds it while its pod may still become known.
    fn emit(&mut self, record: FlowRecord, now: Instant, out: &mut Vec<FlowRecord>) {
        if unnamed_pod(&record).is_none() {
            out.push(record);
        } else if self.pods.follows_the_cluster() && self.held.holds() {
            self.held.hold(record, now, out, &self.metrics);
        } else {
            self.metrics.flows_unnamed(Unnamed::NotListed, 1);
            out.push(record);
        }
    }

    /// The held records whose pods are now known, and those that waited long enough.
    fn release_held(&mut self, index: &PodIndex, now: Instant, out: &mut Vec<FlowRecord>) {
        self.held.release(index, now, out, &self.metrics);
        self.metrics.flows_held(self.held.len());
    }

    /// At exit: every held record, named where its pod is known by now.
    pub fn finish(&mut self) -> Vec<FlowRecord> {
        let index = self.pods.index(&self.metrics);
        let mut out = Vec::new();
        self.held
            .release_all(&index, Unnamed::Shutdown, &mut out, &self.metrics);
        self.metrics.flows_held(0);
        out
    }

    /// Handles one ring-buffer event. A new flow's cgroup is identified right away, while it
    /// still exists; a DNS answer is parsed and remembered for the cgroup's pod (or the node).
    pub fn handle_event(&mut self, event: KernelEvent, now: Instant) {
        match event {
            KernelEvent::NewFlow(key) => {
                self.identities.identify(key.cgroup_id);
            }
            KernelEvent::Dns(answer) => {
                for decoded in self.dns_decoder.decode(&answer, now) {
                    self.remember(decoded, now);
                }
            }
        }
    }

    /// Counts one parsed DNS answer and remembers its names for the receiving cgroup's pod.
    fn remember(&mut self, decoded: Decoded, now: Instant) {
        match decoded.result {
            Ok(answer) => {
                let result = if answer.complete {
                    DnsResult::Parsed
                } else {
                    DnsResult::Cut
                };
                self.metrics.dns_answer(result);
                let identity = self.identities.identify(decoded.cgroup_id);
                self.dns.insert(identity.dns_source(), &answer.addrs, now);
            }
            Err(reason) => {
                self.metrics.dns_answer(DnsResult::Rejected);
                tracing::debug!(cgroup_id = decoded.cgroup_id, %reason, "DNS answer rejected");
            }
        }
    }

    /// Turns the current flow table into the records of what changed since the last poll.
    /// `counters` are the kernel's loss counters, when they could be read (read them before the
    /// table: then a key inserted in between makes the eviction estimate low for one poll, never
    /// high, and counters cannot go back down).
    pub fn poll(
        &mut self,
        table: &[(FlowKey, FlowValue)],
        counters: Option<&[u64; COUNTER_SLOTS as usize]>,
        clock: &BootClock,
        now: Instant,
    ) -> Vec<FlowRecord> {
        let pod_index = self.pods.index(&self.metrics);
        // TCP answers whose streams stalled are named from what arrived before the records go out.
        for decoded in self.dns_decoder.expire(now) {
            self.remember(decoded, now);
        }

        let poll = self.aggregator.poll(table);
        self.metrics.flows_observed(poll.new_keys);
        self.forgotten += poll.forgotten;
        if let Some(counters) = counters {
            self.metrics
                .kernel_counters(counters, table.len() as u64, self.forgotten);
        }
        // Keep the identity of every cgroup still in the table, changed or not.
        for (key, _) in table {
            self.identities.identify(key.cgroup_id);
        }

        let mut records = Vec::with_capacity(poll.deltas.len());
        // Held records first: they are older than this poll's.
        self.release_held(&pod_index, now, &mut records);
        for delta in &poll.deltas {
            let Some((ip, _, _)) = destination_of(&delta.key) else {
                tracing::debug!(?delta.key, "flow key with an unknown family or protocol");
                continue;
            };
            let identity = self.identities.identify(delta.key.cgroup_id);
            let names = self.dns.names(&identity.dns_source(), ip, now);
            let source = identity.source(&pod_index);
            if let Some(record) = to_record(delta, &self.node, source, names, clock) {
                self.emit(record, now, &mut records);
            }
        }
        self.metrics.flows_held(self.held.len());
        self.identities.end_poll();
        self.dns.purge(now);
        self.metrics
            .cgroups_unresolved(self.identities.unresolved_total());
        self.metrics
            .dns_memory(self.dns.len(), self.dns_decoder.held_bytes());
        records
    }

    /// The records of connections found open at start (`existing`): one per flow key, counting its
    /// sockets, with outcome `preexisting`. `table` is the kernel's flow table read after the scan:
    /// a connection made after the programs were attached is in both, so each key's preexisting
    /// count is its sockets less the connects the kernel has counted on that key. A key is never
    /// counted twice; at worst a preexisting connection hides behind a new one to the same place,
    /// whose flow the kernel reports.
    pub fn report_preexisting(
        &mut self,
        sockets: &[FlowKey],
        table: &[(FlowKey, FlowValue)],
        clock: &BootClock,
        now: Instant,
    ) -> Vec<FlowRecord> {
        let pod_index = self.pods.index(&self.metrics);
        let mut per_key: HashMap<
            (u64, std::net::IpAddr, u16, flow_model::Protocol),
            (FlowKey, u64),
        > = HashMap::new();
        for key in sockets {
            let Some((ip, port, protocol)) = destination_of(key) else {
                continue;
            };
            per_key
                .entry((key.cgroup_id, ip, port, protocol))
                .or_insert((*key, 0))
                .1 += 1;
        }
        for (key, value) in table {
            if let Some((ip, port, protocol)) = destination_of(key) {
                if let Some((_, sockets)) = per_key.get_mut(&(key.cgroup_id, ip, port, protocol)) {
                    let seen = (*sockets).min(value.count);
                    *sockets -= seen;
                    self.metrics
                        .existing_sockets(ExistingSocket::AlreadySeen, seen);
                }
            }
        }
        let at = BootClock::boot_now_ns();
        let mut records = Vec::new();
        for ((_, ip, _, _), (key, sockets)) in per_key {
            if sockets == 0 {
                continue;
            }
            self.metrics
                .existing_sockets(ExistingSocket::Reported, sockets);
            let identity = self.identities.identify(key.cgroup_id);
            let names = self.dns.names(&identity.dns_source(), ip, now);
            let source = identity.source(&pod_index);
            let delta = FlowDelta {
                key,
                count: sockets,
                outcomes: flow_model::Outcomes {
                    preexisting: sockets,
                    ..Default::default()
                },
                first_seen_ns: at,
                last_seen_ns: at,
            };
            records.extend(to_record(&delta, &self.node, source, names, clock));
        }
        records.sort_by_key(FlowRecord::key);
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            self.emit(record, now, &mut out);
        }
        self.metrics.flows_held(self.held.len());
        out
    }
}

#[cfg(all(test, feature = "api"))]
#[path = "pipeline_held_tests.rs"]
mod held_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::resolver::CgroupResolver;
    use crate::dns::parse::tests::{a, response};
    use crate::kernel::DnsAnswer;
    use flow_model::{Outcome, SourceKind};
    use std::os::unix::fs::MetadataExt;
    use std::time::Duration;

    const UID: &str = "0d1f4a8c-7a36-4b5e-9a3e-2f6c1b9d8e7a";

    struct Fixture {
        _tmp: tempfile::TempDir,
        pipeline: Pipeline,
        metrics: Arc<Metrics>,
        pod_cgroup: u64,
        host_cgroup: u64,
        pod_dir: std::path::PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let cg = tmp.path().join("cg");
        let pod_dir = cg.join(format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-abc.scope",
            UID.replace('-', "_")
        ));
        std::fs::create_dir_all(&pod_dir).unwrap();
        let host = cg.join("system.slice/sshd.service");
        std::fs::create_dir_all(&host).unwrap();
        let pods_file = tmp.path().join("pods.yaml");
        std::fs::write(
            &pods_file,
            format!(
                "kind: Pod\napiVersion: v1\nmetadata:\n  name: web-1\n  namespace: shop\n  uid: {UID}\n  labels: {{app: web}}\n"
            ),
        )
        .unwrap();
        let metrics = Arc::new(Metrics::new());
        let pipeline = Pipeline::new(
            "node-a".into(),
            IdentityCache::new(CgroupResolver::new(cg, Duration::ZERO)),
            PodSource::File(crate::pods::PodsFile::load(&pods_file).unwrap()),
            DnsCache::new(Duration::from_secs(600), 10_000),
            Arc::clone(&metrics),
        );
        let ino = |p: &std::path::Path| std::fs::metadata(p).unwrap().ino();
        Fixture {
            pod_cgroup: ino(&pod_dir),
            host_cgroup: ino(&host),
            pod_dir,
            _tmp: tmp,
            pipeline,
            metrics,
        }
    }

    /// A TCP flow key to `ip:port` (IPv4) from the cgroup `cgroup_id`.
    pub(super) fn key(cgroup_id: u64, ip: [u8; 4], port: u16) -> FlowKey {
        let mut daddr = [0; 16];
        daddr[..4].copy_from_slice(&ip);
        FlowKey {
            cgroup_id,
            daddr,
            dport: port,
            family: agent_common::AF_INET,
            protocol: agent_common::IPPROTO_TCP,
            _pad: [0; 4],
        }
    }

    fn value(count: u64, established: u32) -> FlowValue {
        FlowValue {
            first_seen_ns: 1_000,
            last_seen_ns: 2_000 + count,
            count,
            established,
            ..Default::default()
        }
    }

    #[test]
    fn short_lived_pod_keeps_its_identity_and_dns_names() {
        let mut f = fixture();
        let now = Instant::now();
        let clock = BootClock::with_offset(1_700_000_000_000_000_000);
        let dns = response(
            "api.example.test.",
            vec![("api.example.test.", a("198.18.0.10"))],
        );
        f.pipeline.handle_event(
            KernelEvent::Dns(DnsAnswer {
                cgroup_id: f.pod_cgroup,
                family: agent_common::AF_INET,
                transport: 17,
                wire_len: dns.len() as u32,
                socket_cookie: 1,
                seq: 0,
                flags: 0,
                payload: dns,
            }),
            now,
        );
        let k = key(f.pod_cgroup, [198, 18, 0, 10], 443);
        f.pipeline.handle_event(KernelEvent::NewFlow(k), now);
        // The pod's cgroup is gone before the poll.
        std::fs::remove_dir(&f.pod_dir).unwrap();

        let hk = key(f.host_cgroup, [198, 18, 0, 11], 22);
        let records = f
            .pipeline
            .poll(&[(k, value(2, 1)), (hk, value(1, 0))], None, &clock, now);
        assert_eq!(records.len(), 2);
        let pod = records.iter().find(|r| r.destination.port == 443).unwrap();
        assert_eq!(pod.node, "node-a");
        assert_eq!(pod.source.kind, SourceKind::Pod);
        assert_eq!(pod.source.namespace.as_deref(), Some("shop"));
        assert_eq!(pod.source.pod.as_deref(), Some("web-1"));
        assert_eq!(pod.source.container_id.as_deref(), Some("abc"));
        assert_eq!(pod.source.workload.as_ref().unwrap().kind, "Pod");
        assert_eq!(pod.destination.dns_names, ["api.example.test"]);
        assert_eq!(pod.outcome, Outcome::Established);
        assert_eq!(pod.count, 2);
        let host = records.iter().find(|r| r.destination.port == 22).unwrap();
        assert_eq!(host.source.kind, SourceKind::Host);
        assert!(host.destination.dns_names.is_empty());

        // Nothing new, nothing written; new connects give a delta.
        assert!(f
            .pipeline
            .poll(&[(k, value(2, 1)), (hk, value(1, 0))], None, &clock, now)
            .is_empty());
        let again = f.pipeline.poll(&[(k, value(5, 1))], None, &clock, now);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].count, 3);
        assert_eq!(again[0].source.pod.as_deref(), Some("web-1"));

        let text = f.metrics.encode();
        assert!(
            text.contains("egress_agent_dns_answers_total{result=\"parsed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("egress_agent_flows_observed_total 2"),
            "{text}"
        );
    }

    #[test]
    fn bad_dns_answers_are_counted_not_fatal() {
        let mut f = fixture();
        for payload in [vec![], vec![0xff; 40], vec![0, 5, 1]] {
            let wire_len = payload.len() as u32;
            f.pipeline.handle_event(
                KernelEvent::Dns(DnsAnswer {
                    cgroup_id: f.host_cgroup,
                    family: agent_common::AF_INET,
                    transport: 17,
                    wire_len,
                    socket_cookie: 2,
                    seq: 0,
                    flags: 0,
                    payload,
                }),
                Instant::now(),
            );
        }
        let text = f.metrics.encode();
        assert!(
            text.contains("egress_agent_dns_answers_total{result=\"rejected\"} 3"),
            "{text}"
        );
    }

    #[test]
    fn evictions_and_losses_reach_the_metrics() {
        let mut f = fixture();
        let mut counters = [0u64; COUNTER_SLOTS as usize];
        counters[agent_common::Counter::FlowInserted as usize] = 10;
        counters[agent_common::Counter::RingFullDns as usize] = 2;
        let k = key(f.host_cgroup, [10, 0, 0, 1], 80);
        f.pipeline.poll(
            &[(k, value(1, 0))],
            Some(&counters),
            &BootClock::now(),
            Instant::now(),
        );
        let text = f.metrics.encode();
        assert!(
            text.contains("egress_agent_flow_map_evictions_total 9"),
            "{text}"
        );
        assert!(
            text.contains("egress_agent_events_lost_total{reason=\"ring_full_dns\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn preexisting_connections_are_reported_once_per_key_less_what_the_kernel_counted() {
        let mut f = fixture();
        let now = Instant::now();
        let clock = BootClock::with_offset(1_700_000_000_000_000_000);
        let pod_db = key(f.pod_cgroup, [10, 96, 0, 20], 5432);
        let mut pod_udp = key(f.pod_cgroup, [198, 18, 0, 11], 9998);
        pod_udp.protocol = agent_common::IPPROTO_UDP;
        let host = key(f.host_cgroup, [198, 18, 0, 12], 443);
        // Its IPv4-mapped twin, as a dual-stack socket shows it: the same flow.
        let mut host_mapped = host;
        host_mapped.family = agent_common::AF_INET6;
        host_mapped.daddr = "::ffff:198.18.0.12"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        // Two pooled connections to the database, one connected UDP socket, and two host
        // connections of which the kernel has already seen one connect since it was attached.
        let sockets = [pod_db, pod_db, pod_udp, host, host_mapped];
        let table = [(host, value(1, 1))];
        let records = f.pipeline.report_preexisting(&sockets, &table, &clock, now);
        let summary: Vec<_> = records
            .iter()
            .map(|r| {
                (
                    r.source.pod.clone(),
                    r.destination.port,
                    r.count,
                    r.outcomes.preexisting,
                    r.outcome,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (Some("web-1".into()), 5432, 2, 2, Outcome::Preexisting),
                (Some("web-1".into()), 9998, 1, 1, Outcome::Preexisting),
                (None, 443, 1, 1, Outcome::Preexisting),
            ]
        );
        assert_eq!(records[0].source.namespace.as_deref(), Some("shop"));
        assert_eq!(records[2].source.kind, SourceKind::Host);
        for r in &records {
            assert!(r.check().is_ok(), "{r:?}");
        }
        let text = f.metrics.encode();
        assert!(
            text.contains("egress_agent_existing_sockets_total{result=\"reported\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("egress_agent_existing_sockets_total{result=\"already_seen\"} 1"),
            "{text}"
        );
        // The kernel's own records of the host flow come from polls, as usual.
        let polled = f.pipeline.poll(&table, None, &clock, now);
        assert_eq!(polled.len(), 1);
        assert_eq!(polled[0].outcomes.preexisting, 0);
    }
}
