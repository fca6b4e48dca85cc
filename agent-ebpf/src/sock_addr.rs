//! cgroup `sock_addr` hooks: `connect4/6` (TCP, connected UDP) and `sendmsg4/6` (unconnected UDP).
//!
//! A UDP `connect()` sends nothing: glibc's getaddrinfo connects a throwaway socket to every
//! answer to sort them, and closes it. So a connected UDP socket's flow is only remembered here
//! (`PENDING_UDP`) and recorded when its first datagram leaves (skb_egress.rs).
//!
//! They run in the calling process's context, so the current task's cgroup is the socket owner's.
//! Every path returns 1 (allow): the agent observes, it never decides. A datagram that answers a
//! peer which sent to the socket first is a reply, not a flow (see udp_replies.rs).

use agent_common::{FlowKey, PendingConnect, AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_socket_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};

use crate::{
    maps::{record_flow, PENDING, PENDING_UDP},
    udp_replies::is_reply,
};

const ALLOW: i32 = 1;
const IPPROTO_MPTCP: u32 = 262;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    if let Some(key) = key_v4(&ctx) {
        on_connect(&ctx, &key);
    }
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    if let Some(key) = key_v6(&ctx) {
        if key.protocol == IPPROTO_UDP && key.family == AF_INET {
            // An IPv4-mapped peer of a dual-stack UDP socket: the kernel hands each datagram to
            // udp_sendmsg with the peer as an explicit address, so sendmsg4 records every one of
            // them, as for an unconnected socket. The connect adds nothing, and must forget an
            // earlier connect of the socket that has not sent.
            let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
            let _ = PENDING_UDP.remove(cookie);
        } else {
            on_connect(&ctx, &key);
        }
    }
    ALLOW
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    if let Some(key) = key_v4(&ctx) {
        if !is_reply(&ctx, &key) {
            record_flow(&key);
        }
    }
    ALLOW
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    if let Some(key) = key_v6(&ctx) {
        if !is_reply(&ctx, &key) {
            record_flow(&key);
        }
    }
    ALLOW
}

#[inline(always)]
fn on_connect(ctx: &SockAddrContext, key: &FlowKey) {
    if key.protocol == IPPROTO_UDP {
        // The key must be taken now: the egress program sees the packet after netfilter DNAT,
        // when a Service ClusterIP has become a backend address. A reconnect replaces the key.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
        // A failure loses this socket's flow, as an eviction from FLOWS would; the LRU makes it
        // all but impossible.
        let _ = PENDING_UDP.insert(cookie, *key, 0);
        return;
    }
    record_flow(key);
    // Only plain TCP: an MPTCP connect is recorded as TCP, but its outcome shows on subflow
    // sockets with other cookies, so a pending entry would never be resolved.
    if unsafe { (*ctx.sock_addr).protocol } == IPPROTO_TCP as u32 {
        // The cookie ties this connect to the socket's later state changes (sock_ops) and to a
        // RST arriving for it (cgroup_skb ingress).
        let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
        let pending = PendingConnect {
            key: *key,
            reset_seen: 0,
            _pad: 0,
        };
        // A failure only loses the outcome, which the sock_ops side counts as OutcomeUnmatched.
        let _ = PENDING.insert(cookie, pending, 0);
    }
}

#[inline(always)]
fn protocol(ctx: &SockAddrContext) -> Option<u8> {
    let p = unsafe { (*ctx.sock_addr).protocol };
    match p {
        // TCP, UDP, SCTP.
        6 | 17 | 132 => Some(p as u8),
        // MPTCP is TCP to every policy engine; the socket reports IPPROTO_MPTCP.
        IPPROTO_MPTCP => Some(IPPROTO_TCP),
        // ICMP "ping" sockets and raw sockets are not flows a NetworkPolicy speaks about.
        _ => None,
    }
}

#[inline(always)]
fn port(ctx: &SockAddrContext) -> u16 {
    // `user_port` holds the port in network order in its low 16 bits.
    let raw = unsafe { (*ctx.sock_addr).user_port };
    u16::from_be(raw as u16)
}

#[inline(always)]
fn key_v4(ctx: &SockAddrContext) -> Option<FlowKey> {
    let protocol = protocol(ctx)?;
    let ip = unsafe { (*ctx.sock_addr).user_ip4 };
    let mut key = FlowKey {
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        dport: port(ctx),
        family: AF_INET,
        protocol,
        ..FlowKey::default()
    };
    // The u32 holds the address bytes in network order; native-endian bytes recover them as is.
    let b = ip.to_ne_bytes();
    key.daddr[0] = b[0];
    key.daddr[1] = b[1];
    key.daddr[2] = b[2];
    key.daddr[3] = b[3];
    Some(key)
}

#[inline(always)]
fn key_v6(ctx: &SockAddrContext) -> Option<FlowKey> {
    let protocol = protocol(ctx)?;
    // The context only allows 4-byte loads of user_ip6, one word at a time.
    let w0 = unsafe { (*ctx.sock_addr).user_ip6[0] };
    let w1 = unsafe { (*ctx.sock_addr).user_ip6[1] };
    let w2 = unsafe { (*ctx.sock_addr).user_ip6[2] };
    let w3 = unsafe { (*ctx.sock_addr).user_ip6[3] };
    let mut key = FlowKey {
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        dport: port(ctx),
        family: AF_INET6,
        protocol,
        ..FlowKey::default()
    };
    // An IPv4-mapped address (::ffff:a.b.c.d) on a dual-stack socket is IPv4 traffic: record it as
    // AF_INET so that one destination has one key whichever socket family reached it.
    if w0 == 0 && w1 == 0 && w2 == u32::from_be(0x0000_ffff) {
        key.family = AF_INET;
        write_word(&mut key.daddr, 0, w3);
        return Some(key);
    }
    write_word(&mut key.daddr, 0, w0);
    write_word(&mut key.daddr, 4, w1);
    write_word(&mut key.daddr, 8, w2);
    write_word(&mut key.daddr, 12, w3);
    Some(key)
}

#[inline(always)]
fn write_word(dst: &mut [u8; 16], at: usize, w: u32) {
    let b = w.to_ne_bytes();
    dst[at] = b[0];
    dst[at + 1] = b[1];
    dst[at + 2] = b[2];
    dst[at + 3] = b[3];
}
