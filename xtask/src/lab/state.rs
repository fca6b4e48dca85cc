//! What a lab has created, written down as it goes: the lock that keeps a second lab from
//! starting, the list `--down` removes, and what the guard removes on success, failure or Ctrl-C.
//!
//! The file is written after every addition, so that whatever happens to the process that made
//! them, every namespace (with its veths, bridge and nftables tables), `/etc/netns` directory,
//! cgroup and process of the lab can be found again. Processes are recorded with their start
//! time, so that a recycled pid is never killed by mistake.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The lab's lock and record. One lab per machine.
pub const STATE_FILE: &str = "/run/egress-recommender-lab.json";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Proc {
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat`: with the pid, names one process for good.
    pub start: u64,
    pub what: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub owner: Proc,
    /// Left running by `--keep`: only `--down` removes it.
    pub kept: bool,
    pub netns: Vec<String>,
    pub dirs: Vec<PathBuf>,
    pub cgroups: Vec<PathBuf>,
    pub procs: Vec<Proc>,
    /// What `--keep` tells the user, kept for `--down` to repeat nothing but remove.
    pub notes: Vec<String>,
}

/// The record of the running lab; dropping it removes everything it lists, unless kept.
pub struct Lab {
    pub state: State,
    path: PathBuf,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C, SIGTERM and SIGHUP set a flag that every wait of the lab checks; the lab then
/// unwinds and its guard cleans up.
pub fn catch_signals() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(signal, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Fails once a signal asked the lab to stop.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted: removing the lab");
    }
    Ok(())
}

/// Sleeps, waking up early to fail when interrupted.
pub fn sleep(duration: Duration) -> Result<()> {
    let end = Instant::now() + duration;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}

impl Proc {
    pub fn of(pid: u32, what: &str) -> Proc {
        Proc {
            pid,
            start: start_time(pid).unwrap_or(0),
            what: what.to_owned(),
        }
    }

    /// True while the very process recorded runs (not another one with its pid).
    pub fn alive(&self) -> bool {
        start_time(self.pid).is_some_and(|s| s == self.start)
    }

    fn signal(&self, signal: libc::c_int) {
        if self.alive() {
            // SAFETY: kill has no memory preconditions; the pid was just checked to be ours.
            unsafe {
                libc::kill(self.pid as libc::pid_t, signal);
            }
        }
    }
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from the closing parenthesis.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

impl Lab {
    /// Takes the lock, or says why not.
    pub fn begin() -> Result<Lab> {
        Self::begin_at(Path::new(STATE_FILE))
    }

    fn begin_at(path: &Path) -> Result<Lab> {
        let state = State {
            owner: Proc::of(std::process::id(), "cargo xtask lab"),
            ..State::default()
        };
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let other = read(path)?;
                if other.kept {
                    bail!("a lab kept with --keep is still up: remove it first with `cargo xtask lab --down`");
                }
                if other.owner.alive() {
                    bail!(
                        "a lab is already running (pid {}); wait for it, or stop it with Ctrl-C there",
                        other.owner.pid
                    );
                }
                bail!(
                    "a previous lab (pid {}) ended without cleaning up: remove what it left with `cargo xtask lab --down`",
                    other.owner.pid
                );
            }
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        }
        let lab = Lab {
            state,
            path: path.to_owned(),
        };
        lab.save()?;
        Ok(lab)
    }

    /// The record a kept (or crashed) lab left, to remove it.
    pub fn resume() -> Result<Option<Lab>> {
        let path = Path::new(STATE_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let state = read(path)?;
        if !state.kept && state.owner.alive() && state.owner.pid != std::process::id() {
            bail!(
                "the lab of pid {} is running, not kept: stop it with Ctrl-C there",
                state.owner.pid
            );
        }
        Ok(Some(Lab {
            state,
            path: path.to_owned(),
        }))
    }

    pub fn save(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.state)?;
        std::fs::write(&self.path, text).with_context(|| format!("writing {}", self.path.display()))
    }

    pub fn add_netns(&mut self, name: &str) -> Result<()> {
        self.state.netns.push(name.to_owned());
        self.save()
    }

    pub fn add_dir(&mut self, dir: &Path) -> Result<()> {
        self.state.dirs.push(dir.to_owned());
        self.save()
    }

    pub fn add_cgroup(&mut self, dir: &Path) -> Result<()> {
        self.state.cgroups.push(dir.to_owned());
        self.save()
    }

    pub fn add_proc(&mut self, pid: u32, what: &str) -> Result<()> {
        self.state.procs.push(Proc::of(pid, what));
        self.save()
    }

    /// Stops one recorded process (SIGTERM, then SIGKILL after `grace`) and forgets it.
    pub fn stop_proc(&mut self, pid: u32, grace: Duration) -> Result<()> {
        if let Some(i) = self.state.procs.iter().position(|p| p.pid == pid) {
            let p = self.state.procs.remove(i);
            stop(&[p], grace);
            self.save()?;
        }
        Ok(())
    }

    /// Leaves everything running; `--down` removes it later.
    pub fn keep(mut self) -> Result<()> {
        self.state.kept = true;
        self.save()?;
        std::mem::forget(self);
        Ok(())
    }

    /// Removes everything, in order: processes, namespaces (their links, bridge and nftables
    /// tables go with them), resolver directories, cgroups (leaf first), then the record.
    fn teardown(&mut self) {
        stop(&self.state.procs, Duration::from_secs(3));
        for cgroup in &self.state.cgroups {
            // Whatever still runs in a pod's cgroup belongs to the lab.
            let _ = std::fs::write(cgroup.join("cgroup.kill"), "1");
        }
        for ns in self.state.netns.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        for dir in &self.state.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        for cgroup in self.state.cgroups.iter().rev() {
            // The pod's scope and slice, then the kubelet's shared parents when nothing else
            // lives there (rmdir of a cgroup with children fails).
            let kubelet = |d: &&Path| {
                d.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("kubepods") || n.starts_with("cri-containerd-"))
            };
            let mut dir = Some(cgroup.as_path());
            let mut waited = 0;
            while let Some(d) = dir.filter(kubelet) {
                match std::fs::remove_dir(d) {
                    Ok(()) => dir = d.parent(),
                    // A killed process leaves its own cgroup a moment later.
                    Err(e)
                        if d == cgroup && e.raw_os_error() == Some(libc::EBUSY) && waited < 50 =>
                    {
                        waited += 1;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(_) => break,
                }
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }

    /// What is left of the lab, if anything: for the checks that it removed everything.
    pub fn leftovers(state: &State) -> Vec<String> {
        let mut left = Vec::new();
        left.extend(
            state
                .procs
                .iter()
                .filter(|p| p.alive())
                .map(|p| format!("process {} ({})", p.pid, p.what)),
        );
        left.extend(
            state
                .netns
                .iter()
                .filter(|n| Path::new("/run/netns").join(n).exists())
                .map(|n| format!("netns {n}")),
        );
        left.extend(
            state
                .dirs
                .iter()
                .filter(|d| d.exists())
                .map(|d| format!("{}", d.display())),
        );
        left.extend(
            state
                .cgroups
                .iter()
                .filter(|d| d.exists())
                .map(|d| format!("cgroup {}", d.display())),
        );
        left
    }

    /// Removes the lab now (for `--down`), and checks that nothing is left.
    pub fn down(mut self) -> Result<()> {
        let state = std::mem::take(&mut self.state);
        self.state = state;
        self.teardown();
        let left = Lab::leftovers(&self.state);
        std::mem::forget(self);
        if !left.is_empty() {
            bail!("could not remove: {}", left.join(", "));
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn read(path: &Path) -> Result<State> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a lab record; remove it by hand if no lab runs",
            path.display()
        )
    })
}

/// SIGTERM to each, a grace period, then SIGKILL to those left.
fn stop(procs: &[Proc], grace: Duration) {
    for p in procs {
        p.signal(libc::SIGTERM);
    }
    let end = Instant::now() + grace;
    while Instant::now() < end && procs.iter().any(Proc::alive) {
        reap();
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in procs {
        p.signal(libc::SIGKILL);
    }
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end && procs.iter().any(Proc::alive) {
        reap();
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Collects exited children, so that they stop being zombies (which still have a start time).
fn reap() {
    // SAFETY: waitpid with WNOHANG on any child has no memory preconditions.
    unsafe { while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {} }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lab_is_refused_and_a_dead_one_named() {
        let path = std::env::temp_dir().join(format!("lab-state-{}.json", std::process::id()));
        let lab = Lab::begin_at(&path).unwrap();
        let e = Lab::begin_at(&path).err().unwrap().to_string();
        assert!(e.contains("already running"), "{e}");
        drop(lab);
        assert!(!path.exists());
        std::fs::write(&path, r#"{"owner":{"pid":4194999,"start":1,"what":"x"},"kept":false,"netns":[],"dirs":[],"cgroups":[],"procs":[],"notes":[]}"#).unwrap();
        let e = Lab::begin_at(&path).err().unwrap().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(e.contains("--down"), "{e}");
    }

    #[test]
    fn start_time_names_this_process() {
        let me = Proc::of(std::process::id(), "test");
        assert!(me.start > 0 && me.alive());
    }
}
