//! `recommender recommend`: cluster + flows → egress policies (YAML on stdout).

use super::{engines, inputs, print, RecommendArgs};
use crate::error::Error;
use crate::resolve::resolve_all;
use crate::synth::Options;

pub(super) fn run(args: &RecommendArgs) -> Result<i32, Error> {
    let cluster = inputs::cluster(&args.cluster.files)?;
    let records = inputs::flows(&args.flows)?;
    let resolution = resolve_all(&cluster, &records);
    for note in &resolution.notes {
        tracing::warn!("{note}");
    }
    let yaml = engines::recommend(&cluster, &resolution.flows, &options(args))?;
    print(&yaml)?;
    Ok(0)
}

fn options(args: &RecommendArgs) -> Options {
    let defaults = Options::default();
    Options {
        namespaces: args.namespaces.clone(),
        default_deny: args.default_deny,
        with_ingress: args.with_ingress,
        ingress_for_cluster_services: args.ingress_for_cluster_services,
        format: args.format,
        cidr_prefix_v4: args.cidr_prefix_v4,
        cidr_prefix_v6: args.cidr_prefix_v6,
        max_external_peers: args
            .max_external_peers
            .unwrap_or(defaults.max_external_peers),
        internet_egress: args.internet_egress.unwrap_or(defaults.internet_egress),
        cluster_cidrs: args.cluster_cidrs.clone(),
    }
}
