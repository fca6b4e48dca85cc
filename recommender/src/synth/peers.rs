//! Peers that several policies name the same way: the cluster DNS, and the internet-egress blocks.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::cidr;
use super::context::Context;
use super::model::{IpOrigin, PeerPlan, Target};

/// The cluster DNS peer as seen from `namespace`.
pub fn dns_peer(ctx: &Context, namespace: &str) -> PeerPlan {
    PeerPlan {
        target: Target::Pods {
            namespace: (namespace != ctx.dns_namespace).then(|| ctx.dns_namespace.clone()),
            selector: ctx.dns_selector.clone(),
        },
        dns_names: BTreeSet::new(),
        cluster_dns: true,
        comments: vec!["cluster DNS".to_owned()],
    }
}

/// `0.0.0.0/0` and `::/0` less the cluster's ranges, one peer per family, with `note` on top.
pub fn internet_peers(ctx: &Context, note: &str) -> Vec<PeerPlan> {
    cidr::internet_blocks(&ctx.cluster_ranges)
        .into_iter()
        .map(|(all, except)| PeerPlan {
            comments: internet_comments(note, &except),
            target: Target::IpBlock {
                cidr: all,
                except,
                origin: IpOrigin::Internet,
            },
            dns_names: BTreeSet::new(),
            cluster_dns: false,
        })
        .collect()
}

/// Comments above an internet-egress block; says so when no cluster range is known for its
/// family, because the block then also matches pod addresses on CNIs that apply ipBlocks to pods.
fn internet_comments(note: &str, except: &[IpNet]) -> Vec<String> {
    let mut lines = vec![format!("internet egress: {note}")];
    if except.is_empty() {
        lines.push(
            "no pod or Service range known for this family (give the cluster ranges explicitly): in-cluster addresses are not excepted"
                .to_owned(),
        );
    }
    lines
}
