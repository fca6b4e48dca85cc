//! cgroup_skb/ingress: DNS answers (source port 53, UDP and TCP), the answer to a pending TCP
//! connect (SYN-ACK: established; RST: refused), and the peers of unconnected UDP sockets whose
//! datagrams the socket will answer (udp_replies.rs).
//!
//! This runs for every packet delivered to a local socket, so the common case must be cheap:
//! a bounds check and a few header loads by direct packet access, then "allow". Only packets with
//! SYN or RST set (two per connection at most), and DNS packets, go further. The data starts at
//! the network header. The program runs in softirq context: the cgroup is taken from the
//! receiving socket (`bpf_skb_cgroup_id`), never from the current task.

use agent_common::{
    Counter, DnsEvent, EventKind, AF_INET, AF_INET6, DNS_CAPTURE_MAX, DNS_FLAG_STREAM_START,
    DNS_TCP_CHUNKS_MAX, IPPROTO_TCP, IPPROTO_UDP, PENDING_TCP_CONNECT, PENDING_TCP_SYN_SENT,
};
use aya_ebpf::{
    bindings::{__sk_buff, BPF_TCP_SYN_SENT},
    helpers::{
        bpf_get_socket_cookie, bpf_sk_fullsock, bpf_skb_cgroup_id, bpf_skb_load_bytes, bpf_tcp_sock,
    },
    macros::cgroup_skb,
    programs::SkBuffContext,
};

use crate::{
    maps::{
        count, count_outcome, dns_budget, socket_state, submit_flags, Outcome, DNS_SCRATCH, EVENTS,
    },
    udp_replies::note_peer,
};

const ALLOW: i32 = 1;
const DNS_PORT: u16 = 53;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
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
            capture_dns(skb, &l4, l4.l4_off + 8, 0, 0);
        }
        note_peer(skb, data, l4.family, sport);
        return;
    }
    // TCP (tcp_v4_rcv pulled the whole header): the source port is in the first two bytes, the
    // sequence and acknowledgement numbers in the next eight, the flags in byte 13.
    if start + 14 > data_end {
        return;
    }
    let sport = unsafe { u16::from_be(*(start as *const u16)) };
    let flags = unsafe { *((start + 13) as *const u8) };
    if flags & (TCP_SYN | TCP_RST) != 0 {
        let ack = unsafe { u32::from_be(*((start + 8) as *const u32)) };
        handshake(skb, flags, ack);
    }
    if sport == DNS_PORT {
        let seq = unsafe { u32::from_be(*((start + 4) as *const u32)) };
        if flags & TCP_SYN != 0 {
            // The SYN consumes one sequence number: the stream's first byte is seq + 1.
            stream_start(skb, &l4, seq.wrapping_add(1));
        } else {
            // Data offset (header length in 32-bit words) is the high nibble of byte 12.
            let doff = unsafe { *((start + 12) as *const u8) } >> 4;
            capture_tcp_dns(skb, &l4, l4.l4_off + (doff as usize) * 4, seq);
        }
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

/// The answer to a pending connect: a SYN-ACK establishes it, a RST refuses it. The hook runs
/// before TCP processes the segment, so the segment is only taken when TCP will take it too: the
/// socket is in SYN_SENT and the segment acknowledges exactly what was sent (RFC 793's test in
/// SYN_SENT, as `tcp_rcv_synsent_state_process` applies it), so that a stray or forged segment
/// cannot decide the outcome.
#[inline(always)]
fn handshake(skb: *mut __sk_buff, flags: u8, ack: u32) {
    if flags & TCP_ACK == 0 {
        // A RST without ACK is ignored in SYN_SENT; a bare SYN is a simultaneous open.
        return;
    }
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return;
    }
    let full = unsafe { bpf_sk_fullsock(sk) };
    if full.is_null() || unsafe { (*full).state } != BPF_TCP_SYN_SENT {
        return;
    }
    let Some(p) = (unsafe { socket_state(full.cast()) }) else {
        return;
    };
    let state = unsafe { (*p).state };
    if state != PENDING_TCP_SYN_SENT && state != PENDING_TCP_CONNECT {
        return;
    }
    let tp = unsafe { bpf_tcp_sock(full) };
    if tp.is_null() {
        return;
    }
    let (una, nxt) = unsafe { ((*tp).snd_una, (*tp).snd_nxt) };
    // On a local path the answer can arrive while `connect()` is still sending the SYN, before
    // it advanced snd_nxt past it (TCP then takes the segment from the socket's backlog, once
    // snd_nxt is right): the SYN's own sequence number is the limit then.
    let limit = if nxt == una { una.wrapping_add(1) } else { nxt };
    // after(ack, una) && !after(ack, limit), in sequence-number arithmetic.
    if (ack.wrapping_sub(una) as i32) <= 0 || (ack.wrapping_sub(limit) as i32) > 0 {
        return;
    }
    let key = unsafe { (*p).key };
    // Done with: the storage itself goes with the socket. Clearing the state (rather than
    // deleting the storage, which frees it through RCU) is a store; a duplicate SYN-ACK processed
    // at this very moment on another CPU could still count twice, which TCP's own locking makes
    // all but impossible (BENCHMARKS.md has what the delete cost).
    unsafe { (*p).state = 0 };
    let outcome = if flags & TCP_RST != 0 {
        Outcome::Refused
    } else {
        Outcome::Established
    };
    count_outcome(&key, outcome);
}

