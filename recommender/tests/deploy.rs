//! `deploy/` is what `kubectl apply -k` installs: the base (`deploy/`) and the HA overlay
//! (`deploy/overlays/ha`) render with kubectl's kustomize, every object they hold is valid for
//! Kubernetes 1.37 (`kubernetes-validate --strict`), the CRD is structural and the custom resources
//! the store writes validate against it, the Prometheus Operator objects have that API's shape
//! (checked here field by field: the validator has no schema for them), and the RBAC is the least
//! the recommender and the agent need. The agent's DaemonSet is checked against the agent's own
//! flags in `agent/tests/deploy.rs`.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use serde::Deserialize;
use serde_json::Value;

#[path = "deploy/monitoring.rs"]
mod monitoring;
#[path = "deploy/store_objects.rs"]
mod store_objects;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The schema validator: `$KUBERNETES_VALIDATE`, or the one `cargo xtask setup` installs.
fn validator() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBERNETES_VALIDATE") {
        return PathBuf::from(path);
    }
    let path = repo().join("target/tools/venv/bin/kubernetes-validate");
    assert!(
        path.exists(),
        "the schema validator is missing ({}): run `cargo xtask setup`",
        path.display()
    );
    path
}

/// A scratch directory of this test process, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("deploy-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A kustomization rendered by `kubectl kustomize`, as YAML text and as objects.
struct Rendered {
    text: String,
    objects: Vec<Value>,
}

