//! DNS over TCP: the byte streams the kernel copies in pieces, put back together into messages.
//!
//! Over TCP a DNS message is a two-byte length prefix and the message (RFC 1035 §4.2.2, RFC 7766),
//! and nothing ties messages to segments: a long answer spans several segments, one segment may
//! end one message and begin the next (pipelined queries), and GRO may hand the socket many
//! segments at once. The kernel copies every piece with its sequence number and the socket's
//! cookie (`agent_common::DnsEvent`), and announces where each stream starts (its SYN-ACK). This
//! module orders the pieces per stream, skips what was seen twice (retransmissions), holds what
//! came early (reordering), and cuts the stream into messages by their prefixes.
//!
//! What cannot be completed is not dropped silently: a message whose stream has a hole for
//! longer than [`Limits::gap_timeout`] (a piece lost because the ring buffer was full), or
//! that is pushed out by the memory bound, comes out marked incomplete, and the parser names
//! what the received part holds. The stream then goes on with the next message when the cut one's
//! prefix says where that starts.
//!
//! Memory is bounded: at most [`Limits::max_streams`] streams and [`Limits::max_bytes`] bytes
//! held in all (a message is at most 64 KiB); past either bound the least recently active
//! stream goes first.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use agent_common::DNS_FLAG_STREAM_START;

use crate::kernel::DnsAnswer;

/// Bounds of the reassembly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Streams followed at once.
    pub max_streams: usize,
    /// Bytes held over all streams (partial messages and pieces that came early).
    pub max_bytes: usize,
    /// How long a hole may wait for the piece that fills it.
    pub gap_timeout: Duration,
    /// A stream silent this long is forgotten (DNS connections are short; RFC 7766 suggests
    /// servers close idle ones within seconds).
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_streams: 4096,
            max_bytes: 16 << 20,
            gap_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// One DNS message taken out of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamMessage {
    pub cgroup_id: u64,
    /// The message without its length prefix; only the received part when `complete` is false.
    pub bytes: Vec<u8>,
    pub complete: bool,
}

/// Every followed stream, by socket cookie.
#[derive(Debug)]
pub struct TcpStreams {
    streams: HashMap<u64, Stream>,
    /// Bytes held by all streams.
    held: usize,
    limits: Limits,
}

#[derive(Debug)]
struct Stream {
    cgroup_id: u64,
    /// Sequence number of the byte after `buf`.
    next_seq: u32,
    /// From the start of the current message (its length prefix) up to `next_seq`.
    buf: Vec<u8>,
    /// Pieces that came before the bytes preceding them, by sequence number.
    early: BTreeMap<u32, Vec<u8>>,
    /// When the oldest piece in `early` was held.
    hole_since: Option<Instant>,
    last_active: Instant,
}

impl Stream {
    fn new(cgroup_id: u64, next_seq: u32, now: Instant) -> Stream {
        Stream {
            cgroup_id,
            next_seq,
            buf: Vec::new(),
            early: BTreeMap::new(),
            hole_since: None,
            last_active: now,
        }
    }

    fn held(&self) -> usize {
        self.buf.len() + self.early.values().map(Vec::len).sum::<usize>()
    }

    /// Appends `data` (starting at `seq`) where it fits: old bytes are skipped, early ones held.
    fn accept(&mut self, seq: u32, data: &[u8], now: Instant) {
        let ahead = seq.wrapping_sub(self.next_seq) as i32;
        if ahead > 0 {
            let slot = self.early.entry(seq).or_default();
            if data.len() > slot.len() {
                *slot = data.to_vec();
            }
            self.hole_since.get_or_insert(now);
            return;
        }
        // At or before the next expected byte: the part before it was seen already.
        let skip = ahead.unsigned_abs() as usize;
        if skip < data.len() {
            self.buf.extend_from_slice(&data[skip..]);
            self.next_seq = self.next_seq.wrapping_add((data.len() - skip) as u32);
        }
        // Pieces that came early may fit now.
        while let Some((&seq, _)) = self.early.first_key_value() {
            if (seq.wrapping_sub(self.next_seq) as i32) > 0 {
                break;
            }
            let piece = self.early.remove(&seq).expect("the key was just seen");
            let skip = self.next_seq.wrapping_sub(seq) as usize;
            if skip < piece.len() {
                self.buf.extend_from_slice(&piece[skip..]);
                self.next_seq = self.next_seq.wrapping_add((piece.len() - skip) as u32);
            }
        }
        if self.early.is_empty() {
            self.hole_since = None;
        }
    }

