//! `recommender status`: each workload's edges, first seen, last new edge and learning state,
//! from a service (`--server`) or offline from its store (`--store`), as a table or JSON.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{parse_duration, print, read_token, runtime};
use crate::error::Error;
use crate::service::learning::Thresholds;
use crate::service::status::StatusReport;
use crate::service::{client, state};
use crate::store::EmbeddedStore;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("from").required(true).args(["server", "store"]))]
pub struct StatusArgs {
    /// The service: `http://HOST:PORT`.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// The bearer token for --server, in a file.
    #[arg(long, value_name = "FILE", requires = "server")]
    token_file: Option<PathBuf>,
    /// A store file, read offline (not while a service holds it).
    #[arg(long, value_name = "PATH", conflicts_with = "server")]
    store: Option<PathBuf>,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: Output,
    /// With --store: the learning thresholds (a service uses its own).
    #[arg(long, value_name = "DURATION", default_value = "150s", value_parser = parse_duration)]
    processing_interval: jiff::SignedDuration,
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    stabilization_period: jiff::SignedDuration,
}

pub(super) fn run(args: &StatusArgs) -> Result<i32, Error> {
    let report = match (&args.server, &args.store) {
        (Some(server), _) => {
            let token_file = args
                .token_file
                .as_ref()
                .ok_or_else(|| Error::BadInput("--server needs --token-file".into()))?;
            let token = read_token(token_file)?;
            let body = runtime()?
                .block_on(client::get(server, "/v1/status", &token))
                .map_err(|e| Error::Service(e.to_string()))?;
            serde_json::from_str::<StatusReport>(&body).map_err(|e| {
                Error::Service(format!("--server {server}: not a status report: {e}"))
            })?
        }
        (None, Some(store)) => {
            let learned = EmbeddedStore::open_existing(store)
                .and_then(|s| s.load_now())
                .map_err(|e| Error::Service(e.to_string()))?;
            let thresholds = Thresholds {
                processing_interval: args.processing_interval,
                stabilization_period: args.stabilization_period,
            };
            StatusReport::new(
                &learned.edges,
                &state::uncovered_of(learned.uncovered),
                &thresholds,
                "offline",
                None,
            )
        }
        (None, None) => unreachable!("clap requires one of --server and --store"),
    };
    match args.output {
        Output::Table => print(&report.table())?,
        Output::Json => print(&format!(
            "{}\n",
            serde_json::to_string_pretty(&report).expect("serializes")
        ))?,
    }
    Ok(0)
}
