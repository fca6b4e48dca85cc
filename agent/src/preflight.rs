//! Start-up checks: what the agent needs from the node, checked before anything is loaded, so
//! that a node that cannot run it gets one message naming everything missing (and exit code 1)
//! instead of the first `EPERM` or `EINVAL` the kernel happens to return.
//!
//! - the kernel release: at least the newest `since` of the programs the flows cannot do without
//!   (`kernel::programs`); an optional program whose hook is newer than the kernel is left out
//!   with a warning;
//! - cgroup v2, mounted where the mount table says (`/sys/fs/cgroup` or, on hybrid hosts,
//!   `/sys/fs/cgroup/unified`);
//! - the capabilities: `CAP_BPF` and `CAP_PERFMON` (or `CAP_SYS_ADMIN`) to load the programs,
//!   `CAP_NET_ADMIN` to attach them.
//!
//! Kernel BTF (`/sys/kernel/btf/vmlinux`) is not needed: the programs use no CO-RE relocation,
//! and the socket-storage map's BTF travels in the agent's own object. Its absence is only noted.
//! The README ("Where it runs") has the version of every hook, helper and map type.

use std::path::{Path, PathBuf};

use crate::cgroup::mount;
use crate::kernel::{
    self,
    programs::{minimum_release, Release, PROGRAMS},
    Options,
};

const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// One thing the node lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Missing {
    /// The kernel is older than the programs the flows need.
    Kernel { running: Release, needed: Release },
    /// The kernel release could not be read or parsed.
    KernelRelease(String),
    /// No cgroup v2 hierarchy to attach to.
    Cgroup2(String),
    /// Capabilities the process lacks (names as in capabilities(7)).
    Capabilities(Vec<&'static str>),
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::Kernel { running, needed } => write!(
                f,
                "Linux {running} is older than {needed}, the oldest kernel the agent runs on \
                 (the ring buffer and bpf_ktime_get_boot_ns: see the README, \"Where it runs\")"
            ),
            Missing::KernelRelease(why) => write!(f, "cannot tell the kernel release: {why}"),
            Missing::Cgroup2(why) => write!(f, "no cgroup v2 hierarchy: {why}"),
            Missing::Capabilities(caps) => write!(
                f,
                "missing capabilities {} (run as root, or grant CAP_BPF, CAP_PERFMON and \
                 CAP_NET_ADMIN as deploy/base/agent.yaml does)",
                caps.join(", ")
            ),
        }
    }
}

/// Everything the node lacks, in one error.
#[derive(Debug, thiserror::Error)]
#[error("this node cannot run the agent: {}", list(.0))]
pub struct Error(pub Vec<Missing>);

fn list(missing: &[Missing]) -> String {
    missing
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What was found: where to attach, and what to leave out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub cgroup_root: PathBuf,
    pub release: Release,
    /// Optional programs whose hooks are newer than the kernel.
    pub left_out: Vec<&'static str>,
    pub btf: bool,
}

impl Plan {
    /// Loader options that leave out what this kernel lacks.
    pub fn options(&self) -> Options {
        Options {
            left_out: leak(&self.left_out),
            ..Options::default()
        }
    }
}

/// The facts the checks look at, gathered from the running system by [`Facts::gather`].
#[derive(Clone, Debug)]
pub struct Facts {
    /// `uname -r`, e.g. `6.18.0-1-amd64`.
    pub release: Result<String, String>,
    /// The effective capability set (`CapEff` of /proc/self/status).
    pub capabilities: u64,
    /// The cgroup v2 mount, or why there is none.
    pub cgroup2: Result<PathBuf, String>,
    pub btf: bool,
}

impl Facts {
    pub fn gather() -> Facts {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .map_err(|e| format!("/proc/sys/kernel/osrelease: {e}"));
        let capabilities = kernel::effective_capabilities();
        let cgroup2 = match mount::find_cgroup2_root() {
            Ok(root) if kernel::is_cgroup2_dir(&root) => Ok(root),
            Ok(root) => Err(format!("{} is not a cgroup2 filesystem", root.display())),
            Err(e) => Err(e.to_string()),
        };
        Facts {
            release,
            capabilities,
            cgroup2,
            btf: Path::new(BTF_PATH).exists(),
        }
    }
}

/// Checks the running system, logs what it found, and says where to attach and what to leave out.
pub fn check() -> Result<Plan, Error> {
    let plan = evaluate(&Facts::gather())?;
    tracing::info!(
        kernel = %plan.release,
        cgroup_root = %plan.cgroup_root.display(),
        btf = plan.btf,
        "start-up checks passed"
    );
    for name in &plan.left_out {
        if let Some(spec) = kernel::programs::spec(name) {
            tracing::warn!(
                program = spec.name,
                hook = spec.hook,
                needs = %spec.since,
                "this kernel lacks the hook: {}",
                spec.optional.unwrap_or_default()
            );
        }
    }
    Ok(plan)
}