impl Rendered {
    /// `dir` rendered once per test process.
    fn of(dir: &'static str) -> &'static Rendered {
        static RENDERED: OnceLock<Mutex<HashMap<&'static str, &'static Rendered>>> =
            OnceLock::new();
        let mut cache = RENDERED.get_or_init(Default::default).lock().unwrap();
        cache
            .entry(dir)
            .or_insert_with(|| Box::leak(Box::new(Rendered::render(dir))))
    }

    fn render(dir: &str) -> Rendered {
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(repo().join(dir))
            .output()
            .expect("kubectl (Debian's kubernetes-client): run `cargo xtask setup`");
        assert!(
            out.status.success(),
            "kubectl kustomize {dir}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let objects = serde_yaml::Deserializer::from_str(&text)
            .map(|d| Value::deserialize(d).unwrap())
            .filter(|v| !v.is_null())
            .collect();
        Rendered { text, objects }
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn one<T: serde::de::DeserializeOwned>(&self, kind: &str, name: &str) -> T {
        let object = self
            .all(kind)
            .into_iter()
            .find(|o| o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"));
        serde_json::from_value(object.clone()).unwrap()
    }

    fn kinds(&self) -> BTreeSet<String> {
        self.objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap().to_owned())
            .collect()
    }
}

const BASE: &str = "deploy";
const HA: &str = "deploy/overlays/ha";

/// Kinds the validator has no schema for; `monitoring` checks their shape instead.
const OPERATOR_KINDS: [&str; 2] = ["ServiceMonitor", "PrometheusRule"];

fn validate_strict(scratch: &Scratch, name: &str, text: &str) -> String {
    let file = scratch.write(name, text);
    let out = Command::new(validator())
        .args(["--strict", "-k", "1.37.0"])
        .arg(&file)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    report
}

#[test]
fn every_manifest_is_schema_valid() {
    let scratch = Scratch::new("schema");
    for dir in [BASE, HA] {
        let rendered = Rendered::of(dir);
        let report = validate_strict(&scratch, "rendered.yaml", &rendered.text);
        // The validator only warns about a kind it has no schema for: only the operator's may be.
        for line in report.lines().filter(|l| !l.starts_with("INFO")) {
            assert!(
                line.starts_with("WARN")
                    && OPERATOR_KINDS.iter().any(|k| line.contains(&format!(
                        "kind {k} with api version monitoring.coreos.com/v1"
                    ))),
                "{dir}: {line}"
            );
        }
        let passed = report.lines().filter(|l| l.starts_with("INFO")).count();
        assert_eq!(
            passed,
            rendered.objects.len() - OPERATOR_KINDS.len(),
            "{dir}: every other object validated:\n{report}"
        );
    }
}

#[test]
fn the_base_and_the_overlay_install_what_they_should() {
    let base = Rendered::of(BASE);
    let expected: BTreeSet<String> = [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "DaemonSet",
        "Deployment",
        "PersistentVolumeClaim",
        "ServiceMonitor",
        "PrometheusRule",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(base.kinds(), expected);
    let ha = Rendered::of(HA);
    let mut expected_ha = expected;
    expected_ha.remove("PersistentVolumeClaim");
    expected_ha.extend(["Role", "RoleBinding", "PodDisruptionBudget"].map(String::from));
    assert_eq!(ha.kinds(), expected_ha);
    // One namespace holds every namespaced object.
    for rendered in [base, ha] {
        for object in &rendered.objects {
            let namespace = &object["metadata"]["namespace"];
            assert!(
                namespace.is_null() || namespace == "egress-recommender",
                "{object}"
            );
        }
    }
}

/// What a role allows, as (API group, resource, verb, resource names) tuples.
fn grants(rules: &[PolicyRule]) -> BTreeSet<(String, String, String, Vec<String>)> {
    let mut out = BTreeSet::new();
    for rule in rules {
        assert!(rule.non_resource_urls.is_none(), "{rule:?}");
        for group in rule.api_groups.as_deref().unwrap_or_default() {
            for resource in rule.resources.as_deref().unwrap_or_default() {
                for verb in &rule.verbs {
                    assert!(group != "*" && resource != "*" && verb != "*", "{rule:?}");
                    out.insert((
                        group.clone(),
                        resource.clone(),
                        verb.clone(),
                        rule.resource_names.clone().unwrap_or_default(),
                    ));
                }
            }
        }
    }
    out
}

fn grant(group: &str, resource: &str, verb: &str) -> (String, String, String, Vec<String>) {
    (group.into(), resource.into(), verb.into(), Vec::new())
}

#[test]
fn rbac_is_least_privilege() {
    let base = Rendered::of(BASE);
    let agent: ClusterRole = base.one("ClusterRole", "egress-agent");
    assert_eq!(
        grants(agent.rules.as_deref().unwrap()),
        ["get", "list", "watch"]
            .map(|v| grant("", "pods", v))
            .into()
    );
    let recommender: ClusterRole = base.one("ClusterRole", "egress-recommender");
    let mut expected = BTreeSet::from([grant("authentication.k8s.io", "tokenreviews", "create")]);
    for (group, resource) in [
        ("", "pods"),
        ("", "services"),
        ("", "namespaces"),
        ("", "nodes"),
        ("discovery.k8s.io", "endpointslices"),
        ("apps", "replicasets"),
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
        ("networking.k8s.io", "networkpolicies"),
    ] {
        expected.insert(grant(group, resource, "list"));
        expected.insert(grant(group, resource, "watch"));
    }
    assert_eq!(grants(recommender.rules.as_deref().unwrap()), expected);
    // The base writes nothing through the API but token reviews.
    assert!(base.all("Role").is_empty());

    // HA: the store's own objects and one Lease, in its namespace only.
    let ha = Rendered::of(HA);
    let store: Role = ha.one("Role", "egress-recommender-store");
    assert_eq!(
        store.metadata.namespace.as_deref(),
        Some("egress-recommender")
    );
    let lease = |verb: &str| {
        (
            "coordination.k8s.io".to_owned(),
            "leases".to_owned(),
            verb.to_owned(),
            vec!["egress-recommender-store".to_owned()],
        )
    };
    let mut expected: BTreeSet<_> = ["get", "list", "create", "update"]
        .map(|v| grant("egress-recommender.io", "learnededgesets", v))
        .into();
    expected.insert(grant("coordination.k8s.io", "leases", "create"));
    expected.insert(lease("get"));
    expected.insert(lease("update"));
    assert_eq!(grants(store.rules.as_deref().unwrap()), expected);
    // The CRD the Role names is the one deployed.
    let crd = &ha.all("CustomResourceDefinition")[0];
    assert_eq!(crd["spec"]["group"], "egress-recommender.io");
    assert_eq!(crd["spec"]["names"]["plural"], "learnededgesets");
    // Every binding gives its role to the account of the workload that needs it.
    for rendered in [base, ha] {
        for binding in rendered
            .all("ClusterRoleBinding")
            .into_iter()
            .chain(rendered.all("RoleBinding"))
        {
            let subjects = binding["subjects"].as_array().unwrap();
            assert_eq!(subjects.len(), 1, "{binding}");
            assert_eq!(subjects[0]["kind"], "ServiceAccount");
            let role = binding["roleRef"]["name"].as_str().unwrap();
            let account = subjects[0]["name"].as_str().unwrap();
            assert!(role.starts_with(account), "{role} bound to {account}");
        }
    }
}

fn the_container(deployment: &Deployment) -> k8s_openapi::api::core::v1::Container {
    deployment.spec.clone().template.spec.unwrap().containers[0].clone()
}

fn arg_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("{flag}=")))
}

#[test]
fn the_recommender_runs_unprivileged_with_probes_and_a_store_volume() {
    let base = Rendered::of(BASE);
    let deployment: Deployment = base.one("Deployment", "egress-recommender");
    let spec = deployment.spec.clone();
    let pod = spec.template.spec.clone().unwrap();
    let container = the_container(&deployment);
    let pod_security = pod.security_context.clone().unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert!(pod_security.run_as_user.unwrap() > 0);
    let security = container.security_context.clone().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.privileged, Some(false));
    assert_eq!(
        security.capabilities.unwrap().drop.unwrap(),
        vec!["ALL".to_owned()]
    );
    // Probes on the service's own endpoints and port.
    let port = container.ports.clone().unwrap()[0].clone();
    let args = container.args.clone().unwrap();
    let listen: std::net::SocketAddr = arg_value(&args, "--listen").unwrap().parse().unwrap();
    assert_eq!(listen.port() as i32, port.container_port);
    for (probe, path) in [
        (container.readiness_probe.clone(), "/readyz"),
        (container.liveness_probe.clone(), "/healthz"),
    ] {
        let get = probe.unwrap().http_get.unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                port.name.clone().unwrap()
            )
        );
    }
    // The embedded store: a file on a writable volume backed by the PersistentVolumeClaim, one
    // process at a time.
    let store = PathBuf::from(arg_value(&args, "--store").unwrap());
    let mounts = container.volume_mounts.clone().unwrap();
    let mount = mounts
        .iter()
        .find(|m| store.starts_with(&m.mount_path))
        .expect("the store's directory is mounted");
    assert_ne!(mount.read_only, Some(true));
    let volume = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == mount.name)
        .unwrap();
    let claim = volume.persistent_volume_claim.unwrap().claim_name;
    assert_eq!(
        base.all("PersistentVolumeClaim")[0]["metadata"]["name"],
        claim
    );
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("Recreate"));
    // The Service reaches the pods on that port, and the agents deliver to it.
    let service: Service = base.one("Service", "egress-recommender");
    let service_spec = service.spec.unwrap();
    assert_eq!(
        service_spec.selector.unwrap(),
        spec.selector.match_labels.unwrap()
    );
    let service_port = &service_spec.ports.unwrap()[0];
    let daemonset = &base.all("DaemonSet")[0];
    let agent_args: Vec<String> = serde_json::from_value(
        daemonset["spec"]["template"]["spec"]["containers"][0]["args"].clone(),
    )
    .unwrap();
    assert_eq!(
        arg_value(&agent_args, "--recommender"),
        Some(
            format!(
                "http://egress-recommender.egress-recommender.svc:{}",
                service_port.port
            )
            .as_str()
        )
    );
}

