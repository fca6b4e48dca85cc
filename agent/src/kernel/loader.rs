//! Loading and attaching: checks that explain a failure before the kernel does, then one attach
//! per program at the cgroup v2 root, in the order of [`PROGRAMS`]. A program the agent can do
//! without (`ProgramSpec::optional`) is left out with a warning when the kernel lacks its hook.

use std::{fs::File, path::Path};

use aya::{
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr},
    Ebpf, EbpfLoader,
};

use super::{
    events::EventReader,
    maps,
    programs::{Attach, ProgramSpec, PROGRAMS},
    Error,
};

/// The object built by `build.rs` (aya-build copies the `agent-ebpf` binary to `$OUT_DIR`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Table sizes and program choices made at load time; the defaults are the ABI constants and
/// every program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Capacity of the flow table (LRU: the coldest flow is evicted when it is full).
    pub flow_entries: u32,
    /// Ring buffer size in bytes: a power of two, a multiple of the page size.
    pub ring_bytes: u32,
    /// Capacity of the table of peers unconnected UDP sockets may answer (LRU: a busy server's
    /// oldest clients are forgotten first, and its replies to them are then recorded as flows).
    pub udp_peer_entries: u32,
    /// Programs to leave out, as if the kernel lacked their hooks (the start-up checks pass the
    /// optional programs the running kernel is too old for; tests simulate such kernels). Only
    /// optional programs may be named: leaving out another is an error.
    pub left_out: &'static [&'static str],
}

impl Default for Options {
    fn default() -> Self {
        Options {
            flow_entries: agent_common::FLOW_MAP_ENTRIES,
            ring_bytes: agent_common::EVENTS_RING_BYTES,
            udp_peer_entries: agent_common::UDP_PEER_ENTRIES,
            left_out: &[],
        }
    }
}

/// A program that is not attached, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    pub program: &'static str,
    /// What the flows lack without it.
    pub consequence: &'static str,
    /// Why it is not attached: asked for, or the kernel's answer.
    pub reason: String,
}

/// The loaded and attached programs with their maps. Dropping it detaches and unloads everything:
/// the links are owned by the programs inside [`Ebpf`], and closing a link detaches it.
pub struct Probes {
    ebpf: Ebpf,
    attached: Vec<&'static str>,
    left_out: Vec<LeftOut>,
    events_taken: bool,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("attached", &self.attached)
            .field("left_out", &self.left_out)
            .field("events_taken", &self.events_taken)
            .finish_non_exhaustive()
    }
}

impl Probes {
    /// Loads the programs and attaches them at `cgroup_root` (the cgroup v2 mount).
    pub fn attach(cgroup_root: &Path) -> Result<Probes, Error> {
        Probes::attach_with(cgroup_root, Options::default())
    }

    /// [`Probes::attach`] with other table sizes or programs left out.
    pub fn attach_with(cgroup_root: &Path, options: Options) -> Result<Probes, Error> {
        check_privileges()?;
        let cgroup = open_cgroup2(cgroup_root)?;
        if OBJECT.is_empty() {
            return Err(Error::Missing("kernel programs"));
        }
        for name in options.left_out {
            match super::programs::spec(name) {
                Some(spec) if spec.optional.is_some() => {}
                Some(_) => return Err(Error::Required(name)),
                None => return Err(Error::Missing(name)),
            }
        }
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(maps::FLOWS, options.flow_entries)
            .map_max_entries(maps::EVENTS, options.ring_bytes)
            .map_max_entries(maps::UDP_PEERS, options.udp_peer_entries)
            .load(OBJECT)
            .map_err(Error::Load)?;
        let mode = attach_mode();

        let mut attached = Vec::new();
        let mut left_out = Vec::new();
        for spec in &PROGRAMS {
            if options.left_out.contains(&spec.name) {
                left_out.push(leave_out(spec, "left out by the start-up checks".into()));
                continue;
            }
            match attach_one(&mut ebpf, spec, &cgroup, mode) {
                Ok(()) => attached.push(spec.name),
                // A kernel without the hook refuses the program at load or attach time.
                Err(error) if spec.optional.is_some() => {
                    left_out.push(leave_out(spec, error.to_string()));
                }
                Err(error) => return Err(error),
            }
        }
        Ok(Probes {
            ebpf,
            attached,
            left_out,
            events_taken: false,
        })
    }

