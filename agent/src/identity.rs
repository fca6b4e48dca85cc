//! cgroup id → who: a pod (UID, container) or the node, resolved once and remembered.
//!
//! A cgroup's path is only readable while the cgroup exists, and a short-lived pod may be gone by
//! the next poll of the flow table. So the identity is resolved when the kernel announces a new
//! flow and cached by cgroup id until no flow of that cgroup is left in the table. Pod metadata
//! (namespace, labels, ...) is looked up by UID when a record is written, so a reloaded pods file
//! applies to flows that are already known.

use std::collections::HashMap;
use std::sync::Arc;

use flow_model::{Source, SourceKind};

use crate::cgroup::path::{parse_pod_cgroup, PodCgroup};
use crate::cgroup::resolver::CgroupResolver;
use crate::dns::DnsSource;
use crate::pods::PodInfo;

/// What a cgroup id stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupIdentity {
    Pod(PodCgroup),
    /// A node process (any cgroup outside the kubelet's pod hierarchy).
    Host,
    /// The cgroup could not be found (gone before it was looked up). Reported as a node process;
    /// counted so that the misattribution is visible.
    Unresolved,
}

impl CgroupIdentity {
    /// Whose DNS answers apply to this cgroup's flows.
    pub fn dns_source(&self) -> DnsSource {
        match self {
            CgroupIdentity::Pod(pod) => DnsSource::Pod(pod.pod_uid.clone()),
            CgroupIdentity::Host | CgroupIdentity::Unresolved => DnsSource::Host,
        }
    }

    /// The `source` of a FlowRecord. A pod missing from the pods file is still a pod, with what the
    /// cgroup path tells (UID, container id).
    pub fn source(&self, pods: &HashMap<String, Arc<PodInfo>>) -> Source {
        let mut source = Source {
            kind: SourceKind::Host,
            namespace: None,
            pod: None,
            uid: None,
            container_id: None,
            workload: None,
            labels: Default::default(),
            host_network: false,
        };
        if let CgroupIdentity::Pod(cgroup) = self {
            source.kind = SourceKind::Pod;
            source.uid = Some(cgroup.pod_uid.clone());
            source.container_id = cgroup.container_id.clone();
            if let Some(info) = pods.get(&cgroup.pod_uid) {
                info.describe(&mut source);
            }
        }
        source
    }
}

struct Entry {
    identity: Arc<CgroupIdentity>,
    /// Poll generation in which the cgroup last had a flow (or was announced).
    seen: u64,
}

/// Resolves and caches cgroup identities.
pub struct IdentityCache {
    resolver: CgroupResolver,
    entries: HashMap<u64, Entry>,
    generation: u64,
    unresolved: u64,
}

impl IdentityCache {
    pub fn new(resolver: CgroupResolver) -> Self {
        Self {
            resolver,
            entries: HashMap::new(),
            generation: 0,
            unresolved: 0,
        }
    }

    /// The identity of `cgroup_id`, resolving it now if it is not cached (or was not found before:
    /// a rate-limited miss may succeed later).
    pub fn identify(&mut self, cgroup_id: u64) -> Arc<CgroupIdentity> {
        let generation = self.generation;
        if let Some(entry) = self.entries.get_mut(&cgroup_id) {
            entry.seen = generation;
            if *entry.identity != CgroupIdentity::Unresolved {
                return Arc::clone(&entry.identity);
            }
        }
        let identity = Arc::new(match self.resolver.resolve(cgroup_id) {
            Some(path) => match parse_pod_cgroup(path) {
                Some(pod) => CgroupIdentity::Pod(pod),
                None => CgroupIdentity::Host,
            },
            None => CgroupIdentity::Unresolved,
        });
        if *identity == CgroupIdentity::Unresolved {
            let first_time = !self.entries.contains_key(&cgroup_id);
            if first_time {
                self.unresolved += 1;
                tracing::debug!(
                    cgroup_id,
                    "cgroup not found; reporting its flows as the node's"
                );
            }
        }
        self.entries.insert(
            cgroup_id,
            Entry {
                identity: Arc::clone(&identity),
                seen: generation,
            },
        );
        identity
    }

