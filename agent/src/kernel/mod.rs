//! TEMPORARY stand-in for the kernel module (written on another branch); replaced at merge.

/// Attached kernel programs and their maps.
pub struct Probes;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kernel programs are not available in this build")]
    Unavailable,
}

pub enum KernelEvent {
    NewFlow(agent_common::FlowKey),
    Dns(DnsAnswer),
}

pub struct DnsAnswer {
    pub cgroup_id: u64,
    pub family: u8,
    pub transport: u8,
    pub wire_len: u32,
    pub payload: Vec<u8>,
}

impl Probes {
    pub fn attach(_cgroup_root: &std::path::Path) -> Result<Probes, Error> {
        Err(Error::Unavailable)
    }

    pub fn flow_table(
        &self,
    ) -> Result<Vec<(agent_common::FlowKey, agent_common::FlowValue)>, Error> {
        Err(Error::Unavailable)
    }

    pub fn counters(&self) -> Result<[u64; agent_common::COUNTER_SLOTS as usize], Error> {
        Err(Error::Unavailable)
    }

    pub fn take_events(&mut self) -> Result<EventReader, Error> {
        Err(Error::Unavailable)
    }
}

pub struct EventReader;

impl EventReader {
    pub async fn next_batch(&mut self, _out: &mut Vec<KernelEvent>) -> Result<(), Error> {
        Err(Error::Unavailable)
    }
}
