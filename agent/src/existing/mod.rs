//! Connections that existed before the agent started (issue: a database pool or a message-bus
//! client opened before the agent is never seen connecting, and a policy learned without it would
//! cut it at its next reconnect).
//!
//! Once the programs are attached, a thread of its own enters each network namespace of the node
//! ([`netns`]) with `setns` and reads its socket table through sock_diag ([`diag`]): established
//! TCP and connected UDP sockets, each with the id of its cgroup. [`classify`] keeps the egress
//! ones; the pipeline reports them as flows with outcome `preexisting`, through the same identity
//! and DNS path as the kernel's flows (`Pipeline::report_preexisting`).
//!
//! Entering another namespace needs CAP_SYS_ADMIN; reading `/proc/<pid>/ns/net` of other users'
//! processes needs CAP_SYS_PTRACE, which the DaemonSet avoids by mounting the host's `/run/netns`
//! where the runtimes pin every pod's namespace. A namespace that cannot be entered is counted
//! (`egress_agent_netns_scan_failures_total`) and logged; the agent goes on without it.

pub mod classify;
pub mod diag;
pub mod netns;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use agent_common::FlowKey;

use crate::metrics::NetnsScanFailure;
use diag::{TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN};

/// What a scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// One flow key per egress connection.
    pub egress: Vec<FlowKey>,
    pub inbound: u64,
    pub unattributed: u64,
    pub namespaces: u64,
    pub failures: Vec<(NetnsScanFailure, PathBuf, String)>,
}

/// Scans every namespace on a new thread (its namespace changes; no other work may run on it) and
/// delivers the result through the returned channel.
pub fn spawn_scan() -> std::io::Result<tokio::sync::oneshot::Receiver<Scan>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("existing-sockets".into())
        .spawn(move || {
            let pinned: Vec<&Path> = netns::PINNED_DIRS.iter().map(Path::new).collect();
            let namespaces = netns::find(Path::new("/proc"), &pinned);
            let _ = tx.send(scan(&namespaces));
        })?;
    Ok(rx)
}

/// Scans `namespaces` from the calling thread, which is left in the last one entered: call it on a
/// thread that ends afterwards.
pub fn scan(namespaces: &[netns::Netns]) -> Scan {
    let mut out = Scan::default();
    let mut here = netns::current().ok();
    for ns in namespaces {
        if here != Some(ns.id) {
            let file = match std::fs::File::open(&ns.path) {
                Ok(file) => file,
                Err(e) => {
                    // Gone since it was found (a process exited): not a failure worth counting.
                    if e.kind() != std::io::ErrorKind::NotFound {
                        out.failures
                            .push((NetnsScanFailure::Open, ns.path.clone(), e.to_string()));
                    }
                    continue;
                }
            };
            // SAFETY: setns on an fd we own; it changes only this thread's network namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let e = std::io::Error::last_os_error();
                out.failures
                    .push((NetnsScanFailure::Enter, ns.path.clone(), e.to_string()));
                continue;
            }
            here = Some(ns.id);
        }
        match sockets_here() {
            Ok(sockets) => {
                let found = classify::classify(&sockets);
                out.egress.extend(found.egress);
                out.inbound += found.inbound;
                out.unattributed += found.unattributed;
                out.namespaces += 1;
            }
            Err(e) => {
                out.failures
                    .push((NetnsScanFailure::SockDiag, ns.path.clone(), e.to_string()))
            }
        }
    }
    out
}

/// The TCP (established, listening) and UDP sockets of the calling thread's namespace.
fn sockets_here() -> std::io::Result<Vec<diag::DiagSocket>> {
    let tcp_states = 1 << TCP_ESTABLISHED | 1 << TCP_LISTEN;
    let udp_states = 1 << TCP_ESTABLISHED | 1 << TCP_CLOSE;
    let mut all = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        for (protocol, states) in [
            (libc::IPPROTO_TCP, tcp_states),
            (libc::IPPROTO_UDP, udp_states),
        ] {
            match diag::dump(protocol as u8, family, states) {
                Ok(sockets) => all.extend(sockets),
                // A namespace or kernel without IPv6 has no IPv6 sockets to report.
                Err(e)
                    if i32::from(family) == libc::AF_INET6
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::ENOENT | libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT)
                        ) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(all)
}
