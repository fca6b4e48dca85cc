//! How the embedded store writes an edge's key: the protocol as its IP protocol number, and the
//! journal's framing of (key, value) rows.

use flow_model::Protocol;

/// An edge's key in the `edges` table: (workload id, peer id, port, protocol number).
pub(super) type EdgeRow = (u64, u64, u16, u8);

/// The length of a framed row's header: the key, then the value's length.
const HEADER: usize = 8 + 8 + 2 + 1 + 4;

pub(super) fn protocol_code(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

pub(super) fn protocol_of(code: u8) -> Option<Protocol> {
    match code {
        6 => Some(Protocol::Tcp),
        17 => Some(Protocol::Udp),
        132 => Some(Protocol::Sctp),
        _ => None,
    }
}

/// Appends one framed edge to a journal entry: the key (little-endian), the value's length, the
/// value.
pub(super) fn put_row(entry: &mut Vec<u8>, (w, p, port, proto): EdgeRow, value: &[u8]) {
    entry.extend_from_slice(&w.to_le_bytes());
    entry.extend_from_slice(&p.to_le_bytes());
    entry.extend_from_slice(&port.to_le_bytes());
    entry.push(proto);
    entry.extend_from_slice(&(value.len() as u32).to_le_bytes());
    entry.extend_from_slice(value);
}

/// The framed edges of a journal entry.
pub(super) fn rows(mut entry: &[u8]) -> Result<Vec<(EdgeRow, &[u8])>, String> {
    let mut out = Vec::new();
    while !entry.is_empty() {
        if entry.len() < HEADER {
            return Err("truncated journal entry".into());
        }
        let w = u64::from_le_bytes(entry[0..8].try_into().expect("8 bytes"));
        let p = u64::from_le_bytes(entry[8..16].try_into().expect("8 bytes"));
        let port = u16::from_le_bytes(entry[16..18].try_into().expect("2 bytes"));
        let proto = entry[18];
        let len = u32::from_le_bytes(entry[19..HEADER].try_into().expect("4 bytes")) as usize;
        if entry.len() < HEADER + len {
            return Err("truncated journal entry".into());
        }
        out.push(((w, p, port, proto), &entry[HEADER..HEADER + len]));
        entry = &entry[HEADER + len..];
    }
    Ok(out)
}