/// Announces where a TCP stream from port 53 begins, so that user space frames its messages by
/// their length prefixes from the first byte (see `DNS_FLAG_STREAM_START`).
#[inline(always)]
fn stream_start(skb: *mut __sk_buff, l4: &L4, seq: u32) {
    let Some(ev) = DNS_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    fill_header(ev, skb, l4, 0, DNS_FLAG_STREAM_START);
    unsafe {
        (*ev).seq = seq;
        (*ev).captured_len = 0;
    }
    let header = core::mem::offset_of!(DnsEvent, payload);
    // SAFETY: `ev` points to a whole DnsEvent and header <= size_of::<DnsEvent>().
    let record = unsafe { core::slice::from_raw_parts(ev as *const u8, header) };
    if EVENTS.output::<[u8]>(record, submit_flags()).is_err() {
        count(Counter::RingFullDns);
    }
}

/// Copies a TCP segment's payload (a piece of a DNS stream) to the ring buffer, in records of at
/// most DNS_CAPTURE_MAX bytes each placed by its sequence number: GRO and GSO can hand the socket
/// one segment of up to 64 KiB, and a message may also span many small ones; user space puts the
/// stream back together.
#[inline(always)]
fn capture_tcp_dns(skb: *mut __sk_buff, l4: &L4, payload_off: usize, seq: u32) {
    let total = unsafe { (*skb).len } as usize;
    let mut off = 0usize;
    for _ in 0..DNS_TCP_CHUNKS_MAX {
        if payload_off + off >= total {
            return;
        }
        if !capture_dns(skb, l4, payload_off, off, seq.wrapping_add(off as u32)) {
            return;
        }
        off += DNS_CAPTURE_MAX;
    }
}

/// Copies at most DNS_CAPTURE_MAX bytes of the transport payload, from `chunk_off` on, to the
/// ring buffer; false when nothing was copied (no payload, or the ring was full).
///
/// The event is built in a per-CPU scratch value and output with its real length: a typical
/// answer of 100-300 bytes then takes that much ring space instead of a full record, so many more
/// answers fit in the ring between two reads. (Reserving in place would need a verifier-constant
/// size.) The scratch value is safe to reuse: the program does not nest on one CPU, and at worst a
/// corrupted record is skipped and counted by user space.
#[inline(always)]
fn capture_dns(
    skb: *mut __sk_buff,
    l4: &L4,
    payload_off: usize,
    chunk_off: usize,
    seq: u32,
) -> bool {
    let total = unsafe { (*skb).len } as usize;
    let start = payload_off + chunk_off;
    if payload_off >= total || start >= total {
        // A bare ACK or an empty datagram: nothing to parse.
        return false;
    }
    let wire_len = total - payload_off;
    let mut n = total - start;
    if n > DNS_CAPTURE_MAX {
        n = DNS_CAPTURE_MAX;
    }
    let header = core::mem::offset_of!(DnsEvent, payload);
    if !dns_budget(unsafe { bpf_skb_cgroup_id(skb) }, (header + n) as u32) {
        return false;
    }
    let Some(ev) = DNS_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    let n = bounded_len(n);
    let ret = unsafe {
        bpf_skb_load_bytes(
            skb as *const _,
            start as u32,
            core::ptr::addr_of_mut!((*ev).payload).cast(),
            n as u32,
        )
    };
    if ret != 0 {
        return false;
    }
    fill_header(ev, skb, l4, wire_len as u32, 0);
    unsafe {
        (*ev).seq = seq;
        (*ev).captured_len = n as u16;
    }
    // SAFETY: `ev` points to a whole DnsEvent and header + n <= size_of::<DnsEvent>().
    let record = unsafe { core::slice::from_raw_parts(ev as *const u8, header + n) };
    if EVENTS.output::<[u8]>(record, submit_flags()).is_err() {
        count(Counter::RingFullDns);
        return false;
    }
    true
}

/// The fields every DNS record shares.
#[inline(always)]
fn fill_header(ev: *mut DnsEvent, skb: *mut __sk_buff, l4: &L4, wire_len: u32, flags: u8) {
    unsafe {
        (*ev).kind = EventKind::DnsAnswer as u32;
        (*ev).wire_len = wire_len;
        (*ev).cgroup_id = bpf_skb_cgroup_id(skb);
        (*ev).socket_cookie = bpf_get_socket_cookie(skb.cast());
        (*ev).family = l4.family;
        (*ev).transport = l4.protocol;
        (*ev).flags = flags;
        (*ev)._pad = [0; 7];
    }
}

/// Returns `n` (in `1..=DNS_CAPTURE_MAX`) in a form the verifier can bound for the helper's
/// length argument, which must be non-zero and at most the space left in the event.
///
/// LLVM knows the range already and drops plain clamps, so the verifier (which lost it on the
/// subtraction) saw `[0, MAX - 1]` and refused a possibly zero-sized read. A volatile read hides
/// the value from LLVM; `((v - 1) & (MAX - 1)) + 1` is the identity on `1..=MAX` and is provably
/// in that range for any `v` (MAX is a power of two).
#[inline(always)]
fn bounded_len(n: usize) -> usize {
    const _: () = assert!(DNS_CAPTURE_MAX.is_power_of_two());
    let v = unsafe { core::ptr::read_volatile(&n) };
    (v.wrapping_sub(1) & (DNS_CAPTURE_MAX - 1)) + 1
}
