//! The body of `POST /v1/flows`: FlowRecords as JSON lines, plain or gzip. The agent encodes with
//! [`encode`], the recommender decodes with [`decode`]; one module serves both so that they cannot
//! disagree (see `docs/architecture.md`, "HTTP").
//!
//! Decoding is bounded: a body that inflates past the limit is refused before it is held whole
//! (a gzip bomb costs at most `limit` bytes), and a bad line is named by its number and column.

use std::io::{BufRead, BufReader, Read, Write};

use flate2::{read::GzDecoder, write::GzEncoder, Compression};

use crate::{for_each_record, FlowRecord, ReadError};

/// `Content-Type` of a batch.
pub const CONTENT_TYPE: &str = "application/x-ndjson";

/// `Content-Encoding` of a batch body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
}

impl Encoding {
    /// From a `Content-Encoding` header value (absent is identity); `None` for one we do not read.
    pub fn from_header(value: Option<&str>) -> Option<Encoding> {
        match value.map(|v| v.trim().to_ascii_lowercase()) {
            None => Some(Encoding::Identity),
            Some(v) if v.is_empty() || v == "identity" => Some(Encoding::Identity),
            Some(v) if v == "gzip" || v == "x-gzip" => Some(Encoding::Gzip),
            Some(_) => None,
        }
    }

    /// The `Content-Encoding` header value, `None` for identity.
    pub fn header(self) -> Option<&'static str> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some("gzip"),
        }
    }
}

/// Why a batch body was refused.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("body is larger than {limit} bytes once decompressed")]
    TooLarge { limit: usize },
    #[error("body is not valid gzip: {0}")]
    Gzip(std::io::Error),
    #[error(transparent)]
    Record(ReadError),
}

impl BatchError {
    /// The 1-based line of the first bad record, when the body failed on one.
    pub fn line(&self) -> Option<usize> {
        match self {
            BatchError::Record(ReadError::Json { line, .. } | ReadError::Invalid { line, .. }) => {
                Some(*line)
            }
            _ => None,
        }
    }
}

/// The body of a batch of `records`.
pub fn encode(records: &[FlowRecord], encoding: Encoding) -> Vec<u8> {
    let mut plain = Vec::with_capacity(records.len() * 256);
    for record in records {
        serde_json::to_writer(&mut plain, record).expect("FlowRecord always serializes");
        plain.push(b'\n');
    }
    match encoding {
        Encoding::Identity => plain,
        Encoding::Gzip => {
            let mut gz = GzEncoder::new(Vec::with_capacity(plain.len() / 4), Compression::fast());
            gz.write_all(&plain).expect("writing to a Vec cannot fail");
            gz.finish().expect("writing to a Vec cannot fail")
        }
    }
}

/// The records of a batch body, all or none: at most `limit` bytes once decompressed, every line
/// a valid FlowRecord (blank lines are skipped). `source_name` names the sender in errors.
pub fn decode(
    body: &[u8],
    encoding: Encoding,
    limit: usize,
    source_name: &str,
) -> Result<Vec<FlowRecord>, BatchError> {
    match encoding {
        Encoding::Identity => {
            if body.len() > limit {
                return Err(BatchError::TooLarge { limit });
            }
            read_all(body, source_name)
        }
        Encoding::Gzip => {
            let inflated = Bounded {
                inner: GzDecoder::new(body),
                left: limit as u64,
                exceeded: false,
            };
            let mut reader = BufReader::new(inflated);
            let records = read_all(&mut reader, source_name);
            let inflated = reader.into_inner();
            if inflated.exceeded {
                return Err(BatchError::TooLarge { limit });
            }
            records
        }
    }
}

fn read_all(reader: impl BufRead, source_name: &str) -> Result<Vec<FlowRecord>, BatchError> {
    let mut out = Vec::new();
    match for_each_record(reader, source_name, |r| out.push(r)) {
        Ok(()) => Ok(out),
        // Only the gzip path reads through something that can fail (or hit the bound, which
        // `decode` reports instead).
        Err(ReadError::Io { error, .. }) => Err(BatchError::Gzip(error)),
        Err(e) => Err(BatchError::Record(e)),
    }
}

/// A reader that fails once more than `left` bytes have come out of `inner`.
struct Bounded<R> {
    inner: R,
    left: u64,
    exceeded: bool,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.exceeded {
            return Err(std::io::ErrorKind::FileTooLarge.into());
        }
        // One byte more than allowed tells "exactly at the limit" from "over it".
        let want = buf.len().min(self.left.saturating_add(1) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            self.exceeded = true;
            return Err(std::io::ErrorKind::FileTooLarge.into());
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(port: u16) -> FlowRecord {
        let line = format!(
            r#"{{"node":"n","source":{{"kind":"host"}},"destination":{{"ip":"198.18.0.1","port":{port},"protocol":"UDP"}},"first_seen":"2026-11-26T16:00:00Z","last_seen":"2026-11-26T16:00:00Z","count":1,"outcome":"sent"}}"#
        );
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn round_trips_plain_and_gzip() {
        let records: Vec<FlowRecord> = (1..=100).map(record).collect();
        for encoding in [Encoding::Identity, Encoding::Gzip] {
            let body = encode(&records, encoding);
            assert_eq!(decode(&body, encoding, 1 << 20, "t").unwrap(), records);
        }
        let plain = encode(&records, Encoding::Identity);
        assert!(encode(&records, Encoding::Gzip).len() < plain.len() / 4);
    }

    #[test]
    fn a_gzip_bomb_is_refused_at_the_limit() {
        // 64 MiB of blank lines compress to a few tens of KiB.
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        let chunk = vec![b'\n'; 1 << 20];
        for _ in 0..64 {
            gz.write_all(&chunk).unwrap();
        }
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 1 << 20);
        let err = decode(&bomb, Encoding::Gzip, 1 << 20, "t").unwrap_err();
        assert!(
            matches!(err, BatchError::TooLarge { limit } if limit == 1 << 20),
            "{err}"
        );
        // Exactly at the limit is fine.
        let exact = encode(&[record(1)], Encoding::Identity);
        let body = encode(&[record(1)], Encoding::Gzip);
        assert_eq!(
            decode(&body, Encoding::Gzip, exact.len(), "t")
                .unwrap()
                .len(),
            1
        );
        assert!(decode(&exact, Encoding::Identity, exact.len() - 1, "t").is_err());
    }

    #[test]
    fn the_first_bad_line_is_named() {
        let mut body = encode(&[record(1), record(2)], Encoding::Identity);
        body.extend_from_slice(b"{\"node\":\n");
        body.extend_from_slice(&encode(&[record(3)], Encoding::Identity));
        let err = decode(&body, Encoding::Identity, 1 << 20, "10.0.0.7").unwrap_err();
        assert_eq!(err.line(), Some(3));
        assert!(err.to_string().starts_with("10.0.0.7:3:"), "{err}");
        let gz = encode(&[record(1)], Encoding::Gzip);
        let err = decode(&gz[..gz.len() / 2], Encoding::Gzip, 1 << 20, "t").unwrap_err();
        assert!(matches!(err, BatchError::Gzip(_)), "{err}");
        let err = decode(b"not gzip", Encoding::Gzip, 1 << 20, "t").unwrap_err();
        assert!(matches!(err, BatchError::Gzip(_)), "{err}");
    }

    #[test]
    fn encodings_from_headers() {
        assert_eq!(Encoding::from_header(None), Some(Encoding::Identity));
        assert_eq!(Encoding::from_header(Some("GZIP")), Some(Encoding::Gzip));
        assert_eq!(Encoding::from_header(Some("br")), None);
    }
}