#[test]
fn the_recommender_accepts_its_arguments_in_the_base_and_the_overlay() {
    use clap::Parser;
    for dir in [BASE, HA] {
        let deployment: Deployment = Rendered::of(dir).one("Deployment", "egress-recommender");
        let args = the_container(&deployment).args.unwrap();
        recommender::cli::Cli::try_parse_from(
            std::iter::once("recommender".to_owned()).chain(args.clone()),
        )
        .unwrap_or_else(|e| panic!("{dir}: {args:?}: {e}"));
        // The agents' account, with the audience of their projected token.
        assert_eq!(
            arg_value(&args, "--auth-service-account"),
            Some("system:serviceaccount:egress-recommender:egress-agent")
        );
        assert_eq!(
            arg_value(&args, "--auth-audience"),
            Some("egress-recommender")
        );
    }
}

#[test]
fn the_ha_overlay_runs_replicas_on_the_api_store() {
    let ha = Rendered::of(HA);
    let deployment: Deployment = ha.one("Deployment", "egress-recommender");
    let spec = deployment.spec.clone();
    assert!(spec.replicas.unwrap() >= 2);
    let container = the_container(&deployment);
    let args = container.args.clone().unwrap();
    assert_eq!(arg_value(&args, "--store"), Some("kubernetes"));
    // The Lease the store's Role lets it update.
    assert_eq!(
        arg_value(&args, "--lease-name"),
        Some("egress-recommender-store")
    );
    assert!(container.volume_mounts.unwrap_or_default().is_empty());
    assert!(spec
        .template
        .spec
        .unwrap()
        .volumes
        .unwrap_or_default()
        .is_empty());
    // The Lease holder's identity and namespace come from the downward API.
    let env = container.env.unwrap();
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let var = env.iter().find(|e| e.name == name).unwrap();
        let source = var.value_from.clone().unwrap().field_ref.unwrap();
        assert_eq!(source.field_path, field);
    }
    let budget = &ha.all("PodDisruptionBudget")[0];
    assert_eq!(budget["spec"]["minAvailable"], 1);
}

