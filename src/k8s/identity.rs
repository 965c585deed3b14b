//! Resource attributes of a pod, a node or a Service, following the OpenTelemetry
//! semantic conventions for Kubernetes (`k8s.*`) and the service-name rules of
//! the OpenTelemetry Kubernetes guidance.
use crate::workload::Identity;
use k8s_openapi::api::core::v1::{Node, Pod};
use std::collections::BTreeMap;

/// A workload that (transitively) owns a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnerKind {
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    CronJob,
    Job,
}

impl OwnerKind {
    pub fn from_kind(kind: &str) -> Option<Self> {
        Some(match kind {
            "Deployment" => Self::Deployment,
            "ReplicaSet" => Self::ReplicaSet,
            "StatefulSet" => Self::StatefulSet,
            "DaemonSet" => Self::DaemonSet,
            "CronJob" => Self::CronJob,
            "Job" => Self::Job,
            _ => return None,
        })
    }

    /// The `k8s.<kind>.name` resource attribute.
    pub fn attribute(self) -> &'static str {
        match self {
            Self::Deployment => "k8s.deployment.name",
            Self::ReplicaSet => "k8s.replicaset.name",
            Self::StatefulSet => "k8s.statefulset.name",
            Self::DaemonSet => "k8s.daemonset.name",
            Self::CronJob => "k8s.cronjob.name",
            Self::Job => "k8s.job.name",
        }
    }
}

/// Owner chain of a pod, e.g. [(ReplicaSet, "web-5d9c"), (Deployment, "web")].
pub type Owners = Vec<(OwnerKind, String)>;

pub const ANN_SERVICE_NAME: &str = "resource.opentelemetry.io/service.name";
pub const ANN_SERVICE_NAMESPACE: &str = "resource.opentelemetry.io/service.namespace";
pub const ANN_SERVICE_VERSION: &str = "resource.opentelemetry.io/service.version";
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
pub const LABEL_VERSION: &str = "app.kubernetes.io/version";

fn nonempty(m: Option<&BTreeMap<String, String>>, key: &str) -> Option<String> {
    m.and_then(|m| m.get(key)).map(|s| s.trim()).filter(|s| !s.is_empty()).map(String::from)
}

/// Resource attributes of `pod` whose owners resolved to `owners`.
///
/// service.name: annotation `resource.opentelemetry.io/service.name` → label
/// `app.kubernetes.io/name` → label `app` → owner (deployment > replicaset >
/// statefulset > daemonset > cronjob > job) → pod name.
/// service.namespace: annotation `resource.opentelemetry.io/service.namespace` →
/// label `app.kubernetes.io/part-of` → the Kubernetes namespace.
/// service.version: annotation `resource.opentelemetry.io/service.version` →
/// label `app.kubernetes.io/version` (absent otherwise).
pub fn pod_identity(pod: &Pod, owners: &[(OwnerKind, String)], node_fallback: Option<&str>) -> Identity {
    let md = &pod.metadata;
    let ns = md.namespace.clone().unwrap_or_else(|| "default".into());
    let name = md.name.clone().unwrap_or_default();
    let labels = md.labels.as_ref();
    let ann = md.annotations.as_ref();
    let mut a: Vec<(String, String)> = Vec::with_capacity(12);
    a.push(("k8s.namespace.name".into(), ns.clone()));
    a.push(("k8s.pod.name".into(), name.clone()));
    if let Some(uid) = md.uid.as_deref() {
        a.push(("k8s.pod.uid".into(), uid.into()));
    }
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).or(node_fallback);
    if let Some(node) = node {
        a.push(("k8s.node.name".into(), node.into()));
    }
    let container = match pod.spec.as_ref().map(|s| s.containers.as_slice()) {
        Some([one]) => Some(one.name.clone()),
        _ => None,
    };
    if let Some(c) = &container {
        a.push(("k8s.container.name".into(), c.clone()));
    }
    let mut sorted: Vec<&(OwnerKind, String)> = owners.iter().collect();
    sorted.sort_by_key(|(k, _)| *k);
    sorted.dedup_by_key(|(k, _)| *k);
    for (kind, owner) in &sorted {
        a.push((kind.attribute().into(), owner.clone()));
    }
    let service = nonempty(ann, ANN_SERVICE_NAME)
        .or_else(|| nonempty(labels, LABEL_NAME))
        .or_else(|| nonempty(labels, "app"))
        .or_else(|| sorted.first().map(|(_, n)| n.clone()))
        .unwrap_or_else(|| name.clone());
    a.push(("service.name".into(), service));
    let service_ns =
        nonempty(ann, ANN_SERVICE_NAMESPACE).or_else(|| nonempty(labels, LABEL_PART_OF)).unwrap_or_else(|| ns.clone());
    a.push(("service.namespace".into(), service_ns));
    if let Some(v) = nonempty(ann, ANN_SERVICE_VERSION).or_else(|| nonempty(labels, LABEL_VERSION)) {
        a.push(("service.version".into(), v));
    }
    let mut instance = format!("{ns}.{name}");
    if let Some(c) = &container {
        instance.push('.');
        instance.push_str(c);
    }
    a.push(("service.instance.id".into(), instance));
    Identity { attributes: a }
}

