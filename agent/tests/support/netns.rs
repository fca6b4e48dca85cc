//! Named network namespaces (`ip netns`), removed on drop.

use std::path::PathBuf;
use std::process::Command;

use super::{run, run_quiet};

/// A network namespace created with `ip netns add`; `Drop` deletes it and its
/// `/etc/netns/<name>/` directory. Deleting the namespace also destroys the veth ends inside it,
/// which takes their peers in other namespaces with them.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(name: &str) -> Netns {
        run(Command::new("ip").args(["netns", "add", name]));
        let ns = Netns {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        // Duplicate address detection would hold new IPv6 addresses "tentative" for a second or two;
        // these links are private to the test, so there is nothing to detect.
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> <args>`, panicking on failure.
    pub fn ip(&self, args: &[&str]) {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args));
    }

    /// Sets a sysctl of this namespace (`net.ipv6.conf.all.accept_dad`) by writing its
    /// `/proc/sys` file from inside, which needs only `sh` (not procps' `sysctl`).
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        run(self
            .exec("sh")
            .args(["-c", "echo \"$1\" > \"$2\"", "sh", value, &path]));
    }

    /// A command that runs `program` inside this namespace via `ip netns exec`, which also
    /// bind-mounts `/etc/netns/<ns>/resolv.conf` (see [`Netns::set_resolver`]) over
    /// `/etc/resolv.conf` for it. `ip` execs the program in place, so the child's pid is the
    /// program's.
    pub fn exec(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Points the resolver of processes started with [`Netns::exec`] at `nameserver`.
    pub fn set_resolver(&self, nameserver: &str) {
        let dir = self.etc_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        // attempts:2 timeout:1 keeps a lost query from stalling a test for the glibc default of 5 s
        // times 2, while still retrying once.
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {nameserver}\noptions attempts:2 timeout:1\n"),
        )
        .expect("write resolv.conf");
    }

    fn etc_dir(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        run_quiet(Command::new("ip").args(["netns", "del", &self.name]));
        let dir = self.etc_dir();
        if dir.exists() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// Deletes namespaces left by earlier test processes that were killed before their guards ran
/// (`ert-<pid>-...` whose pid no longer exists). Namespaces of live processes, which may be tests
/// running in parallel right now, are left alone.
pub fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = stale_owner(name) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            run_quiet(Command::new("ip").args(["netns", "del", name]));
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(name));
        }
    }
}

/// The pid in an `ert-<pid>-...` name.
fn stale_owner(name: &str) -> Option<u32> {
    name.strip_prefix("ert-")?.split('-').next()?.parse().ok()
}