    /// Names of the attached programs, in attach order.
    pub fn attached(&self) -> &[&'static str] {
        &self.attached
    }

    /// Optional programs that are not attached, and what that costs.
    pub fn left_out(&self) -> &[LeftOut] {
        &self.left_out
    }

    /// Snapshot of the in-kernel flow table (by batch where the kernel has it, Linux 5.6).
    pub fn flow_table(
        &self,
    ) -> Result<Vec<(agent_common::FlowKey, agent_common::FlowValue)>, Error> {
        maps::flow_table(&self.ebpf)
    }

    /// The same snapshot read entry by entry (two system calls per entry), as kernels without
    /// batch operations get it; for benchmarks and tests.
    pub fn flow_table_by_entry(
        &self,
    ) -> Result<Vec<(agent_common::FlowKey, agent_common::FlowValue)>, Error> {
        maps::flow_table_by_entry(&self.ebpf)
    }

    /// Loss counters summed over CPUs, indexed by agent_common::Counter.
    pub fn counters(&self) -> Result<[u64; agent_common::COUNTER_SLOTS as usize], Error> {
        maps::counters(&self.ebpf)
    }

    /// Per-program verifier size and run statistics (run counts need
    /// [`enable_run_time_stats`](super::enable_run_time_stats) or the `kernel.bpf_stats_enabled` sysctl).
    pub fn program_stats(&self) -> Result<Vec<super::ProgramStats>, Error> {
        super::stats::program_stats(&self.ebpf, &self.attached)
    }

    /// Takes the ring-buffer reader (once); Err if already taken.
    ///
    /// Must be called inside a tokio runtime: the reader registers with its reactor.
    pub fn take_events(&mut self) -> Result<EventReader, Error> {
        if self.events_taken {
            return Err(Error::EventsTaken);
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime);
        }
        let map = self
            .ebpf
            .take_map(maps::EVENTS)
            .ok_or(Error::Missing("EVENTS map"))?;
        self.events_taken = true;
        EventReader::new(map)
    }
}

fn leave_out(spec: &ProgramSpec, reason: String) -> LeftOut {
    let consequence = spec.optional.unwrap_or_default();
    tracing::warn!(
        program = spec.name,
        hook = spec.hook,
        since = %spec.since,
        %reason,
        "kernel program left out: {consequence}"
    );
    LeftOut {
        program: spec.name,
        consequence,
        reason,
    }
}

/// Loads `spec`'s program and attaches it to `cgroup`.
fn attach_one(
    ebpf: &mut Ebpf,
    spec: &ProgramSpec,
    cgroup: &File,
    mode: CgroupAttachMode,
) -> Result<(), Error> {
    let name = spec.name;
    let program = ebpf.program_mut(name).ok_or(Error::Missing(name))?;
    let verify = |source| Error::Verify {
        program: name,
        source,
    };
    let attach = |source| Error::Attach {
        program: name,
        source,
    };
    match spec.attach {
        Attach::SockAddr => {
            let p: &mut CgroupSockAddr = program.try_into().map_err(verify)?;
            p.load().map_err(verify)?;
            p.attach(cgroup, mode).map_err(attach)?;
        }
        Attach::SkbIngress | Attach::SkbEgress => {
            let p: &mut CgroupSkb = program.try_into().map_err(verify)?;
            p.load().map_err(verify)?;
            let kind = if spec.attach == Attach::SkbIngress {
                CgroupSkbAttachType::Ingress
            } else {
                CgroupSkbAttachType::Egress
            };
            p.attach(cgroup, kind, mode).map_err(attach)?;
        }
        Attach::Sock => {
            let p: &mut CgroupSock = program.try_into().map_err(verify)?;
            p.load().map_err(verify)?;
            p.attach(cgroup, mode).map_err(attach)?;
        }
    }
    Ok(())
}

