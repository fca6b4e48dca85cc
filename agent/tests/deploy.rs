//! The DaemonSet of `deploy/base/agent.yaml` runs the agent with arguments it accepts, and what
//! they name is there: the token's projected volume with the recommender's audience, a writable
//! hostPath spool, the capability the start-up scan needs, the API token for reading its node's
//! pods, and a termination grace period longer than the agent's delivery grace. (Every manifest of
//! `deploy/` is validated against the Kubernetes schemas by `recommender/tests/deploy.rs`.)

use std::path::{Path, PathBuf};

use agent::cli::{Cli, Command as AgentCommand, PodMetadata};
use clap::Parser;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Volume;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/base/agent.yaml")
}

fn documents(text: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

#[test]
fn the_daemonset_gives_the_agent_what_its_flags_need() {
    let text = std::fs::read_to_string(manifest()).unwrap();
    let docs = documents(&text);
    let kind = |d: &serde_yaml::Value| d["kind"].as_str().unwrap_or_default().to_owned();
    let ds: DaemonSet = serde_yaml::from_value(
        docs.iter()
            .find(|d| kind(d) == "DaemonSet")
            .expect("a DaemonSet")
            .clone(),
    )
    .unwrap();
    let account = docs
        .iter()
        .find(|d| kind(d) == "ServiceAccount")
        .expect("a ServiceAccount");
    let pod = ds.spec.template.spec.unwrap();
    // Without --pods-file the agent reads its node's pods from the API, with its account's token.
    assert_ne!(pod.automount_service_account_token, Some(false));
    assert_ne!(
        account["automountServiceAccountToken"].as_bool(),
        Some(false)
    );
    assert_eq!(
        pod.service_account_name.as_deref(),
        account["metadata"]["name"].as_str()
    );
    let container = &pod.containers[0];
    let args: Vec<String> = container
        .args
        .clone()
        .unwrap()
        .into_iter()
        .map(|a| a.replace("$(NODE_NAME)", "node-a"))
        .collect();
    let AgentCommand::Run(run) =
        Cli::try_parse_from(std::iter::once("agent".to_owned()).chain(args))
            .expect("the agent accepts the manifest's arguments")
            .command;
    assert!(run.recommender.is_some());
    assert_eq!(run.flows_out(), None, "no records on stdout in the cluster");
    assert_eq!(
        run.pod_metadata(false),
        PodMetadata::Api,
        "pods come from the API, in a pod or not"
    );
    assert_eq!(run.node_name.as_deref(), Some("node-a"));

    let volumes = pod.volumes.clone().unwrap();
    let mounts = container.volume_mounts.clone().unwrap();
    let volume_at = |path: &Path| -> (Volume, bool) {
        let mount = mounts
            .iter()
            .filter(|m| path.starts_with(&m.mount_path))
            .max_by_key(|m| m.mount_path.len())
            .unwrap_or_else(|| panic!("nothing mounted at {}", path.display()));
        let volume = volumes
            .iter()
            .find(|v| v.name == mount.name)
            .unwrap()
            .clone();
        (volume, mount.read_only.unwrap_or(false))
    };
    // The token: a projected ServiceAccount token for the recommender's audience.
    let (token, _) = volume_at(run.token_file.as_deref().unwrap());
    let source = token.projected.unwrap().sources.unwrap()[0]
        .service_account_token
        .clone()
        .expect("a projected ServiceAccount token");
    assert_eq!(source.audience.as_deref(), Some("egress-recommender"));
    assert_eq!(
        Some(source.path.as_str()),
        run.token_file
            .as_deref()
            .unwrap()
            .file_name()
            .and_then(|n| n.to_str())
    );
    // The spool: writable, on the node, so that it outlives the pod.
    let (spool, read_only) = volume_at(run.spool_dir.as_deref().unwrap());
    assert!(spool.host_path.is_some() && !read_only);
    // The start-up scan enters the pods' network namespaces, pinned in the host's /run/netns.
    let caps = container
        .security_context
        .clone()
        .unwrap()
        .capabilities
        .unwrap()
        .add
        .unwrap();
    assert!(run.existing_connections);
    assert!(caps.contains(&"SYS_ADMIN".to_owned()), "{caps:?}");
    let (netns, _) = volume_at(Path::new("/run/netns/cni-1"));
    assert_eq!(netns.host_path.unwrap().path, "/run/netns");
    // The node's name from the downward API, for --node-name and the pods' field selector.
    let env = container.env.clone().unwrap();
    let node = env.iter().find(|e| e.name == "NODE_NAME").unwrap();
    assert_eq!(
        node.value_from
            .clone()
            .unwrap()
            .field_ref
            .unwrap()
            .field_path,
        "spec.nodeName"
    );
    // cgroup ids are mapped back to pods through the host's cgroup hierarchy, read-only.
    let (cgroup, read_only) = volume_at(Path::new("/sys/fs/cgroup/unified"));
    assert_eq!(cgroup.host_path.unwrap().path, "/sys/fs/cgroup");
    assert!(read_only);
    // Explicit capabilities, never privileged.
    let security = container.security_context.clone().unwrap();
    assert_eq!(security.privileged, Some(false));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security.capabilities.clone().unwrap().drop,
        Some(vec!["ALL".to_owned()])
    );
    for needed in ["BPF", "PERFMON", "NET_ADMIN"] {
        assert!(caps.contains(&needed.to_owned()), "{caps:?}");
    }
    // SIGTERM: flush, deliver for up to --shutdown-grace, detach; the kubelet waits for that.
    let grace = pod.termination_grace_period_seconds.unwrap();
    assert!(
        grace >= run.shutdown_grace as i64 + 5,
        "terminationGracePeriodSeconds {grace} vs --shutdown-grace {}",
        run.shutdown_grace
    );
}
