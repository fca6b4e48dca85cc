//! The learned egress graph, from the service's store (read offline, with the store's own code,
//! while the service is stopped between learning and monitoring): a table of edges, a text
//! rendering for the terminal, and an SVG picture with namespaces as groups, workloads as boxes,
//! external destinations by the names the pods resolved, and ports on the edges.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::Path;

use anyhow::{Context, Result};
use recommender::resolve::Peer;
use recommender::store::EmbeddedStore;

/// One learned edge, as drawn.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GraphEdge {
    pub from: Node,
    pub to: Node,
    /// `8080/TCP`, `53/UDP`, ...
    pub ports: BTreeSet<String>,
    pub count: u64,
}

/// A box of the picture: a workload in a namespace, or something outside any namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Node {
    /// The namespace, or `external`/`cluster` for what has none.
    pub group: String,
    pub label: String,
}

const EXTERNAL: &str = "internet";
const CLUSTER: &str = "cluster (ipBlock)";

/// The edges a store holds, merged per (source, peer) with their ports.
pub fn load(store: &Path) -> Result<Vec<GraphEdge>> {
    let learned = EmbeddedStore::open_existing(store)
        .and_then(|s| s.load_now())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("reading the store {}", store.display()))?;
    let mut merged: BTreeMap<(Node, Node), GraphEdge> = BTreeMap::new();
    for edge in &learned.edges {
        let from = Node {
            group: edge.source.namespace.clone(),
            label: format!(
                "{}/{}",
                edge.source.workload.kind, edge.source.workload.name
            ),
        };
        let to = match edge.peer.as_ref() {
            Peer::Pods {
                namespace,
                workload,
                ..
            } => Node {
                group: namespace.clone(),
                label: format!("{}/{}", workload.kind, workload.name),
            },
            Peer::External { ip, .. } => {
                let names: Vec<&str> = edge.observed.dns_names.iter().map(String::as_str).collect();
                Node {
                    group: EXTERNAL.into(),
                    label: if names.is_empty() {
                        ip.to_string()
                    } else {
                        names.join(" ")
                    },
                }
            }
            Peer::ApiServer { ip } => Node {
                group: CLUSTER.into(),
                label: format!("apiserver {ip}"),
            },
            Peer::Node { ip, node } => Node {
                group: CLUSTER.into(),
                label: format!("node {node} {ip}"),
            },
            Peer::NodeLocalDns { ip } => Node {
                group: CLUSTER.into(),
                label: format!("node-local-dns {ip}"),
            },
        };
        let port = format!("{}/{}", edge.port, edge.protocol);
        let entry = merged
            .entry((from.clone(), to.clone()))
            .or_insert(GraphEdge {
                from,
                to,
                ports: BTreeSet::new(),
                count: 0,
            });
        entry.ports.insert(port);
        entry.count = entry.count.saturating_add(edge.observed.count);
    }
    Ok(merged.into_values().collect())
}

