//! The compact binary form of an edge's value in the embedded store (`{learned_at, observed}`):
//! a version byte, then fixed-width times and varints. About a fifth of the JSON form, and
//! several times faster to write, which matters because every commit writes the value of every
//! edge it changed. A value that starts with `{` is read as JSON (the form other writers may use).
//!
//! Every field of [`Observation`] is written: the decoder builds it with a struct literal, so a
//! field added to it later fails to compile here until the codec (and the store's format version)
//! says how it is stored.

use flow_model::{Outcome, Outcomes};
use jiff::Timestamp;

use crate::resolve::Observation;

const BINARY_V1: u8 = 1;

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_time(out: &mut Vec<u8>, t: Timestamp) {
    out.extend_from_slice(&t.as_second().to_le_bytes());
    out.extend_from_slice(&t.subsec_nanosecond().to_le_bytes());
}

fn outcome_code(o: Outcome) -> u8 {
    match o {
        Outcome::Established => 0,
        Outcome::Preexisting => 1,
        Outcome::Refused => 2,
        Outcome::Timeout => 3,
        Outcome::Sent => 4,
        Outcome::Unknown => 5,
    }
}

fn outcome_of(code: u8) -> Outcome {
    match code {
        0 => Outcome::Established,
        1 => Outcome::Preexisting,
        2 => Outcome::Refused,
        3 => Outcome::Timeout,
        4 => Outcome::Sent,
        _ => Outcome::Unknown,
    }
}

/// Appends the binary form of an edge value to `out`.
pub fn encode(out: &mut Vec<u8>, learned_at: Timestamp, o: &Observation) {
    out.push(BINARY_V1);
    put_time(out, learned_at);
    put_time(out, o.first_seen);
    put_time(out, o.last_seen);
    put_varint(out, o.count);
    out.push(outcome_code(o.outcome));
    let Outcomes {
        established,
        refused,
        timeout,
        preexisting,
    } = o.outcomes;
    for n in [established, refused, timeout, preexisting] {
        put_varint(out, n);
    }
    put_varint(out, o.dns_names.len() as u64);
    for name in &o.dns_names {
        put_varint(out, name.len() as u64);
        out.extend_from_slice(name.as_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err("truncated edge value".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            n |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(n);
            }
        }
        Err("bad varint in edge value".into())
    }

    fn time(&mut self) -> Result<Timestamp, String> {
        let secs = i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"));
        let nanos = i32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
        Timestamp::new(secs, nanos).map_err(|e| e.to_string())
    }
}

/// `(learned_at, observation)` from a stored value (binary, or JSON for a value that starts with `{`).
pub fn decode(value: &[u8]) -> Result<(Timestamp, Observation), String> {
    if value.first() == Some(&b'{') {
        #[derive(serde::Deserialize)]
        struct Json {
            learned_at: Timestamp,
            observed: Observation,
        }
        let json: Json = serde_json::from_slice(value).map_err(|e| e.to_string())?;
        return Ok((json.learned_at, json.observed));
    }
    let mut r = Reader(value);
    match r.take(1)?[0] {
        BINARY_V1 => {}
        v => return Err(format!("edge value of unknown form {v}")),
    }
    let learned_at = r.time()?;
    let first_seen = r.time()?;
    let last_seen = r.time()?;
    let count = r.varint()?;
    let outcome = outcome_of(r.take(1)?[0]);
    let outcomes = Outcomes {
        established: r.varint()?,
        refused: r.varint()?,
        timeout: r.varint()?,
        preexisting: r.varint()?,
    };
    let names = r.varint()?;
    let mut dns_names = std::collections::BTreeSet::new();
    for _ in 0..names {
        let len = r.varint()? as usize;
        let name = std::str::from_utf8(r.take(len)?).map_err(|e| e.to_string())?;
        dns_names.insert(name.to_owned());
    }
    if !r.0.is_empty() {
        return Err("trailing bytes in edge value".into());
    }
    Ok((
        learned_at,
        Observation {
            first_seen,
            last_seen,
            count,
            outcome,
            outcomes,
            dns_names,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_exactly_in_both_forms() {
        let o = Observation {
            first_seen: "2026-11-26T16:00:00.123456789Z".parse().unwrap(),
            last_seen: "2026-11-26T16:05:00Z".parse().unwrap(),
            count: u64::MAX,
            outcome: Outcome::Refused,
            outcomes: Outcomes {
                established: 0,
                refused: 300,
                timeout: 1,
                preexisting: 2,
            },
            dns_names: ["a.example.test".to_string(), "b.example.test".to_string()].into(),
        };
        let at: Timestamp = "2026-12-01T12:00:00.5Z".parse().unwrap();
        let mut out = Vec::new();
        encode(&mut out, at, &o);
        assert_eq!(decode(&out).unwrap(), (at, o.clone()));
        let json = serde_json::json!({"learned_at": at, "observed": o}).to_string();
        assert!(
            json.len() > out.len() * 2,
            "{} vs {}",
            json.len(),
            out.len()
        );
        assert_eq!(decode(json.as_bytes()).unwrap(), (at, o));
        assert!(decode(&out[..out.len() - 1]).is_err());
        assert!(decode(&[9]).is_err());
    }
}
