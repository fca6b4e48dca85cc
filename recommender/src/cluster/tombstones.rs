//! Deleted pods, kept for a while by IP and UID with their deletion time.
//!
//! Pod IPs are reused: once a pod is gone its address goes to the next pod scheduled on the node.
//! A flow that reaches the recommender late (spooled by an agent while the service was away) must
//! be resolved against the pod that had the address when the flow was seen, not the one that has
//! it now; and a flow from a pod that is gone still names it by UID.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

use super::{pod_ips, Cluster};

/// How long a deleted pod is kept: longer than an agent spools flows for in practice.
pub const RETENTION: jiff::SignedDuration = jiff::SignedDuration::from_hours(2);

#[derive(Clone, Debug)]
pub struct Tombstone {
    pub pod: Pod,
    pub deleted: Timestamp,
}

#[derive(Clone, Debug, Default)]
pub struct Tombstones {
    by_ip: HashMap<IpAddr, Vec<Arc<Tombstone>>>,
    by_uid: HashMap<String, Arc<Tombstone>>,
    /// Oldest first, to forget them in order.
    order: VecDeque<Arc<Tombstone>>,
}

fn created(pod: &Pod) -> Option<Timestamp> {
    pod.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

impl Tombstones {
    pub fn bury(&mut self, pod: Pod, deleted: Timestamp) {
        let stone = Arc::new(Tombstone { pod, deleted });
        for ip in pod_ips(&stone.pod) {
            self.by_ip.entry(ip).or_default().push(Arc::clone(&stone));
        }
        if let Some(uid) = &stone.pod.metadata.uid {
            self.by_uid.insert(uid.clone(), Arc::clone(&stone));
        }
        self.order.push_back(stone);
        self.forget_before(deleted - RETENTION);
    }

    fn forget_before(&mut self, horizon: Timestamp) {
        while self.order.front().is_some_and(|s| s.deleted < horizon) {
            let stone = self.order.pop_front().expect("checked");
            for ip in pod_ips(&stone.pod) {
                if let Some(list) = self.by_ip.get_mut(&ip) {
                    list.retain(|s| !Arc::ptr_eq(s, &stone));
                    if list.is_empty() {
                        self.by_ip.remove(&ip);
                    }
                }
            }
            if let Some(uid) = &stone.pod.metadata.uid {
                if self.by_uid.get(uid).is_some_and(|s| Arc::ptr_eq(s, &stone)) {
                    self.by_uid.remove(uid);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn by_uid(&self, uid: &str) -> Option<&Pod> {
        self.by_uid.get(uid).map(|s| &s.pod)
    }
}

impl Cluster {
    /// The pod that had `ip` at `at`, when that is a deleted pod rather than the one that has it
    /// now: the address was reused after the flow was seen. `None` when the current owner (or
    /// nobody we remember) had it then.
    pub fn reassigned_pod(&self, ip: IpAddr, at: Timestamp) -> Option<&Pod> {
        let stones = self.tombstones.by_ip.get(&ip)?;
        let current_since = self.pod_by_ip(ip).and_then(created);
        if current_since.is_some_and(|since| since <= at) {
            return None;
        }
        stones
            .iter()
            .rev()
            .find(|s| at <= s.deleted && created(&s.pod).is_none_or(|c| c <= at))
            .map(|s| &s.pod)
    }

    /// A copy of the model in which `pod` has its address again instead of today's owner, to
    /// resolve flows seen while it lived (rare: reuse and late delivery together).
    pub fn as_when(&self, pod: &Pod) -> Cluster {
        let mut then = self.clone();
        for ip in pod_ips(pod) {
            let current: Vec<_> = then
                .pod_by_ip(ip)
                .map(|p| super::LiveObject::Pod(Box::new(p.clone())))
                .into_iter()
                .collect();
            for p in current {
                then.remove(&p, Timestamp::now());
            }
        }
        then.apply(super::LiveObject::Pod(Box::new(pod.clone())));
        then
    }
}
