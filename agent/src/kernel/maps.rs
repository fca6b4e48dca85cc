//! Reading the kernel maps. Map names match the statics in `agent-ebpf/src/maps.rs`.

use agent_common::{FlowKey, FlowValue, COUNTER_SLOTS};
use aya::{
    maps::{HashMap, MapData, PerCpuArray},
    Ebpf,
};

use super::Error;

pub(super) const FLOWS: &str = "FLOWS";
pub(super) const PENDING: &str = "PENDING";
pub(super) const EVENTS: &str = "EVENTS";
pub(super) const LOSS_COUNTERS: &str = "LOSS_COUNTERS";
pub(super) const UDP_PEERS: &str = "UDP_PEERS";
pub(super) const PENDING_UDP: &str = "PENDING_UDP";

/// Iterates the LRU flow table. Entries inserted or evicted meanwhile may or may not appear (the
/// kernel gives no snapshot); a key deleted under the iterator ends that step, not the whole walk.
pub(super) fn flow_table(ebpf: &Ebpf) -> Result<Vec<(FlowKey, FlowValue)>, Error> {
    let map = ebpf.map(FLOWS).ok_or(Error::Missing("FLOWS map"))?;
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
