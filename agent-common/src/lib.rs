//! The ABI shared by the kernel programs (`agent-ebpf`) and the node agent (`agent`).
//!
//! Every type here is `#[repr(C)]` with explicit padding, so that the kernel and user space agree on
//! layout byte for byte; the tests at the bottom pin sizes and alignments. Enumerations that cross the
//! boundary have explicit discriminants and are carried as plain integers.
#![no_std]

/// `AF_INET`, as the kernel numbers it.
pub const AF_INET: u8 = 2;
/// `AF_INET6`, as the kernel numbers it.
pub const AF_INET6: u8 = 10;

/// IP protocol numbers carried in [`FlowKey::protocol`].
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_SCTP: u8 = 132;

/// Capacity of the in-kernel flow table (LRU hash). User space may override it at load time.
pub const FLOW_MAP_ENTRIES: u32 = 65_536;
/// Capacity of the table of peers an unconnected UDP socket may answer (LRU hash), keyed by
/// [`UdpPeerKey`]. One entry per (server socket, client address and port) seen in the last
/// moments: a busy server evicts its oldest clients first, whose replies are then recorded as
/// flows (as without the table), never suppressed.
pub const UDP_PEER_ENTRIES: u32 = 16_384;
/// How long after a peer's last datagram to a socket a datagram from that socket back to the peer
/// is taken as a reply (and not recorded). 30 s is the shortest time any stateful firewall keeps a
/// UDP "connection" (conntrack's unreplied UDP timeout): within it, NetworkPolicy allows the reply
/// without an egress rule.
pub const UDP_REPLY_WINDOW_NS: u64 = 30_000_000_000;
/// Ring buffer size in bytes (must be a power of two and a multiple of the page size).
pub const EVENTS_RING_BYTES: u32 = 1 << 20;
/// Bytes of DNS payload copied to user space in one ring-buffer record (a power of two). A UDP
/// answer longer than this is cut (user space counts it and uses what was received); a TCP
/// segment longer than this is copied in several records (see [`DNS_TCP_CHUNKS_MAX`]).
pub const DNS_CAPTURE_MAX: usize = 4096;
/// Records one TCP segment from port 53 may be copied in: 17 × 4 KiB covers the largest DNS
/// message (64 KiB and its two-byte length prefix) even when GRO/GSO hand the socket one large
/// segment. What a larger (BIG TCP) segment holds beyond that is lost, and user space counts the
/// message it belongs to as cut.
pub const DNS_TCP_CHUNKS_MAX: usize = 17;

/// Aggregation key of one egress flow: who (cgroup) sent what to where.
///
/// Addresses are in network byte order; an IPv4 address lives in the first four bytes of `daddr`
/// and the rest are zero. `dport` is in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub cgroup_id: u64,
    pub daddr: [u8; 16],
    pub dport: u16,
    pub family: u8,
    pub protocol: u8,
    pub _pad: [u8; 4],
}

/// Aggregated counters of one [`FlowKey`]. Timestamps are `CLOCK_BOOTTIME` nanoseconds.
///
/// `count` counts TCP connects, connects of UDP sockets that then sent at least one datagram, and
/// datagrams sent by unconnected UDP sockets. The outcome counters are filled in later, from the
/// socket's state changes, for TCP only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub count: u64,
    pub established: u32,
    pub refused: u32,
    pub timed_out: u32,
    pub _pad: u32,
}

/// What a socket's local storage (`BPF_MAP_TYPE_SK_STORAGE`) remembers between its `connect()`
/// and the moment its flow is complete: the socket's own memory, freed with the socket, so no
/// table can fill up or be crowded out by another pod's sockets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingSocket {
    /// The flow key of the socket's last `connect()`, as the socket saw its destination.
    pub key: FlowKey,
    /// One of the `PENDING_*` states below.
    pub state: u8,
    pub _pad: [u8; 7],
}

/// [`PendingSocket::state`]: a TCP connect whose SYN has not left yet (a connect that fails
/// before sending one, e.g. no route, gets no outcome).
pub const PENDING_TCP_CONNECT: u8 = 1;
/// A TCP connect whose SYN left: the SYN-ACK or a RST gives its outcome; a close first is a
/// timeout (or the application gave up).
pub const PENDING_TCP_SYN_SENT: u8 = 2;
/// A connected UDP socket that has not sent yet: its flow counts at its first datagram.
pub const PENDING_UDP: u8 = 3;

