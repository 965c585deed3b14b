//! Standalone (host) mode: no cluster to ask, so no workload identities; the
//! host's own resource describes everything captured.
use crate::workload::Identity;
use std::path::Path;

pub const TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// Whether a cluster can be reached: an in-cluster service-account token (with
/// KUBERNETES_SERVICE_HOST) or a KUBECONFIG.
pub fn cluster_credentials(vars: impl Fn(&str) -> Option<String>, token_path: &Path) -> bool {
    let nonempty = |k: &str| vars(k).is_some_and(|v| !v.trim().is_empty());
    (nonempty("KUBERNETES_SERVICE_HOST") && token_path.exists()) || nonempty("KUBECONFIG")
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Resource of the host itself.
pub fn host_resource() -> Identity {
    Identity { attributes: vec![("host.name".into(), hostname()), ("os.type".into(), "linux".into())] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_detection() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        let none = |_: &str| None;
        assert!(!cluster_credentials(none, &token));
        let svc = |k: &str| (k == "KUBERNETES_SERVICE_HOST").then(|| "10.96.0.1".to_string());
        assert!(!cluster_credentials(svc, &token), "no token file");
        std::fs::write(&token, "x").unwrap();
        assert!(cluster_credentials(svc, &token));
        let kc = |k: &str| (k == "KUBECONFIG").then(|| "/root/.kube/config".to_string());
        assert!(cluster_credentials(kc, Path::new("/nonexistent")));
        assert!(!host_resource().get("host.name").unwrap_or_default().is_empty());
    }
}
