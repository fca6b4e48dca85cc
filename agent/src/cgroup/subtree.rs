//! `--cgroup-root`: watching one cgroup v2 subtree instead of the whole hierarchy.
//!
//! cgroup programs see the sockets of every cgroup below the one they are attached to, so an agent
//! attached at the mount root sees the whole machine. Attached at a subtree it sees only that
//! subtree: a nested kubelet's own hierarchy, or one "node" of several simulated on one machine
//! (the end-to-end test runs two agents this way, each over the kubelet-named cgroups of its own
//! pods). The cgroup paths below the subtree keep their kubelet names, and the pod parser searches
//! the pod component anywhere in a path, so identity works the same under a prefix.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_common::FlowKey;

use super::resolver::CgroupResolver;

/// Why a `--cgroup-root` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SubtreeError {
    #[error("--cgroup-root {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("--cgroup-root {path}: not inside the cgroup v2 hierarchy mounted at {mount}")]
    Outside { path: String, mount: String },
    #[error("--cgroup-root {path}: not a cgroup v2 directory")]
    NotCgroup2 { path: String },
}

/// Where the programs attach: `requested` (canonical, checked to be a cgroup v2 directory inside
/// the hierarchy mounted at `mount`), or the mount itself when nothing is requested.
pub fn attach_point(mount: &Path, requested: Option<&Path>) -> Result<PathBuf, SubtreeError> {
    let Some(requested) = requested else {
        return Ok(mount.to_path_buf());
    };
    let shown = requested.display().to_string();
    let canonical =
        std::fs::canonicalize(requested).map_err(|source| SubtreeError::Unreadable {
            path: shown.clone(),
            source,
        })?;
    let mount_canonical = std::fs::canonicalize(mount).unwrap_or_else(|_| mount.to_path_buf());
    if !canonical.starts_with(&mount_canonical) {
        return Err(SubtreeError::Outside {
            path: shown,
            mount: mount.display().to_string(),
        });
    }
    if !crate::kernel::is_cgroup2_dir(&canonical) {
        return Err(SubtreeError::NotCgroup2 { path: shown });
    }
    Ok(canonical)
}

/// Keeps the sockets whose cgroup is in the subtree at `root`: the scan of existing connections
/// reads every network namespace of the machine, while the programs only see the subtree.
pub fn keep_inside(root: &Path, keys: Vec<FlowKey>) -> Vec<FlowKey> {
    let mut resolver = CgroupResolver::new(root.to_path_buf(), Duration::ZERO);
    resolver.rescan();
    let mut known = HashSet::new();
    keys.into_iter()
        .filter(|key| {
            known.contains(&key.cgroup_id) || {
                let inside = resolver.resolve(key.cgroup_id).is_some();
                if inside {
                    known.insert(key.cgroup_id);
                }
                inside
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::path::parse_pod_cgroup;

    /// The pod parser finds the pod below any prefix, as the resolver of a subtree reports it.
    #[test]
    fn pod_paths_parse_below_a_node_subtree() {
        let uid = "0c6e8b4e-7f2a-4d3b-9a51-2f6c1d8e9b70";
        let id = "a".repeat(64);
        for path in [
            format!("/ert-1-0-node-a/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{id}.scope", uid.replace('-', "_")),
            format!("/ert-1-0-node-b/kubepods/burstable/pod{uid}/{id}"),
            format!("/kubepods/pod{uid}/{id}"),
        ] {
            let pod = parse_pod_cgroup(&path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!(pod.pod_uid, uid);
            assert_eq!(pod.container_id.as_deref(), Some(id.as_str()));
        }
        assert_eq!(parse_pod_cgroup("/ert-1-0-node-a"), None);
    }

    #[test]
    fn no_request_is_the_mount() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(attach_point(dir.path(), None).unwrap(), dir.path());
    }

    #[test]
    fn bad_requests_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = attach_point(dir.path(), Some(&missing)).unwrap_err();
        assert!(matches!(err, SubtreeError::Unreadable { .. }), "{err}");
        let other = tempfile::tempdir().unwrap();
        let err = attach_point(dir.path(), Some(other.path())).unwrap_err();
        assert!(matches!(err, SubtreeError::Outside { .. }), "{err}");
        let inside = dir.path().join("child");
        std::fs::create_dir(&inside).unwrap();
        let err = attach_point(dir.path(), Some(&inside)).unwrap_err();
        assert!(matches!(err, SubtreeError::NotCgroup2 { .. }), "{err}");
        assert!(err.to_string().contains("--cgroup-root"));
    }

    /// On the real hierarchy: a socket of this process is kept for the root and dropped for a
    /// subtree it is not in.
    #[test]
    fn keeps_only_sockets_of_the_subtree() {
        let mount = crate::cgroup::mount::find_cgroup2_root().unwrap();
        let sub = mount.join(format!("agent-subtree-test-{}", std::process::id()));
        std::fs::create_dir(&sub).unwrap();
        use std::os::unix::fs::MetadataExt;
        let inside = std::fs::metadata(&sub).unwrap().ino();
        let key = |cgroup_id| FlowKey {
            cgroup_id,
            daddr: [0; 16],
            dport: 443,
            family: agent_common::AF_INET,
            protocol: agent_common::IPPROTO_TCP,
            _pad: [0; 4],
        };
        let outside = std::fs::metadata(&mount).unwrap().ino();
        let kept = keep_inside(&sub, vec![key(inside), key(outside), key(inside)]);
        let _ = std::fs::remove_dir(&sub);
        assert_eq!(kept.len(), 2);
        assert!(kept.iter().all(|k| k.cgroup_id == inside));
        assert_eq!(attach_point(&mount, Some(&sub)).ok(), None, "removed");
    }
}
