//! cgroup_skb/ingress: DNS answers (source port 53), TCP resets for pending connects, and the peers
//! of unconnected UDP sockets whose datagrams the socket will answer (udp_replies.rs).
//!
//! This runs for every packet delivered to a local socket, so the common case must be cheap:
//! a bounds check and a few header loads by direct packet access, then "allow". The data starts
//! at the network header. The program runs in softirq context: the cgroup is taken from the
//! receiving socket (`bpf_skb_cgroup_id`), never from the current task.

use agent_common::{
    Counter, DnsEvent, EventKind, AF_INET, AF_INET6, DNS_CAPTURE_MAX, IPPROTO_TCP, IPPROTO_UDP,
};
use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{bpf_get_socket_cookie, bpf_skb_cgroup_id, bpf_skb_load_bytes},
    macros::cgroup_skb,
    programs::SkBuffContext,
};

use crate::{
    maps::{count, submit_flags, DNS_SCRATCH, EVENTS, PENDING},
    udp_replies::note_peer,
};

const ALLOW: i32 = 1;
const DNS_PORT: u16 = 53;
const TCP_RST: u8 = 0x04;
const IPV6_HDR_LEN: usize = 40;

#[cgroup_skb(ingress)]
pub fn ingress(ctx: SkBuffContext) -> i32 {
    let skb = ctx.skb.skb;
    inspect(skb);
    ALLOW
}

/// What the fast path learned about one packet.
struct L4 {
    family: u8,
    protocol: u8,
    /// Offset of the transport header from the network header.
    l4_off: usize,
}

#[inline(always)]
fn inspect(skb: *mut __sk_buff) {
    let (data, data_end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    let Some(l4) = network(data, data_end) else {
        return;
    };
    let start = data + l4.l4_off;
    if l4.protocol == IPPROTO_UDP {
        // udp_rcv pulled the 8-byte header into the linear area before the socket filter runs.
        if start + 8 > data_end {
            return;
        }
        let sport = unsafe { u16::from_be(*(start as *const u16)) };
        if sport == DNS_PORT {
            capture_dns(skb, &l4, l4.l4_off + 8);
        }
        note_peer(skb, data, l4.family, sport);
        return;
    }
    // TCP: the source port is in the first two bytes, the flags in byte 13.
    if start + 14 > data_end {
        return;
    }
    let sport = unsafe { u16::from_be(*(start as *const u16)) };
    let flags = unsafe { *((start + 13) as *const u8) };
    if flags & TCP_RST != 0 {
        mark_reset(skb);
        return;
    }
    if sport == DNS_PORT {
        // Data offset (header length in 32-bit words) is the high nibble of byte 12.
        let doff = unsafe { *((start + 12) as *const u8) } >> 4;
        capture_dns(skb, &l4, l4.l4_off + (doff as usize) * 4);
    }
}

/// Parses the IPv4 or IPv6 header; `None` for anything but a first fragment of TCP or UDP.
#[inline(always)]
fn network(data: usize, data_end: usize) -> Option<L4> {
    // Every IP header is at least 20 bytes. (A 1-byte check would be compiled to `data >=
    // data_end`, from which the verifier learns no packet range.)
    if data + 20 > data_end {
        return None;
    }
    let version = unsafe { *(data as *const u8) } >> 4;
    if version == 4 {
        let ihl = (unsafe { *(data as *const u8) } & 0x0f) as usize * 4;
        let protocol = unsafe { *((data + 9) as *const u8) };
        // Non-first fragments carry no transport header.
        let frag = u16::from_be(unsafe { *((data + 6) as *const u16) }) & 0x1fff;
        if frag != 0 || ihl < 20 || (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP) {
            return None;
        }
        Some(L4 {
            family: AF_INET,
            protocol,
            l4_off: ihl,
        })
    } else if version == 6 {
        if data + IPV6_HDR_LEN > data_end {
            return None;
        }
        // Only a transport header right after the fixed header is handled; extension headers
        // (rare on answers to a pod) are skipped rather than walked.
        let next = unsafe { *((data + 6) as *const u8) };
        if next != IPPROTO_TCP && next != IPPROTO_UDP {
            return None;
        }
        Some(L4 {
            family: AF_INET6,
            protocol: next,
            l4_off: IPV6_HDR_LEN,
        })
    } else {
        None
    }
}

/// Marks the pending connect of the receiving socket as reset. The ingress hook runs before TCP
/// processes the segment, so the flag is set before the socket's SYN_SENT -> CLOSE transition.
#[inline(always)]
fn mark_reset(skb: *mut __sk_buff) {
    let cookie = unsafe { bpf_get_socket_cookie(skb.cast()) };
    if let Some(p) = PENDING.get_ptr_mut(cookie) {
        unsafe { (*p).reset_seen = 1 };
    }
}

/// Copies the transport payload (a DNS answer) to the ring buffer, at most DNS_CAPTURE_MAX bytes.
///
/// The event is built in a per-CPU scratch value and output with its real length: a typical
/// answer of 100-300 bytes then takes that much ring space instead of a full 1 KiB record, so
/// several times more answers fit in the ring between two reads. (Reserving in place would need
/// a verifier-constant size.) The scratch value is safe to reuse: the program does not nest on
/// one CPU, and at worst a corrupted record is skipped and counted by user space.
#[inline(always)]
fn capture_dns(skb: *mut __sk_buff, l4: &L4, payload_off: usize) {
    let total = unsafe { (*skb).len } as usize;
    if payload_off >= total {
        // A bare ACK or an empty datagram: nothing to parse.
        return;
    }
    let wire_len = total - payload_off;
    let Some(ev) = DNS_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let mut n = wire_len;
    if n > DNS_CAPTURE_MAX {
        n = DNS_CAPTURE_MAX;
    }
    let n = bounded_len(n);
    let ret = unsafe {
        bpf_skb_load_bytes(
            skb as *const _,
            payload_off as u32,
            core::ptr::addr_of_mut!((*ev).payload).cast(),
            n as u32,
        )
    };
    if ret != 0 {
        return;
    }
    unsafe {
        (*ev).kind = EventKind::DnsAnswer as u32;
        (*ev).wire_len = wire_len as u32;
        (*ev).cgroup_id = bpf_skb_cgroup_id(skb);
        (*ev).captured_len = n as u16;
        (*ev).family = l4.family;
        (*ev).transport = l4.protocol;
        (*ev)._pad = 0;
    }
    let header = core::mem::offset_of!(DnsEvent, payload);
    // SAFETY: `ev` points to a whole DnsEvent and header + n <= size_of::<DnsEvent>().
    let record = unsafe { core::slice::from_raw_parts(ev as *const u8, header + n) };
    if EVENTS.output::<[u8]>(record, submit_flags()).is_err() {
        count(Counter::RingFullDns);
    }
}

/// Returns `n` (in `1..=DNS_CAPTURE_MAX`) in a form the verifier can bound for the helper's
/// length argument, which must be non-zero and at most the space left in the event.
///
/// LLVM knows the range already and drops plain clamps, so the verifier (which lost it on the
/// subtraction) saw `[0, 1023]` and refused a possibly zero-sized read. A volatile read hides the
/// value from LLVM; `((v - 1) & (MAX - 1)) + 1` is the identity on `1..=MAX` and is provably in
/// that range for any `v` (MAX is a power of two).
#[inline(always)]
fn bounded_len(n: usize) -> usize {
    const _: () = assert!(DNS_CAPTURE_MAX.is_power_of_two());
    let v = unsafe { core::ptr::read_volatile(&n) };
    (v.wrapping_sub(1) & (DNS_CAPTURE_MAX - 1)) + 1
}
