//! The ring buffer: new flow keys and DNS answers, decoded into [`KernelEvent`]s.

use std::time::Duration;

use agent_common::{DnsEvent, EventKind, FlowKey, NewFlowEvent, DNS_CAPTURE_MAX};
use aya::maps::{Map, MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use super::Error;

/// One record from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelEvent {
    /// A flow key seen for the first time (its counters live in the flow table).
    NewFlow(FlowKey),
    /// A DNS answer delivered to a socket.
    Dns(DnsAnswer),
}

/// A DNS answer as the receiving socket got it: the transport payload, possibly cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    /// cgroup of the receiving socket (the inode number of its cgroup v2 directory).
    pub cgroup_id: u64,
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    /// `IPPROTO_UDP` or `IPPROTO_TCP`; over TCP the payload starts with the 2-byte length prefix.
    pub transport: u8,
    /// Payload length on the wire; more than `payload.len()` when the copy was cut.
    pub wire_len: u32,
    pub payload: Vec<u8>,
}

/// Longest delay between an event and its delivery when the ring buffer is not filling up.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Reads the ring buffer from a tokio task.
pub struct EventReader {
    fd: AsyncFd<RingBuf<MapData>>,
    malformed: u64,
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader")
            .field("malformed", &self.malformed)
            .finish_non_exhaustive()
    }
}

impl EventReader {
    pub(super) fn new(map: Map) -> Result<EventReader, Error> {
        let ring = RingBuf::try_from(map)?;
        // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged, for as long as it
        // lives, and the AsyncFd owns the ring buffer.
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| Error::Io(e.into()))?;
        Ok(EventReader { fd, malformed: 0 })
    }

    /// Waits for at least one event and appends every available event to `out`.
    ///
    /// Cancel-safe: events are only taken from the ring when they are appended. The programs do not
    /// wake the reader for every record (that costs more than the record), so this also looks every
    /// [`POLL_INTERVAL`].
    pub async fn next_batch(&mut self, out: &mut Vec<KernelEvent>) -> Result<(), Error> {
        loop {
            if self.drain(out) > 0 {
                return Ok(());
            }
            match tokio::time::timeout(POLL_INTERVAL, self.fd.readable_mut()).await {
                Ok(guard) => guard.map_err(Error::Io)?.clear_ready(),
                Err(_elapsed) => {}
            }
        }
    }

    /// Appends every event in the ring now to `out`, without waiting; returns how many. Readers
    /// call it before reading the flow table, so that no DNS answer or new flow still sitting in
    /// the ring (records are not always announced) is missed by a flush.
    pub fn drain(&mut self, out: &mut Vec<KernelEvent>) -> usize {
        let before = out.len();
        let ring = self.fd.get_mut();
        while let Some(item) = ring.next() {
            match decode(&item) {
                Some(ev) => out.push(ev),
                None => self.malformed += 1,
            }
        }
        out.len() - before
    }

    /// Records skipped because they were too short or of an unknown kind.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }
}

/// Decodes one ring-buffer record; `None` when it is too short or of an unknown kind.
pub(crate) fn decode(bytes: &[u8]) -> Option<KernelEvent> {
    let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    match EventKind::from_u32(kind)? {
        EventKind::NewFlow => {
            if bytes.len() < size_of::<NewFlowEvent>() {
                return None;
            }
            // SAFETY: length checked; NewFlowEvent is plain integers, valid for any bytes.
            let ev: NewFlowEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            Some(KernelEvent::NewFlow(ev.key))
        }
        EventKind::DnsAnswer => {
            let header = std::mem::offset_of!(DnsEvent, payload);
            if bytes.len() < header {
                return None;
            }
            let field = |at: usize, n: usize| &bytes[at..at + n];
            let wire_len = u32::from_ne_bytes(field(4, 4).try_into().ok()?);
            let cgroup_id = u64::from_ne_bytes(field(8, 8).try_into().ok()?);
            let captured = u16::from_ne_bytes(field(16, 2).try_into().ok()?) as usize;
            let family = bytes[18];
            let transport = bytes[19];
            // Never trust the length field beyond what the record holds.
            let captured = captured.min(DNS_CAPTURE_MAX).min(bytes.len() - header);
            Some(KernelEvent::Dns(DnsAnswer {
                cgroup_id,
                family,
                transport,
                wire_len,
                payload: bytes[header..header + captured].to_vec(),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_can_move_to_a_task() {
        fn send<T: Send + 'static>() {}
        send::<EventReader>();
        send::<super::super::Probes>();
        fn sync<T: Sync>() {}
        sync::<super::super::Probes>();
    }
    use agent_common::{AF_INET, IPPROTO_UDP};
    use std::mem::offset_of;

    #[test]
    fn decodes_new_flow() {
        let key = FlowKey {
            cgroup_id: 7,
            daddr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dport: 443,
            family: AF_INET,
            protocol: 6,
            _pad: [0; 4],
        };
        let ev = NewFlowEvent {
            kind: EventKind::NewFlow as u32,
            _pad: 0,
            key,
        };
        // SAFETY: plain repr(C) struct of integers with explicit padding.
        let bytes: [u8; size_of::<NewFlowEvent>()] = unsafe { std::mem::transmute(ev) };
        assert_eq!(decode(&bytes), Some(KernelEvent::NewFlow(key)));
        assert_eq!(decode(&bytes[..20]), None);
    }

    #[test]
    fn decodes_dns_and_clamps_lengths() {
        let mut bytes = vec![0u8; size_of::<DnsEvent>()];
        bytes[..4].copy_from_slice(&(EventKind::DnsAnswer as u32).to_ne_bytes());
        bytes[4..8].copy_from_slice(&3000u32.to_ne_bytes());
        bytes[8..16].copy_from_slice(&42u64.to_ne_bytes());
        bytes[16..18].copy_from_slice(&5u16.to_ne_bytes());
        bytes[18] = AF_INET;
        bytes[19] = IPPROTO_UDP;
        let at = offset_of!(DnsEvent, payload);
        bytes[at..at + 5].copy_from_slice(b"hello");
        let Some(KernelEvent::Dns(d)) = decode(&bytes) else {
            panic!("not decoded")
        };
        assert_eq!(
            (d.cgroup_id, d.wire_len, d.family, d.transport),
            (42, 3000, AF_INET, IPPROTO_UDP)
        );
        assert_eq!(d.payload, b"hello");
        // A lying captured_len is cut to the record.
        bytes[16..18].copy_from_slice(&u16::MAX.to_ne_bytes());
        let Some(KernelEvent::Dns(d)) = decode(&bytes[..at + 3]) else {
            panic!("not decoded")
        };
        assert_eq!(d.payload.len(), 3);
        assert_eq!(decode(&bytes[..10]), None);
        assert_eq!(decode(&[9, 0, 0, 0, 1, 2, 3]), None);
        assert_eq!(decode(&[]), None);
    }
}
