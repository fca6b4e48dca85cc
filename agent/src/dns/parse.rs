//! DNS answers → which names the source resolved to which addresses.
//!
//! Decoding is hickory-proto's; this module only decides what to trust: responses with NOERROR,
//! addresses reached from the question name through the CNAME chain (bounded), nothing else.
//! Records off the chain (additional data, stray answers) are ignored, so a response cannot attach a
//! name to an address it was not asked about.
//!
//! An answer may reach the parser incomplete: the kernel copies at most `DNS_CAPTURE_MAX` bytes of
//! a UDP answer, and a TCP stream may lose a piece (see `tcp`). A cut answer is named from what
//! was received: its header and question must be whole, then every answer record that is whole
//! counts, up to the first one that is not (authority and additional data are not used anyway).
//! The CNAME chain is followed over the records received, so names are never attached to an
//! address the received part does not lead to.

use std::collections::BTreeSet;
use std::net::IpAddr;

use hickory_proto::op::{Header, Message, MessageType, ResponseCode};
use hickory_proto::rr::{Name, RData, Record};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// Longest CNAME chain followed; resolvers themselves give up around 8–16.
pub const MAX_CNAME_CHAIN: usize = 16;
/// Largest DNS message accepted (TCP's length prefix cannot say more).
pub const MAX_MESSAGE_LEN: usize = u16::MAX as usize;

/// One resolved address: every name on the chain that led to it, and the record's TTL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedAddr {
    pub ip: IpAddr,
    pub ttl_secs: u32,
    /// The question name and each CNAME target on the way, lower case, without the trailing dot.
    pub names: BTreeSet<String>,
}

/// Why an answer was not used. Every variant is counted as `rejected`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("transport {0} is neither TCP (6) nor UDP (17)")]
    Transport(u8),
    #[error("TCP payload shorter than its length prefix")]
    TcpIncomplete,
    #[error("message larger than {MAX_MESSAGE_LEN} bytes")]
    Oversized,
    #[error("the message is incomplete and its header or question was not received whole")]
    Cut,
    #[error("not a DNS message: {0}")]
    Malformed(String),
    #[error("a query, not a response")]
    NotResponse,
    #[error("response code {0}")]
    ResponseCode(String),
    #[error("response without a question")]
    NoQuestion,
}

/// What one answer gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The addresses it resolves (possibly none, e.g. a CNAME-only or NODATA answer).
    pub addrs: Vec<ResolvedAddr>,
    /// False when the message was incomplete and these come from the part received.
    pub complete: bool,
}

/// Parses one captured DNS answer that arrived in one piece.
///
/// `transport` is 6 (TCP: the payload starts with the two-byte length prefix) or 17 (UDP);
/// `wire_len` is the payload's length on the wire, larger than `payload.len()` when the capture cut
/// it. Returns the addresses the answer resolves, from what was received when it was cut.
/// (Streams of TCP pieces go through `tcp::TcpStreams` and [`parse_message`].)
pub fn parse_answer(
    transport: u8,
    payload: &[u8],
    wire_len: u32,
) -> Result<Vec<ResolvedAddr>, Rejected> {
    parse_payload(transport, payload, wire_len).map(|a| a.addrs)
}

/// [`parse_answer`], telling whether the answer was whole.
pub fn parse_payload(transport: u8, payload: &[u8], wire_len: u32) -> Result<Answer, Rejected> {
    let cut = (payload.len() as u64) < u64::from(wire_len);
    let message = match transport {
        agent_common::DNS_TRANSPORT_TCP => {
            let (prefix, rest) = payload
                .split_first_chunk::<2>()
                .ok_or(Rejected::TcpIncomplete)?;
            let len = usize::from(u16::from_be_bytes(*prefix));
            match rest.get(..len) {
                Some(message) => return parse_message(message, true),
                None if cut => return parse_message(rest, false),
                None => return Err(Rejected::TcpIncomplete),
            }
        }
        agent_common::DNS_TRANSPORT_UDP => payload,
        other => return Err(Rejected::Transport(other)),
    };
    parse_message(message, !cut)
}

/// Parses one DNS message (without a TCP length prefix). `complete` is false when `message` is
/// only the first part of it: the whole answer records of that part are used.
pub fn parse_message(message: &[u8], complete: bool) -> Result<Answer, Rejected> {
    if message.len() > MAX_MESSAGE_LEN {
        return Err(Rejected::Oversized);
    }
    let (message, complete) = match Message::from_vec(message) {
        Ok(m) => (m, true),
        Err(_) if !complete => (decode_received(message).ok_or(Rejected::Cut)?, false),
        Err(error) => return Err(Rejected::Malformed(error.to_string())),
    };
    Ok(Answer {
        addrs: resolved_addrs(&message)?,
        complete,
    })
}

