//! The input files the commands share: cluster snapshots, FlowRecords, NetworkPolicies.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::cluster::Cluster;
use crate::error::Error;
use crate::resolve::MergedRecords;

/// The cluster model from `--cluster` files (the loader logs its notes) and `--service-cidr`.
pub fn cluster(args: &super::ClusterArgs) -> Result<Cluster, Error> {
    if args.live {
        return live_cluster(args.service_cidrs.clone());
    }
    let mut cluster = Cluster::load_files(&args.files)?.cluster;
    cluster.service_cidrs = args.service_cidrs.clone();
    Ok(cluster)
}

/// The live cluster, read once (`--live`; also `serve --baseline cluster`).
pub fn live_cluster(service_cidrs: Vec<ipnet::IpNet>) -> Result<Cluster, Error> {
    super::runtime()?.block_on(async move {
        let client = crate::live::client()
            .await
            .map_err(|e| Error::BadInput(e.to_string()))?;
        crate::live::read_once(client, service_cidrs)
            .await
            .map_err(|e| Error::Service(e.to_string()))
    })
}

/// Every FlowRecord of `--flows` files (`-` is stdin), merged by key as it is read (agents report
/// deltas): the files are streamed, never held.
pub fn flows(files: &[PathBuf]) -> Result<MergedRecords, Error> {
    let mut merged = MergedRecords::default();
    for path in files {
        let name = path.display().to_string();
        if path == Path::new("-") {
            flow_model::for_each_record(std::io::stdin().lock(), "stdin", |r| merged.insert(r))?;
        } else {
            let file = std::fs::File::open(path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            flow_model::for_each_record(BufReader::new(file), &name, |r| merged.insert(r))?;
        }
    }
    Ok(merged)
}

/// The policies to judge with: the cluster files' NetworkPolicies, each replaced by a `--policies`
/// one of the same namespace/name (a policy without namespace counts as `default`, where
/// `kubectl apply` would put it), plus the other `--policies` ones.
pub fn policies(cluster: &Cluster, files: &[PathBuf]) -> Result<Vec<NetworkPolicy>, Error> {
    let loaded = Cluster::load_files(files)?;
    let given = loaded.cluster;
    let others = given.namespaces.len()
        + given.pods.len()
        + given.services.len()
        + given.endpoint_slices.len()
        + given.endpoints.len()
        + given.nodes.len()
        + given.deployments.len()
        + given.replica_sets.len()
        + given.stateful_sets.len()
        + given.daemon_sets.len()
        + given.jobs.len()
        + given.cron_jobs.len();
    if others > 0 {
        tracing::warn!(
            "--policies files hold objects other than NetworkPolicies; they are ignored"
        );
    }
    let key = |p: &NetworkPolicy| {
        (
            p.metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            p.metadata.name.clone(),
        )
    };
    let replaced: std::collections::HashSet<_> = given.network_policies.iter().map(key).collect();
    let mut policies: Vec<NetworkPolicy> = cluster
        .network_policies
        .iter()
        .filter(|p| !replaced.contains(&key(p)))
        .cloned()
        .collect();
    policies.extend(given.network_policies);
    Ok(policies)
}
