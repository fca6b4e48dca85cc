//! Per-source memory of DNS answers: which names each source resolved to each address.
//!
//! Keyed by source because names are only meaningful for whoever asked: two pods may resolve the
//! same address under different names. Entries outlive their TTL (`retention`): applications cache
//! answers themselves and connect long after a 30-second TTL ran out, and a flow should still carry
//! the name it was resolved from.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::parse::ResolvedAddr;

/// Whose resolutions these are.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DnsSource {
    /// Every container of a pod shares its resolutions (one may resolve, another connect).
    Pod(String),
    /// Node processes often resolve through a local stub (systemd-resolved, nscd) in another
    /// cgroup, so the node's resolutions are pooled.
    Host,
}

pub struct DnsCache {
    entries: HashMap<DnsSource, Names>,
    /// Number of (source, ip, name) entries.
    len: usize,
    retention: Duration,
    max_entries: usize,
    /// No source may hold more than this: a pod resolving names by the million (or receiving
    /// forged answers) evicts its own, not the names other pods resolved.
    max_per_source: usize,
}

/// One source's names, by address, with their expiry.
#[derive(Default)]
struct Names {
    by_ip: HashMap<IpAddr, HashMap<String, Instant>>,
    len: usize,
}

impl Names {
    /// Keeps the names for which `keep` holds; returns how many were dropped.
    fn retain(&mut self, keep: impl Fn(Instant) -> bool) -> usize {
        let before = self.len;
        let mut len = 0;
        self.by_ip.retain(|_, by_name| {
            by_name.retain(|_, at| keep(*at));
            len += by_name.len();
            !by_name.is_empty()
        });
        self.len = len;
        before - len
    }

    /// Drops expired names, then, while still above `max`, the soonest to expire down to 90% of
    /// `max` (so that this O(n log n) pass runs once per many inserts rather than on each).
    fn shrink(&mut self, max: usize, now: Instant) -> usize {
        let mut dropped = self.retain(|at| at > now);
        if self.len <= max {
            return dropped;
        }
        let target = max - max / 10;
        let mut expiries: Vec<Instant> = self
            .by_ip
            .values()
            .flat_map(|m| m.values().copied())
            .collect();
        expiries.sort_unstable();
        let cutoff = expiries[self.len - target];
        dropped += self.retain(|at| at >= cutoff);
        if self.len > target {
            // Ties at the cutoff: drop them too rather than scan again.
            dropped += self.retain(|at| at > cutoff);
        }
        dropped
    }
}

impl DnsCache {
    /// Keeps each name for `max(TTL, retention)`, and at most `max_entries` (source, ip, name)
    /// triples, a tenth of them for any one source; when full, expired entries go first, then
    /// those expiring soonest (of the source over its share, or of all).
    pub fn new(retention: Duration, max_entries: usize) -> Self {
        let max_entries = max_entries.max(1);
        Self {
            entries: HashMap::new(),
            len: 0,
            retention,
            max_entries,
            max_per_source: (max_entries / 10).max(1),
        }
    }

    pub fn insert(&mut self, source: DnsSource, answers: &[ResolvedAddr], now: Instant) {
        if answers.iter().all(|a| a.names.is_empty()) {
            return;
        }
        let names = self.entries.entry(source).or_default();
        for answer in answers {
            let keep = Duration::from_secs(answer.ttl_secs.into()).max(self.retention);
            let expires = now + keep;
            for name in &answer.names {
                let by_name = names.by_ip.entry(answer.ip).or_default();
                match by_name.get_mut(name) {
                    Some(at) => *at = (*at).max(expires),
                    None => {
                        by_name.insert(name.clone(), expires);
                        names.len += 1;
                        self.len += 1;
                    }
                }
            }
        }
        if names.len > self.max_per_source {
            self.len -= names.shrink(self.max_per_source, now);
        }
        if self.len > self.max_entries {
            self.shrink(now);
        }
    }

    /// Names `source` resolved to `ip` that have not expired, sorted and unique.
    pub fn names(&self, source: &DnsSource, ip: IpAddr, now: Instant) -> Vec<String> {
        let Some(by_name) = self.entries.get(source).and_then(|m| m.by_ip.get(&ip)) else {
            return Vec::new();
        };
        let live: BTreeSet<&String> = by_name
            .iter()
            .filter(|(_, at)| **at > now)
            .map(|(name, _)| name)
            .collect();
        live.into_iter().cloned().collect()
    }

