//! The kernel programs, their hooks, and the oldest kernel each one runs on.
//!
//! One table serves the loader (what to attach, how, and whether the agent can do without it),
//! the statistics, and the start-up checks (`crate::preflight`). The versions are those of the
//! upstream commits that introduced each hook, helper and map type a program uses (the
//! README's "Where it runs" lists them one by one); a program needs the newest of its parts.

/// A kernel release, as `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Release {
    pub major: u32,
    pub minor: u32,
}

impl Release {
    pub const fn new(major: u32, minor: u32) -> Release {
        Release { major, minor }
    }
}

impl std::fmt::Display for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// How a program attaches to the cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// `BPF_PROG_TYPE_CGROUP_SOCK_ADDR`; the attach type comes from the program's section.
    SockAddr,
    /// `BPF_PROG_TYPE_CGROUP_SKB` on `BPF_CGROUP_INET_INGRESS`.
    SkbIngress,
    /// `BPF_PROG_TYPE_CGROUP_SKB` on `BPF_CGROUP_INET_EGRESS`.
    SkbEgress,
    /// `BPF_PROG_TYPE_CGROUP_SOCK`; the attach type comes from the program's section.
    Sock,
}

/// One kernel program of `agent-ebpf`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramSpec {
    /// Function name in `agent-ebpf` (and the program's name in the object).
    pub name: &'static str,
    /// The hook, as `bpftool cgroup` names it.
    pub hook: &'static str,
    pub attach: Attach,
    /// The oldest kernel with the hook and every helper and map type the program uses.
    pub since: Release,
    /// `None` when the flows would be wrong without the program; otherwise what is lost, for the
    /// warning when it is left out.
    pub optional: Option<&'static str>,
}

/// Every program, in attach order. A hook's table entries are attached before the programs that
/// read them: the per-packet and release programs first, so that no connect recorded by
/// `connect4` misses its answer.
pub const PROGRAMS: [ProgramSpec; 7] = [
    ProgramSpec {
        name: "ingress",
        hook: "cgroup_skb/ingress",
        attach: Attach::SkbIngress,
        // cgroup_skb 4.10; bpf_skb_cgroup_id in cgroup_skb 5.3; ring buffer 5.8.
        since: Release::new(5, 8),
        optional: None,
    },
    ProgramSpec {
        name: "egress",
        hook: "cgroup_skb/egress",
        attach: Attach::SkbEgress,
        // socket storage 5.2; bpf_ktime_get_boot_ns and the ring buffer 5.8.
        since: Release::new(5, 8),
        optional: None,
    },
    ProgramSpec {
        name: "sock_release",
        hook: "cgroup/sock_release",
        attach: Attach::Sock,
        // The hook and socket storage in cgroup sock programs: 5.9.
        since: Release::new(5, 9),
        optional: Some(
            "TCP connects that time out are reported without an outcome (count only); \
             every flow is still recorded",
        ),
    },
    ProgramSpec {
        name: "connect4",
        hook: "cgroup/connect4",
        attach: Attach::SockAddr,
        // The hook 4.17; socket storage from sock_addr 5.3; the ring buffer 5.8.
        since: Release::new(5, 8),
        optional: None,
    },
    ProgramSpec {
        name: "connect6",
        hook: "cgroup/connect6",
        attach: Attach::SockAddr,
        since: Release::new(5, 8),
        optional: None,
    },
    ProgramSpec {
        name: "sendmsg4",
        hook: "cgroup/sendmsg4",
        attach: Attach::SockAddr,
        // The hook 4.18; the ring buffer 5.8.
        since: Release::new(5, 8),
        optional: None,
    },
    ProgramSpec {
        name: "sendmsg6",
        hook: "cgroup/sendmsg6",
        attach: Attach::SockAddr,
        since: Release::new(5, 8),
        optional: None,
    },
];

/// The program called `name`, if there is one.
pub fn spec(name: &str) -> Option<&'static ProgramSpec> {
    PROGRAMS.iter().find(|p| p.name == name)
}

/// The oldest kernel the agent runs on: the newest `since` of the programs it cannot do without.
pub fn minimum_release() -> Release {
    PROGRAMS
        .iter()
        .filter(|p| p.optional.is_none())
        .map(|p| p.since)
        .max()
        .unwrap_or(Release::new(0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimum_is_the_ring_buffer_kernel_and_names_are_unique() {
        assert_eq!(minimum_release(), Release::new(5, 8));
        for (i, p) in PROGRAMS.iter().enumerate() {
            assert!(
                PROGRAMS[i + 1..].iter().all(|q| q.name != p.name),
                "{}",
                p.name
            );
            assert_eq!(spec(p.name), Some(p));
        }
        assert!(spec("tcp_outcome").is_none());
        assert!(Release::new(5, 10) > Release::new(5, 9));
        assert!(Release::new(6, 1) > Release::new(5, 19));
        assert_eq!(Release::new(5, 10).to_string(), "5.10");
    }
}