/// The edges as an aligned table.
pub fn table(edges: &[GraphEdge]) -> String {
    let mut rows = vec![[
        "SOURCE".to_owned(),
        "DESTINATION".into(),
        "PORTS".into(),
        "COUNT".into(),
    ]];
    for e in edges {
        rows.push([
            format!("{}/{}", e.from.group, e.from.label),
            format!("{}/{}", e.to.group, e.to.label),
            e.ports.iter().cloned().collect::<Vec<_>>().join(","),
            e.count.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let _ = writeln!(
            out,
            "  {:w0$}  {:w1$}  {:w2$}  {:>w3$}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
    }
    out
}

/// The graph for a terminal: each source workload with its destinations, grouped by namespace.
pub fn text(edges: &[GraphEdge]) -> String {
    let mut by_group: BTreeMap<&str, BTreeMap<&str, Vec<&GraphEdge>>> = BTreeMap::new();
    for e in edges {
        by_group
            .entry(&e.from.group)
            .or_default()
            .entry(&e.from.label)
            .or_default()
            .push(e);
    }
    let mut out = String::new();
    for (group, sources) in by_group {
        let _ = writeln!(out, "  ┌─ namespace {group}");
        for (source, edges) in sources {
            let _ = writeln!(out, "  │ {source}");
            for (i, e) in edges.iter().enumerate() {
                let branch = if i + 1 == edges.len() { "└" } else { "├" };
                let ports = e.ports.iter().cloned().collect::<Vec<_>>().join(",");
                let _ = writeln!(
                    out,
                    "  │   {branch}──[{ports}]──▶ {}: {}",
                    e.to.group, e.to.label
                );
            }
        }
        let _ = writeln!(out, "  └─");
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The narrowest box.
const BOX_W: f64 = 230.0;
const BOX_H: f64 = 34.0;
const GAP: f64 = 14.0;
const COL_GAP: f64 = 170.0;
const PAD: f64 = 30.0;

/// The graph as SVG: columns of namespace groups (sources left of what they call), boxes for
/// workloads and external names, arrows labelled with their ports.
pub fn svg(edges: &[GraphEdge]) -> String {
    let nodes: BTreeSet<&Node> = edges.iter().flat_map(|e| [&e.from, &e.to]).collect();
    // A namespace's column: 0 for those only calling, one more than the deepest namespace that
    // calls into it (calls inside a namespace and cycles do not push it further)...
    let groups_of: BTreeSet<&str> = nodes.iter().map(|n| n.group.as_str()).collect();
    let mut group_column: BTreeMap<&str, usize> = groups_of.iter().map(|g| (*g, 0)).collect();
    for _ in 0..groups_of.len() {
        for e in edges.iter().filter(|e| e.from.group != e.to.group) {
            let c = group_column[e.from.group.as_str()] + 1;
            let to = group_column
                .get_mut(e.to.group.as_str())
                .expect("every group is listed");
            if *to < c && c < groups_of.len() {
                *to = c;
            }
        }
    }
    // ...and external and ipBlock destinations sit in a column of their own, at the right.
    let last = group_column
        .iter()
        .filter(|(g, _)| ![EXTERNAL, CLUSTER].contains(*g))
        .map(|(_, c)| *c)
        .max()
        .unwrap_or(0)
        + 1;
    for g in [EXTERNAL, CLUSTER] {
        if let Some(c) = group_column.get_mut(g) {
            *c = last;
        }
    }
    let mut columns: BTreeMap<usize, BTreeMap<&str, Vec<&Node>>> = BTreeMap::new();
    for n in &nodes {
        columns
            .entry(group_column[n.group.as_str()])
            .or_default()
            .entry(&n.group)
            .or_default()
            .push(n);
    }
    let mut at: BTreeMap<&Node, (f64, f64, f64)> = BTreeMap::new();
    let mut groups = String::new();
    let mut height: f64 = 0.0;
    let mut x = PAD;
    for (c, members) in &columns {
        // Boxes as wide as the column's longest name.
        let longest = members
            .values()
            .flatten()
            .map(|n| n.label.chars().count())
            .max()
            .unwrap_or(0);
        let box_w = BOX_W.max(longest as f64 * 7.2 + 20.0);
        // Every other column starts lower, so that a call across a column passes above it.
        let mut y = PAD + if c % 2 == 1 { 2.0 * (BOX_H + GAP) } else { 0.0 };
        for (group, nodes) in members {
            let h = 28.0 + nodes.len() as f64 * (BOX_H + GAP);
            let (fill, stroke) = match *group {
                EXTERNAL => ("#fff4e5", "#d9822b"),
                CLUSTER => ("#f2f2f2", "#888888"),
                _ => ("#eef4fb", "#4a7ab5"),
            };
            let title = match *group {
                EXTERNAL | CLUSTER => group.to_string(),
                _ => format!("namespace {group}"),
            };
            let _ = writeln!(
                groups,
                r#"  <g class="group"><rect x="{x}" y="{y}" width="{}" height="{h}" rx="10" fill="{fill}" stroke="{stroke}" stroke-dasharray="6 4"/>"#,
                box_w + 2.0 * GAP
            );
            let _ = writeln!(
                groups,
                r#"    <text x="{}" y="{}" class="title">{}</text>"#,
                x + GAP,
                y + 19.0,
                escape(&title)
            );
            for (i, n) in nodes.iter().enumerate() {
                let by = y + 28.0 + i as f64 * (BOX_H + GAP);
                let bx = x + GAP;
                at.insert(n, (bx, by, box_w));
                let _ = writeln!(
                    groups,
                    r#"    <rect x="{bx}" y="{by}" width="{box_w}" height="{BOX_H}" rx="5" fill="white" stroke="{stroke}"/>"#
                );
                let _ = writeln!(
                    groups,
                    r#"    <text x="{}" y="{}" class="node">{}</text>"#,
                    bx + 8.0,
                    by + 22.0,
                    escape(&n.label)
                );
            }
            let _ = writeln!(groups, "  </g>");
            y += h + 2.0 * GAP;
        }
        height = height.max(y);
        x += box_w + 2.0 * GAP + COL_GAP;
    }
    let mut arrows = String::new();
    for e in edges {
        let (Some(&(fx, fy, fw)), Some(&(tx, ty, tw))) = (at.get(&e.from), at.get(&e.to)) else {
            continue;
        };
        let (x1, y1) = (fx + fw, fy + BOX_H / 2.0);
        let (x2, y2) = if tx > fx {
            (tx, ty + BOX_H / 2.0)
        } else {
            (tx + tw, ty + BOX_H / 2.0 + 6.0)
        };
        let bend = if tx > fx { (x2 - x1) / 2.0 } else { 60.0 };
        let path = if tx > fx {
            format!(
                "M{x1},{y1} C{},{y1} {},{y2} {x2},{y2}",
                x1 + bend,
                x2 - bend
            )
        } else {
            format!(
                "M{x1},{y1} C{},{y1} {},{y2} {x2},{y2}",
                x1 + bend,
                x2 + bend
            )
        };
        let ports = e.ports.iter().cloned().collect::<Vec<_>>().join(", ");
        let (lx, ly) = if tx > fx {
            ((x1 + x2) / 2.0, (y1 + y2) / 2.0 - 4.0)
        } else {
            (x1 + 40.0, (y1 + y2) / 2.0)
        };
        let _ = writeln!(
            arrows,
            r#"  <path d="{path}" class="edge" marker-end="url(#arrow)"/>"#
        );
        let _ = writeln!(
            arrows,
            r#"  <text x="{lx}" y="{ly}" class="port">{}</text>"#,
            escape(&ports)
        );
    }
    let width = x - COL_GAP + PAD;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">"#
    );
    out.push_str("  <title>Learned egress graph</title>\n");
    out.push_str("  <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>\n");
    out.push_str("  <style>.title{font-size:13px;font-weight:bold;fill:#333}.node{font-size:12px;fill:#111}.port{font-size:11px;fill:#a33;text-anchor:middle}.edge{fill:none;stroke:#555;stroke-width:1.4}</style>\n");
    let _ = writeln!(
        out,
        r#"  <rect width="{width}" height="{height}" fill="white"/>"#
    );
    out.push_str(&groups);
    out.push_str(&arrows);
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(group: &str, label: &str) -> Node {
        Node {
            group: group.into(),
            label: label.into(),
        }
    }

    fn edges() -> Vec<GraphEdge> {
        vec![
            GraphEdge {
                from: node("shop", "Deployment/web"),
                to: node("shop", "Deployment/api"),
                ports: ["8080/TCP".to_owned()].into(),
                count: 3,
            },
            GraphEdge {
                from: node("shop", "Deployment/api"),
                to: node("payments", "StatefulSet/ledger"),
                ports: ["5432/TCP".to_owned()].into(),
                count: 3,
            },
            GraphEdge {
                from: node("fulfilment", "Deployment/worker"),
                to: node(EXTERNAL, "api.payments.example.test"),
                ports: ["443/TCP".to_owned()].into(),
                count: 1,
            },
        ]
    }

    #[test]
    fn svg_has_groups_nodes_and_ports() {
        let svg = svg(&edges());
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for text in [
            "namespace shop",
            "namespace payments",
            "internet",
            "Deployment/web",
            "StatefulSet/ledger",
            "api.payments.example.test",
            "8080/TCP",
            "5432/TCP",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        assert_eq!(svg.matches("class=\"edge\"").count(), 3);
    }

    #[test]
    fn text_lists_each_edge_under_its_source() {
        let text = text(&edges());
        assert!(text.contains("namespace shop"), "{text}");
        assert!(
            text.contains("[8080/TCP]──▶ shop: Deployment/api"),
            "{text}"
        );
        assert!(table(&edges()).lines().count() == 4);
    }
}