    /// Drops expired entries.
    pub fn purge(&mut self, now: Instant) {
        self.retain(|at| at > now);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Over the global bound: expired entries of every source go, then the soonest to expire.
    fn shrink(&mut self, now: Instant) {
        self.purge(now);
        if self.len <= self.max_entries {
            return;
        }
        let target = self.max_entries - self.max_entries / 10;
        let mut expiries: Vec<Instant> = self
            .entries
            .values()
            .flat_map(|n| n.by_ip.values())
            .flat_map(|m| m.values().copied())
            .collect();
        expiries.sort_unstable();
        let cutoff = expiries[self.len - target];
        self.retain(|at| at >= cutoff);
        if self.len > target {
            self.retain(|at| at > cutoff);
        }
    }

    fn retain(&mut self, keep: impl Fn(Instant) -> bool) {
        let mut len = 0;
        self.entries.retain(|_, names| {
            names.retain(&keep);
            len += names.len;
            names.len > 0
        });
        self.len = len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(ip: &str, ttl: u32, names: &[&str]) -> ResolvedAddr {
        ResolvedAddr {
            ip: ip.parse().unwrap(),
            ttl_secs: ttl,
            names: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn pod(uid: &str) -> DnsSource {
        DnsSource::Pod(uid.to_owned())
    }

    #[test]
    fn names_are_per_source_and_sorted() {
        let now = Instant::now();
        let mut c = DnsCache::new(Duration::from_secs(600), 1000);
        c.insert(
            pod("a"),
            &[answer("198.18.0.1", 30, &["z.test", "a.test"])],
            now,
        );
        c.insert(pod("b"), &[answer("198.18.0.1", 30, &["other.test"])], now);
        let ip = "198.18.0.1".parse().unwrap();
        assert_eq!(c.names(&pod("a"), ip, now), ["a.test", "z.test"]);
        assert_eq!(c.names(&pod("b"), ip, now), ["other.test"]);
        assert!(c.names(&DnsSource::Host, ip, now).is_empty());
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn short_ttls_are_kept_for_the_retention_window_long_ones_for_their_ttl() {
        let now = Instant::now();
        let mut c = DnsCache::new(Duration::from_secs(600), 1000);
        c.insert(
            DnsSource::Host,
            &[answer("198.18.0.1", 5, &["short.test"])],
            now,
        );
        c.insert(
            DnsSource::Host,
            &[answer("198.18.0.2", 3600, &["long.test"])],
            now,
        );
        let (ip1, ip2) = ("198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap());
        let later = now + Duration::from_secs(300);
        assert_eq!(c.names(&DnsSource::Host, ip1, later), ["short.test"]);
        let much_later = now + Duration::from_secs(900);
        assert!(c.names(&DnsSource::Host, ip1, much_later).is_empty());
        assert_eq!(c.names(&DnsSource::Host, ip2, much_later), ["long.test"]);
        c.purge(much_later);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn size_is_bounded() {
        let now = Instant::now();
        let mut c = DnsCache::new(Duration::from_secs(60), 100);
        for i in 0..1000u32 {
            let ip = format!("198.18.{}.{}", i / 256, i % 256);
            let at = now + Duration::from_millis(i.into());
            c.insert(pod("a"), &[answer(&ip, 0, &["n.test"])], at);
            assert!(c.len() <= 100, "{}", c.len());
        }
        // The most recent survive.
        let last = "198.18.3.231".parse().unwrap();
        assert_eq!(c.names(&pod("a"), last, now), ["n.test"]);
    }

    #[test]
    fn one_source_cannot_push_out_the_names_of_others() {
        let now = Instant::now();
        let mut c = DnsCache::new(Duration::from_secs(600), 1000);
        c.insert(
            pod("quiet"),
            &[answer("198.18.0.1", 30, &["api.test"])],
            now,
        );
        // A flood of distinct names from one pod, each expiring later than the quiet pod's.
        for i in 0..50_000u32 {
            let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            let at = now + Duration::from_millis(1 + u64::from(i));
            c.insert(
                pod("loud"),
                &[answer(&ip, 3600, &[&format!("n{i}.test")])],
                at,
            );
            assert!(c.len() <= 101, "{}", c.len());
        }
        let ip = "198.18.0.1".parse().unwrap();
        assert_eq!(c.names(&pod("quiet"), ip, now), ["api.test"]);
        // The loud pod kept its latest names.
        let latest = "10.0.195.79".parse().unwrap(); // i = 49,999
        assert_eq!(c.names(&pod("loud"), latest, now), ["n49999.test"]);
    }

    #[test]
    fn re_resolution_extends_expiry() {
        let now = Instant::now();
        let mut c = DnsCache::new(Duration::from_secs(10), 1000);
        c.insert(pod("a"), &[answer("198.18.0.1", 0, &["x.test"])], now);
        let later = now + Duration::from_secs(8);
        c.insert(pod("a"), &[answer("198.18.0.1", 0, &["x.test"])], later);
        assert_eq!(c.len(), 1);
        let ip = "198.18.0.1".parse().unwrap();
        assert_eq!(
            c.names(&pod("a"), ip, now + Duration::from_secs(15)),
            ["x.test"]
        );
    }
}
