//! cgroup_skb/egress: the first datagram of a connected UDP socket records its flow, and a TCP
//! connect's SYN marks it as sent (so that only a connect that really went out can time out).
//!
//! connect4/6 only remember a UDP socket's flow key (in the socket's storage): a UDP `connect()`
//! sends nothing, and glibc's getaddrinfo connects a throwaway socket to each answer just to sort
//! them. The flow counts once the socket really sends. The key is the one taken at connect time,
//! the destination as the socket saw it: here, after netfilter, a Service ClusterIP may already
//! have been translated to a backend address.
//!
//! This runs for every packet a local socket sends, so the common case must be cheap: a bounds
//! check and two or three header loads by direct packet access, then "allow". Only UDP packets and
//! TCP SYNs go on to the socket's storage, and a socket without pending state (every socket after
//! its first datagram) is told so by the storage helper's first pointer test. The data starts at
//! the network header; fragmentation happens after this hook, so the transport header is always
//! there. Every path returns 1 (allow).
//!
//! `sock_release` (cgroup `sock_release`) is the last word on a TCP connect that never got an
//! answer: closed while waiting, it timed out (or its application gave up first).

use agent_common::{
    IPPROTO_TCP, IPPROTO_UDP, PENDING_TCP_CONNECT, PENDING_TCP_SYN_SENT, PENDING_UDP,
};
use aya_ebpf::{
    bindings::{__sk_buff, bpf_sock, BPF_TCP_CLOSE, BPF_TCP_ESTABLISHED, BPF_TCP_SYN_SENT},
    helpers::bpf_sk_fullsock,
    macros::{cgroup_skb, cgroup_sock},
    programs::{SkBuffContext, SockContext},
};

use crate::maps::{count_outcome, forget_socket, record_flow, socket_state, Outcome};

const ALLOW: i32 = 1;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const IPV6_HDR_LEN: usize = 40;

#[cgroup_skb(egress)]
pub fn egress(ctx: SkBuffContext) -> i32 {
    let skb = ctx.skb.skb;
    match transport(skb) {
        Transport::Udp => first_datagram(skb),
        Transport::TcpSyn => syn_sent(skb),
        Transport::Other => {}
    }
    ALLOW
}

enum Transport {
    Udp,
    /// A SYN without ACK: the first segment of an active open.
    TcpSyn,
    Other,
}

/// What kind of packet this is, from the fixed headers only. IPv6 extension headers (rare enough)
/// are not walked: a UDP datagram behind one is looked up as UDP anyway (the storage lookup is
/// cheap and answers for the socket, whatever the packet), a SYN behind one goes unmarked (that
/// connect then gets no timeout outcome, the others still do).
#[inline(always)]
fn transport(skb: *mut __sk_buff) -> Transport {
    let (data, data_end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    // Every IP header is at least 20 bytes and both protocol fields lie within them. (A 1-byte
    // check would be compiled to `data >= data_end`, from which the verifier learns no range.)
    if data + 20 > data_end {
        return Transport::Other;
    }
    let first = unsafe { *(data as *const u8) };
    let (protocol, l4_off) = match first >> 4 {
        4 => (
            unsafe { *((data + 9) as *const u8) },
            (first & 0x0f) as usize * 4,
        ),
        6 => match unsafe { *((data + 6) as *const u8) } {
            // Hop-by-hop, routing, fragment, destination options.
            0 | 43 | 44 | 60 => return Transport::Udp,
            next => (next, IPV6_HDR_LEN),
        },
        _ => return Transport::Other,
    };
    if protocol == IPPROTO_UDP {
        return Transport::Udp;
    }
    if protocol != IPPROTO_TCP {
        return Transport::Other;
    }
    // TCP flags are byte 13 of the TCP header.
    let flags_at = data + l4_off + 13;
    if flags_at + 1 > data_end {
        return Transport::Other;
    }
    let flags = unsafe { *(flags_at as *const u8) };
    if flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        Transport::TcpSyn
    } else {
        Transport::Other
    }
}

/// The sending socket as a full socket (what the storage helpers take), if it is one.
#[inline(always)]
fn full_socket(skb: *mut __sk_buff) -> Option<*mut bpf_sock> {
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return None;
    }
    let full = unsafe { bpf_sk_fullsock(sk) };
    (!full.is_null()).then_some(full)
}

/// Records the pending connect of the sending socket, if any, and forgets it.
#[inline(always)]
fn first_datagram(skb: *mut __sk_buff) {
    let Some(sk) = full_socket(skb) else {
        return;
    };
    let Some(p) = (unsafe { socket_state(sk.cast()) }) else {
        return;
    };
    if unsafe { (*p).state } != PENDING_UDP {
        return;
    }
    // Copy the key to the stack before the state goes: the map helpers need a stack key.
    let key = unsafe { (*p).key };
    // Only the CPU whose delete succeeds records: two first datagrams sent at once on one socket
    // count one connect.
    if !unsafe { forget_socket(sk.cast()) } {
        return;
    }
    // A socket disconnected since (connect(AF_UNSPEC), as glibc does between two candidates) or
    // whose connect failed now sends with an explicit address, which sendmsg4/6 recorded: its
    // pending key is stale.
    if unsafe { (*sk).state } == BPF_TCP_ESTABLISHED {
        record_flow(&key);
    }
}

/// The connect's SYN is leaving: from now on a close without an answer is a timeout.
#[inline(always)]
fn syn_sent(skb: *mut __sk_buff) {
    let Some(sk) = full_socket(skb) else {
        return;
    };
    if let Some(p) = unsafe { socket_state(sk.cast()) } {
        if unsafe { (*p).state } == PENDING_TCP_CONNECT {
            unsafe { (*p).state = PENDING_TCP_SYN_SENT };
        }
    }
}

#[cgroup_sock(sock_release)]
pub fn sock_release(ctx: SockContext) -> i32 {
    // Runs for every socket released in the cgroup; only a TCP connect whose answer was not
    // counted has something to say. Other pending state (a UDP socket closed without sending:
    // glibc's getaddrinfo sorting its answers) goes with the socket.
    if unsafe { (*ctx.sock).protocol } != IPPROTO_TCP as u32 {
        return ALLOW;
    }
    let Some(p) = (unsafe { socket_state(ctx.sock.cast()) }) else {
        return ALLOW;
    };
    if unsafe { (*p).state } != PENDING_TCP_SYN_SENT {
        return ALLOW;
    }
    // Cleared first (this hook may read but not delete the storage): an answer processed at this
    // very moment on another CPU then finds nothing to count.
    unsafe { (*p).state = 0 };
    let key = unsafe { (*p).key };
    // The hook runs before TCP closes the socket, so its state is the connect's fate: still
    // waiting (SYN_SENT) or given up by the kernel (CLOSE) is a timeout; any other state means
    // the handshake completed although its SYN-ACK was not taken (e.g. a Fast Open SYN-ACK that
    // acknowledged data the ingress check did not allow for).
    let outcome = match unsafe { (*ctx.sock).state } {
        BPF_TCP_SYN_SENT | BPF_TCP_CLOSE => Outcome::TimedOut,
        _ => Outcome::Established,
    };
    count_outcome(&key, outcome);
    ALLOW
}
