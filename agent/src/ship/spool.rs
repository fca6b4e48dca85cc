//! The spool: batches waiting for the recommender, oldest first, bounded in bytes.
//!
//! With `--spool-dir` every batch is a file, written crash-safely: to a temporary name, fsync,
//! rename to `<key>.batch`, fsync the directory. A kill -9 at any moment leaves either the whole
//! batch under its final name or a temporary file that the next start deletes, so no half-written
//! batch is ever sent. Each file starts with one header line (`egress-agent-batch v1 id=<batch id>
//! records=<n> body=<bytes>`) followed by the gzip body, which is sent as it is; a file whose length
//! disagrees with its header is moved aside, not sent. Keys (file names) sort in delivery order:
//! 16 hex digits of sequence, continued across restarts, then `.0`/`.1` for the halves of a split
//! batch, which take their parent's place. Deleting a delivered batch is not fsynced: a deletion
//! lost in a crash makes the batch be sent again, and its id makes the recommender count it once.
//!
//! Without `--spool-dir` the same queue lives in memory (same bound), and is lost on exit.
//!
//! Batches the recommender refused as malformed are moved to `rejected/` (the newest
//! [`REJECTED_KEPT`] are kept) for someone to look at; see `ship::Shipper`.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use flow_model::check_batch_id;

/// Refused batches kept in `rejected/`.
pub const REJECTED_KEPT: usize = 16;
const MAGIC: &str = "egress-agent-batch v1";
const SUFFIX: &str = ".batch";
const TMP_PREFIX: &str = ".tmp-";
/// The longest header line read back.
const HEADER_MAX: usize = 512;

/// One spooled batch.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Its place in the spool (file name without `.batch`).
    pub key: String,
    pub id: String,
    pub records: u32,
    /// The gzip body of `POST /v1/flows`.
    pub body: Bytes,
}

/// What was found in the spool directory at start.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub batches: usize,
    pub bytes: u64,
    /// Temporary files of writes a crash interrupted, deleted.
    pub interrupted_writes: usize,
    /// Files whose header or length was wrong, moved to `rejected/`.
    pub corrupt: usize,
    /// Halves of a split whose parent was still there (a crash during the split), deleted: the
    /// parent is sent again and split again.
    pub orphan_halves: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    Stored,
    /// The bound would be exceeded; nothing was written.
    Full,
}

#[derive(Clone, Debug)]
struct Entry {
    id: String,
    records: u32,
    /// Bytes counted against the bound (the file's length).
    size: u64,
}

enum Store {
    Dir { dir: PathBuf, rejected: PathBuf },
    Memory { bodies: HashMap<String, Bytes> },
}

pub struct Spool {
    store: Store,
    max_bytes: u64,
    entries: BTreeMap<String, Entry>,
    bytes: u64,
    next_seq: u64,
}

impl Spool {
    /// A spool in memory only.
    pub fn in_memory(max_bytes: u64) -> Spool {
        Spool {
            store: Store::Memory {
                bodies: HashMap::new(),
            },
            max_bytes,
            entries: BTreeMap::new(),
            bytes: 0,
            next_seq: 0,
        }
    }