    /// Takes the complete messages off the front of `buf`.
    fn messages(&mut self, out: &mut Vec<StreamMessage>) {
        let mut at = 0;
        while let Some(prefix) = self.buf.get(at..at + 2) {
            let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
            let Some(message) = self.buf.get(at + 2..at + 2 + len) else {
                break;
            };
            out.push(StreamMessage {
                cgroup_id: self.cgroup_id,
                bytes: message.to_vec(),
                complete: true,
            });
            at += 2 + len;
        }
        self.buf.drain(..at);
    }

    /// Gives up waiting for the hole: the current message comes out as received, and the stream
    /// goes on at the next message if the cut one's prefix says where it starts. `None` when it
    /// cannot go on (the stream should then be forgotten).
    fn skip_hole(&mut self, out: &mut Vec<StreamMessage>) -> Option<()> {
        let prefix = self.buf.get(..2)?;
        let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
        let message_start = self.next_seq.wrapping_sub(self.buf.len() as u32);
        out.push(StreamMessage {
            cgroup_id: self.cgroup_id,
            bytes: self.buf[2..].to_vec(),
            complete: false,
        });
        self.buf.clear();
        self.next_seq = message_start.wrapping_add(2 + len as u32);
        // Re-place what was held early against the new position.
        let early = std::mem::take(&mut self.early);
        self.hole_since = None;
        let now = self.last_active;
        for (seq, piece) in early {
            self.accept(seq, &piece, now);
        }
        self.messages(out);
        Some(())
    }

    /// What is left when the stream is forgotten: the current message as received, if it holds
    /// more than its prefix.
    fn remains(self, out: &mut Vec<StreamMessage>) {
        if self.buf.len() > 2 {
            out.push(StreamMessage {
                cgroup_id: self.cgroup_id,
                bytes: self.buf[2..].to_vec(),
                complete: false,
            });
        }
    }
}

impl TcpStreams {
    pub fn new(limits: Limits) -> TcpStreams {
        TcpStreams {
            streams: HashMap::new(),
            held: 0,
            limits,
        }
    }

    /// Takes one piece of a stream; returns the messages it completed (and any cut short to keep
    /// within the bounds).
    pub fn push(&mut self, piece: &DnsAnswer, now: Instant) -> Vec<StreamMessage> {
        let mut out = Vec::new();
        let cookie = piece.socket_cookie;
        if piece.flags & DNS_FLAG_STREAM_START != 0 {
            // A new connection (cookies are never reused): its first byte starts a message.
            if let Some(old) = self.streams.remove(&cookie) {
                self.held -= old.held();
                old.remains(&mut out);
            }
            self.insert(
                cookie,
                Stream::new(piece.cgroup_id, piece.seq, now),
                &mut out,
            );
            return out;
        }
        if piece.payload.is_empty() {
            return out;
        }
        if !self.streams.contains_key(&cookie) {
            // A stream whose start was not seen (the agent started later, or the announcement
            // was lost): the piece is taken as the start of a message, as most are.
            self.insert(
                cookie,
                Stream::new(piece.cgroup_id, piece.seq, now),
                &mut out,
            );
        }
        let Some(stream) = self.streams.get_mut(&cookie) else {
            return out;
        };
        let before = stream.held();
        stream.last_active = now;
        stream.accept(piece.seq, &piece.payload, now);
        stream.messages(&mut out);
        self.held = self.held + stream.held() - before;
        self.enforce_bounds(&mut out);
        out
    }

