//! Which collection a request path names, and what kind its objects are.
//!
//! Paths follow the API server's layout: `/api/v1/...` for the core group, `/apis/GROUP/VERSION/...`
//! for the others; then `namespaces/NS/PLURAL[/NAME[/SUBRESOURCE]]` for namespaced resources or
//! `PLURAL[/NAME[/SUBRESOURCE]]` for cluster-scoped ones and for lists across all namespaces.

/// A resource type: `apps/v1 deployments`, or `v1 pods` for the core group (empty group).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resource {
    pub group: String,
    pub version: String,
    pub plural: String,
}

impl Resource {
    pub fn new(group: &str, version: &str, plural: &str) -> Resource {
        Resource {
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
        }
    }

    /// `v1` for the core group, `GROUP/VERSION` otherwise, as objects spell `apiVersion`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods`, `deployments.apps`: how the API server names a resource in its messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The URL prefix of this resource's collection in `namespace` (all namespaces when `None`).
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        let root = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match namespace {
            Some(ns) => format!("{root}/namespaces/{ns}/{}", self.plural),
            None => format!("{root}/{}", self.plural),
        }
    }
}

/// The kind of a built-in resource and whether it is namespaced; custom resources are registered
/// by the test (`ApiStub::register_kind`) or learn their kind from the first object created.
pub fn builtin_kind(resource: &Resource) -> Option<(&'static str, bool)> {
    let kind = match (resource.group.as_str(), resource.plural.as_str()) {
        ("", "pods") => ("Pod", true),
        ("", "services") => ("Service", true),
        ("", "endpoints") => ("Endpoints", true),
        ("", "namespaces") => ("Namespace", false),
        ("", "nodes") => ("Node", false),
        ("", "configmaps") => ("ConfigMap", true),
        ("", "secrets") => ("Secret", true),
        ("", "serviceaccounts") => ("ServiceAccount", true),
        ("", "events") => ("Event", true),
        ("discovery.k8s.io", "endpointslices") => ("EndpointSlice", true),
        ("apps", "deployments") => ("Deployment", true),
        ("apps", "replicasets") => ("ReplicaSet", true),
        ("apps", "statefulsets") => ("StatefulSet", true),
        ("apps", "daemonsets") => ("DaemonSet", true),
        ("batch", "jobs") => ("Job", true),
        ("batch", "cronjobs") => ("CronJob", true),
        ("networking.k8s.io", "networkpolicies") => ("NetworkPolicy", true),
        ("coordination.k8s.io", "leases") => ("Lease", true),
        ("authentication.k8s.io", "tokenreviews") => ("TokenReview", false),
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            ("CustomResourceDefinition", false)
        }
        _ => return None,
    };
    Some(kind)
}

/// What one request path addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub resource: Resource,
    /// The namespace in the path; `None` for cluster-scoped resources and all-namespace lists.
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// `status` for `.../NAME/status`.
    pub subresource: Option<String>,
}

/// Parses a request path; `None` for paths that name no resource (discovery and the like).
pub fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        // `namespaces/NS/status` is the Namespace object's own subresource.
        ["namespaces", _, "status" | "finalize"] if group.is_empty() => (None, rest),
        // `namespaces/NS/PLURAL...` is a namespaced resource; `namespaces[/NAME]` the Namespace
        // objects themselves.
        ["namespaces", ns, _, ..] => (Some(ns.to_string()), &rest[2..]),
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(name.to_string()), None),
        [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
        _ => return None,
    };
    if plural.is_empty() || version.is_empty() {
        return None;
    }
    Some(Target {
        resource: Resource::new(group, version, plural),
        namespace,
        name,
        subresource,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_collection() {
        let t = parse_path("/api/v1/namespaces/shop/pods/web-1").unwrap();
        assert_eq!(t.resource, Resource::new("", "v1", "pods"));
        assert_eq!(t.namespace.as_deref(), Some("shop"));
        assert_eq!(t.name.as_deref(), Some("web-1"));

        let t = parse_path("/api/v1/namespaces/shop").unwrap();
        assert_eq!(t.resource.plural, "namespaces");
        assert_eq!(t.namespace, None);
        assert_eq!(t.name.as_deref(), Some("shop"));

        let t = parse_path("/api/v1/namespaces/shop/status").unwrap();
        assert_eq!(t.resource.plural, "namespaces");
        assert_eq!(t.name.as_deref(), Some("shop"));
        assert_eq!(t.subresource.as_deref(), Some("status"));

        let t = parse_path("/apis/apps/v1/deployments").unwrap();
        assert_eq!(t.resource, Resource::new("apps", "v1", "deployments"));
        assert_eq!(t.namespace, None);

        let t = parse_path("/apis/example.test/v1alpha1/namespaces/a/widgets/w/status").unwrap();
        assert_eq!(t.resource.group, "example.test");
        assert_eq!(t.subresource.as_deref(), Some("status"));

        assert_eq!(parse_path("/apis"), None);
        assert_eq!(parse_path("/version"), None);
    }
}
