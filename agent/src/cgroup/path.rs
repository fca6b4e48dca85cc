//! Which pod (and container) a cgroup path belongs to.
//!
//! The kubelet names pod cgroups after the pod UID, and container runtimes name container cgroups
//! after the container id, in two dialects:
//! - cgroupfs driver: `/kubepods[/burstable|/besteffort]/pod<uid>/<container id>`;
//! - systemd driver: `/kubepods.slice[/kubepods-<qos>.slice]/kubepods[-<qos>]-pod<uid_>.slice/<runtime>-<id>.scope`,
//!   where systemd escapes the UID's `-` as `_`.
//!
//! Both may sit below a prefix (kind nodes, nested kubelets, a runtime's own service cgroup), so the
//! pod component is searched anywhere in the path rather than at a fixed depth. Anything that is not
//! recognised is a node process, never an error: the input comes from the kernel and is not ours.

/// The kubelet's QoS class of a pod, as encoded in its cgroup's parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// Pod identity recovered from a cgroup path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodCgroup {
    /// Pod UID in its API form (`-` separated, lower case).
    pub pod_uid: String,
    /// Container id without the runtime prefix; `None` for the pod-level cgroup (sandbox) and for
    /// runtime helpers such as CRI-O's conmon, which live in the pod but are not a container.
    pub container_id: Option<String>,
    pub qos: QosClass,
}

/// Parses a cgroup path (as seen from the cgroup2 root, e.g. `/kubepods.slice/...`).
/// Returns `None` for anything that is not inside a pod.
pub fn parse_pod_cgroup(path: &str) -> Option<PodCgroup> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for (i, component) in components.iter().enumerate() {
        // runc's cgroupfs manager given a systemd-style path creates one directory literally named
        // `<pod slice>:<prefix>:<id>` (kubelet and runtime disagreeing on the driver).
        if let Some((slice, rest)) = component.split_once(':') {
            if let Some((uid, qos)) = systemd_pod_slice(slice) {
                let id = rest.rsplit(':').next().and_then(container_part);
                return Some(pod(uid, qos, id.unwrap_or(ContainerPart::None)));
            }
        }
        let found =
            systemd_pod_slice(component).or_else(|| cgroupfs_pod_dir(component, &components[..i]));
        if let Some((uid, qos)) = found {
            let container = components
                .get(i + 1)
                .and_then(|c| container_part(c))
                .unwrap_or(ContainerPart::None);
            return Some(pod(uid, qos, container));
        }
    }
    None
}

enum ContainerPart {
    None,
    Container(String),
}

fn pod(uid: String, qos: QosClass, container: ContainerPart) -> PodCgroup {
    PodCgroup {
        pod_uid: uid,
        container_id: match container {
            ContainerPart::None => None,
            ContainerPart::Container(id) => Some(id),
        },
        qos,
    }
}

/// `kubepods-burstable-pod<uid_>.slice` (any prefix ending in `kubepods[-qos]`, e.g. kind's
/// `kubelet-kubepods-...`).
fn systemd_pod_slice(component: &str) -> Option<(String, QosClass)> {
    let stem = component.strip_suffix(".slice")?;
    let (parents, pod) = stem.rsplit_once('-')?;
    let uid = normalize_uid(pod.strip_prefix("pod")?)?;
    let mut segments = parents.rsplit('-');
    let qos = match segments.next()? {
        "kubepods" => QosClass::Guaranteed,
        "burstable" if segments.next()? == "kubepods" => QosClass::Burstable,
        "besteffort" if segments.next()? == "kubepods" => QosClass::BestEffort,
        _ => return None,
    };
    Some((uid, qos))
}

/// `pod<uid>` directly below `kubepods`, `kubepods/burstable` or `kubepods/besteffort`.
fn cgroupfs_pod_dir(component: &str, parents: &[&str]) -> Option<(String, QosClass)> {
    let uid = component.strip_prefix("pod")?;
    let qos = match parents {
        [.., "kubepods"] => QosClass::Guaranteed,
        [.., "kubepods", "burstable"] => QosClass::Burstable,
        [.., "kubepods", "besteffort"] => QosClass::BestEffort,
        _ => return None,
    };
    Some((normalize_uid(uid)?, qos))
}

/// Pod UIDs are UUIDs (or, for static pods, a hex config hash); systemd escapes `-` as `_`.
fn normalize_uid(raw: &str) -> Option<String> {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
    ok.then(|| raw.replace('_', "-").to_ascii_lowercase())
}

