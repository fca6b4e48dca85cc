//! Pods as cgroup v2 directories named the way the kubelet names them.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Which kubelet cgroup driver laid out the pod's cgroups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_>.slice/cri-containerd-<id>.scope`
    Systemd,
    /// `kubepods/besteffort/pod<uid>/<id>`
    Cgroupfs,
}

/// The container runtime, which names the container's systemd scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// `cri-containerd-<id>.scope`
    Containerd,
    /// `crio-<id>.scope`
    Crio,
}

impl Runtime {
    fn scope_prefix(self) -> &'static str {
        match self {
            Runtime::Containerd => "cri-containerd",
            Runtime::Crio => "crio",
        }
    }
}

/// A pod's QoS class, which picks the kubelet's intermediate cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qos {
    BestEffort,
    Burstable,
    Guaranteed,
}

impl Qos {
    /// The value of `status.qosClass`.
    pub fn class_name(self) -> &'static str {
        match self {
            Qos::BestEffort => "BestEffort",
            Qos::Burstable => "Burstable",
            Qos::Guaranteed => "Guaranteed",
        }
    }

    /// The kubelet's QoS cgroup name; guaranteed pods sit directly under `kubepods`.
    fn dir(self) -> Option<&'static str> {
        match self {
            Qos::BestEffort => Some("besteffort"),
            Qos::Burstable => Some("burstable"),
            Qos::Guaranteed => None,
        }
    }
}

/// The container's cgroup path relative to the cgroup v2 root, exactly as the kubelet and the
/// runtime would create it. With the cgroupfs driver the container directory is the bare id.
pub fn kubelet_path(
    driver: Driver,
    qos: Qos,
    runtime: Runtime,
    uid: &str,
    container_id: &str,
) -> String {
    match driver {
        Driver::Systemd => {
            // systemd unit names cannot contain '-' inside a component, so the kubelet escapes the
            // UID's dashes as underscores; each slice repeats its parents' names.
            let uid_ = uid.replace('-', "_");
            let scope = format!("{}-{container_id}.scope", runtime.scope_prefix());
            match qos.dir() {
                Some(q) => format!(
                    "kubepods.slice/kubepods-{q}.slice/kubepods-{q}-pod{uid_}.slice/{scope}"
                ),
                None => format!("kubepods.slice/kubepods-pod{uid_}.slice/{scope}"),
            }
        }
        Driver::Cgroupfs => match qos.dir() {
            Some(q) => format!("kubepods/{q}/pod{uid}/{container_id}"),
            None => format!("kubepods/pod{uid}/{container_id}"),
        },
    }
}

/// The cgroup v2 mount point, found the way the agent finds it.
pub fn cgroup_root() -> PathBuf {
    agent::cgroup::mount::find_cgroup2_root().expect("cgroup v2 must be mounted")
}

/// A cgroup created for a test. `Drop` kills whatever still runs in it and removes the directories
/// this guard created, deepest first. Shared parents (`kubepods.slice`, ...) that another test
/// still uses are left for that test to remove: rmdir fails on a non-empty cgroup, and that is fine.
pub struct Cgroup {
    path: PathBuf,
    /// The directories this guard created, outermost first.
    created: Vec<PathBuf>,
    procs: CString,
}

