//! `recommender export`: the policies a service learned (`--server`, HTTP) or its store holds
//! (`--store`, offline), the same YAML `recommend` writes for the same traffic.

use std::path::PathBuf;

use clap::Args;

use super::{print, read_token, runtime, SynthArgs};
use crate::cluster::Cluster;
use crate::error::Error;
use crate::export;
use crate::service::{client, query, state};
use crate::store::EmbeddedStore;

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("from").required(true).args(["server", "store"]))]
pub struct ExportArgs {
    /// The service: `http://HOST:PORT`.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// The bearer token for --server, in a file.
    #[arg(long, value_name = "FILE", requires = "server")]
    token_file: Option<PathBuf>,
    /// A store file, read offline (not while a service holds it).
    #[arg(long, value_name = "PATH", conflicts_with = "server")]
    store: Option<PathBuf>,
    /// With --store: cluster snapshot files (the DNS Service's selector, the pod and Service
    /// ranges kept out of internet egress). Edges are already resolved.
    #[arg(long = "cluster", value_name = "FILE", num_args = 1.., requires = "store")]
    cluster: Vec<PathBuf>,
    /// With --store: the cluster's Service range (as `recommend --service-cidr`).
    #[arg(long = "service-cidr", value_name = "CIDR", requires = "store")]
    service_cidrs: Vec<ipnet::IpNet>,
    #[command(flatten)]
    synth: SynthArgs,
}

pub(super) fn run(args: &ExportArgs) -> Result<i32, Error> {
    let options = args.synth.options();
    let yaml = match (&args.server, &args.store) {
        (Some(server), _) => {
            let token_file = args
                .token_file
                .as_ref()
                .ok_or_else(|| Error::BadInput("--server needs --token-file".into()))?;
            let token = read_token(token_file)?;
            let path = format!("/v1/policies?{}", query::query_from_options(&options));
            runtime()?
                .block_on(client::get(server, &path, &token))
                .map_err(|e| Error::Service(e.to_string()))?
        }
        (None, Some(store)) => {
            let mut cluster = if args.cluster.is_empty() {
                Cluster::default()
            } else {
                Cluster::load_files(&args.cluster)?.cluster
            };
            cluster.service_cidrs = args.service_cidrs.clone();
            let learned = EmbeddedStore::open_existing(store)
                .and_then(|s| s.load_now())
                .map_err(|e| Error::Service(e.to_string()))?;
            let flows: Vec<_> = learned.edges.iter().map(|e| e.flow()).collect();
            let uncovered = state::uncovered_of(learned.uncovered);
            export::render(&cluster, &flows, &uncovered, &options)
        }
        (None, None) => unreachable!("clap requires one of --server and --store"),
    };
    print(&yaml)?;
    Ok(0)
}
