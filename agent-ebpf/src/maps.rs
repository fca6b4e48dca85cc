//! Maps shared by every program, and the small helpers that touch them.
//!
//! The names of the statics are the map names user space looks up (`FLOWS`, `PENDING`, `EVENTS`,
//! `LOSS_COUNTERS`, `UDP_PEERS`, `PENDING_UDP`): keep them in sync with `agent/src/kernel/maps.rs`.

use agent_common::{
    Counter, DnsEvent, EventKind, FlowKey, FlowValue, NewFlowEvent, PendingConnect, UdpPeerKey,
    COUNTER_SLOTS, EVENTS_RING_BYTES, FLOW_MAP_ENTRIES, PENDING_CONNECT_ENTRIES,
    PENDING_UDP_ENTRIES, UDP_PEER_ENTRIES,
};
use aya_ebpf::{
    bindings::{
        BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE,
    },
    helpers::bpf_ktime_get_boot_ns,
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
};

/// Aggregated egress flows. LRU so that a full table evicts the coldest flow instead of failing.
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(FLOW_MAP_ENTRIES, 0);

/// TCP connects waiting for their outcome, keyed by socket cookie.
#[map]
pub static PENDING: LruHashMap<u64, PendingConnect> =
    LruHashMap::with_max_entries(PENDING_CONNECT_ENTRIES, 0);

/// Peers that sent to an unconnected UDP socket first, with the time of their last datagram: what
/// the socket sends back to them is a reply, not a flow (see udp_replies.rs).
#[map]
pub static UDP_PEERS: LruHashMap<UdpPeerKey, u64> =
    LruHashMap::with_max_entries(UDP_PEER_ENTRIES, 0);

/// New flows and DNS answers, in arrival order.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// Where a DNS event is assembled before it is output with its real length (see skb.rs).
#[map]
pub static DNS_SCRATCH: PerCpuArray<DnsEvent> = PerCpuArray::with_max_entries(1, 0);

/// What was lost or worth counting, per CPU so that increments need no atomics.
#[map]
pub static LOSS_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[inline(always)]
pub fn count(c: Counter) {
    if let Some(p) = LOSS_COUNTERS.get_ptr_mut(c as u32) {
        // Per-CPU slot and programs do not migrate CPUs while running: a plain add is safe.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub fn now_ns() -> u64 {
    // BOOTTIME keeps counting across suspend, so user space can map it to wall time reliably.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// Counts one connect or datagram for `key`, announcing the key on the ring buffer when it is new.
#[inline(always)]
pub fn record_flow(key: &FlowKey) {
    let now = now_ns();
    // Look up first: the common case is a known flow, and an LRU update takes a free node (which
    // may evict another flow) before it notices that the key exists.
    if bump(key, now) {
        return;
    }
    let value = FlowValue {
        first_seen_ns: now,
        last_seen_ns: now,
        count: 1,
        ..FlowValue::default()
    };
    match FLOWS.insert(key, value, BPF_NOEXIST as u64) {
        Ok(()) => {
            count(Counter::FlowInserted);
            announce(key);
        }
        // Another CPU inserted the same key in between: count on its entry.
        Err(_) => {
            if !bump(key, now) {
                count(Counter::FlowUpdateFailed);
            }
        }
    }
}

#[inline(always)]
fn bump(key: &FlowKey, now: u64) -> bool {
    match FLOWS.get_ptr_mut(key) {
        Some(v) => {
            unsafe {
                // Atomic add (BPF_XADD) because several CPUs may count the same flow at once.
                atomic_add(core::ptr::addr_of_mut!((*v).count), 1u64);
                // A racy store is fine: any recent timestamp is a correct "last seen".
                (*v).last_seen_ns = now;
            }
            true
        }
        None => false,
    }
}

#[inline(always)]
fn announce(key: &FlowKey) {
    match EVENTS.reserve::<NewFlowEvent>(0) {
        Some(mut entry) => {
            entry.write(NewFlowEvent {
                kind: EventKind::NewFlow as u32,
                _pad: 0,
                key: *key,
            });
            entry.submit(submit_flags());
        }
        None => count(Counter::RingFullNewFlow),
    }
}

/// Wake-up policy of every submit: batch.
///
/// A wake-up costs an irq_work and a reader wake-up: measured at about 8 us per DNS answer on the
/// build VM, 100 times the packet fast path. So records are submitted without a wake-up, and the
/// reader polls on a short timer (see `agent/src/kernel/events.rs`); only a buffer filling up (an
/// eighth of its size unread) forces a wake-up, so that bursts are drained before they overflow.
#[inline(always)]
pub fn submit_flags() -> u64 {
    // The size is asked for rather than assumed: user space may resize the ring at load time.
    let size = EVENTS.query(BPF_RB_RING_SIZE as u64);
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= size / 8 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Atomic add whose result is unused, which LLVM lowers to BPF_XADD (any kernel).
///
/// The bpf target has no compare-and-swap, so core's `Atomic*::fetch_add` is not available there;
/// the intrinsic is what it would call.
///
/// # Safety
/// `p` must point into a map value.
#[inline(always)]
pub unsafe fn atomic_add<T: Copy>(p: *mut T, v: T) {
    unsafe {
        core::intrinsics::atomic_xadd::<T, T, { core::intrinsics::AtomicOrdering::Relaxed }>(p, v);
    }
}

/// Connected UDP sockets that have not sent yet: socket cookie → the flow key of their last
/// `connect()` (the destination as the socket saw it, before any DNAT). The flow is recorded, and
/// the entry removed, when the socket's first datagram leaves (skb_egress.rs). A socket closed
/// without sending (glibc's getaddrinfo sorting its answers) has its entry removed on release
/// (`udp_release`); should one be missed, the LRU ages it out, and cookies are never reused.
#[map]
pub static PENDING_UDP: LruHashMap<u64, FlowKey> =
    LruHashMap::with_max_entries(PENDING_UDP_ENTRIES, 0);
