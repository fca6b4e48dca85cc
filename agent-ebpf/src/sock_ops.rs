//! TCP outcome of a connect, from the socket's own state changes (cgroup `sock_ops`).
//!
//! State callbacks may run in softirq context, where the current task is unrelated: the socket
//! cookie, recorded at connect time with the flow key, is what attributes the outcome.

use agent_common::{Counter, PendingConnect};
use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG,
        BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_TCP_CLOSE, BPF_TCP_SYN_SENT,
    },
    helpers::bpf_get_socket_cookie,
    macros::sock_ops,
    programs::SockOpsContext,
};

use crate::maps::{atomic_add, count, FLOWS, PENDING};

const ALLOW: u32 = 1;

enum Outcome {
    Established,
    Refused,
    TimedOut,
}

#[sock_ops]
pub fn tcp_outcome(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            // Ask for state callbacks on this socket only: a failed connect shows only as
            // SYN_SENT -> CLOSE. Failure to set the flag loses the failure outcome, nothing else.
            let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
        }
        // The flag is left set afterwards: clearing it could silence another sock_ops user that
        // asked for state callbacks on the same socket (the flags are per socket, not per program).
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => resolve(&ctx, Outcome::Established),
        // SYN_SENT -> ESTABLISHED is handled by ACTIVE_ESTABLISHED_CB above; only a close from
        // SYN_SENT is an outcome here.
        BPF_SOCK_OPS_STATE_CB if ctx.arg(0) == BPF_TCP_SYN_SENT && ctx.arg(1) == BPF_TCP_CLOSE => {
            resolve_failure(&ctx);
        }
        _ => {}
    }
    ALLOW
}

#[inline(always)]
fn resolve_failure(ctx: &SockOpsContext) {
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    let Some(p) = PENDING.get_ptr(cookie) else {
        count(Counter::OutcomeUnmatched);
        return;
    };
    // A RST seen by the ingress program while in SYN_SENT means "connection refused"; any other
    // close from SYN_SENT is a timeout (or the application gave up first).
    let outcome = if unsafe { (*p).reset_seen } != 0 {
        Outcome::Refused
    } else {
        Outcome::TimedOut
    };
    finish(cookie, p, outcome);
}

#[inline(always)]
fn resolve(ctx: &SockOpsContext, outcome: Outcome) {
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    match PENDING.get_ptr(cookie) {
        Some(p) => finish(cookie, p, outcome),
        None => count(Counter::OutcomeUnmatched),
    }
}

#[inline(always)]
fn finish(cookie: u64, p: *const PendingConnect, outcome: Outcome) {
    // Copy the key to the stack: the pending entry is deleted below and the map needs a stack key.
    let key = unsafe { (*p).key };
    let _ = PENDING.remove(cookie);
    let Some(v) = FLOWS.get_ptr_mut(key) else {
        // The flow was evicted between connect and outcome.
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