    /// Gives up on holes older than the gap timeout and forgets idle streams; returns what that
    /// cut short. Call it now and then (the agent does at every poll).
    pub fn expire(&mut self, now: Instant) -> Vec<StreamMessage> {
        let mut out = Vec::new();
        let limits = self.limits;
        let mut forget = Vec::new();
        for (&cookie, stream) in &mut self.streams {
            if now.saturating_duration_since(stream.last_active) >= limits.idle_timeout {
                forget.push(cookie);
                continue;
            }
            let stale = stream
                .hole_since
                .is_some_and(|t| now.saturating_duration_since(t) >= limits.gap_timeout);
            if stale {
                let before = stream.held();
                if stream.skip_hole(&mut out).is_none() {
                    forget.push(cookie);
                    continue;
                }
                self.held = self.held + stream.held() - before;
            }
        }
        for cookie in forget {
            self.remove(cookie, &mut out);
        }
        out
    }

    /// Bytes held over all streams.
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// Streams followed.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    fn insert(&mut self, cookie: u64, stream: Stream, out: &mut Vec<StreamMessage>) {
        self.streams.insert(cookie, stream);
        self.enforce_bounds(out);
    }

    fn remove(&mut self, cookie: u64, out: &mut Vec<StreamMessage>) {
        if let Some(stream) = self.streams.remove(&cookie) {
            self.held -= stream.held();
            stream.remains(out);
        }
    }

    /// Forgets the least recently active streams until both bounds hold.
    fn enforce_bounds(&mut self, out: &mut Vec<StreamMessage>) {
        while self.streams.len() > self.limits.max_streams
            || (self.held > self.limits.max_bytes && !self.streams.is_empty())
        {
            let oldest = self
                .streams
                .iter()
                .min_by_key(|(_, s)| s.last_active)
                .map(|(&cookie, _)| cookie);
            match oldest {
                Some(cookie) => self.remove(cookie, out),
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::parse::tests::{a, response};

    fn piece(cookie: u64, seq: u32, data: &[u8]) -> DnsAnswer {
        DnsAnswer {
            cgroup_id: 9,
            family: agent_common::AF_INET,
            transport: agent_common::IPPROTO_TCP,
            wire_len: data.len() as u32,
            socket_cookie: cookie,
            seq,
            flags: 0,
            payload: data.to_vec(),
        }
    }

    fn start(cookie: u64, seq: u32) -> DnsAnswer {
        DnsAnswer {
            flags: DNS_FLAG_STREAM_START,
            ..piece(cookie, seq, &[])
        }
    }

    fn framed(msg: &[u8]) -> Vec<u8> {
        let mut out = (msg.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(msg);
        out
    }

    fn long_answer(n: usize) -> Vec<u8> {
        let names: Vec<String> = (0..n)
            .map(|i| format!("198.18.{}.{}", i / 250, i % 250 + 1))
            .collect();
        response(
            "many.example.test.",
            names
                .iter()
                .map(|ip| ("many.example.test.", a(ip)))
                .collect(),
        )
    }

    #[test]
    fn a_message_over_several_segments_and_the_next_in_the_last_one() {
        let now = Instant::now();
        let mut s = TcpStreams::new(Limits::default());
        let first = long_answer(300);
        let second = response("b.test.", vec![("b.test.", a("198.18.9.9"))]);
        let mut stream = framed(&first);
        stream.extend(framed(&second));
        let isn = u32::MAX - 500; // sequence numbers wrap inside the stream
        assert!(s.push(&start(1, isn), now).is_empty());
        let mut got = Vec::new();
        for (i, chunk) in stream.chunks(1448).enumerate() {
            let seq = isn.wrapping_add((i * 1448) as u32);
            got.extend(s.push(&piece(1, seq, chunk), now));
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].bytes, first);
        assert!(got[0].complete);
        assert_eq!(got[1].bytes, second);
        assert_eq!(s.held_bytes(), 0);
    }

    #[test]
    fn retransmissions_and_reordering_change_nothing() {
        let now = Instant::now();
        let mut s = TcpStreams::new(Limits::default());
        let msg = framed(&long_answer(200));
        let chunks: Vec<(u32, &[u8])> = msg
            .chunks(1000)
            .enumerate()
            .map(|(i, c)| (1000 + (i * 1000) as u32, c))
            .collect();
        s.push(&start(2, 1000), now);
        let mut got = Vec::new();
        // Second before first, the first twice, a piece overlapping both.
        got.extend(s.push(&piece(2, chunks[1].0, chunks[1].1), now));
        got.extend(s.push(&piece(2, chunks[0].0, chunks[0].1), now));
        got.extend(s.push(&piece(2, chunks[0].0, chunks[0].1), now));
        got.extend(s.push(&piece(2, 1500, &msg[500..1500]), now));
        for (seq, c) in &chunks[2..] {
            got.extend(s.push(&piece(2, *seq, c), now));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].bytes, msg[2..]);
        assert_eq!(s.held_bytes(), 0);
    }

    #[test]
    fn a_hole_cuts_the_message_and_the_stream_goes_on() {
        let now = Instant::now();
        let mut s = TcpStreams::new(Limits::default());
        let first = framed(&long_answer(300));
        let second = response("b.test.", vec![("b.test.", a("198.18.9.9"))]);
        let mut stream = first.clone();
        stream.extend(framed(&second));
        s.push(&start(3, 0), now);
        // The second of four pieces of the first message never arrives.
        let cut = first.len() / 4;
        assert!(s.push(&piece(3, 0, &stream[..cut]), now).is_empty());
        assert!(s
            .push(&piece(3, (2 * cut) as u32, &stream[2 * cut..]), now)
            .is_empty());
        assert!(s.held_bytes() > 0);
        assert!(s.expire(now + Duration::from_millis(500)).is_empty());
        let got = s.expire(now + Duration::from_secs(3));
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(!got[0].complete);
        assert_eq!(got[0].bytes, stream[2..cut]);
        assert_eq!(
            (got[1].bytes.as_slice(), got[1].complete),
            (&second[..], true)
        );
        assert_eq!(s.held_bytes(), 0);
    }

    #[test]
    fn memory_and_stream_counts_are_bounded() {
        let now = Instant::now();
        let limits = Limits {
            max_streams: 10,
            max_bytes: 50_000,
            ..Limits::default()
        };
        let mut s = TcpStreams::new(limits);
        let mut cut = 0;
        // A thousand streams each announcing a 60 kB message and sending 10 kB of it.
        for cookie in 0..1000u64 {
            let mut data = 60_000u16.to_be_bytes().to_vec();
            data.extend(std::iter::repeat_n(7u8, 10_000));
            let t = now + Duration::from_millis(cookie);
            cut += s.push(&piece(cookie, 5, &data), t).len();
            assert!(
                s.len() <= 10 && s.held_bytes() <= 50_000,
                "{} {}",
                s.len(),
                s.held_bytes()
            );
        }
        // Every forgotten stream's partial message came out, marked incomplete.
        assert!(cut >= 990, "{cut}");
        let rest = s.expire(now + Duration::from_secs(3600));
        assert_eq!(cut + rest.len(), 1000);
        assert!(rest.iter().all(|m| !m.complete));
        assert!(s.is_empty() && s.held_bytes() == 0);
    }

    #[test]
    fn a_stream_joined_late_starts_at_the_first_piece() {
        let now = Instant::now();
        let mut s = TcpStreams::new(Limits::default());
        let msg = response("c.test.", vec![("c.test.", a("198.18.7.7"))]);
        let got = s.push(&piece(4, 77, &framed(&msg)), now);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].bytes, msg);
        assert_eq!(got[0].cgroup_id, 9);
    }
}