    /// Opens (creating it if needed) the spool directory and takes over what an earlier agent left.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<(Spool, Recovered)> {
        let rejected = dir.join("rejected");
        fs::create_dir_all(&rejected)?;
        let mut recovered = Recovered::default();
        let mut entries = BTreeMap::new();
        for item in fs::read_dir(dir)? {
            let item = item?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(TMP_PREFIX) {
                fs::remove_file(item.path())?;
                recovered.interrupted_writes += 1;
                continue;
            }
            let Some(key) = name.strip_suffix(SUFFIX) else {
                continue;
            };
            if !valid_key(key) {
                continue;
            }
            match read_header(&item.path()) {
                Ok(Some((entry, _))) => {
                    entries.insert(key.to_owned(), entry);
                }
                Ok(None) => {
                    fs::rename(item.path(), rejected.join(format!("{key}.corrupt")))?;
                    recovered.corrupt += 1;
                }
                Err(e) => return Err(e),
            }
        }
        // A parent still present means its split never finished: its halves were never sent.
        let keys: Vec<String> = entries.keys().cloned().collect();
        for key in &keys {
            if !entries.contains_key(key) {
                continue;
            }
            let prefix = format!("{key}.");
            let halves: Vec<String> = entries
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, _)| k.clone())
                .collect();
            for half in halves {
                fs::remove_file(dir.join(format!("{half}{SUFFIX}")))?;
                entries.remove(&half);
                recovered.orphan_halves += 1;
            }
        }
        let next_seq = entries
            .keys()
            .filter_map(|k| u64::from_str_radix(&k[..16], 16).ok())
            .max()
            .map_or(0, |s| s + 1);
        let bytes = entries.values().map(|e: &Entry| e.size).sum();
        recovered.batches = entries.len();
        recovered.bytes = bytes;
        let spool = Spool {
            store: Store::Dir {
                dir: dir.to_owned(),
                rejected,
            },
            max_bytes,
            entries,
            bytes,
            next_seq,
        };
        Ok((spool, recovered))
    }

    /// Appends a batch, unless that would pass the bound.
    pub fn push(&mut self, id: &str, records: u32, body: Bytes) -> io::Result<Push> {
        let size = stored_size(id, records, &body);
        if self.bytes + size > self.max_bytes {
            return Ok(Push::Full);
        }
        let key = format!("{:016x}", self.next_seq);
        self.store(&key, id, records, body)?;
        self.next_seq += 1;
        Ok(Push::Stored)
    }

    /// The oldest batch, read back.
    pub fn oldest(&self) -> io::Result<Option<Batch>> {
        let Some((key, entry)) = self.entries.iter().next() else {
            return Ok(None);
        };
        let body = match &self.store {
            Store::Memory { bodies } => bodies.get(key).cloned().unwrap_or_default(),
            Store::Dir { dir, .. } => {
                let data = fs::read(dir.join(format!("{key}{SUFFIX}")))?;
                let skip = data.iter().position(|b| *b == b'\n').map_or(0, |n| n + 1);
                Bytes::from(data).slice(skip..)
            }
        };
        Ok(Some(Batch {
            key: key.clone(),
            id: entry.id.clone(),
            records: entry.records,
            body,
        }))
    }

    /// Forgets a delivered batch.
    pub fn remove(&mut self, key: &str) -> io::Result<()> {
        let Some(entry) = self.entries.remove(key) else {
            return Ok(());
        };
        self.bytes -= entry.size;
        match &mut self.store {
            Store::Memory { bodies } => {
                bodies.remove(key);
            }
            Store::Dir { dir, .. } => remove_if_exists(&dir.join(format!("{key}{SUFFIX}")))?,
        }
        Ok(())
    }

    /// Replaces batch `key` by its two halves, in its place. The halves are written (durably)
    /// before the parent is removed. They may pass the bound by the little that two gzip headers add.
    pub fn split(&mut self, key: &str, halves: [(String, u32, Bytes); 2]) -> io::Result<()> {
        for (i, (id, records, body)) in halves.into_iter().enumerate() {
            self.store(&format!("{key}.{i}"), &id, records, body)?;
        }
        self.remove(key)
    }

    /// Moves a refused batch out of the queue: to `rejected/` (keeping the newest
    /// [`REJECTED_KEPT`]), or nowhere for a spool in memory.
    pub fn set_aside(&mut self, key: &str) -> io::Result<()> {
        let Some(entry) = self.entries.remove(key) else {
            return Ok(());
        };
        self.bytes -= entry.size;
        match &mut self.store {
            Store::Memory { bodies } => {
                bodies.remove(key);
                Ok(())
            }
            Store::Dir { dir, rejected } => {
                let name = format!("{key}{SUFFIX}");
                fs::rename(dir.join(&name), rejected.join(&name))?;
                prune(rejected, REJECTED_KEPT)
            }
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn records(&self) -> u64 {
        self.entries.values().map(|e| u64::from(e.records)).sum()
    }

    /// Whether batches survive the agent (a spool directory).
    pub fn is_durable(&self) -> bool {
        matches!(self.store, Store::Dir { .. })
    }

    fn store(&mut self, key: &str, id: &str, records: u32, body: Bytes) -> io::Result<()> {
        let header = header(id, records, body.len());
        let size = (header.len() + body.len()) as u64;
        match &mut self.store {
            Store::Memory { bodies } => {
                bodies.insert(key.to_owned(), body);
            }
            Store::Dir { dir, .. } => write_durably(dir, key, header.as_bytes(), &body)?,
        }
        self.entries.insert(
            key.to_owned(),
            Entry {
                id: id.to_owned(),
                records,
                size,
            },
        );
        self.bytes += size;
        Ok(())
    }
}

fn header(id: &str, records: u32, body_len: usize) -> String {
    format!("{MAGIC} id={id} records={records} body={body_len}\n")
}

fn stored_size(id: &str, records: u32, body: &[u8]) -> u64 {
    (header(id, records, body.len()).len() + body.len()) as u64
}

/// A key: 16 hex digits, then any number of `.0`/`.1`.
fn valid_key(key: &str) -> bool {
    key.len() >= 16
        && key.as_bytes()[..16].iter().all(u8::is_ascii_hexdigit)
        && key[16..]
            .split('.')
            .skip(1)
            .all(|half| half == "0" || half == "1")
        && (key.len() == 16 || key.as_bytes()[16] == b'.')
}

/// The entry a spool file describes, and its header length; `None` when the header is not ours or
/// the file's length disagrees with it (a file damaged outside the agent).
fn read_header(path: &Path) -> io::Result<Option<(Entry, usize)>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut start = vec![0; HEADER_MAX];
    let mut got = 0;
    while got < start.len() {
        let n = file.read(&mut start[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let Some(end) = start[..got].iter().position(|b| *b == b'\n') else {
        return Ok(None);
    };
    let Ok(line) = std::str::from_utf8(&start[..end]) else {
        return Ok(None);
    };
    let Some(fields) = line.strip_prefix(MAGIC) else {
        return Ok(None);
    };
    let (mut id, mut records, mut body) = (None, None, None);
    for field in fields.split_whitespace() {
        match field.split_once('=') {
            Some(("id", v)) if check_batch_id(v).is_ok() => id = Some(v.to_owned()),
            Some(("records", v)) => records = v.parse::<u32>().ok(),
            Some(("body", v)) => body = v.parse::<u64>().ok(),
            _ => return Ok(None),
        }
    }
    let (Some(id), Some(records), Some(body)) = (id, records, body) else {
        return Ok(None);
    };
    if len != end as u64 + 1 + body {
        return Ok(None);
    }
    Ok(Some((
        Entry {
            id,
            records,
            size: len,
        },
        end + 1,
    )))
}

/// Write to a temporary name, fsync, rename into place, fsync the directory.
fn write_durably(dir: &Path, key: &str, header: &[u8], body: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{TMP_PREFIX}{key}"));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(header)?;
        file.write_all(body)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(format!("{key}{SUFFIX}")))?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Deletes all but the `keep` newest files (by name, which sorts by sequence) of `dir`.
fn prune(dir: &Path, keep: usize) -> io::Result<()> {
    let mut names: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(keep);
    for path in &names[..excess] {
        remove_if_exists(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: u8) -> Bytes {
        Bytes::from(vec![n; 100])
    }

    fn keys(spool: &Spool) -> Vec<String> {
        spool.entries.keys().cloned().collect()
    }

    #[test]
    fn oldest_first_bounded_and_durable_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let one = stored_size("node:x:0", 3, &body(0));
        let (mut s, rec) = Spool::open(dir.path(), one * 3).unwrap();
        assert_eq!(rec, Recovered::default());
        for i in 0..3u8 {
            assert_eq!(
                s.push(&format!("node:x:{i}"), 3, body(i)).unwrap(),
                Push::Stored
            );
        }
        assert_eq!(s.push("node:x:3", 3, body(3)).unwrap(), Push::Full);
        assert_eq!((s.len(), s.bytes(), s.records()), (3, one * 3, 9));
        let b = s.oldest().unwrap().unwrap();
        assert_eq!((b.id.as_str(), b.records), ("node:x:0", 3));
        assert_eq!(b.body, body(0));
        s.remove(&b.key).unwrap();
        assert_eq!(s.push("node:x:3", 3, body(3)).unwrap(), Push::Stored);
        drop(s);

        // A new agent finds the same batches, in order, with their ids, and continues the sequence.
        let (mut s, rec) = Spool::open(dir.path(), one * 10).unwrap();
        assert_eq!((rec.batches, rec.bytes), (3, one * 3));
        assert_eq!(s.oldest().unwrap().unwrap().id, "node:x:1");
        s.push("node:y:0", 1, body(9)).unwrap();
        assert_eq!(keys(&s).last().unwrap(), "0000000000000004");
        let mut ids = Vec::new();
        while let Some(b) = s.oldest().unwrap() {
            ids.push(b.id.clone());
            s.remove(&b.key).unwrap();
        }
        assert_eq!(ids, ["node:x:1", "node:x:2", "node:x:3", "node:y:0"]);
        assert!(s.is_empty() && s.bytes() == 0);
    }

    /// What a kill -9 can leave: a temporary file mid-write. What outside damage can leave: a
    /// truncated or foreign file. Neither is ever sent.
    #[test]
    fn interrupted_writes_and_damaged_files_are_never_sent() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        s.push("n:a:0", 1, body(1)).unwrap();
        s.push("n:a:1", 1, body(2)).unwrap();
        drop(s);
        fs::write(
            dir.path().join(".tmp-0000000000000002"),
            b"egress-agent-batch v1 id=n:a:2 records=1 body=100\n\x1f\x8b",
        )
        .unwrap();
        let second = dir.path().join("0000000000000001.batch");
        let data = fs::read(&second).unwrap();
        fs::write(&second, &data[..data.len() - 10]).unwrap();
        fs::write(dir.path().join("0000000000000003.batch"), b"hello\n").unwrap();
        fs::write(dir.path().join("notes.txt"), b"left alone").unwrap();

        let (s, rec) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(rec.interrupted_writes, 1);
        assert_eq!(rec.corrupt, 2);
        assert_eq!(rec.batches, 1);
        assert_eq!(s.oldest().unwrap().unwrap().id, "n:a:0");
        assert!(dir
            .path()
            .join("rejected/0000000000000001.corrupt")
            .exists());
        assert!(dir.path().join("notes.txt").exists());
        assert!(!dir.path().join(".tmp-0000000000000002").exists());
    }

    #[test]
    fn halves_take_their_parents_place_and_an_unfinished_split_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        s.push("n:a:0", 4, body(1)).unwrap();
        s.push("n:a:1", 1, body(2)).unwrap();
        let parent = s.oldest().unwrap().unwrap();
        s.split(
            &parent.key,
            [
                ("n:a:0.0".into(), 2, body(3)),
                ("n:a:0.1".into(), 2, body(4)),
            ],
        )
        .unwrap();
        let order: Vec<_> = keys(&s);
        assert_eq!(
            order,
            [
                "0000000000000000.0",
                "0000000000000000.1",
                "0000000000000001"
            ]
        );
        assert_eq!(s.oldest().unwrap().unwrap().id, "n:a:0.0");
        drop(s);

        // A crash after the halves were written but before the parent was removed.
        let (mut s, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        s.store("0000000000000000", "n:a:0", 4, body(1)).unwrap();
        drop(s);
        let (s, rec) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(rec.orphan_halves, 2);
        assert_eq!(keys(&s), ["0000000000000000", "0000000000000001"]);
    }

    #[test]
    fn refused_batches_are_kept_aside_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 0..(REJECTED_KEPT + 3) {
            s.push(&format!("n:a:{i}"), 1, body(1)).unwrap();
            let b = s.oldest().unwrap().unwrap();
            s.set_aside(&b.key).unwrap();
        }
        assert!(s.is_empty() && s.bytes() == 0);
        let kept = fs::read_dir(dir.path().join("rejected")).unwrap().count();
        assert_eq!(kept, REJECTED_KEPT);
        // The newest are kept.
        let newest = format!("{:016x}.batch", REJECTED_KEPT + 2);
        assert!(dir.path().join("rejected").join(newest).exists());
    }

    #[test]
    fn in_memory_has_the_same_queue() {
        let mut s = Spool::in_memory(stored_size("a:b:0", 1, &body(0)) * 2);
        assert!(!s.is_durable());
        s.push("a:b:0", 1, body(0)).unwrap();
        s.push("a:b:1", 1, body(1)).unwrap();
        assert_eq!(s.push("a:b:2", 1, body(2)).unwrap(), Push::Full);
        let b = s.oldest().unwrap().unwrap();
        assert_eq!(b.body, body(0));
        s.split(
            &b.key,
            [
                ("a:b:0.0".into(), 1, body(5)),
                ("a:b:0.1".into(), 1, body(6)),
            ],
        )
        .unwrap();
        assert_eq!(s.oldest().unwrap().unwrap().body, body(5));
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn key_syntax() {
        assert!(valid_key("00000000000000ff"));
        assert!(valid_key("00000000000000ff.0.1"));
        assert!(!valid_key("00000000000000ff.2"));
        assert!(!valid_key("00000000000000fg"));
        assert!(!valid_key("00000000000000ff0"));
        assert!(!valid_key("short"));
    }
}
