//! The kernel side seen from user space: load and attach the eBPF programs, read their maps and
//! their ring buffer.
//!
//! [`Probes::attach`] loads the programs built from `agent-ebpf` and attaches them at the cgroup v2
//! root with `BPF_F_ALLOW_MULTI`, so several agents (or other tools) can attach at once. Dropping
//! the [`Probes`] closes the links, which detaches everything.

mod events;
mod loader;
mod maps;
mod stats;

pub use events::{DnsAnswer, EventReader, KernelEvent, POLL_INTERVAL};
pub use loader::{Options, Probes};
pub use stats::{enable_run_time_stats, ProgramStats};

/// Why the probes could not be loaded, attached or read. Messages say what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("must run as root or with CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON")]
    NotRoot,
    #[error("no BTF at /sys/kernel/btf/vmlinux (the kernel needs CONFIG_DEBUG_INFO_BTF=y)")]
    NoBtf,
    #[error("cgroup v2 is not mounted at the given path: {0}")]
    NoCgroup2(#[source] std::io::Error),
    #[error("loading the eBPF object failed: {}", chain(.0))]
    Load(#[source] aya::EbpfError),
    #[error(
        "the eBPF object has no {0} (agent built without its kernel programs? see AYA_BUILD_SKIP)"
    )]
    Missing(&'static str),
    #[error("the kernel rejected program {program}: {}", chain(.source))]
    Verify {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("attaching program {program} failed: {}", chain(.source))]
    Attach {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("querying program {program} failed: {}", chain(.source))]
    Query {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map access failed: {}", chain(.0))]
    Map(#[from] aya::maps::MapError),
    #[error("the event reader was already taken")]
    EventsTaken,
    #[error("the event reader needs a running tokio runtime")]
    NoRuntime,
    #[error("reading kernel events: {0}")]
    Io(#[source] std::io::Error),
}

/// aya's errors often say only which syscall failed and keep the errno in their source: show the
/// whole chain so that "Permission denied" or "Invalid argument" reaches the user.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let part = c.to_string();
        if !s.contains(&part) {
            s.push_str(": ");
            s.push_str(&part);
        }
        cur = c.source();
    }
    s
}
