//! cgroup_skb/egress: the first datagram of a connected UDP socket records its flow.
//!
//! connect4/6 only remember a UDP socket's flow key (`PENDING_UDP`, by socket cookie): a UDP
//! `connect()` sends nothing, and glibc's getaddrinfo connects a throwaway socket to each answer
//! just to sort them. The flow counts once the socket really sends. The key is the one taken at
//! connect time, the destination as the socket saw it: here, after netfilter, a Service ClusterIP
//! may already have been translated to a backend address.
//!
//! This runs for every packet a local socket sends, so the common case must be cheap: one bounds
//! check and one or two header loads by direct packet access, then "allow". Only UDP packets go
//! on to the cookie lookup, and a socket's later datagrams cost one failed lookup. The data
//! starts at the network header; fragmentation happens after this hook, so the transport
//! protocol is always in the header. Every path returns 1 (allow).
//!
//! `udp_release` (cgroup `sock_release`) forgets the pending connect of a UDP socket closed without
//! sending, so that such sockets (one per getaddrinfo call with several answers) do not push live
//! entries out of the LRU.

use agent_common::IPPROTO_UDP;
use aya_ebpf::{
    bindings::{__sk_buff, BPF_TCP_ESTABLISHED},
    helpers::bpf_get_socket_cookie,
    macros::{cgroup_skb, cgroup_sock},
    programs::{SkBuffContext, SockContext},
};

use crate::maps::{record_flow, PENDING_UDP};

const ALLOW: i32 = 1;

#[cgroup_skb(egress)]
pub fn egress(ctx: SkBuffContext) -> i32 {
    let skb = ctx.skb.skb;
    if is_udp(skb) {
        first_datagram(skb);
    }
    ALLOW
}

/// Whether the packet may be UDP: an IPv4 UDP packet, or an IPv6 one whose first next header is
/// UDP or an extension header (rare enough that the lookup is cheaper than walking them).
#[inline(always)]
fn is_udp(skb: *mut __sk_buff) -> bool {
    let (data, data_end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    // Every IP header is at least 20 bytes and both protocol fields lie within them. (A 1-byte
    // check would be compiled to `data >= data_end`, from which the verifier learns no range.)
    if data + 20 > data_end {
        return false;
    }
    let version = unsafe { *(data as *const u8) } >> 4;
    if version == 4 {
        unsafe { *((data + 9) as *const u8) == IPPROTO_UDP }
    } else if version == 6 {
        // Hop-by-hop, routing, fragment, destination options.
        matches!(
            unsafe { *((data + 6) as *const u8) },
            IPPROTO_UDP | 0 | 43 | 44 | 60
        )
    } else {
        false
    }
}

/// Records the pending connect of the sending socket, if any, and forgets it.
#[inline(always)]
fn first_datagram(skb: *mut __sk_buff) {
    let cookie = unsafe { bpf_get_socket_cookie(skb.cast()) };
    let Some(p) = PENDING_UDP.get_ptr(cookie) else {
        return;
    };
    // Copy the key to the stack before the entry goes: the map helpers need a stack key.
    let key = unsafe { *p };
    // Only the CPU whose delete succeeds records: two first datagrams sent at once on one socket
    // count one connect.
    if PENDING_UDP.remove(cookie).is_err() {
        return;
    }
    // A socket disconnected since (connect(AF_UNSPEC), as glibc does between two candidates) or
    // whose connect failed now sends with an explicit address, which sendmsg4/6 recorded: its
    // pending key is stale.
    if connected(skb) {
        record_flow(&key);
    }
}

#[inline(always)]
fn connected(skb: *mut __sk_buff) -> bool {
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    !sk.is_null() && unsafe { (*sk).state } == BPF_TCP_ESTABLISHED
}

#[cgroup_sock(sock_release)]
pub fn udp_release(ctx: SockContext) -> i32 {
    // Runs for every socket released in the cgroup: only UDP ones can have a pending connect.
    if unsafe { (*ctx.sock).protocol } == IPPROTO_UDP as u32 {
        let cookie = unsafe { bpf_get_socket_cookie(ctx.sock.cast()) };
        let _ = PENDING_UDP.remove(cookie);
    }
    ALLOW
}
