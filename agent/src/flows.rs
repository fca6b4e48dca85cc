//! The flow table, turned into deltas.
//!
//! The kernel keeps cumulative counters per flow key in an LRU map. Each poll compares the table
//! with the previous one and emits what changed since, because FlowRecords are deltas that
//! consumers sum (see `flow_model`). A key that disappeared was evicted (or expired) and is
//! forgotten; a key whose counters went backwards or whose `first_seen` changed was evicted and
//! inserted again, and is reported from zero.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use agent_common::{FlowKey, FlowValue};
use flow_model::{Destination, FlowRecord, Outcomes, Protocol, Source};

use crate::clock::BootClock;

/// What changed for one key since the previous poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowDelta {
    pub key: FlowKey,
    /// Connects / datagrams since the previous poll.
    pub count: u64,
    pub outcomes: Outcomes,
    /// The interval holding every event of this delta, `CLOCK_BOOTTIME` ns.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
}

/// The outcome of one poll.
#[derive(Debug, Default)]
pub struct Poll {
    pub deltas: Vec<FlowDelta>,
    /// Keys seen for the first time (by this aggregator).
    pub new_keys: u64,
    /// Keys that left the table since the previous poll.
    pub forgotten: u64,
}

/// Previous state of the kernel's flow table.
#[derive(Default)]
pub struct Aggregator {
    last: HashMap<FlowKey, FlowValue>,
}

impl Aggregator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Compares `table` (the whole current flow table) with the previous poll.
    pub fn poll(&mut self, table: &[(FlowKey, FlowValue)]) -> Poll {
        let mut poll = Poll::default();
        let mut next = HashMap::with_capacity(table.len());
        for (key, value) in table {
            let previous = self.last.get(key);
            if previous.is_none() {
                poll.new_keys += 1;
            }
            if let Some(delta) = delta(key, previous, value) {
                poll.deltas.push(delta);
            }
            next.insert(*key, *value);
        }
        poll.forgotten = self.last.keys().filter(|k| !next.contains_key(*k)).count() as u64;
        self.last = next;
        poll
    }

    /// Keys currently known (the table's size at the last poll).
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

fn delta(key: &FlowKey, previous: Option<&FlowValue>, now: &FlowValue) -> Option<FlowDelta> {
    let outcomes = |v: &FlowValue| Outcomes {
        established: v.established.into(),
        refused: v.refused.into(),
        timeout: v.timed_out.into(),
        preexisting: 0,
    };
    let fresh = match previous {
        None => true,
        Some(p) => {
            p.first_seen_ns != now.first_seen_ns
                || now.count < p.count
                || now.established < p.established
                || now.refused < p.refused
                || now.timed_out < p.timed_out
        }
    };
    let Some(p) = previous.filter(|_| !fresh) else {
        let d = FlowDelta {
            key: *key,
            count: now.count,
            outcomes: outcomes(now),
            first_seen_ns: now.first_seen_ns,
            last_seen_ns: now.last_seen_ns.max(now.first_seen_ns),
        };
        // A key inserted but not yet counted (the kernel fills the value after inserting it).
        return (d.count > 0 || !d.outcomes.is_empty()).then_some(d);
    };
    let (o_now, o_prev) = (outcomes(now), outcomes(p));
    let d = FlowDelta {
        key: *key,
        count: now.count - p.count,
        outcomes: Outcomes {
            established: o_now.established - o_prev.established,
            refused: o_now.refused - o_prev.refused,
            timeout: o_now.timeout - o_prev.timeout,
            preexisting: 0,
        },
        // New events happened after the previously reported last one; starting the interval
        // there keeps merged records exact (merge takes the minimum first_seen).
        first_seen_ns: if now.count - p.count > 1 {
            p.last_seen_ns
        } else {
            now.last_seen_ns
        },
        last_seen_ns: now.last_seen_ns,
    };
    (d.count > 0 || !d.outcomes.is_empty()).then_some(d)
}

/// Destination address, port and protocol of a kernel flow key; `None` for a family or protocol
/// the agent does not report. IPv4-mapped IPv6 (a dual-stack socket talking IPv4) becomes IPv4.
pub fn destination_of(key: &FlowKey) -> Option<(IpAddr, u16, Protocol)> {
    let ip = match key.family {
        agent_common::AF_INET => {
            let [a, b, c, d, ..] = key.daddr;
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        }
        agent_common::AF_INET6 => {
            let v6 = Ipv6Addr::from(key.daddr);
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        }
        _ => return None,
    };
    let protocol = match key.protocol {
        agent_common::IPPROTO_TCP => Protocol::Tcp,
        agent_common::IPPROTO_UDP => Protocol::Udp,
        agent_common::IPPROTO_SCTP => Protocol::Sctp,
        _ => return None,
    };
    Some((ip, key.dport, protocol))
}