/// The checks, on given facts.
pub fn evaluate(facts: &Facts) -> Result<Plan, Error> {
    let mut missing = Vec::new();
    let release = match &facts.release {
        Ok(text) => match parse_release(text) {
            Some(r) => Some(r),
            None => {
                missing.push(Missing::KernelRelease(format!("{text:?} is not a release")));
                None
            }
        },
        Err(why) => {
            missing.push(Missing::KernelRelease(why.clone()));
            None
        }
    };
    if let Some(running) = release {
        let needed = minimum_release();
        if running < needed {
            missing.push(Missing::Kernel { running, needed });
        }
    }
    if let Err(why) = &facts.cgroup2 {
        missing.push(Missing::Cgroup2(why.clone()));
    }
    let caps = kernel::missing_capabilities(facts.capabilities);
    if !caps.is_empty() {
        missing.push(Missing::Capabilities(caps));
    }
    if !missing.is_empty() {
        return Err(Error(missing));
    }
    let release = release.expect("checked above");
    Ok(Plan {
        cgroup_root: facts.cgroup2.clone().expect("checked above"),
        release,
        left_out: PROGRAMS
            .iter()
            .filter(|p| p.optional.is_some() && p.since > release)
            .map(|p| p.name)
            .collect(),
        btf: facts.btf,
    })
}

/// `6.18.0-1-amd64` → 6.18; `5.10.0` → 5.10.
pub fn parse_release(text: &str) -> Option<Release> {
    let mut parts = text.trim().split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()?;
    Some(Release::new(major, minor))
}

/// The loader takes `&'static` names; the plan's are, but live in a Vec. Program names come from
/// the static table, so this leaks at most one small slice per start.
fn leak(names: &[&'static str]) -> &'static [&'static str] {
    Box::leak(names.to_vec().into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(release: &str, caps: u64) -> Facts {
        Facts {
            release: Ok(release.to_owned()),
            capabilities: caps,
            cgroup2: Ok(PathBuf::from("/sys/fs/cgroup")),
            btf: false,
        }
    }

    const ALL: u64 = u64::MAX;

    #[test]
    fn releases_parse() {
        assert_eq!(parse_release("6.18.0-1-amd64"), Some(Release::new(6, 18)));
        assert_eq!(parse_release("5.10.0"), Some(Release::new(5, 10)));
        assert_eq!(
            parse_release("5.15.153.1-microsoft-standard-WSL2"),
            Some(Release::new(5, 15))
        );
        assert_eq!(parse_release("4.19-rc1"), Some(Release::new(4, 19)));
        assert_eq!(parse_release("5.9+"), Some(Release::new(5, 9)));
        assert_eq!(parse_release("linux"), None);
        assert_eq!(parse_release(""), None);
    }

    #[test]
    fn a_current_kernel_with_everything_passes_and_leaves_nothing_out() {
        let plan = evaluate(&facts("6.18.0", ALL)).unwrap();
        assert!(plan.left_out.is_empty());
        assert_eq!(plan.release, Release::new(6, 18));
        let plan = evaluate(&facts("5.10.0-28-cloud-amd64", ALL)).unwrap();
        assert!(plan.left_out.is_empty(), "{plan:?}");
    }

    #[test]
    fn a_kernel_without_an_optional_hook_leaves_its_program_out() {
        let plan = evaluate(&facts("5.8.18", ALL)).unwrap();
        assert_eq!(plan.left_out, ["sock_release"]);
        assert_eq!(plan.options().left_out, ["sock_release"]);
    }

    #[test]
    fn everything_missing_is_named_at_once() {
        let mut f = facts("5.4.0-150-generic", 0);
        f.cgroup2 = Err("no cgroup2 mount in /proc/self/mountinfo".into());
        let err = evaluate(&f).unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
        let text = err.to_string();
        for part in [
            "Linux 5.4 is older than 5.8",
            "no cgroup v2 hierarchy: no cgroup2 mount",
            "CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN",
        ] {
            assert!(text.contains(part), "{part:?} not in {text}");
        }
        let err = evaluate(&Facts {
            release: Err("gone".into()),
            ..facts("", ALL)
        })
        .unwrap_err();
        assert_eq!(err.0, [Missing::KernelRelease("gone".into())]);
    }
}