/// `(container id, container name)` of every container of a pod that has
/// started (regular, init and ephemeral), from the pod status; the id
/// without its `<runtime>://` prefix, as it appears in cgroup paths.
pub fn container_ids(pod: &Pod) -> Vec<(String, String)> {
    let Some(st) = pod.status.as_ref() else { return vec![] };
    let all = [&st.container_statuses, &st.init_container_statuses, &st.ephemeral_container_statuses];
    all.into_iter()
        .flatten()
        .flatten()
        .filter_map(|c| {
            let id = c.container_id.as_deref()?;
            let id = id.split_once("://").map(|(_, id)| id).unwrap_or(id);
            (!id.is_empty()).then(|| (id.to_string(), c.name.clone()))
        })
        .collect()
}

/// A pod's resource narrowed to one of its containers: `k8s.container.name`
/// set and `service.instance.id` = `<namespace>.<pod>.<container>`, as
/// [`pod_identity`] does for single-container pods.
pub fn container_identity(pod: &Identity, container: &str) -> Identity {
    let mut a = pod.attributes.clone();
    match a.iter_mut().find(|(k, _)| k == "k8s.container.name") {
        Some((_, v)) => *v = container.to_string(),
        None => {
            // Where pod_identity puts it: after the node (or the pod uid/name).
            let at = a
                .iter()
                .rposition(|(k, _)| matches!(k.as_str(), "k8s.node.name" | "k8s.pod.uid" | "k8s.pod.name"))
                .map(|i| i + 1)
                .unwrap_or(a.len());
            a.insert(at, ("k8s.container.name".into(), container.to_string()));
        }
    }
    if let (Some(ns), Some(name)) = (pod.get("k8s.namespace.name"), pod.get("k8s.pod.name")) {
        let inst = format!("{ns}.{name}.{container}");
        match a.iter_mut().find(|(k, _)| k == "service.instance.id") {
            Some((_, v)) => *v = inst,
            None => a.push(("service.instance.id".into(), inst)),
        }
    }
    Identity { attributes: a }
}

/// Identity of a node (and of host-network pods, which share its addresses).
pub fn node_identity(name: &str, uid: Option<&str>) -> Identity {
    let mut a = vec![("k8s.node.name".to_string(), name.to_string())];
    if let Some(uid) = uid {
        a.push(("k8s.node.uid".into(), uid.into()));
    }
    a.push(("host.name".into(), name.into()));
    Identity { attributes: a }
}

pub fn node_identity_of(node: &Node) -> Identity {
    node_identity(node.metadata.name.as_deref().unwrap_or_default(), node.metadata.uid.as_deref())
}

/// Identity of a Service's virtual IP: only the peer side of an exchange uses it.
pub fn service_identity(namespace: &str, name: &str) -> Identity {
    Identity {
        attributes: vec![
            ("k8s.namespace.name".into(), namespace.into()),
            ("k8s.service.name".into(), name.into()),
            ("service.name".into(), name.into()),
            ("service.namespace".into(), namespace.into()),
        ],
    }
}