impl Cgroup {
    /// Creates `relative` (and any missing parents) under the cgroup v2 root.
    pub fn create(relative: &str) -> Cgroup {
        let root = cgroup_root();
        let path = root.join(relative);
        // A parallel test may remove a shared parent between our check and our mkdir of its child;
        // starting over recreates it.
        let mut created = Vec::new();
        let mut last_err = None;
        for _ in 0..10 {
            match create_missing(&root, relative, &mut created) {
                Ok(()) => {
                    last_err = None;
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        if let Some(e) = last_err {
            panic!("cannot create cgroup {}: {e}", path.display());
        }
        let procs = CString::new(
            path.join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .expect("cgroup path has no NUL");
        Cgroup {
            path,
            created,
            procs,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes `cmd`'s child join this cgroup before it execs, so that everything it runs (and
    /// every socket it opens) belongs to the cgroup from its first instruction, as in a container.
    pub fn join_on_exec(&self, cmd: &mut Command) {
        let procs = self.procs.clone();
        // SAFETY: the hook runs in the forked child before exec and only makes async-signal-safe
        // system calls (open, write, close) on memory prepared before the fork; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // "0" moves the writing process itself (cgroup v2 accepts it like v1 does).
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if n != 1 {
                    return Err(err);
                }
                Ok(())
            });
        }
    }

    /// The pids currently in the cgroup.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

fn create_missing(root: &Path, relative: &str, created: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut dir = root.to_path_buf();
    for part in relative.split('/') {
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Ok(()) => created.push(dir.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // cgroup.kill (Linux 5.14+) SIGKILLs every process in the cgroup, which are all processes
        // this test started in its pod; rmdir needs the cgroup empty.
        let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !self.pids().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for dir in self.created.iter().rev() {
            if let Err(e) = std::fs::remove_dir(dir) {
                // Shared parents still used by another test are expected to be busy.
                if !is_busy(&e) || dir == &self.path {
                    eprintln!("clean-up: rmdir {}: {e}", dir.display());
                }
            }
        }
        // The kubelet's shared parents (`kubepods.slice`, `kubepods/burstable`, ...) may have been
        // created by a test that finished while this one still used them; the last user removes
        // them. A parent that still holds anything (another test's pod, or a real kubelet's) is
        // busy and stays.
        let root = cgroup_root();
        for dir in self.path.ancestors().skip(1) {
            if dir == root || !dir.starts_with(&root) {
                break;
            }
            let shared = dir
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_kubelet_shared_parent);
            if shared && dir.exists() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

fn is_busy(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::ENOTEMPTY))
}

/// The kubelet's node-level and QoS-level cgroup names, which all pods of a node share.
fn is_kubelet_shared_parent(name: &str) -> bool {
    matches!(
        name,
        "kubepods.slice"
            | "kubepods-besteffort.slice"
            | "kubepods-burstable.slice"
            | "kubepods"
            | "besteffort"
            | "burstable"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layouts a kubelet with containerd creates, per driver and QoS class.
    #[test]
    fn kubelet_cgroup_names() {
        let uid = "0c6e8b4e-7f2a-4d3b-9a51-2f6c1d8e9b70";
        let id = "a".repeat(64);
        assert_eq!(
            kubelet_path(Driver::Systemd, Qos::BestEffort, Runtime::Containerd, uid, &id),
            format!("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0c6e8b4e_7f2a_4d3b_9a51_2f6c1d8e9b70.slice/cri-containerd-{id}.scope")
        );
        assert_eq!(
            kubelet_path(Driver::Systemd, Qos::Guaranteed, Runtime::Containerd, uid, &id),
            format!("kubepods.slice/kubepods-pod0c6e8b4e_7f2a_4d3b_9a51_2f6c1d8e9b70.slice/cri-containerd-{id}.scope")
        );
        assert_eq!(
            kubelet_path(
                Driver::Cgroupfs,
                Qos::Burstable,
                Runtime::Containerd,
                uid,
                &id
            ),
            format!("kubepods/burstable/pod{uid}/{id}")
        );
        assert_eq!(
            kubelet_path(
                Driver::Cgroupfs,
                Qos::Guaranteed,
                Runtime::Containerd,
                uid,
                &id
            ),
            format!("kubepods/pod{uid}/{id}")
        );
        assert_eq!(
            kubelet_path(Driver::Systemd, Qos::Burstable, Runtime::Crio, uid, &id),
            format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0c6e8b4e_7f2a_4d3b_9a51_2f6c1d8e9b70.slice/crio-{id}.scope")
        );
    }
}
