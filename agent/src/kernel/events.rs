//! The ring buffer: new flow keys and DNS answers, decoded into [`KernelEvent`]s.

use std::mem::offset_of;
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

/// DNS payload as the receiving socket got it (see `agent_common::DnsEvent`): over UDP one
/// answer, possibly cut; over TCP a piece of the byte stream, which `crate::dns::TcpStreams` puts
/// back together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    /// cgroup of the receiving socket (the inode number of its cgroup v2 directory).
    pub cgroup_id: u64,
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    /// `IPPROTO_UDP` or `IPPROTO_TCP`.
    pub transport: u8,
    /// Length of the packet's transport payload; more than `payload.len()` when the copy was cut
    /// or is one piece of several.
    pub wire_len: u32,
    /// Cookie of the receiving socket: over TCP, which stream the bytes belong to.
    pub socket_cookie: u64,
    /// TCP: sequence number of `payload[0]`.
    pub seq: u32,
    /// `agent_common::DNS_FLAG_*` bits.
    pub flags: u8,
    pub payload: Vec<u8>,
}

/// Longest delay between an event and its delivery while events keep coming (the ring buffer
/// not filling up; a filling ring wakes the reader at once).
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Longest delay after a quiet spell: each look that finds nothing doubles the wait, up to this,
/// and the first event brings it back to [`POLL_INTERVAL`]. An idle agent (a node whose pods
/// repeat known flows, which the kernel aggregates) then wakes about once a second instead of ten
/// times (BENCHMARKS.md, "CPU per million connections").
pub const POLL_INTERVAL_IDLE: Duration = Duration::from_secs(1);

/// Reads the ring buffer from a tokio task.
pub struct EventReader {
    fd: AsyncFd<RingBuf<MapData>>,
    malformed: u64,
    wait: Duration,
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader")
            .field("malformed", &self.malformed)
            .field("wait", &self.wait)
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
        Ok(EventReader {
            fd,
            malformed: 0,
            wait: POLL_INTERVAL,
        })
    }

    /// Waits for at least one event and appends every available event to `out`.
    ///
    /// Cancel-safe: events are only taken from the ring when they are appended. The programs do not
    /// wake the reader for every record (that costs more than the record), so this also looks every
    /// [`POLL_INTERVAL`], backing off to [`POLL_INTERVAL_IDLE`] while nothing comes.
    pub async fn next_batch(&mut self, out: &mut Vec<KernelEvent>) -> Result<(), Error> {
        loop {
            if self.drain(out) > 0 {
                self.wait = POLL_INTERVAL;
                return Ok(());
            }
            match tokio::time::timeout(self.wait, self.fd.readable_mut()).await {
                Ok(guard) => guard.map_err(Error::Io)?.clear_ready(),
                Err(_elapsed) => self.wait = (self.wait * 2).min(POLL_INTERVAL_IDLE),
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
            let header = offset_of!(DnsEvent, payload);
            if bytes.len() < header {
                return None;
            }
            let field = |at: usize, n: usize| &bytes[at..at + n];
            let u32_at = |at| field(at, 4).try_into().ok().map(u32::from_ne_bytes);
            let u64_at = |at| field(at, 8).try_into().ok().map(u64::from_ne_bytes);
            let captured = u16::from_ne_bytes(
                field(offset_of!(DnsEvent, captured_len), 2)
                    .try_into()
                    .ok()?,
            ) as usize;
            // Never trust the length field beyond what the record holds.
            let captured = captured.min(DNS_CAPTURE_MAX).min(bytes.len() - header);
            Some(KernelEvent::Dns(DnsAnswer {
                cgroup_id: u64_at(offset_of!(DnsEvent, cgroup_id))?,
                family: bytes[offset_of!(DnsEvent, family)],
                transport: bytes[offset_of!(DnsEvent, transport)],
                wire_len: u32_at(offset_of!(DnsEvent, wire_len))?,
                socket_cookie: u64_at(offset_of!(DnsEvent, socket_cookie))?,
                seq: u32_at(offset_of!(DnsEvent, seq))?,
                flags: bytes[offset_of!(DnsEvent, flags)],
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
        let mut ev = DnsEvent {
            kind: EventKind::DnsAnswer as u32,
            wire_len: 3000,
            cgroup_id: 42,
            socket_cookie: 77,
            seq: 0xdead_beef,
            captured_len: 5,
            family: AF_INET,
            transport: IPPROTO_UDP,
            flags: agent_common::DNS_FLAG_STREAM_START,
            _pad: [0; 7],
            payload: [0; DNS_CAPTURE_MAX],
        };
        ev.payload[..5].copy_from_slice(b"hello");
        // SAFETY: plain repr(C) struct of integers with explicit padding.
        let mut bytes: Vec<u8> =
            unsafe { std::mem::transmute::<DnsEvent, [u8; size_of::<DnsEvent>()]>(ev) }.to_vec();
        let at = offset_of!(DnsEvent, payload);
        let Some(KernelEvent::Dns(d)) = decode(&bytes) else {
            panic!("not decoded")
        };
        assert_eq!(
            (d.cgroup_id, d.wire_len, d.family, d.transport),
            (42, 3000, AF_INET, IPPROTO_UDP)
        );
        assert_eq!((d.socket_cookie, d.seq, d.flags), (77, 0xdead_beef, 1));
        assert_eq!(d.payload, b"hello");
        // A lying captured_len is cut to the record.
        let len_at = offset_of!(DnsEvent, captured_len);
        bytes[len_at..len_at + 2].copy_from_slice(&u16::MAX.to_ne_bytes());
        let Some(KernelEvent::Dns(d)) = decode(&bytes[..at + 3]) else {
            panic!("not decoded")
        };
        assert_eq!(d.payload.len(), 3);
        assert_eq!(decode(&bytes[..10]), None);
        assert_eq!(decode(&[9, 0, 0, 0, 1, 2, 3]), None);
        assert_eq!(decode(&[]), None);
    }
}
