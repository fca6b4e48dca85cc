//! What the programs cost: the kernel's per-program run counters, for benchmarks and metrics.

use std::{os::fd::OwnedFd, time::Duration};

use aya::Ebpf;

use super::Error;

/// Run statistics of one program, as the kernel keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramStats {
    /// Function name in `agent-ebpf` (`connect4`, `ingress`, `tcp_outcome`, ...).
    pub name: &'static str,
    /// Instructions the verifier processed at load time (a bound on its complexity).
    pub verified_insns: Option<u32>,
    /// Invocations and their total run time; both stay zero while BPF stats are off.
    pub run_count: u64,
    pub run_time: Duration,
}

/// Turns on the kernel's BPF run-time statistics until the returned fd is closed, without
/// touching the global `kernel.bpf_stats_enabled` sysctl.
pub fn enable_run_time_stats() -> Result<OwnedFd, Error> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| Error::Io(e.io_error))
}

/// Statistics of the programs called `names` (the attached ones: a program left out was never
/// loaded and has none).
pub(super) fn program_stats(
    ebpf: &Ebpf,
    names: &[&'static str],
) -> Result<Vec<ProgramStats>, Error> {
    names
        .iter()
        .map(|&name| {
            let prog = ebpf.program(name).ok_or(Error::Missing(name))?;
            let info = prog.info().map_err(|source| Error::Query {
                program: name,
                source,
            })?;
            Ok(ProgramStats {
                name,
                verified_insns: info.verified_instruction_count(),
                run_count: info.run_count(),
                run_time: info.run_time(),
            })
        })
        .collect()
}