/// A peer that sent a datagram to an unconnected UDP socket before the socket sent anything to it
/// (the socket answers: a DNS server, a statsd sink). The value is the time of the peer's last
/// datagram, in `CLOCK_MONOTONIC` ns (`bpf_ktime_get_ns`: only the kernel compares
/// it, unlike the BOOTTIME stamps of the flow table). Datagrams the socket sends back to the peer
/// within
/// [`UDP_REPLY_WINDOW_NS`] are replies: stateful policy allows them, so they are not flows.
///
/// The address is the peer's as it appears in the received packet (network byte order, IPv4 in
/// the first four bytes), `port` in host byte order, `family` `AF_INET` for IPv4 also when the
/// socket is a dual-stack IPv6 one (the sendmsg side normalises `::ffff:a.b.c.d` the same way).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UdpPeerKey {
    /// Socket cookie of the receiving (and answering) socket.
    pub cookie: u64,
    pub addr: [u8; 16],
    pub port: u16,
    pub family: u8,
    pub _pad: [u8; 5],
}

/// Discriminant of every ring-buffer event; the first field of each event.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A flow key seen for the first time ([`NewFlowEvent`]).
    NewFlow = 1,
    /// A DNS answer delivered to a socket ([`DnsEvent`]).
    DnsAnswer = 2,
}

impl EventKind {
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::NewFlow),
            2 => Some(Self::DnsAnswer),
            _ => None,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewFlowEvent {
    /// Always `EventKind::NewFlow as u32`.
    pub kind: u32,
    pub _pad: u32,
    pub key: FlowKey,
}

/// Transport a DNS answer arrived on. Over TCP the payload starts with the two-byte length prefix.
pub const DNS_TRANSPORT_UDP: u8 = IPPROTO_UDP;
pub const DNS_TRANSPORT_TCP: u8 = IPPROTO_TCP;

/// Bytes of DNS records one cgroup may put on the ring buffer per second, sustained, and in a
/// burst: a quarter of the default ring. A pod flooding the node with DNS answers then uses up
/// its own budget, not the ring that every pod's answers share; beyond it, its records are dropped
/// and counted ([`Counter::DnsRateLimited`]). A busy pod's answers (a few hundred a second, a few
/// hundred bytes each) stay far below it.
pub const DNS_BUDGET_BYTES_PER_SEC: u64 = 256 * 1024;
pub const DNS_BUDGET_BURST_BYTES: u32 = 256 * 1024;
/// Capacity of the per-cgroup budget table (LRU: the least recently answered cgroup is forgotten
/// first, and starts again with a full budget).
pub const DNS_BUDGET_ENTRIES: u32 = 8_192;

/// What is left of one cgroup's DNS budget ([`DNS_BUDGET_BYTES_PER_SEC`]), keyed by cgroup id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsBudget {
    /// `CLOCK_MONOTONIC` ns of the last refill.
    pub refilled_ns: u64,
    /// Bytes left.
    pub tokens: u32,
    pub _pad: u32,
}

/// [`DnsEvent::flags`]: the SYN-ACK of a TCP connection from port 53. It carries no payload; its
/// `seq` is the sequence number of the stream's first byte, where the first message's length
/// prefix starts.
pub const DNS_FLAG_STREAM_START: u8 = 1;

/// A bounded copy of DNS payload (the transport payload of one packet, or one chunk of it),
/// attributed to the receiving socket's cgroup.
///
/// Over UDP one record is one datagram, cut after [`DNS_CAPTURE_MAX`] bytes. Over TCP a DNS
/// message may span several segments and a segment may hold several messages, so each record is a
/// piece of the byte stream: `seq` places it, the socket cookie names the stream, and user space
/// reassembles the messages by their length prefixes.
///
/// On the ring buffer a record ends after `captured_len` payload bytes (it is shorter than this
/// struct unless the copy was cut): readers must bound the payload by the record's length.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsEvent {
    /// Always `EventKind::DnsAnswer as u32`.
    pub kind: u32,
    /// Length of the packet's transport payload; larger than `captured_len` when the copy was cut
    /// or is one chunk of several.
    pub wire_len: u32,
    pub cgroup_id: u64,
    /// Cookie of the receiving socket: over TCP, the stream the bytes belong to.
    pub socket_cookie: u64,
    /// TCP: sequence number of `payload[0]`. UDP: 0.
    pub seq: u32,
    pub captured_len: u16,
    pub family: u8,
    pub transport: u8,
    /// `DNS_FLAG_*` bits.
    pub flags: u8,
    pub _pad: [u8; 7],
    pub payload: [u8; DNS_CAPTURE_MAX],
}