/// Decodes the header, the questions and every whole answer record (each by hickory) of a
/// message whose end is missing.
fn decode_received(bytes: &[u8]) -> Option<Message> {
    let mut decoder = BinDecoder::new(bytes);
    let header = Header::read(&mut decoder).ok()?;
    let queries = Message::read_queries(&mut decoder, header.counts.queries.into()).ok()?;
    let mut answers = Vec::new();
    for _ in 0..header.counts.answers {
        match Record::read(&mut decoder) {
            Ok(record) => answers.push(record),
            // The rest of the section was not received.
            Err(_) => break,
        }
    }
    let mut message = Message::new(
        header.metadata.id,
        header.metadata.message_type,
        header.metadata.op_code,
    );
    message.metadata = header.metadata;
    message.queries = queries;
    message.answers = answers;
    Some(message)
}

fn resolved_addrs(message: &Message) -> Result<Vec<ResolvedAddr>, Rejected> {
    if message.metadata.message_type != MessageType::Response {
        return Err(Rejected::NotResponse);
    }
    if message.metadata.response_code != ResponseCode::NoError {
        return Err(Rejected::ResponseCode(
            message.metadata.response_code.to_string(),
        ));
    }
    let question = message.queries.first().ok_or(Rejected::NoQuestion)?;

    // The chain: question name, then each CNAME target whose owner is the previous link.
    let mut chain: Vec<Name> = vec![question.name.to_lowercase()];
    while chain.len() <= MAX_CNAME_CHAIN {
        let current = chain.last().expect("chain starts non-empty");
        let next = message.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if r.name.to_lowercase() == *current => {
                Some(target.0.to_lowercase())
            }
            _ => None,
        });
        match next {
            // A loop ends the chain: every name on it is already collected.
            Some(target) if !chain.contains(&target) => chain.push(target),
            _ => break,
        }
    }
    let names: BTreeSet<String> = chain.iter().map(display_name).collect();

    let mut out: Vec<ResolvedAddr> = Vec::new();
    for record in &message.answers {
        let ip = match &record.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
            _ => continue,
        };
        if !chain.contains(&record.name.to_lowercase()) {
            continue;
        }
        match out.iter_mut().find(|r| r.ip == ip) {
            Some(existing) => existing.ttl_secs = existing.ttl_secs.max(record.ttl),
            None => out.push(ResolvedAddr {
                ip,
                ttl_secs: record.ttl,
                names: names.clone(),
            }),
        }
    }
    Ok(out)
}

