//! Maps shared by every program, and the small helpers that touch them.
//!
//! The names of the statics are the map names user space looks up or sizes (`FLOWS`, `EVENTS`,
//! `LOSS_COUNTERS`, `UDP_PEERS`): keep them in sync with `agent/src/kernel/maps.rs`. `SOCKETS`,
//! `DNS_BUDGETS` and `DNS_SCRATCH` only the programs use.

use agent_common::{
    Counter, DnsBudget, DnsEvent, EventKind, FlowKey, FlowValue, NewFlowEvent, PendingSocket,
    UdpPeerKey, COUNTER_SLOTS, DNS_BUDGET_BURST_BYTES, DNS_BUDGET_BYTES_PER_SEC,
    DNS_BUDGET_ENTRIES, EVENTS_RING_BYTES, FLOW_MAP_ENTRIES, UDP_PEER_ENTRIES,
};
use aya_ebpf::{
    bindings::{
        BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE,
        BPF_SK_STORAGE_GET_F_CREATE,
    },
    btf_maps::SkStorage,
    helpers::{bpf_ktime_get_boot_ns, bpf_ktime_get_ns, bpf_sk_storage_delete, bpf_sk_storage_get},
    macros::{btf_map, map},
    maps::{LruHashMap, PerCpuArray, RingBuf},
};

/// Aggregated egress flows. LRU so that a full table evicts the coldest flow instead of failing.
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(FLOW_MAP_ENTRIES, 0);

/// Peers that sent to an unconnected UDP socket first, with the time of their last datagram: what
/// the socket sends back to them is a reply, not a flow (see udp_replies.rs).
#[map]
pub static UDP_PEERS: LruHashMap<UdpPeerKey, u64> =
    LruHashMap::with_max_entries(UDP_PEER_ENTRIES, 0);

/// New flows and DNS answers, in arrival order.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// What is left of each cgroup's DNS budget (see `dns_budget`).
#[map]
pub static DNS_BUDGETS: LruHashMap<u64, DnsBudget> =
    LruHashMap::with_max_entries(DNS_BUDGET_ENTRIES, 0);

/// Takes `bytes` from `cgroup_id`'s DNS budget (a token bucket of bytes:
/// DNS_BUDGET_BYTES_PER_SEC, DNS_BUDGET_BURST_BYTES); false, and counted, when not that much is
/// left. Refills race between CPUs and may lose a little, never grant much.
#[inline(always)]
pub fn dns_budget(cgroup_id: u64, bytes: u32) -> bool {
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(b) = DNS_BUDGETS.get_ptr_mut(&cgroup_id) else {
        let full = DnsBudget {
            refilled_ns: now,
            tokens: DNS_BUDGET_BURST_BYTES.saturating_sub(bytes),
            _pad: 0,
        };
        // A failure (table busy) only skips the budget for this record.
        let _ = DNS_BUDGETS.insert(&cgroup_id, &full, 0);
        return true;
    };
    let (last, tokens) = unsafe { ((*b).refilled_ns, (*b).tokens) };
    // At most a burst's worth of time counts, which also keeps the product from overflowing.
    let elapsed = now.saturating_sub(last).min(10_000_000_000);
    let earned = elapsed * DNS_BUDGET_BYTES_PER_SEC / 1_000_000_000;
    let mut tokens = tokens as u64;
    if earned > 0 {
        tokens = (tokens + earned).min(DNS_BUDGET_BURST_BYTES as u64);
        unsafe { (*b).refilled_ns = now };
    }
    if tokens < bytes as u64 {
        unsafe { (*b).tokens = tokens as u32 };
        count(Counter::DnsRateLimited);
        return false;
    }
    unsafe { (*b).tokens = (tokens - bytes as u64) as u32 };
    true
}

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

/// What a socket remembers between its `connect()` and the moment its flow is complete (a TCP
/// connect's outcome, a connected UDP socket's first datagram): socket-local storage, which lives
/// and dies with the socket. No table can fill up, and a pod with many sockets cannot push another
/// pod's pending connects out; a socket without storage (nearly every packet's) is told so by one
/// pointer test in the helper.
#[btf_map]
pub static SOCKETS: SkStorage<PendingSocket> = SkStorage::new();

/// The pending state of socket `sk` (a `struct sock` the verifier knows as a full socket, or the
/// context of a cgroup sock program), if it has one.
///
/// # Safety
/// `sk` must be a pointer the kernel accepts as `bpf_sk_storage_get`'s socket argument.
#[inline(always)]
pub unsafe fn socket_state(sk: *mut core::ffi::c_void) -> Option<*mut PendingSocket> {
    let p = unsafe { bpf_sk_storage_get(sockets(), sk, core::ptr::null_mut(), 0) };
    (!p.is_null()).then_some(p.cast())
}

/// The pending state of socket `sk`, created (zeroed: `state` 0) if it has none; `None` when the
/// kernel could not allocate it.
///
/// # Safety
/// As for [`socket_state`].
#[inline(always)]
pub unsafe fn socket_state_or_new(sk: *mut core::ffi::c_void) -> Option<*mut PendingSocket> {
    let p = unsafe {
        bpf_sk_storage_get(
            sockets(),
            sk,
            core::ptr::null_mut(),
            BPF_SK_STORAGE_GET_F_CREATE as u64,
        )
    };
    (!p.is_null()).then_some(p.cast())
}

/// Forgets the pending state of socket `sk`; true if this call removed it (so that of two CPUs
/// racing on one socket, only one acts on the state).
///
/// # Safety
/// As for [`socket_state`].
#[inline(always)]
pub unsafe fn forget_socket(sk: *mut core::ffi::c_void) -> bool {
    unsafe { bpf_sk_storage_delete(sockets(), sk) == 0 }
}

/// The map pointer the storage helpers take: the address of the map definition, which the loader
/// relocates to the map.
#[inline(always)]
fn sockets() -> *mut core::ffi::c_void {
    core::ptr::addr_of!(SOCKETS).cast_mut().cast()
}

/// TCP outcomes, counted on the flow of the connect they answer.
#[derive(Clone, Copy)]
pub enum Outcome {
    Established,
    Refused,
    TimedOut,
}

/// Counts `outcome` on `key`'s flow. The flow may have been evicted since the connect: the
/// outcome is then lost, and counted as such.
#[inline(always)]
pub fn count_outcome(key: &FlowKey, outcome: Outcome) {
    let Some(v) = FLOWS.get_ptr_mut(key) else {
        count(Counter::OutcomeUnmatched);
        return;
    };
    let field = unsafe {
        match outcome {
            Outcome::Established => core::ptr::addr_of_mut!((*v).established),
            Outcome::Refused => core::ptr::addr_of_mut!((*v).refused),
            Outcome::TimedOut => core::ptr::addr_of_mut!((*v).timed_out),
        }
    };
    unsafe { atomic_add(field, 1u32) };
}
