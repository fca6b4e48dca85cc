//! Kernel programs of the egress agent. One module per probe family; the maps they share are in
//! `maps`. Every program returns "allow" on every path: the agent observes, it never blocks.
//!
//! Only the bpf target builds the programs (the agent's build.rs does it, with nightly and
//! `-Z build-std=core`). On the host the crate is an empty binary, so that workspace-wide
//! `cargo check`/`clippy` on stable keep working.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// Atomic adds: see maps::atomic_add. The bpf build always uses nightly.
#![cfg_attr(
    target_arch = "bpf",
    feature(core_intrinsics),
    allow(internal_features)
)]

#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod skb;
#[cfg(target_arch = "bpf")]
mod skb_egress;
#[cfg(target_arch = "bpf")]
mod sock_addr;
#[cfg(target_arch = "bpf")]
mod udp_replies;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects any path that could get here.
    loop {}
}

/// The kernel reads the licence from this section; GPL-only helpers need a GPL-compatible one.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("agent-ebpf only runs in the kernel; the agent's build.rs builds and embeds it");
    std::process::exit(2);
}