/// Several agents (parallel tests, a second DaemonSet, other tools) must be able to attach at the
/// root at once. From 5.7 aya attaches through `bpf_link_create`, which rejects any flag for cgroup
/// links (EINVAL) and always attaches them in multi mode; before that it uses `BPF_PROG_ATTACH`,
/// where multi mode must be asked for with `BPF_F_ALLOW_MULTI`.
fn attach_mode() -> CgroupAttachMode {
    let links = aya::util::KernelVersion::current()
        .map(|v| v >= aya::util::KernelVersion::new(5, 7, 0))
        .unwrap_or(true);
    if links {
        CgroupAttachMode::Single
    } else {
        CgroupAttachMode::AllowMultiple
    }
}

/// Loading cgroup programs needs CAP_BPF (or CAP_SYS_ADMIN), reading packets and kernel memory
/// from them CAP_PERFMON, attaching CAP_NET_ADMIN. Checked here so the user gets one clear message
/// instead of EPERM from whichever syscall fails first.
pub(crate) fn check_privileges() -> Result<(), Error> {
    if missing_capabilities(effective_capabilities()).is_empty() {
        Ok(())
    } else {
        Err(Error::NotRoot)
    }
}

/// The effective capability set of this process (`CapEff` in /proc/self/status); 0 if unreadable.
pub fn effective_capabilities() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// The capabilities loading and attaching need that `effective` lacks, by their names in
/// capabilities(7).
pub fn missing_capabilities(effective: u64) -> Vec<&'static str> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let has = |c: u32| effective & (1u64 << c) != 0;
    let mut out = Vec::new();
    if !has(CAP_SYS_ADMIN) {
        if !has(CAP_BPF) {
            out.push("CAP_BPF");
        }
        if !has(CAP_PERFMON) {
            out.push("CAP_PERFMON");
        }
    }
    if !has(CAP_NET_ADMIN) {
        out.push("CAP_NET_ADMIN");
    }
    out
}

/// Opens `path` and makes sure it is a cgroup v2 directory (attaching to a v1 or plain directory
/// fails with an opaque EBADF otherwise).
pub(crate) fn open_cgroup2(path: &Path) -> Result<File, Error> {
    let file = File::open(path).map_err(Error::NoCgroup2)?;
    let meta = file.metadata().map_err(Error::NoCgroup2)?;
    if !meta.is_dir() || !is_cgroup2(path) {
        return Err(Error::NoCgroup2(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a cgroup2 filesystem", path.display()),
        )));
    }
    Ok(file)
}

fn is_cgroup2(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `st` is large enough for statfs.
    let rc = unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) };
    // SAFETY: statfs filled it on success.
    // `f_type`'s integer type differs between architectures, hence the cast.
    #[allow(clippy::unnecessary_cast)]
    let is_cg2 = rc == 0 && unsafe { st.assume_init() }.f_type as i64 == CGROUP2_SUPER_MAGIC;
    is_cg2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_rules() {
        let bit = |c: u32| 1u64 << c;
        assert!(missing_capabilities(u64::MAX).is_empty());
        assert!(missing_capabilities(bit(12) | bit(21)).is_empty());
        assert!(missing_capabilities(bit(12) | bit(38) | bit(39)).is_empty());
        assert_eq!(missing_capabilities(bit(38) | bit(39)), ["CAP_NET_ADMIN"]);
        assert_eq!(missing_capabilities(bit(12) | bit(39)), ["CAP_PERFMON"]);
        assert_eq!(
            missing_capabilities(0),
            ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]
        );
    }

    #[test]
    fn the_object_is_embedded() {
        // An empty object only happens with AYA_BUILD_SKIP=1.
        if std::env::var_os("AYA_BUILD_SKIP").is_none() {
            assert!(OBJECT.len() > 1000, "eBPF object is {} bytes", OBJECT.len());
        }
    }
}