/// Indexes of the per-CPU loss counters (`LOSS_COUNTERS` array). Every index is exported as a metric.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// A new flow could not be announced: the ring buffer was full.
    RingFullNewFlow = 0,
    /// A DNS answer could not be copied: the ring buffer was full.
    RingFullDns = 1,
    /// An update of the flow table failed.
    FlowUpdateFailed = 2,
    /// Keys inserted into the flow table. With the live entry count this yields LRU evictions.
    FlowInserted = 3,
    /// A TCP outcome arrived for a socket whose connect was no longer pending (evicted).
    OutcomeUnmatched = 4,
    /// Datagrams an unconnected UDP socket sent back to a peer that had just sent to it (see
    /// [`UdpPeerKey`]): replies, not recorded as flows.
    UdpRepliesSkipped = 5,
    /// A socket's local storage could not be created at `connect()` (kernel memory or the
    /// socket's option-memory limit): a TCP connect then gets no outcome, and a connected UDP
    /// socket's flow is recorded at once instead of at its first datagram.
    SocketStorageFailed = 6,
    /// A DNS record was not copied: its cgroup had used up its budget
    /// ([`DNS_BUDGET_BYTES_PER_SEC`]).
    DnsRateLimited = 7,
}

/// Number of entries in the loss counter array.
pub const COUNTER_SLOTS: u32 = 8;

#[cfg(feature = "user")]
mod user {
    // SAFETY: all of these are `#[repr(C)]`, made only of integers and byte arrays, with explicit
    // padding fields, so every bit pattern is valid and there are no implicit padding bytes.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowValue {}
    unsafe impl aya::Pod for super::PendingSocket {}
    unsafe impl aya::Pod for super::UdpPeerKey {}
    unsafe impl aya::Pod for super::DnsBudget {}
    unsafe impl aya::Pod for super::NewFlowEvent {}
    unsafe impl aya::Pod for super::DnsEvent {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn layouts_are_pinned() {
        assert_eq!(size_of::<FlowKey>(), 32);
        assert_eq!(align_of::<FlowKey>(), 8);
        assert_eq!(offset_of!(FlowKey, daddr), 8);
        assert_eq!(offset_of!(FlowKey, dport), 24);
        assert_eq!(offset_of!(FlowKey, family), 26);
        assert_eq!(offset_of!(FlowKey, protocol), 27);
        assert_eq!(size_of::<FlowValue>(), 40);
        assert_eq!(size_of::<PendingSocket>(), 40);
        assert_eq!(size_of::<DnsBudget>(), 16);
        assert_eq!(offset_of!(DnsBudget, tokens), 8);
        assert_eq!(offset_of!(PendingSocket, state), 32);
        assert_eq!(size_of::<NewFlowEvent>(), 40);
        assert_eq!(offset_of!(NewFlowEvent, key), 8);
        assert_eq!(offset_of!(DnsEvent, wire_len), 4);
        assert_eq!(offset_of!(DnsEvent, cgroup_id), 8);
        assert_eq!(offset_of!(DnsEvent, socket_cookie), 16);
        assert_eq!(offset_of!(DnsEvent, seq), 24);
        assert_eq!(offset_of!(DnsEvent, captured_len), 28);
        assert_eq!(offset_of!(DnsEvent, family), 30);
        assert_eq!(offset_of!(DnsEvent, transport), 31);
        assert_eq!(offset_of!(DnsEvent, flags), 32);
        assert_eq!(offset_of!(DnsEvent, payload), 40);
        assert_eq!(size_of::<DnsEvent>(), 40 + DNS_CAPTURE_MAX);
        assert!(DNS_CAPTURE_MAX.is_power_of_two());
        assert!(DNS_CAPTURE_MAX * DNS_TCP_CHUNKS_MAX >= 2 + u16::MAX as usize);
        assert_eq!(size_of::<UdpPeerKey>(), 32);
        assert_eq!(align_of::<UdpPeerKey>(), 8);
        assert_eq!(offset_of!(UdpPeerKey, addr), 8);
        assert_eq!(offset_of!(UdpPeerKey, port), 24);
        assert_eq!(offset_of!(UdpPeerKey, family), 26);
        assert_eq!(offset_of!(UdpPeerKey, _pad), 27);
    }

    #[test]
    fn event_kinds_round_trip() {
        for k in [EventKind::NewFlow, EventKind::DnsAnswer] {
            assert_eq!(EventKind::from_u32(k as u32), Some(k));
        }
        assert_eq!(EventKind::from_u32(0), None);
        assert_eq!(EventKind::from_u32(3), None);
    }

    #[test]
    fn counters_fit_the_array() {
        assert_eq!(COUNTER_SLOTS, 8);
        assert_eq!(Counter::UdpRepliesSkipped as u32, 5);
        assert_eq!(Counter::SocketStorageFailed as u32, 6);
        assert_eq!(Counter::DnsRateLimited as u32, 7);
        assert!((Counter::DnsRateLimited as u32) < COUNTER_SLOTS);
        assert_eq!(
            (PENDING_TCP_CONNECT, PENDING_TCP_SYN_SENT, PENDING_UDP),
            (1, 2, 3)
        );
        assert_eq!(DNS_FLAG_STREAM_START, 1);
    }
}
