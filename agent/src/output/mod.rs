//! Where the main loop's records go: `--flows-out` (a file or stdout) and the recommender
//! (`ship`), each an output task of its own behind a [`Handoff`], so that neither a slow disk, a
//! blocked stdout nor an unreachable service ever holds up the loop that drains the kernel's ring
//! buffer (see `agent/README.md`, "Delivery to the recommender").

pub mod backlog;
pub mod file;
pub mod handoff;

use std::sync::Arc;

use flow_model::FlowRecord;

use crate::metrics::Metrics;
use crate::ship::Shipper;
pub use file::{FileTask, FlowWriter};
pub use handoff::{Closed, Handoff};

/// Flushes a hand-off channel holds before the main loop keeps records in its backlog.
const HANDOFF_FLUSHES: usize = 64;
/// Distinct flows a hand-off backlog holds (as many as the kernel's flow table holds).
const HANDOFF_BACKLOG_KEYS: usize = 65_536;

enum Task {
    File(FileTask),
    Ship(tokio::task::JoinHandle<()>),
}

struct Output {
    handoff: Handoff,
    task: Task,
}

/// The outputs the agent was started with.
#[derive(Default)]
pub struct Outputs {
    outputs: Vec<Output>,
}

impl Outputs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the `--flows-out` writer, on a thread of its own.
    pub fn add_file(&mut self, writer: FlowWriter, metrics: &Arc<Metrics>) -> std::io::Result<()> {
        let (handoff, rx) =
            Handoff::channel(HANDOFF_FLUSHES, HANDOFF_BACKLOG_KEYS, Arc::clone(metrics));
        let task = FileTask::spawn(writer, rx, Arc::clone(metrics))?;
        self.outputs.push(Output {
            handoff,
            task: Task::File(task),
        });
        Ok(())
    }

    /// Adds delivery to the recommender, as a task on the current runtime.
    pub fn add_shipper(&mut self, shipper: Shipper, metrics: &Arc<Metrics>) {
        let (handoff, rx) =
            Handoff::channel(HANDOFF_FLUSHES, HANDOFF_BACKLOG_KEYS, Arc::clone(metrics));
        let task = tokio::spawn(shipper.run(rx));
        self.outputs.push(Output {
            handoff,
            task: Task::Ship(task),
        });
    }

    /// Hands `records` to every output without waiting. `Closed` when an output task has stopped
    /// (only the file writer can: its write failed; [`Outputs::finish`] says why).
    pub fn offer(&mut self, records: Vec<FlowRecord>) -> Result<(), Closed> {
        let Some((last, rest)) = self.outputs.split_last_mut() else {
            return Ok(());
        };
        for output in rest {
            output.handoff.offer(records.clone())?;
        }
        last.handoff.offer(records)
    }

    /// Closes every hand-off and waits for the outputs to finish: the writer flushes; the shipper
    /// delivers or spools everything within its grace period (see `ship`).
    pub async fn finish(self) -> std::io::Result<()> {
        let mut tasks = Vec::with_capacity(self.outputs.len());
        for output in self.outputs {
            // A closed channel here means the task already stopped; its result says why.
            let _ = output.handoff.close().await;
            tasks.push(output.task);
        }
        let mut result = Ok(());
        for task in tasks {
            match task {
                Task::File(task) => {
                    if let Err(e) = task.wait().await {
                        result = Err(e);
                    }
                }
                Task::Ship(task) => {
                    if let Err(error) = task.await {
                        tracing::error!(%error, "the delivery task failed");
                    }
                }
            }
        }
        result
    }
}
