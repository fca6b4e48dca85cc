//! `--flows-out`: FlowRecords as JSON lines, appended to a file or written to stdout, by a thread of
//! its own so that a slow reader of stdout never holds up the main loop.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use flow_model::FlowRecord;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

pub struct FlowWriter {
    out: BufWriter<Box<dyn Write + Send>>,
}

impl FlowWriter {
    /// `-` is stdout; anything else a file, created if missing and appended to (a restarted agent
    /// adds deltas; it never truncates what was reported before).
    pub fn open(target: &str) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = if target == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(Path::new(target))?,
            )
        };
        Ok(Self::from_writer(out))
    }

    pub fn from_writer(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: BufWriter::new(out),
        }
    }

    /// Writes one batch and flushes it, so that a reader never waits for a later batch.
    pub fn write_batch(&mut self, records: &[FlowRecord]) -> std::io::Result<()> {
        for record in records {
            self.out.write_all(record.to_json_line().as_bytes())?;
            self.out.write_all(b"\n")?;
        }
        self.out.flush()
    }
}

/// The writer thread; [`FileTask::wait`] gives its result once the channel is closed.
pub struct FileTask {
    done: oneshot::Receiver<std::io::Result<()>>,
}

impl FileTask {
    /// Writes each batch that comes through `rx` until the channel closes. An error ends the
    /// thread (and closes the channel, which the main loop sees at its next hand-off).
    pub fn spawn(
        mut writer: FlowWriter,
        mut rx: mpsc::Receiver<Vec<FlowRecord>>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<FileTask> {
        let (tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("flows-out".into())
            .spawn(move || {
                let result = (|| {
                    while let Some(records) = rx.blocking_recv() {
                        writer.write_batch(&records)?;
                        metrics.records_written(records.len() as u64);
                    }
                    Ok(())
                })();
                let _ = tx.send(result);
            })?;
        Ok(FileTask { done })
    }

    pub async fn wait(self) -> std::io::Result<()> {
        self.done.await.unwrap_or_else(|_| {
            Err(std::io::Error::other(
                "the flows-out writer thread panicked",
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"node":"n","source":{"kind":"host"},"destination":{"ip":"198.18.0.1","port":53,"protocol":"UDP"},"first_seen":"2026-11-26T16:00:00Z","last_seen":"2026-11-26T16:00:00Z","count":1,"outcome":"sent"}"#;

    #[test]
    fn appends_json_lines_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flows.jsonl");
        let record: FlowRecord = serde_json::from_str(LINE).unwrap();
        let target = path.to_str().unwrap();
        FlowWriter::open(target)
            .unwrap()
            .write_batch(&[record.clone(), record.clone()])
            .unwrap();
        let mut w = FlowWriter::open(target).unwrap();
        w.write_batch(std::slice::from_ref(&record)).unwrap();
        // Flushed without dropping the writer.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{LINE}\n{LINE}\n{LINE}\n"));
        let back = flow_model::read_records(text.as_bytes(), "flows.jsonl").unwrap();
        assert_eq!(back.len(), 3);
        assert!(FlowWriter::open("/nonexistent-dir/flows.jsonl").is_err());
    }
}
