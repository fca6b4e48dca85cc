//! The kernel side seen from user space: load and attach the eBPF programs, read their maps and
//! their ring buffer.
//!
//! [`Probes::attach`] loads the programs built from `agent-ebpf` and attaches them at the cgroup v2
//! root in multi mode, so several agents (or other tools) can attach at once. Dropping the
//! [`Probes`] closes the links, which detaches everything.
//!
//! What the kernel records (see `agent_common` for the layouts):
//! - one flow table entry per (cgroup id, family, destination address, destination port,
//!   protocol). `count` counts TCP `connect()` calls, `connect()` calls of connected UDP sockets
//!   that sent at least one datagram afterwards, and unconnected UDP datagrams (`sendto`/`sendmsg`
//!   with an address); a connected UDP socket's datagrams are not counted one by one.
//! - replies of unconnected UDP sockets are not flows: a datagram sent with `sendto`/`sendmsg` to
//!   a peer (address and port) that had sent a unicast datagram to the same socket at most
//!   `agent_common::UDP_REPLY_WINDOW_NS` (30 s) earlier, before the socket's cgroup ever sent to
//!   that peer, is counted in `Counter::UdpRepliesSkipped` instead (a DNS server's answers, a
//!   statsd sink's acks). NetworkPolicy is stateful and needs no egress rule for them. A socket
//!   that sent to the peer first (a client getting its answer) is unaffected: its later datagrams
//!   to the peer are counted. Per socket: a reply from another socket than the one that received
//!   the request is still recorded. The kernel remembers `Options::udp_peer_entries` such peers
//!   (LRU); a forgotten one only means its replies are recorded, as before.
//! - a UDP `connect()` alone sends nothing and records nothing: glibc's getaddrinfo connects a
//!   throwaway socket to every answer to sort them, then closes it. The connect's destination (as
//!   the socket saw it: a Service ClusterIP stays the ClusterIP) is kept in the socket's own
//!   storage (`BPF_MAP_TYPE_SK_STORAGE`, freed with the socket), and the flow is recorded when the
//!   socket's first datagram leaves (`cgroup_skb/egress`), with `first_seen` at that moment; a
//!   socket closed without sending records nothing. No table of pending sockets exists to fill
//!   up: however many sockets a pod keeps connected without sending, another pod's connected
//!   socket still counts when it sends. A socket that reconnects before sending counts its last
//!   destination only; one disconnected (`AF_UNSPEC`) before sending counts none. A connected
//!   socket whose first datagram goes to an explicit other address (`sendto`) has that datagram
//!   recorded as well as its connect destination. A dual-stack socket connected to an
//!   IPv4-mapped address has each datagram counted instead (the kernel sends them as if
//!   addressed explicitly).
//! - an IPv4-mapped IPv6 destination (`::ffff:a.b.c.d`, from a dual-stack socket) is recorded as
//!   `AF_INET` with the IPv4 address, in the kernel; user space needs no normalisation.
//! - MPTCP connects are recorded as TCP; ICMP and raw sockets are not recorded.
//! - timestamps are `CLOCK_BOOTTIME` nanoseconds; `dport` is in host order, addresses in network
//!   order.
//! - TCP outcomes, from per-socket hooks and the two packets that answer a connect, never from a
//!   callback on every TCP state change: `established` when the SYN-ACK arrives, `refused` when a
//!   RST does (both taken only when they acknowledge the SYN, as TCP itself checks in SYN_SENT);
//!   `timed_out` when the socket is closed (or connects again) while its SYN is still unanswered,
//!   which includes an application giving up before the kernel did. A connect that fails before
//!   sending a SYN (no route, no local port) gets no outcome. UDP has none.
//! - new keys and DNS answers (UDP or TCP from source port 53, attributed to the receiving
//!   socket's cgroup) on the ring buffer. Over TCP each record is a piece of the stream placed by
//!   its sequence number (a message may span segments, a segment may hold messages), and the
//!   SYN-ACK announces where the stream starts. They are delivered within [`POLL_INTERVAL`]
//!   while events keep coming, within [`POLL_INTERVAL_IDLE`] after a quiet spell (the programs
//!   do not wake the reader for each record; see `EventReader::next_batch`).
//! - losses and totals in [`Probes::counters`], indexed by `agent_common::Counter`:
//!   `FlowInserted - flow_table().len()` is the number of flows the LRU evicted.

mod events;
mod loader;
mod maps;
pub mod programs;
mod stats;

pub use events::{DnsAnswer, EventReader, KernelEvent, POLL_INTERVAL, POLL_INTERVAL_IDLE};
pub use loader::{effective_capabilities, missing_capabilities, LeftOut, Options, Probes};
pub use stats::{enable_run_time_stats, ProgramStats};

/// Whether the running process has the capabilities loading and attaching need (see
/// [`Error::NotRoot`]).
pub fn has_privileges() -> bool {
    loader::check_privileges().is_ok()
}

/// Whether `path` is a cgroup v2 directory the programs can attach to.
pub fn is_cgroup2_dir(path: &std::path::Path) -> bool {
    loader::open_cgroup2(path).is_ok()
}

/// Why the probes could not be loaded, attached or read. Messages say what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("must run as root or with CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON")]
    NotRoot,
    #[error("program {0} cannot be left out: the flows would be wrong without it")]
    Required(&'static str),
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