/// Every node of a structural schema has a type (or says it holds anything), and `metadata` is
/// left to the API server.
fn assert_structural(schema: &Value, at: &str) {
    let preserves = schema["x-kubernetes-preserve-unknown-fields"] == true
        || schema["x-kubernetes-int-or-string"] == true;
    assert!(schema["type"].is_string() || preserves, "{at}: no type");
    for key in ["$ref", "allOf", "anyOf", "oneOf", "not", "additionalItems"] {
        assert!(schema.get(key).is_none(), "{at}: {key}");
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            assert_structural(property, &format!("{at}.{name}"));
        }
    }
    if schema["items"].is_object() {
        assert_structural(&schema["items"], &format!("{at}[]"));
    }
    if schema["additionalProperties"].is_object() {
        assert_structural(&schema["additionalProperties"], &format!("{at}{{}}"));
    }
}

/// Runs `tests/deploy/validate_cr.py` (with the validator's own Python and jsonschema).
fn validate_custom_resources(crds: &Path, resources: &[PathBuf]) -> (bool, String) {
    let python = validator().parent().unwrap().join("python3");
    let out = Command::new(python)
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/deploy/validate_cr.py"))
        .arg(crds)
        .args(resources)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

#[test]
fn the_crd_is_structural_and_the_resources_the_store_writes_validate() {
    let base = Rendered::of(BASE);
    let crd = base.all("CustomResourceDefinition")[0];
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    for version in crd["spec"]["versions"].as_array().unwrap() {
        let schema = &version["schema"]["openAPIV3Schema"];
        assert_eq!(schema["type"], "object");
        assert_structural(schema, "openAPIV3Schema");
        assert_eq!(
            schema["properties"]["metadata"],
            serde_json::json!({"type": "object"})
        );
    }
    let scratch = Scratch::new("crd");
    let crds = scratch.write("crd.yaml", &serde_yaml::to_string(crd).unwrap());
    let sample = repo().join("deploy/samples/learnededgeset.yaml");
    let (ok, report) = validate_custom_resources(&crds, std::slice::from_ref(&sample));
    assert!(ok, "{report}");
    assert!(report.starts_with("ok "), "{report}");

    // What the store writes, through its own code path, every part of it.
    let written = store_objects::written();
    let mut files = Vec::new();
    for (i, object) in written.iter().enumerate() {
        files.push(scratch.write(
            &format!("written-{i}.yaml"),
            &serde_yaml::to_string(object).unwrap(),
        ));
    }
    let (ok, report) = validate_custom_resources(&crds, &files);
    assert!(ok, "{report}");
    assert_eq!(
        report.lines().filter(|l| l.starts_with("ok ")).count(),
        written.len(),
        "{report}"
    );

    // The check can fail: an unknown field, a wrong type, a time without a zone, a bad enum.
    let text = std::fs::read_to_string(&sample).unwrap();
    for (from, to, error) in [
        (
            "      port: 443\n",
            "      port: 443\n      weight: 1\n",
            "'weight' was unexpected",
        ),
        ("count: 3\n", "count: \"3\"\n", "is not of type 'integer'"),
        (
            "lastSeen: \"2026-11-26T16:04:00Z\"",
            "lastSeen: \"2026-11-26T16:04:00\"",
            "is not a 'date-time'",
        ),
        (
            "protocol: TCP\n",
            "protocol: ICMP\n",
            "'ICMP' is not one of",
        ),
        ("  part: 0\n", "", "'part' is a required property"),
    ] {
        assert!(text.contains(from), "{from}");
        let bad = scratch.write("bad.yaml", &text.replacen(from, to, 1));
        let (ok, report) = validate_custom_resources(&crds, &[bad]);
        assert!(!ok && report.contains(error), "{from:?} → {to:?}: {report}");
    }
}

#[test]
fn the_prometheus_objects_scrape_both_services_and_alert_on_unexpected_egress() {
    let base = Rendered::of(BASE);
    let services: Vec<Service> = base
        .all("Service")
        .into_iter()
        .map(|s| serde_json::from_value(s.clone()).unwrap())
        .collect();
    monitoring::check(
        &base.all("ServiceMonitor"),
        &base.all("PrometheusRule"),
        &services,
    );
}