    /// Ends a poll: forgets cgroups that had no flow in this poll nor the previous one (the extra
    /// generation keeps identities announced between two polls).
    pub fn end_poll(&mut self) {
        let keep_from = self.generation.saturating_sub(1);
        self.entries.retain(|_, e| e.seen >= keep_from);
        self.generation += 1;
    }

    /// cgroups that could not be resolved so far (monotonic).
    pub fn unresolved_total(&self) -> u64 {
        self.unresolved
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::time::Duration;

    const UID: &str = "0d1f4a8c-7a36-4b5e-9a3e-2f6c1b9d8e7a";

    fn tree() -> (tempfile::TempDir, u64, u64) {
        let tmp = tempfile::tempdir().unwrap();
        let pod = tmp
            .path()
            .join(format!("kubepods/besteffort/pod{UID}/abc123"));
        std::fs::create_dir_all(&pod).unwrap();
        let host = tmp.path().join("system.slice/kubelet.service");
        std::fs::create_dir_all(&host).unwrap();
        let ino = |p: &std::path::Path| std::fs::metadata(p).unwrap().ino();
        let (p, h) = (ino(&pod), ino(&host));
        (tmp, p, h)
    }

    #[test]
    fn resolves_caches_and_survives_the_cgroup() {
        let (tmp, pod_id, host_id) = tree();
        let mut cache =
            IdentityCache::new(CgroupResolver::new(tmp.path().to_owned(), Duration::ZERO));
        let id = cache.identify(pod_id);
        let CgroupIdentity::Pod(p) = &*id else {
            panic!("{id:?}")
        };
        assert_eq!(p.pod_uid, UID);
        assert_eq!(p.container_id.as_deref(), Some("abc123"));
        assert_eq!(*cache.identify(host_id), CgroupIdentity::Host);

        // The pod's cgroup disappears; its identity is still known.
        std::fs::remove_dir_all(tmp.path().join("kubepods")).unwrap();
        assert!(matches!(*cache.identify(pod_id), CgroupIdentity::Pod(_)));

        assert_eq!(*cache.identify(999_999_999), CgroupIdentity::Unresolved);
        assert_eq!(cache.unresolved_total(), 1);
        cache.identify(999_999_999);
        assert_eq!(cache.unresolved_total(), 1);
    }

    #[test]
    fn forgets_cgroups_without_flows_after_two_polls() {
        let (tmp, pod_id, host_id) = tree();
        let mut cache =
            IdentityCache::new(CgroupResolver::new(tmp.path().to_owned(), Duration::ZERO));
        cache.identify(pod_id);
        cache.identify(host_id);
        cache.end_poll();
        cache.identify(host_id);
        cache.end_poll();
        assert_eq!(cache.len(), 2);
        cache.identify(host_id);
        cache.end_poll();
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn sources_carry_pod_metadata_when_known() {
        let pod = CgroupIdentity::Pod(PodCgroup {
            pod_uid: UID.into(),
            container_id: Some("c1".into()),
            qos: crate::cgroup::path::QosClass::Burstable,
        });
        let mut pods = HashMap::new();
        let s = pod.source(&pods);
        assert_eq!(s.kind, SourceKind::Pod);
        assert_eq!(s.uid.as_deref(), Some(UID));
        assert_eq!(s.namespace, None);
        pods.insert(
            UID.to_owned(),
            Arc::new(PodInfo {
                uid: UID.into(),
                namespace: "shop".into(),
                name: "web-1".into(),
                labels: [("app".to_owned(), "web".to_owned())].into(),
                workload: flow_model::WorkloadRef {
                    kind: "Deployment".into(),
                    name: "web".into(),
                },
                host_network: true,
                static_uid: None,
            }),
        );
        let s = pod.source(&pods);
        assert_eq!(s.namespace.as_deref(), Some("shop"));
        assert_eq!(s.pod.as_deref(), Some("web-1"));
        assert_eq!(s.container_id.as_deref(), Some("c1"));
        assert!(s.host_network);
        assert_eq!(pod.dns_source(), DnsSource::Pod(UID.into()));
        let h = CgroupIdentity::Unresolved.source(&pods);
        assert_eq!(h.kind, SourceKind::Host);
        assert_eq!(CgroupIdentity::Host.dns_source(), DnsSource::Host);
    }
}
