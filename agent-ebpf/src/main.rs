//! Kernel programs of the egress agent. One module per probe family; the maps they share are in
//! `maps`. Every program returns "allow" on every path: the agent observes, it never blocks.
#![no_std]
#![no_main]
// Atomic adds: see maps::atomic_add. This crate is only ever built with nightly (build-std).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod maps;
mod skb;
mod sock_addr;
mod sock_ops;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program; the verifier rejects any path that could get here.
    loop {}
}

/// Programs loaded by a GPL-incompatible licence cannot use some helpers (ring buffer output in
/// cgroup_skb among them); the kernel reads the licence from this section.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
