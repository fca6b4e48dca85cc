//! Test hosts for the agent's root integration tests.
//!
//! Every test builds its own little world (`docs/architecture.md`, "Tests"): network namespaces joined by
//! veth pairs through a bridge, "external" hosts in 198.18.0.0/15 and 2001:db8::/32, a dnsmasq DNS
//! host, real TCP and UDP servers, and pods as cgroups named the way the kubelet names them. Nothing
//! has a route to the real network, every address the tests send to belongs to a host built here,
//! and each piece is an RAII guard whose `Drop` removes it, also when a test panics.
//!
//! Needs root and, from Debian: `iproute2` (ip netns, veth, bridge), `dnsmasq-base`
//! (`/usr/sbin/dnsmasq`), `bind9-dnsutils` (`dig`, for DNS over TCP) and `python3` (servers and
//! clients); `cargo xtask setup` installs them. Run with `cargo test -p agent --test flows_e2e`.
//!
//! Names carry `ert-<pid>-<n>` so that test processes (and several tests in one process) can run in
//! parallel, and so that leftovers of a killed run can be recognised and swept (see [`netns`]).

// Each test binary that says `mod support;` uses a different part of the harness; what one binary
// leaves unused is not dead code.
#![allow(dead_code)]

pub mod agent;
pub mod cgroup;
pub mod dns;
pub mod expect;
pub mod hosts;
pub mod netns;
pub mod pods;
pub mod recommender;
pub mod servers;
pub mod traffic;

#[cfg(test)]
mod smoke;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// A prefix unique to this test process and to this call: `ert-<pid>-<n>`.
pub fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "ert-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// These tests build real namespaces and cgroups and load eBPF programs: they need root, and CI
/// runs them as root. They fail loudly rather than skip, so that a missing privilege is never
/// mistaken for a pass.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these integration tests need root (they create network namespaces, cgroups and load eBPF programs)"
    );
}

/// Runs a command to completion and panics with its output when it fails: set-up steps that fail
/// must stop the test with the reason, not leave it to time out later.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Like [`run`] but for clean-up paths, where a failure is reported and otherwise ignored: a guard's
/// `Drop` must go on removing the rest.
pub fn run_quiet(cmd: &mut Command) -> bool {
    match cmd.output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            eprintln!(
                "clean-up: {cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("clean-up: cannot run {cmd:?}: {e}");
            false
        }
    }
}

/// `n` random bytes as lower-case hex, from the kernel's generator (no extra crate needed).
pub fn random_hex(n_bytes: usize) -> String {
    let mut buf = vec![0u8; n_bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random pod UID in the API server's form (a version-4 style UUID).
pub fn random_uid() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// A temporary directory removed on drop (the tests keep their pods file, flows, pid files and
/// logs here).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", random_hex(4)));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("clean-up: rm -r {}: {e}", self.path.display());
        }
    }
}

/// Polls `f` every 50 ms until it returns `Some`, or gives up after `timeout` with `what` in the
/// panic message. Every wait in these tests is bounded.
pub fn wait_for<T>(
    what: &str,
    timeout: std::time::Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A child process killed and reaped on drop. Used for every long-running helper (servers, dnsmasq)
/// so that a panicking test leaves no process behind.
pub struct ChildGuard {
    pub name: String,
    pub child: std::process::Child,
}

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to this child (and only this one: its own pid, never a name pattern).
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own unreaped child, so it
        // cannot have been recycled for another process.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// Whether the child is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Expected for servers; for an agent it means the test failed before stopping it.
            if self.name == "agent" {
                eprintln!("clean-up: killing the agent (pid {})", self.child.id());
            }
            self.signal(libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Makes `cmd`'s child get SIGKILL when the thread that spawned it dies, so that a test process
/// killed outright (where no `Drop` runs) leaves no dnsmasq, server or agent behind. Each test
/// spawns and drops its helpers on its own thread, so the thread's end is the right moment.
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and the hook touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
