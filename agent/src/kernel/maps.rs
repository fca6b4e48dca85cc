//! Reading the kernel maps. Map names match the statics in `agent-ebpf/src/maps.rs`.
//!
//! The flow table is read whole at every poll, so how it is read matters once it is full: one
//! `BPF_MAP_GET_NEXT_KEY` and one `BPF_MAP_LOOKUP_ELEM` per entry is 131,072 system calls for a
//! full table. `BPF_MAP_LOOKUP_BATCH` (Linux 5.6, LRU hash included) copies thousands of entries
//! per call; aya 0.14 does not offer it, so it is called here on the map's fd. Kernels without it
//! get the per-entry walk. BENCHMARKS.md has both costs.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use agent_common::{FlowKey, FlowValue, COUNTER_SLOTS};
use aya::{
    maps::{HashMap, Map, MapData, PerCpuArray},
    Ebpf,
};

use super::Error;

pub(super) const FLOWS: &str = "FLOWS";
pub(super) const EVENTS: &str = "EVENTS";
pub(super) const LOSS_COUNTERS: &str = "LOSS_COUNTERS";
pub(super) const UDP_PEERS: &str = "UDP_PEERS";

/// Entries asked for per batch call; grown when one hash bucket holds more (ENOSPC).
const BATCH_ENTRIES: u32 = 4096;

/// Reads the LRU flow table. Entries inserted or evicted meanwhile may or may not appear (the
/// kernel gives no snapshot).
pub(super) fn flow_table(ebpf: &Ebpf) -> Result<Vec<(FlowKey, FlowValue)>, Error> {
    let map = ebpf.map(FLOWS).ok_or(Error::Missing("FLOWS map"))?;
    if let Map::LruHashMap(data) = map {
        match lookup_batch(data.fd().as_fd()) {
            Ok(entries) => return Ok(entries),
            // The kernel predates batch operations: walk the table instead.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTSUP)) => {}
            Err(e) => return Err(Error::Io(e)),
        }
    }
    flow_table_walk(map)
}

/// [`flow_table`] without batches.
pub(super) fn flow_table_by_entry(ebpf: &Ebpf) -> Result<Vec<(FlowKey, FlowValue)>, Error> {
    flow_table_walk(ebpf.map(FLOWS).ok_or(Error::Missing("FLOWS map"))?)
}

/// The per-entry walk: a key deleted under the iterator ends that step, not the whole walk.
fn flow_table_walk(map: &Map) -> Result<Vec<(FlowKey, FlowValue)>, Error> {
    let flows: HashMap<&MapData, FlowKey, FlowValue> = HashMap::try_from(map)?;
    let mut out = Vec::new();
    for entry in flows.iter() {
        match entry {
            Ok(kv) => out.push(kv),
            // Evicted between "next key" and "lookup": skip it, the walk goes on.
            Err(aya::maps::MapError::KeyNotFound) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// The `batch` member of `union bpf_attr` (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Every entry of a hash map of `FlowKey → FlowValue`, by `BPF_MAP_LOOKUP_BATCH`.
pub(crate) fn lookup_batch(fd: BorrowedFd<'_>) -> std::io::Result<Vec<(FlowKey, FlowValue)>> {
    let mut out = Vec::new();
    let mut capacity = BATCH_ENTRIES as usize;
    let mut keys = vec![FlowKey::default(); capacity];
    let mut values = vec![FlowValue::default(); capacity];
    // The hash map's batch token is a bucket index (u32); the kernel writes the next one.
    let mut token_in = 0u32;
    let mut token_out = 0u32;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                std::ptr::addr_of!(token_in) as u64
            },
            out_batch: std::ptr::addr_of_mut!(token_out) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: capacity as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid `batch` member of bpf_attr; `keys` and `values` hold `count`
        // elements of the map's key and value sizes (FlowKey and FlowValue are the map's types,
        // pinned by agent-common's layout tests), and the tokens are u32 as the hash map wants.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                std::ptr::addr_of_mut!(attr),
                std::mem::size_of::<BatchAttr>() as u32,
            )
        };
        let error = (rc < 0).then(std::io::Error::last_os_error);
        let got = attr.count as usize;
        match error.as_ref().and_then(std::io::Error::raw_os_error) {
            None | Some(libc::ENOENT) => {
                out.extend(
                    keys[..got]
                        .iter()
                        .copied()
                        .zip(values[..got].iter().copied()),
                );
                if error.is_some() {
                    // ENOENT: the last bucket was read.
                    return Ok(out);
                }
                token_in = token_out;
                first = false;
            }
            // One bucket holds more entries than fit: retry it with more room.
            Some(libc::ENOSPC) if capacity < (1 << 20) => {
                capacity *= 2;
                keys.resize(capacity, FlowKey::default());
                values.resize(capacity, FlowValue::default());
            }
            Some(_) => return Err(error.expect("an errno was read")),
        }
    }
}

/// Sums every counter over the CPUs.
pub(super) fn counters(ebpf: &Ebpf) -> Result<[u64; COUNTER_SLOTS as usize], Error> {
    let map = ebpf
        .map(LOSS_COUNTERS)
        .ok_or(Error::Missing("LOSS_COUNTERS map"))?;
    let array: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
    let mut out = [0u64; COUNTER_SLOTS as usize];
    for (i, slot) in out.iter_mut().enumerate() {
        let per_cpu = array.get(&(i as u32), 0)?;
        *slot = per_cpu.iter().fold(0u64, |acc, v| acc.wrapping_add(*v));
    }
    Ok(out)
}
