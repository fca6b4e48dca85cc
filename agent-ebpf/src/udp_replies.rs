//! Replies of unconnected UDP sockets are not egress flows.
//!
//! A UDP server (CoreDNS, dnsmasq, a statsd sink) answers with `sendto()` on an unconnected
//! socket, which runs the sendmsg hooks exactly like a client's query. NetworkPolicy is stateful:
//! a reply needs no egress rule, so recording it would make the recommender allow the server to
//! reach every client on every ephemeral port.
//!
//! - ingress (cgroup_skb): a unicast datagram delivered to an unconnected socket (UDP sockets stay
//!   in `TCP_CLOSE` until they connect) from a peer the socket's cgroup never sent to marks the
//!   (socket cookie, peer address, peer port) as answerable, with the time;
//! - sendmsg4/6: a datagram to an answerable peer of the same socket within
//!   `UDP_REPLY_WINDOW_NS` of the peer's last datagram is a reply: it is counted in
//!   `Counter::UdpRepliesSkipped` instead of the flow table. A stale mark is dropped and the
//!   datagram recorded as a flow.
//!
//! "Never sent to" is the flow table: a client that queried the peer first has the flow (same
//! cgroup, peer address and port, UDP), so the answer it receives marks nothing and its next
//! queries are still counted.
//!
//! Cost (probe_cost on the 2-CPU build VM, loopback, ns per program run): TCP and datagrams to
//! connected UDP sockets leave after the socket state check, unchanged (~65). A datagram to an
//! unconnected socket costs one to three hash operations: ~200 on average in a ping-pong between
//! two unconnected sockets (was ~65); ~1000 at a server for a datagram from a new client port
//! (two cold misses and an insert), but the server's sendmsg then skips the flow insert and ring
//! event it used to pay for each reply (~900 -> ~330).

use agent_common::{Counter, FlowKey, UdpPeerKey, AF_INET, IPPROTO_UDP, UDP_REPLY_WINDOW_NS};
use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_skb_cgroup_id},
    programs::SockAddrContext,
};

use crate::maps::{count, FLOWS, UDP_PEERS};

/// `sk_state` of a UDP socket that is not connected (`TCP_CLOSE`); a connected one is
/// `TCP_ESTABLISHED`, and its datagrams never run the sendmsg hooks without an explicit address.
const TCP_CLOSE: u32 = 7;
/// `skb->pkt_type` of a datagram addressed to this host. A reply to a broadcast or multicast
/// datagram matches no stateful "connection" (the request went to another address), so it stays a
/// flow.
const PACKET_HOST: u32 = 0;

/// Ingress side: a UDP datagram from source port `sport` (host order), whose IP header starts at
/// `data` and was bounds-checked by the caller (20 bytes for IPv4, 40 for IPv6).
#[inline(always)]
pub fn note_peer(skb: *mut __sk_buff, data: usize, family: u8, sport: u16) {
    // The receiving socket (the hook runs from sk_filter on the socket's receive path). Only
    // sock_common fields are readable without bpf_sk_fullsock, and `state` is one of them.
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() || unsafe { (*sk).state } != TCP_CLOSE {
        return;
    }
    if unsafe { (*skb).pkt_type } != PACKET_HOST {
        return;
    }
    let mut key = UdpPeerKey {
        cookie: unsafe { bpf_get_socket_cookie(skb.cast()) },
        port: sport,
        family,
        ..UdpPeerKey::default()
    };
    if family == AF_INET {
        let w = unsafe { *((data + 12) as *const u32) };
        put_word(&mut key.addr, 0, w);
    } else {
        put_word(&mut key.addr, 0, unsafe { *((data + 8) as *const u32) });
        put_word(&mut key.addr, 4, unsafe { *((data + 12) as *const u32) });
        put_word(&mut key.addr, 8, unsafe { *((data + 16) as *const u32) });
        put_word(&mut key.addr, 12, unsafe { *((data + 20) as *const u32) });
    }
    let now = mark_clock();
    // A peer already marked: refresh. One lookup and a store for a client that keeps querying.
    if let Some(seen) = UDP_PEERS.get_ptr_mut(&key) {
        unsafe { *seen = now };
        return;
    }
    let flow = FlowKey {
        cgroup_id: unsafe { bpf_skb_cgroup_id(skb) },
        daddr: key.addr,
        dport: sport,
        family,
        protocol: IPPROTO_UDP,
        _pad: [0; 4],
    };
    if FLOWS.get_ptr(&flow).is_some() {
        // This side sent first (a client getting its answer): what it sends next is not a reply.
        return;
    }
    // A failure (table busy) only means the reply is recorded as a flow, as without the table.
    let _ = UDP_PEERS.insert(&key, &now, 0);
}

/// sendmsg side: true when the datagram `key` describes answers a peer that sent to this socket
/// within the window; it is then counted as a skipped reply and must not be recorded.
#[inline(always)]
pub fn is_reply(ctx: &SockAddrContext, key: &FlowKey) -> bool {
    if key.protocol != IPPROTO_UDP {
        return false;
    }
    let peer = UdpPeerKey {
        cookie: unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) },
        addr: key.daddr,
        port: key.dport,
        family: key.family,
        _pad: [0; 5],
    };
    let Some(seen) = UDP_PEERS.get_ptr(&peer) else {
        return false;
    };
    // Another CPU may refresh the mark after `now` was taken: saturate, that is a fresh mark.
    if mark_clock().saturating_sub(unsafe { *seen }) <= UDP_REPLY_WINDOW_NS {
        count(Counter::UdpRepliesSkipped);
        return true;
    }
    // The peer has been silent longer than any firewall keeps the exchange: this datagram opens a
    // new one. Drop the mark so that the peer's next datagram finds the flow and marks nothing.
    let _ = UDP_PEERS.remove(&peer);
    false
}

/// The clock of the marks: `CLOCK_MONOTONIC`. `bpf_ktime_get_coarse_ns` would be some 15-30 ns
/// cheaper per datagram, but it needs Linux 5.11 and the agent runs from 5.10 (README, "Where it
/// runs"). The marks never leave the kernel, so this clock is never compared with the BOOTTIME
/// stamps of the flow table.
#[inline(always)]
fn mark_clock() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn put_word(dst: &mut [u8; 16], at: usize, w: u32) {
    let b = w.to_ne_bytes();
    dst[at] = b[0];
    dst[at + 1] = b[1];
    dst[at + 2] = b[2];
    dst[at + 3] = b[3];
}
