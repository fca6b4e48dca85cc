//! The network namespaces of a node: those of every process (`/proc/<pid>/ns/net`) and those the
//! container runtimes pin as files (`/run/netns`, where containerd and CRI-O keep each pod's).
//! Many processes share one namespace; a namespace is known by its nsfs (device, inode).

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A namespace and one path that names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netns {
    pub path: PathBuf,
    pub id: (u64, u64),
}

/// Where pinned namespaces are looked for.
pub const PINNED_DIRS: [&str; 2] = ["/run/netns", "/var/run/netns"];

/// Every distinct namespace found under `proc` and the `pinned` directories. Processes whose
/// namespace cannot be read (gone, or another user's without CAP_SYS_PTRACE) are skipped: the
/// namespace is usually also reachable through another process or its pinned file.
pub fn find(proc: &Path, pinned: &[&Path]) -> Vec<Netns> {
    let mut seen = HashSet::new();
    let mut found = Vec::new();
    let mut add = |path: PathBuf| {
        if let Ok(meta) = std::fs::metadata(&path) {
            let id = (meta.dev(), meta.ino());
            if seen.insert(id) {
                found.push(Netns { path, id });
            }
        }
    };
    for dir in pinned {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        paths.into_iter().for_each(&mut add);
    }
    if let Ok(entries) = std::fs::read_dir(proc) {
        let mut pids: Vec<u32> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        for pid in pids {
            add(proc.join(pid.to_string()).join("ns/net"));
        }
    }
    found
}

/// The namespace of the calling thread.
pub fn current() -> std::io::Result<(u64, u64)> {
    let meta = std::fs::metadata("/proc/thread-self/ns/net")?;
    Ok((meta.dev(), meta.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_processs_namespace_once() {
        let own = current().unwrap();
        let all = find(Path::new("/proc"), &[]);
        assert_eq!(all.iter().filter(|n| n.id == own).count(), 1);
        // A pinned "namespace" that is a plain file is a distinct inode, named by its path.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cni-1"), b"").unwrap();
        let with_pins = find(Path::new("/proc"), &[dir.path(), Path::new("/nonexistent")]);
        assert_eq!(with_pins[0].path, dir.path().join("cni-1"));
        assert_eq!(with_pins.iter().filter(|n| n.id == own).count(), 1);
    }
}