/// Builds the FlowRecord of one delta; `None` if the key has no reportable destination.
pub fn to_record(
    delta: &FlowDelta,
    node: &str,
    source: Source,
    dns_names: Vec<String>,
    clock: &BootClock,
) -> Option<FlowRecord> {
    let (ip, port, protocol) = destination_of(&delta.key)?;
    Some(FlowRecord {
        node: node.to_owned(),
        source,
        destination: Destination {
            ip,
            port,
            protocol,
            dns_names,
        },
        first_seen: clock.to_timestamp(delta.first_seen_ns),
        last_seen: clock.to_timestamp(delta.last_seen_ns),
        count: delta.count,
        outcome: delta.outcomes.summary(protocol),
        outcomes: delta.outcomes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_model::{Outcome, SourceKind};

    fn key(ip: [u8; 4], port: u16, protocol: u8) -> FlowKey {
        let mut daddr = [0u8; 16];
        daddr[..4].copy_from_slice(&ip);
        FlowKey {
            cgroup_id: 7,
            daddr,
            dport: port,
            family: agent_common::AF_INET,
            protocol,
            _pad: [0; 4],
        }
    }

    fn value(first: u64, last: u64, count: u64, est: u32) -> FlowValue {
        FlowValue {
            first_seen_ns: first,
            last_seen_ns: last,
            count,
            established: est,
            ..Default::default()
        }
    }

    #[test]
    fn first_poll_reports_everything_then_only_changes() {
        let k = key([198, 18, 0, 10], 443, 6);
        let mut agg = Aggregator::new();
        let p = agg.poll(&[(k, value(100, 200, 3, 2))]);
        assert_eq!(p.new_keys, 1);
        assert_eq!(p.deltas.len(), 1);
        assert_eq!(p.deltas[0].count, 3);
        assert_eq!(p.deltas[0].outcomes.established, 2);
        assert_eq!(
            (p.deltas[0].first_seen_ns, p.deltas[0].last_seen_ns),
            (100, 200)
        );

        // Nothing new: no delta.
        let p = agg.poll(&[(k, value(100, 200, 3, 2))]);
        assert!(p.deltas.is_empty());
        assert_eq!(p.new_keys, 0);

        // Two more connects, one more established.
        let p = agg.poll(&[(k, value(100, 500, 5, 3))]);
        assert_eq!(p.deltas[0].count, 2);
        assert_eq!(p.deltas[0].outcomes.established, 1);
        assert_eq!(
            (p.deltas[0].first_seen_ns, p.deltas[0].last_seen_ns),
            (200, 500)
        );

        // Only an outcome arrived (the connect was counted before).
        let p = agg.poll(&[(k, value(100, 500, 5, 4))]);
        assert_eq!(p.deltas[0].count, 0);
        assert_eq!(p.deltas[0].outcomes.established, 1);
        assert_eq!(
            (p.deltas[0].first_seen_ns, p.deltas[0].last_seen_ns),
            (500, 500)
        );
    }

    #[test]
    fn eviction_forgets_and_reinsertion_restarts() {
        let (a, b) = (key([10, 0, 0, 1], 80, 6), key([10, 0, 0, 2], 80, 6));
        let mut agg = Aggregator::new();
        agg.poll(&[(a, value(1, 5, 5, 0)), (b, value(1, 1, 1, 0))]);
        let p = agg.poll(&[(a, value(1, 5, 5, 0))]);
        assert_eq!(p.forgotten, 1);
        assert_eq!(agg.len(), 1);
        // `a` was evicted and re-inserted between polls: smaller count, new first_seen.
        let p = agg.poll(&[(a, value(900, 950, 2, 0))]);
        assert_eq!(p.deltas[0].count, 2);
        assert_eq!(p.deltas[0].first_seen_ns, 900);
        // Same first_seen but counters went backwards is also a re-insertion.
        let empty = key([10, 0, 0, 3], 80, 6);
        assert!(agg.poll(&[(empty, value(5, 5, 0, 0))]).deltas.is_empty());
        let p = agg.poll(&[(a, value(900, 990, 1, 0))]);
        assert_eq!(p.deltas[0].count, 1);
    }

    #[test]
    fn destinations_are_normalized() {
        let k = key([198, 18, 0, 10], 53, 17);
        assert_eq!(
            destination_of(&k),
            Some(("198.18.0.10".parse().unwrap(), 53, Protocol::Udp))
        );
        let mut mapped = k;
        mapped.family = agent_common::AF_INET6;
        mapped.daddr = "::ffff:198.18.0.10".parse::<Ipv6Addr>().unwrap().octets();
        assert_eq!(
            destination_of(&mapped).unwrap().0,
            "198.18.0.10".parse::<IpAddr>().unwrap()
        );
        let mut v6 = mapped;
        v6.daddr = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        v6.protocol = agent_common::IPPROTO_SCTP;
        assert_eq!(
            destination_of(&v6),
            Some(("2001:db8::1".parse().unwrap(), 53, Protocol::Sctp))
        );
        let mut bad = k;
        bad.family = 99;
        assert_eq!(destination_of(&bad), None);
        bad = k;
        bad.protocol = 1;
        assert_eq!(destination_of(&bad), None);
    }

    #[test]
    fn records_carry_outcome_and_wall_time() {
        let k = key([198, 18, 0, 10], 443, 6);
        let mut agg = Aggregator::new();
        let p = agg.poll(&[(k, value(1_000_000_000, 2_000_000_000, 3, 0))]);
        let source = host_source();
        let clock = BootClock::with_offset(1_700_000_000_000_000_000);
        let r = to_record(
            &p.deltas[0],
            "node-a",
            source,
            vec!["api.test".into()],
            &clock,
        )
        .unwrap();
        assert_eq!(r.outcome, Outcome::Unknown);
        assert_eq!(r.count, 3);
        assert_eq!(r.first_seen.to_string(), "2023-11-14T22:13:21Z");
        assert_eq!(r.last_seen.to_string(), "2023-11-14T22:13:22Z");
        assert_eq!(r.destination.dns_names, ["api.test"]);
        assert_eq!(r.source.kind, SourceKind::Host);

        let mut udp = p.deltas[0].clone();
        udp.key.protocol = 17;
        let r = to_record(&udp, "n", host_source(), vec![], &clock).unwrap();
        assert_eq!(r.outcome, Outcome::Sent);
        let mut refused = p.deltas[0].clone();
        refused.outcomes.refused = 1;
        let r = to_record(&refused, "n", host_source(), vec![], &clock).unwrap();
        assert_eq!(r.outcome, Outcome::Refused);
    }

    fn host_source() -> Source {
        crate::identity::CgroupIdentity::Host.source(&Default::default())
    }
}
