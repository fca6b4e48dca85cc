//! cgroup `sock_addr` hooks: `connect4/6` (TCP, connected UDP) and `sendmsg4/6` (unconnected UDP).
//!
//! A UDP `connect()` sends nothing: glibc's getaddrinfo connects a throwaway socket to every
//! answer to sort them, and closes it. So a connected UDP socket's flow is only remembered here
//! (in the socket's own storage, `SOCKETS`) and recorded when its first datagram leaves
//! (skb_egress.rs). A TCP connect is recorded at once, and remembered in the same storage until
//! its outcome (skb.rs, skb_egress.rs).
//!
//! They run in the calling process's context, so the current task's cgroup is the socket owner's.
//! Every path returns 1 (allow): the agent observes, it never decides. A datagram that answers a
//! peer which sent to the socket first is a reply, not a flow (see udp_replies.rs).

use agent_common::{
    Counter, FlowKey, AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, PENDING_TCP_CONNECT,
    PENDING_TCP_SYN_SENT, PENDING_UDP,
};
use aya_ebpf::{
    helpers::bpf_get_current_cgroup_id, macros::cgroup_sock_addr, programs::SockAddrContext,
};

use crate::{
    maps::{count, count_outcome, forget_socket, record_flow, socket_state_or_new, Outcome},
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
            let _ = unsafe { forget_socket(socket(&ctx)) };
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
    let udp = key.protocol == IPPROTO_UDP;
    if !udp {
        record_flow(key);
        // Only plain TCP: an MPTCP connect is recorded as TCP, but its outcome shows on subflow
        // sockets of their own, so the socket connecting here would never see one.
        if unsafe { (*ctx.sock_addr).protocol } != IPPROTO_TCP as u32 {
            return;
        }
    }
    let Some(p) = (unsafe { socket_state_or_new(socket(ctx)) }) else {
        count(Counter::SocketStorageFailed);
        // A UDP flow must not be lost: record it now, as if it had sent.
        if udp {
            record_flow(key);
        }
        return;
    };
    // A TCP socket may connect again after a failed attempt: an attempt still waiting for its
    // answer when the next one starts was given up on, which is what a timeout is.
    if unsafe { (*p).state } == PENDING_TCP_SYN_SENT {
        count_outcome(unsafe { &(*p).key }, Outcome::TimedOut);
    }
    // The key must be taken now: the egress program sees the packet after netfilter DNAT, when a
    // Service ClusterIP has become a backend address. A reconnect replaces the key.
    unsafe {
        (*p).key = *key;
        (*p).state = if udp {
            PENDING_UDP
        } else {
            PENDING_TCP_CONNECT
        };
    }
}

/// The connecting socket, as the storage helpers take it.
#[inline(always)]
fn socket(ctx: &SockAddrContext) -> *mut core::ffi::c_void {
    unsafe { (*ctx.sock_addr).__bindgen_anon_1.sk }.cast()
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
