//! cgroup id → cgroup path.
//!
//! On cgroup v2 the id the kernel reports (`bpf_get_current_cgroup_id`, `bpf_skb_cgroup_id`) is the
//! inode number of the cgroup's directory, so the only way back to a path is to walk the hierarchy.
//! Paths are cached; a miss triggers a rescan at most once per `min_rescan_interval`, so that the
//! cgroup of a short-lived pod is found right when its first flow is announced, while a stream of
//! unknown ids (cgroups already gone) cannot turn into a stream of full walks. An id still missing
//! after a scan that started after it was asked for is gone for good: on 64-bit kernels the cgroup
//! id is the kernfs node id, which is never reused, so it is remembered as missing.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::DirEntryExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Maximum directory depth walked; real hierarchies are < 10 deep, this only guards against loops.
const MAX_DEPTH: usize = 32;
/// Bound on remembered missing ids; the set is simply cleared when full.
const MAX_MISSING: usize = 65_536;

pub struct CgroupResolver {
    root: PathBuf,
    paths: HashMap<u64, String>,
    missing: HashSet<u64>,
    last_scan: Option<Instant>,
    min_rescan_interval: Duration,
}

impl CgroupResolver {
    /// `root` is the cgroup2 mount point (see [`super::mount::find_cgroup2_root`]).
    pub fn new(root: PathBuf, min_rescan_interval: Duration) -> Self {
        Self {
            root,
            paths: HashMap::new(),
            missing: HashSet::new(),
            last_scan: None,
            min_rescan_interval,
        }
    }

    /// The path of cgroup `id` relative to the root, starting with `/` (the root itself is `/`).
    /// `None` when the cgroup does not exist (any more) or a rescan was done too recently.
    pub fn resolve(&mut self, id: u64) -> Option<&str> {
        if !self.paths.contains_key(&id) && !self.missing.contains(&id) {
            let due = self
                .last_scan
                .is_none_or(|at| at.elapsed() >= self.min_rescan_interval);
            if due {
                self.rescan();
                if !self.paths.contains_key(&id) {
                    if self.missing.len() >= MAX_MISSING {
                        self.missing.clear();
                    }
                    self.missing.insert(id);
                }
            }
        }
        self.paths.get(&id).map(String::as_str)
    }

    /// Walks the whole hierarchy again, dropping cgroups that are gone.
    pub fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        let mut paths = HashMap::with_capacity(self.paths.len().max(64));
        match std::fs::metadata(&self.root) {
            Ok(meta) => {
                use std::os::unix::fs::MetadataExt;
                paths.insert(meta.ino(), "/".to_owned());
            }
            Err(error) => {
                tracing::warn!(root = %self.root.display(), %error, "cannot read the cgroup root");
                return;
            }
        }
        walk(&self.root, "", 0, &mut paths);
        tracing::debug!(cgroups = paths.len(), "rescanned the cgroup hierarchy");
        self.paths = paths;
    }

    /// Number of cgroups currently cached.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

fn walk(dir: &Path, rel: &str, depth: usize, out: &mut HashMap<u64, String>) {
    if depth >= MAX_DEPTH {
        return;
    }
    // A cgroup removed while we walk is normal: skip what cannot be read.
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        // d_type avoids a stat per entry; cgroupfs always fills it in.
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir {
            continue;
        }
        let name = entry.file_name();
        let rel_child = format!("{rel}/{}", name.to_string_lossy());
        out.insert(entry.ino(), rel_child.clone());
        walk(&entry.path(), &rel_child, depth + 1, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn ino(p: &Path) -> u64 {
        std::fs::metadata(p).unwrap().ino()
    }

    #[test]
    fn resolves_directories_by_inode_and_rescans_on_miss() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let pod = root.join("kubepods.slice/kubepods-pod1234.slice");
        std::fs::create_dir_all(&pod).unwrap();
        std::fs::write(root.join("cgroup.procs"), "").unwrap();

        let mut r = CgroupResolver::new(root.to_owned(), Duration::ZERO);
        assert_eq!(r.resolve(ino(root)), Some("/"));
        assert_eq!(
            r.resolve(ino(&pod)),
            Some("/kubepods.slice/kubepods-pod1234.slice")
        );
        // Files are not cgroups.
        assert_eq!(r.resolve(ino(&root.join("cgroup.procs"))), None);

        // A cgroup created after the first scan is found on the miss.
        let late = pod.join("cri-containerd-abc.scope");
        std::fs::create_dir(&late).unwrap();
        assert_eq!(
            r.resolve(ino(&late)),
            Some("/kubepods.slice/kubepods-pod1234.slice/cri-containerd-abc.scope")
        );
    }

    #[test]
    fn rescans_are_rate_limited() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let mut r = CgroupResolver::new(root.to_owned(), Duration::from_secs(3600));
        assert_eq!(r.resolve(12345678), None); // first miss scans
        let late = root.join("late");
        std::fs::create_dir(&late).unwrap();
        assert_eq!(r.resolve(ino(&late)), None); // too soon to scan again
        r.rescan();
        assert_eq!(r.resolve(ino(&late)), Some("/late"));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn ids_missing_after_a_scan_are_not_rescanned_for() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = CgroupResolver::new(tmp.path().to_owned(), Duration::ZERO);
        assert_eq!(r.resolve(u64::MAX), None);
        let scanned = r.last_scan;
        assert_eq!(r.resolve(u64::MAX), None);
        assert_eq!(r.last_scan, scanned);
    }

    /// On the real cgroup2 hierarchy: the test suite runs as root (CI is root).
    #[test]
    fn real_cgroup_ids_are_directory_inodes() {
        let root = crate::cgroup::mount::find_cgroup2_root().unwrap();
        let name = format!("egress-agent-test-{}", std::process::id());
        let dir = root.join(&name);
        std::fs::create_dir(&dir).unwrap();
        let result = std::panic::catch_unwind(|| {
            let mut r = CgroupResolver::new(root.clone(), Duration::ZERO);
            assert_eq!(r.resolve(ino(&root)), Some("/"));
            assert_eq!(
                r.resolve(ino(&dir)).map(str::to_owned),
                Some(format!("/{name}"))
            );
            // The kernel's id for this process's own cgroup resolves to /proc/self/cgroup's path.
            let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
            let own_path = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
            let own_dir = root.join(own_path.trim_start_matches('/'));
            assert_eq!(r.resolve(ino(&own_dir)), Some(own_path));
        });
        std::fs::remove_dir(&dir).unwrap();
        result.unwrap();
    }

    #[test]
    fn missing_root_resolves_nothing() {
        let mut r = CgroupResolver::new(PathBuf::from("/nonexistent/cgroup"), Duration::ZERO);
        assert_eq!(r.resolve(1), None);
        assert!(r.is_empty());
    }
}