/// `Api.Example.TEST.` → `api.example.test` (the form NetworkPolicy annotations and humans use).
fn display_name(name: &Name) -> String {
    let mut s = name.to_ascii();
    if s.len() > 1 && s.ends_with('.') {
        s.pop();
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hickory_proto::op::{OpCode, Query};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME};
    use hickory_proto::rr::{Record, RecordType};
    use std::str::FromStr;

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    /// A response to `question` with the given answer records, encoded by hickory.
    pub(crate) fn response(question: &str, answers: Vec<(&str, RData)>) -> Vec<u8> {
        let mut m = Message::response(0x1234, OpCode::Query);
        m.add_query(Query::query(name(question), RecordType::A));
        for (owner, data) in answers {
            m.add_answer(Record::from_rdata(name(owner), 300, data));
        }
        m.to_vec().unwrap()
    }

    pub(crate) fn a(ip: &str) -> RData {
        RData::A(A(ip.parse().unwrap()))
    }

    fn cname(target: &str) -> RData {
        RData::CNAME(CNAME(name(target)))
    }

    fn tcp(msg: &[u8]) -> Vec<u8> {
        let mut out = (msg.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(msg);
        out
    }

    fn names(r: &ResolvedAddr) -> Vec<&str> {
        r.names.iter().map(String::as_str).collect()
    }

    #[test]
    fn plain_a_and_aaaa() {
        let msg = response(
            "api.example.test.",
            vec![
                ("api.example.test.", a("198.18.0.10")),
                (
                    "api.example.test.",
                    RData::AAAA(AAAA("2001:db8::10".parse().unwrap())),
                ),
            ],
        );
        let got = parse_answer(17, &msg, msg.len() as u32).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].ip, "198.18.0.10".parse::<IpAddr>().unwrap());
        assert_eq!(got[0].ttl_secs, 300);
        assert_eq!(names(&got[0]), ["api.example.test"]);
        assert_eq!(got[1].ip, "2001:db8::10".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn cname_chain_gives_every_name_and_ignores_strays() {
        let msg = response(
            "WWW.Example.test.",
            vec![
                ("www.example.test.", cname("edge.cdn.test.")),
                ("edge.cdn.test.", cname("e1.cdn.test.")),
                ("e1.cdn.test.", a("198.18.0.20")),
                ("unrelated.test.", a("198.18.0.99")),
            ],
        );
        let got = parse_answer(17, &msg, msg.len() as u32).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].ip, "198.18.0.20".parse::<IpAddr>().unwrap());
        assert_eq!(
            names(&got[0]),
            ["e1.cdn.test", "edge.cdn.test", "www.example.test"]
        );
    }

    #[test]
    fn cname_loops_and_long_chains_are_bounded() {
        let looped = response(
            "a.test.",
            vec![
                ("a.test.", cname("b.test.")),
                ("b.test.", cname("a.test.")),
                ("b.test.", a("198.18.0.1")),
            ],
        );
        let got = parse_answer(17, &looped, looped.len() as u32).unwrap();
        assert_eq!(names(&got[0]), ["a.test", "b.test"]);

        let hops: Vec<String> = (0..40).map(|i| format!("h{i}.test.")).collect();
        let mut answers: Vec<(&str, RData)> = hops
            .windows(2)
            .map(|w| (w[0].as_str(), cname(&w[1])))
            .collect();
        answers.push((hops[39].as_str(), a("198.18.0.2")));
        let long = response("h0.test.", answers);
        // The address is beyond the bound: not attributed.
        assert_eq!(parse_answer(17, &long, long.len() as u32).unwrap(), []);
    }

    #[test]
    fn tcp_strips_the_length_prefix_and_rejects_incomplete() {
        let msg = response(
            "api.example.test.",
            vec![("api.example.test.", a("198.18.0.10"))],
        );
        let framed = tcp(&msg);
        let got = parse_answer(6, &framed, framed.len() as u32).unwrap();
        assert_eq!(got.len(), 1);
        // Shorter than its prefix says, though the packet was copied whole: not a message.
        let short = &framed[..framed.len() - 1];
        assert_eq!(
            parse_answer(6, short, short.len() as u32),
            Err(Rejected::TcpIncomplete)
        );
        // The same bytes from a copy that was cut: the part received, marked incomplete.
        assert_eq!(
            parse_payload(6, short, framed.len() as u32),
            Ok(Answer {
                addrs: vec![],
                complete: false
            })
        );
        assert_eq!(parse_answer(6, &[0], 1), Err(Rejected::TcpIncomplete));
        assert_eq!(parse_answer(6, &[], 0), Err(Rejected::TcpIncomplete));
        assert_eq!(parse_answer(1, &msg, 0), Err(Rejected::Transport(1)));
    }

    #[test]
    fn cut_captures_without_a_whole_question_are_rejected() {
        let msg = response(
            "api.example.test.",
            vec![("api.example.test.", a("198.18.0.10"))],
        );
        // Cut inside the only answer record: the question is whole, nothing resolves.
        let cut = &msg[..msg.len() - 3];
        assert_eq!(
            parse_payload(17, cut, msg.len() as u32),
            Ok(Answer {
                addrs: vec![],
                complete: false
            })
        );
        // Cut inside the question: nothing can be trusted.
        assert_eq!(
            parse_answer(17, &msg[..20], msg.len() as u32),
            Err(Rejected::Cut)
        );
        // The same bytes claimed complete are simply malformed.
        assert!(matches!(
            parse_answer(17, cut, cut.len() as u32),
            Err(Rejected::Malformed(_))
        ));
    }

    #[test]
    fn cut_captures_with_a_complete_answer_section_are_used() {
        let mut m = Message::response(7, OpCode::Query);
        m.add_query(Query::query(name("api.example.test."), RecordType::A));
        m.add_answer(Record::from_rdata(
            name("api.example.test."),
            60,
            a("198.18.0.10"),
        ));
        let answers_only = m.to_vec().unwrap().len();
        for i in 0..20 {
            m.add_additional(Record::from_rdata(
                name(&format!("ns{i}.example.test.")),
                60,
                a("198.18.1.1"),
            ));
        }
        let full = m.to_vec().unwrap();
        // Cut inside the additional section: the answer is still complete.
        let cut = &full[..answers_only + 10];
        let got = parse_answer(17, cut, full.len() as u32).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].ip, "198.18.0.10".parse::<IpAddr>().unwrap());
        // Cut inside the answer section: what was received of it, marked incomplete.
        let cut = &full[..answers_only - 2];
        let got = parse_payload(17, cut, full.len() as u32).unwrap();
        assert!(!got.complete && got.addrs.is_empty());
    }

    #[test]
    fn a_cut_long_answer_names_the_addresses_received_through_the_chain() {
        // CNAME chain first, then many addresses: a cut in the middle keeps the chain and the
        // addresses before the cut, with every name of the chain.
        let ips: Vec<String> = (1..=200).map(|i| format!("198.18.1.{i}")).collect();
        let mut answers = vec![
            ("www.example.test.", cname("edge.cdn.test.")),
            ("edge.cdn.test.", cname("many.cdn.test.")),
        ];
        answers.extend(ips.iter().map(|ip| ("many.cdn.test.", a(ip))));
        let msg = response("www.example.test.", answers);
        let cut = &msg[..msg.len() / 2];
        let got = parse_message(cut, false).unwrap();
        assert!(!got.complete);
        assert!(
            got.addrs.len() > 50 && got.addrs.len() < 200,
            "{}",
            got.addrs.len()
        );
        assert_eq!(got.addrs[0].ip, "198.18.1.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            names(&got.addrs[0]),
            ["edge.cdn.test", "many.cdn.test", "www.example.test"]
        );
        // Whole, every address.
        assert_eq!(parse_message(&msg, true).unwrap().addrs.len(), 200);
        // A whole message said to be whole but malformed is not taken as a cut one.
        assert!(matches!(
            parse_message(cut, true),
            Err(Rejected::Malformed(_))
        ));
    }

    #[test]
    fn a_chain_after_a_long_list_of_addresses_is_followed() {
        // Some servers put the addresses before the CNAMEs that lead to them.
        let ips: Vec<String> = (1..=150).map(|i| format!("198.18.2.{i}")).collect();
        let mut answers: Vec<(&str, RData)> =
            ips.iter().map(|ip| ("many.cdn.test.", a(ip))).collect();
        answers.push(("edge.cdn.test.", cname("many.cdn.test.")));
        answers.push(("www.example.test.", cname("edge.cdn.test.")));
        let msg = response("www.example.test.", answers);
        let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&msg);
        let got = parse_payload(6, &framed, framed.len() as u32).unwrap();
        assert!(got.complete);
        assert_eq!(got.addrs.len(), 150);
        assert!(got
            .addrs
            .iter()
            .all(|r| names(r) == ["edge.cdn.test", "many.cdn.test", "www.example.test"]));
    }

    #[test]
    fn errors_and_queries_are_rejected() {
        let mut m = Message::response(1, OpCode::Query);
        m.add_query(Query::query(name("nope.test."), RecordType::A));
        m.metadata.response_code = ResponseCode::NXDomain;
        let nx = m.to_vec().unwrap();
        assert!(matches!(
            parse_answer(17, &nx, nx.len() as u32),
            Err(Rejected::ResponseCode(_))
        ));

        let mut q = Message::new(2, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(name("api.example.test."), RecordType::A));
        let q = q.to_vec().unwrap();
        assert_eq!(
            parse_answer(17, &q, q.len() as u32),
            Err(Rejected::NotResponse)
        );

        let empty = Message::response(3, OpCode::Query).to_vec().unwrap();
        assert_eq!(
            parse_answer(17, &empty, empty.len() as u32),
            Err(Rejected::NoQuestion)
        );
    }

    #[test]
    fn compression_pointer_loop_is_rejected() {
        // Header: response, qdcount 1; the question name is a pointer to itself (offset 12).
        let mut pkt = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        pkt.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        assert!(matches!(
            parse_answer(17, &pkt, pkt.len() as u32),
            Err(Rejected::Malformed(_))
        ));
        // Two pointers pointing at each other.
        let mut pkt = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        pkt.extend_from_slice(&[0xC0, 14, 0xC0, 12, 0, 1, 0, 1]);
        assert!(parse_answer(17, &pkt, pkt.len() as u32).is_err());
    }

    #[test]
    fn oversized_and_garbage_never_panic() {
        let big = vec![0u8; MAX_MESSAGE_LEN + 1];
        assert_eq!(
            parse_answer(17, &big, big.len() as u32),
            Err(Rejected::Oversized)
        );
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for len in 0..600 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            for transport in [6, 17] {
                let _ = parse_answer(transport, &bytes, len as u32);
                let _ = parse_answer(transport, &bytes, u32::MAX);
            }
        }
        // Header claiming many records with none present.
        let pkt = [
            0x12, 0x34, 0x81, 0x80, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        assert!(parse_answer(17, &pkt, pkt.len() as u32).is_err());
    }

    #[test]
    fn every_prefix_of_a_real_answer_is_handled() {
        let msg = response(
            "www.example.test.",
            vec![
                ("www.example.test.", cname("edge.cdn.test.")),
                ("edge.cdn.test.", a("198.18.0.20")),
            ],
        );
        for cut in 0..msg.len() {
            let _ = parse_answer(17, &msg[..cut], msg.len() as u32);
            let _ = parse_answer(6, &tcp(&msg)[..cut], msg.len() as u32 + 2);
        }
    }
}
