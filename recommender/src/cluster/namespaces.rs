//! Namespace labels, as `namespaceSelector`s see them.

use std::collections::BTreeMap;

use super::Cluster;

/// The label the API server puts on every namespace (Kubernetes ≥ 1.21); policies select
/// namespaces by it.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

impl Cluster {
    /// The labels of `namespace`, including `kubernetes.io/metadata.name` even when the snapshot
    /// has no Namespace object for it (the API server would have set it, and it cannot be changed).
    pub fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        let mut labels = self
            .namespaces
            .get(namespace)
            .and_then(|ns| ns.metadata.labels.clone())
            .unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.to_owned(), namespace.to_owned());
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn labels_with_and_without_namespace_object() {
        let mut cluster = Cluster::default();
        cluster.namespaces.insert(
            "shop".into(),
            Namespace {
                metadata: ObjectMeta {
                    name: Some("shop".into()),
                    labels: Some([("team".to_owned(), "a".to_owned())].into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        let shop = cluster.namespace_labels("shop");
        assert_eq!(shop["team"], "a");
        assert_eq!(shop[NAMESPACE_NAME_LABEL], "shop");
        let other = cluster.namespace_labels("other");
        assert_eq!(other.len(), 1);
        assert_eq!(other[NAMESPACE_NAME_LABEL], "other");
    }
}