/// The component below a pod cgroup: a container (`cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `docker-<id>.scope`, or a bare id with cgroupfs), a runtime helper (`crio-conmon-<id>.scope`),
/// or something else.
fn container_part(component: &str) -> Option<ContainerPart> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    if name.starts_with("crio-conmon-") {
        return Some(ContainerPart::None);
    }
    let id = [
        "cri-containerd-",
        "crio-",
        "docker-",
        "libpod-",
        "containerd-",
    ]
    .iter()
    .find_map(|prefix| name.strip_prefix(prefix))
    .unwrap_or(name);
    let ok = !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then(|| ContainerPart::Container(id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0d1f4a8c-7a36-4b5e-9a3e-2f6c1b9d8e7a";
    const UID_: &str = "0d1f4a8c_7a36_4b5e_9a3e_2f6c1b9d8e7a";
    const CID: &str = "3b2c0a6f5e1d4c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b";

    fn parsed(path: &str) -> (String, Option<String>, QosClass) {
        let p = parse_pod_cgroup(path).unwrap_or_else(|| panic!("not parsed: {path}"));
        (p.pod_uid, p.container_id, p.qos)
    }

    fn expect(path: &str, container: Option<&str>, qos: QosClass) {
        assert_eq!(
            parsed(path),
            (UID.to_owned(), container.map(str::to_owned), qos),
            "{path}"
        );
    }

    #[test]
    fn cgroupfs_driver_all_qos_classes() {
        expect(
            &format!("/kubepods/pod{UID}/{CID}"),
            Some(CID),
            QosClass::Guaranteed,
        );
        expect(
            &format!("/kubepods/burstable/pod{UID}/{CID}"),
            Some(CID),
            QosClass::Burstable,
        );
        expect(
            &format!("/kubepods/besteffort/pod{UID}/{CID}"),
            Some(CID),
            QosClass::BestEffort,
        );
    }

    #[test]
    fn cgroupfs_pod_level_is_the_sandbox() {
        expect(
            &format!("/kubepods/besteffort/pod{UID}"),
            None,
            QosClass::BestEffort,
        );
        expect(&format!("/kubepods/pod{UID}/"), None, QosClass::Guaranteed);
    }

    #[test]
    fn cgroupfs_crio_prefix() {
        expect(
            &format!("/kubepods/burstable/pod{UID}/crio-{CID}"),
            Some(CID),
            QosClass::Burstable,
        );
    }

    #[test]
    fn systemd_driver_runtimes() {
        for prefix in ["cri-containerd", "crio", "docker"] {
            expect(
                &format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/{prefix}-{CID}.scope"
                ),
                Some(CID),
                QosClass::Burstable,
            );
        }
        expect(
            &format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope"
            ),
            Some(CID),
            QosClass::BestEffort,
        );
    }

    #[test]
    fn systemd_guaranteed_pod_directly_under_kubepods() {
        expect(
            &format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope"),
            Some(CID),
            QosClass::Guaranteed,
        );
        expect(
            &format!("/kubepods.slice/kubepods-pod{UID_}.slice"),
            None,
            QosClass::Guaranteed,
        );
    }

    #[test]
    fn crio_conmon_is_the_pod_but_not_a_container() {
        expect(
            &format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{CID}.scope"
            ),
            None,
            QosClass::Burstable,
        );
    }

    #[test]
    fn kind_nested_kubelet_slice() {
        expect(
            &format!(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope"
            ),
            Some(CID),
            QosClass::BestEffort,
        );
        expect(
            &format!(
                "/system.slice/docker-aaaa.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope"
            ),
            Some(CID),
            QosClass::Guaranteed,
        );
        // kind with the cgroupfs driver, below the node container's own cgroup.
        expect(
            &format!("/docker/abcdef/kubelet/kubepods/burstable/pod{UID}/{CID}"),
            Some(CID),
            QosClass::Burstable,
        );
    }

    #[test]
    fn runtime_service_shapes_without_cgroupns() {
        // systemd-named pod slice nested under the runtime's service cgroup.
        expect(
            &format!(
                "/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice:cri-containerd:{CID}"
            ),
            Some(CID),
            QosClass::Burstable,
        );
        expect(
            &format!("/system.slice/containerd.service/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope"),
            Some(CID),
            QosClass::BestEffort,
        );
    }

    #[test]
    fn processes_nested_inside_a_container_belong_to_it() {
        expect(
            &format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope/init.scope"
            ),
            Some(CID),
            QosClass::Burstable,
        );
    }

    #[test]
    fn uid_is_normalized_to_lower_case_dashes() {
        let upper = UID_.to_ascii_uppercase();
        expect(
            &format!("/kubepods.slice/kubepods-pod{upper}.slice"),
            None,
            QosClass::Guaranteed,
        );
        // Static pods have a config hash as UID.
        let p =
            parse_pod_cgroup("/kubepods/burstable/pod6d1ab2e1f0a9b8c7d6e5f4a3b2c1d0e9").unwrap();
        assert_eq!(p.pod_uid, "6d1ab2e1f0a9b8c7d6e5f4a3b2c1d0e9");
    }

    #[test]
    fn host_processes_are_not_pods() {
        for path in [
            "/",
            "",
            "/system.slice/kubelet.service",
            "/system.slice/containerd.service",
            "/user.slice/user-0.slice/session-1.scope",
            "/init.scope",
            "/kubepods",
            "/kubepods.slice",
            "/kubepods.slice/kubepods-burstable.slice",
            "/kubepods/burstable",
            "/kubepods/guaranteed/pod1234", // not a QoS directory the kubelet makes
            "/podman/pod1234/x",            // `pod` directory not under kubepods
            "/machine.slice/libpod-pod-1234.slice",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podZZZ.slice",
            "/kubepods.slice/kubepods-pod.slice",
            "/kubepods/pod/abc",
            "/kubepods/burstable/pod_../x",
            "/kubepods.slice/other-pod1234.slice",
            "/kubepods.slice/kubepods-foo-pod1234.slice",
        ] {
            assert_eq!(parse_pod_cgroup(path), None, "{path}");
        }
    }

    #[test]
    fn unknown_container_components_give_the_pod_only() {
        expect(
            &format!("/kubepods.slice/kubepods-pod{UID_}.slice/weird name.scope"),
            None,
            QosClass::Guaranteed,
        );
        expect(
            &format!("/kubepods/pod{UID}/crio-"),
            None,
            QosClass::Guaranteed,
        );
    }

    #[test]
    fn never_panics_on_odd_input() {
        for path in [
            "////",
            "pod",
            "-.slice",
            ".slice",
            "-pod.slice",
            ":",
            "a:b:c",
            "kubepods-pod:x",
            "/kubepods-pod\u{e9}.slice",
            "/kubepods/burstable/pod\u{0}",
        ] {
            let _ = parse_pod_cgroup(path);
        }
    }
}