/// Fallback owner names when the API cannot be asked: a ReplicaSet made by a
/// Deployment is named `<deployment>-<pod-template-hash>`, and the pod carries
/// that hash as a label.
pub fn deployment_from_replicaset_name(rs: &str, pod: &Pod) -> Option<String> {
    let hash = nonempty(pod.metadata.labels.as_ref(), "pod-template-hash")?;
    rs.strip_suffix(&hash)?.strip_suffix('-').filter(|s| !s.is_empty()).map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use kube::api::ObjectMeta;

    fn pod(labels: &[(&str, &str)], ann: &[(&str, &str)], containers: &[&str]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-5d9c-abcde".into()),
                namespace: Some("shop".into()),
                uid: Some("u1".into()),
                labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                annotations: Some(ann.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: containers
                    .iter()
                    .map(|c| Container { name: c.to_string(), ..Default::default() })
                    .collect(),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn service_name_order() {
        let owners = vec![(OwnerKind::ReplicaSet, "web-5d9c".into()), (OwnerKind::Deployment, "web".into())];
        let p = pod(&[("app", "a"), (LABEL_NAME, "n")], &[(ANN_SERVICE_NAME, "ann")], &["c"]);
        assert_eq!(pod_identity(&p, &owners, None).get("service.name"), Some("ann"));
        let p = pod(&[("app", "a"), (LABEL_NAME, "n")], &[], &["c"]);
        assert_eq!(pod_identity(&p, &owners, None).get("service.name"), Some("n"));
        let p = pod(&[("app", "a")], &[], &["c"]);
        assert_eq!(pod_identity(&p, &owners, None).get("service.name"), Some("a"));
        let p = pod(&[], &[], &["c"]);
        let id = pod_identity(&p, &owners, None);
        assert_eq!(id.get("service.name"), Some("web"));
        assert_eq!(id.get("k8s.deployment.name"), Some("web"));
        assert_eq!(id.get("k8s.replicaset.name"), Some("web-5d9c"));
        assert_eq!(id.get("k8s.container.name"), Some("c"));
        assert_eq!(id.get("service.namespace"), Some("shop"));
        assert_eq!(id.get("service.instance.id"), Some("shop.web-5d9c-abcde.c"));
        assert_eq!(id.get("service.version"), None);
        let id = pod_identity(&p, &[], None);
        assert_eq!(id.get("service.name"), Some("web-5d9c-abcde"));
    }

    #[test]
    fn namespace_version_and_containers() {
        let p = pod(&[(LABEL_PART_OF, "store"), (LABEL_VERSION, "1.2")], &[], &["a", "b"]);
        let id = pod_identity(&p, &[], None);
        assert_eq!(id.get("service.namespace"), Some("store"));
        assert_eq!(id.get("service.version"), Some("1.2"));
        assert_eq!(id.get("k8s.container.name"), None);
        assert_eq!(id.get("k8s.node.name"), Some("n1"));
        let p = pod(&[(LABEL_PART_OF, "store")], &[(ANN_SERVICE_NAMESPACE, "x"), (ANN_SERVICE_VERSION, "2")], &[]);
        let id = pod_identity(&p, &[], None);
        assert_eq!(id.get("service.namespace"), Some("x"));
        assert_eq!(id.get("service.version"), Some("2"));
    }

    #[test]
    fn owner_order_for_service_name() {
        let p = pod(&[], &[], &["c"]);
        let owners = vec![(OwnerKind::Job, "backup-28000000".into()), (OwnerKind::CronJob, "backup".into())];
        assert_eq!(pod_identity(&p, &owners, None).get("service.name"), Some("backup"));
        let owners = vec![(OwnerKind::StatefulSet, "db".into())];
        assert_eq!(pod_identity(&p, &owners, None).get("service.name"), Some("db"));
    }

    #[test]
    fn containers_from_status_and_narrowed_identity() {
        use k8s_openapi::api::core::v1::{ContainerStatus, PodStatus};
        let mut p = pod(&[], &[], &["app", "sidecar"]);
        let cs = |name: &str, id: Option<&str>| ContainerStatus {
            name: name.into(),
            container_id: id.map(String::from),
            ..Default::default()
        };
        p.status = Some(PodStatus {
            container_statuses: Some(vec![cs("app", Some("containerd://abc")), cs("sidecar", None)]),
            init_container_statuses: Some(vec![cs("init", Some("cri-o://def"))]),
            ..Default::default()
        });
        assert_eq!(
            container_ids(&p),
            vec![("abc".to_string(), "app".to_string()), ("def".to_string(), "init".to_string())]
        );
        let id = pod_identity(&p, &[], None);
        assert_eq!(id.get("k8s.container.name"), None, "two containers: none on the pod");
        let c = container_identity(&id, "sidecar");
        assert_eq!(c.get("k8s.container.name"), Some("sidecar"));
        assert_eq!(c.get("service.instance.id"), Some("shop.web-5d9c-abcde.sidecar"));
        assert_eq!(c.get("k8s.pod.name"), id.get("k8s.pod.name"));
        assert_eq!(c.attributes.len(), id.attributes.len() + 1);
        // Single-container pods already name it: replaced, not duplicated.
        let one = pod_identity(&pod(&[], &[], &["c"]), &[], None);
        let c = container_identity(&one, "c");
        assert_eq!(c, one);
    }

    #[test]
    fn replicaset_name_fallback() {
        let p = pod(&[("pod-template-hash", "5d9c")], &[], &[]);
        assert_eq!(deployment_from_replicaset_name("web-5d9c", &p).as_deref(), Some("web"));
        assert_eq!(deployment_from_replicaset_name("other", &p), None);
        assert_eq!(deployment_from_replicaset_name("-5d9c", &p), None);
    }
}
