//! The rendered form of a recommendation: documents (objects of either format) with the comments
//! that explain them. `render` prints them.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::cilium_crd::CiliumNetworkPolicy;

/// One step on the way to a node of a rendered object, for comments attached to that node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathSeg {
    /// Borrowed for the paths policies store (no allocation per comment), owned while rendering.
    Key(std::borrow::Cow<'static, str>),
    Index(usize),
}

/// Comment lines keyed by the path of the node they precede (a sequence item).
pub type NodeComments = BTreeMap<Vec<PathSeg>, Vec<String>>;

/// Builds a path from `"key"` and index parts.
pub fn path(parts: &[PathPart]) -> Vec<PathSeg> {
    parts
        .iter()
        .map(|p| match p {
            PathPart::K(k) => PathSeg::Key(std::borrow::Cow::Borrowed(k)),
            PathPart::I(i) => PathSeg::Index(*i),
        })
        .collect()
}

/// A literal path part for [`path`].
pub enum PathPart {
    K(&'static str),
    I(usize),
}

/// A policy object of either format.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    NetworkPolicy(Box<NetworkPolicy>),
    Cilium(Box<CiliumNetworkPolicy>),
}

/// One YAML document of the output.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub object: Object,
    /// Comment lines above the document.
    pub comments: Vec<String>,
    /// Comment lines above nodes inside the object (ipBlock peers, pod peers).
    pub node_comments: NodeComments,
}

/// What `recommend` produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recommendation {
    pub documents: Vec<Document>,
    /// Comment lines at the top of the output: skipped workloads, notes for the reader.
    pub notes: Vec<String>,
    /// What the user must act on before applying the policies (DNS not scoped, internet egress
    /// past a cap, ingress that would cut off outside callers): printed by front ends (the CLI on
    /// stderr) and repeated at the top of the YAML.
    pub warnings: Vec<String>,
}

impl Recommendation {
    /// The NetworkPolicy objects (empty for the Cilium format).
    pub fn network_policies(&self) -> Vec<&NetworkPolicy> {
        self.documents
            .iter()
            .filter_map(|d| match &d.object {
                Object::NetworkPolicy(np) => Some(&**np),
                Object::Cilium(_) => None,
            })
            .collect()
    }
}

impl Recommendation {
    /// The NetworkPolicy objects, by value (empty for the Cilium format).
    pub fn into_network_policies(self) -> Vec<NetworkPolicy> {
        self.documents
            .into_iter()
            .filter_map(|d| match d.object {
                Object::NetworkPolicy(np) => Some(*np),
                Object::Cilium(_) => None,
            })
            .collect()
    }
}
