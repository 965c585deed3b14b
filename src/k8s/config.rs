//! Settings of the Kubernetes integration (`CNFLOW_NODE_NAME`, `CNFLOW_K8S_*`).
use crate::env_vars::{EnvVars, VarDoc};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

fn d_mode() -> String {
    "auto".into()
}
fn d_resync() -> u64 {
    300
}
fn d_true() -> bool {
    true
}
fn d_proc() -> String {
    "/proc".into()
}
fn d_netns_dirs() -> String {
    "/run/netns,/var/run/netns".into()
}
fn d_owner_cache() -> usize {
    4096
}

/// Settings of the Kubernetes enrichment and pod-interface attachment (`cnflow agent`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct K8sConfig {
    /// auto, on or off: whether the Kubernetes integration runs.
    #[serde(default = "d_mode")]
    pub k8s: String,
    /// This node's name (the chart sets it from the downward API).
    #[serde(default)]
    pub node_name: Option<String>,
    /// Comma-separated namespaces to enrich and attach.
    #[serde(default)]
    pub k8s_namespaces: Option<String>,
    /// Comma-separated namespaces whose pods are neither enriched nor attached.
    #[serde(default)]
    pub k8s_exclude_namespaces: Option<String>,
    /// Kubernetes label selector restricting the watched pods.
    #[serde(default)]
    pub k8s_label_selector: Option<String>,
    /// How often owner names are re-resolved and pod interfaces re-scanned (also the owner-cache lifetime).
    #[serde(default = "d_resync")]
    pub k8s_resync_secs: u64,
    /// Also watch Services so a ClusterIP peer is named after its Service.
    #[serde(default = "d_true")]
    pub k8s_services: bool,
    /// Watch every Node (names peer node addresses) instead of only this node.
    #[serde(default)]
    pub k8s_all_nodes: bool,
    /// Owner lookups (ReplicaSet, Job) kept in memory.
    #[serde(default = "d_owner_cache")]
    pub k8s_owner_cache_size: usize,
    /// Host /proc (needs hostPID) used to reach pod network namespaces through /proc/<pid>/ns/net,
    /// and by the TLS source (process maps, roots, cgroups) in `cnflow agent`.
    #[serde(default = "d_proc")]
    pub k8s_proc_root: String,
    /// Comma-separated directories of pinned network namespaces (containerd and CRI-O pin pod namespaces there).
    #[serde(default = "d_netns_dirs")]
    pub k8s_netns_dirs: String,
    /// KUBERNETES_SERVICE_HOST and KUBECONFIG as found: auto mode looks at them to
    /// tell whether cluster credentials exist. Not cnflow settings, so not in the reference.
    #[serde(skip)]
    pub credential_vars: Vec<(String, String)>,
}

impl EnvVars for K8sConfig {
    const PREFIX: &'static str = "CNFLOW_";
    const VARS: &'static [VarDoc] = &[
        VarDoc::new("CNFLOW_K8S", "auto (enrich when a service-account token or KUBECONFIG is present), on (fail without a cluster) or off (standalone host mode)."),
        VarDoc::new("CNFLOW_NODE_NAME", "this node's name (the chart sets it from the downward API); only pods on this node are watched and attached."),
        VarDoc::new("CNFLOW_K8S_NAMESPACES", "comma-separated namespaces to enrich and attach; empty = all."),
        VarDoc::new("CNFLOW_K8S_EXCLUDE_NAMESPACES", "comma-separated namespaces whose pods are neither enriched nor attached."),
        VarDoc::new("CNFLOW_K8S_LABEL_SELECTOR", "Kubernetes label selector restricting the watched pods (e.g. \"tier=web,env!=dev\")."),
        VarDoc::new("CNFLOW_K8S_RESYNC_SECS", "how often owner names are re-resolved and pod interfaces re-scanned (also the owner-cache lifetime)."),
        VarDoc::new("CNFLOW_K8S_SERVICES", "also watch Services so a ClusterIP peer is named after its Service."),
        VarDoc::new("CNFLOW_K8S_ALL_NODES", "watch every Node (names peer node addresses) instead of only this node; costs one Node object per cluster node per agent."),
        VarDoc::new("CNFLOW_K8S_OWNER_CACHE_SIZE", "owner lookups (ReplicaSet, Job) kept in memory."),
        VarDoc::new("CNFLOW_K8S_PROC_ROOT", "host /proc (needs hostPID) used to reach pod network namespaces through /proc/<pid>/ns/net, and (cnflow agent) the /proc under which the TLS source reads every process's maps, root, exe, cgroup and sockets; `cnflow run` reads /proc."),
        VarDoc::new("CNFLOW_K8S_NETNS_DIRS", "comma-separated directories of pinned network namespaces (containerd and CRI-O pin pod namespaces there)."),
    ];
}

impl Default for K8sConfig {
    fn default() -> Self {
        crate::env_vars::serde_defaults()
    }
}

/// What CNFLOW_K8S asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Auto,
    On,
    Off,
}

impl K8sConfig {
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let mut cfg: Self = envy::prefixed("CNFLOW_")
            .from_iter(vars.iter().filter(|(k, _)| k.starts_with("CNFLOW_")).cloned())
            .map_err(|e| anyhow::anyhow!("invalid Kubernetes configuration: {e}"))?;
        cfg.credential_vars =
            vars.into_iter().filter(|(k, _)| k == "KUBERNETES_SERVICE_HOST" || k == "KUBECONFIG").collect();
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        self.mode()?;
        if self.k8s_resync_secs == 0 {
            bail!("CNFLOW_K8S_RESYNC_SECS must be > 0");
        }
        if self.k8s_owner_cache_size == 0 {
            bail!("CNFLOW_K8S_OWNER_CACHE_SIZE must be > 0");
        }
        if let Some(n) = self.node_name.as_deref() {
            if n.trim().is_empty() || n.contains(char::is_whitespace) || n.contains(',') {
                bail!("CNFLOW_NODE_NAME: invalid node name {n:?}");
            }
        }
        if let Some(sel) = self.k8s_label_selector.as_deref() {
            if let Err(why) = check_label_selector(sel) {
                bail!("CNFLOW_K8S_LABEL_SELECTOR: invalid selector {sel:?}: {why}");
            }
        }
        for n in self.include_namespaces().iter().chain(self.exclude_namespaces().iter()) {
            if !n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
                bail!("CNFLOW_K8S_NAMESPACES / CNFLOW_K8S_EXCLUDE_NAMESPACES: invalid namespace {n:?}");
            }
        }
        Ok(())
    }

    pub fn mode(&self) -> Result<Mode> {
        match self.k8s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(Mode::Auto),
            "on" | "true" | "1" => Ok(Mode::On),
            "off" | "false" | "0" => Ok(Mode::Off),
            other => bail!("CNFLOW_K8S must be auto, on or off (got {other:?})"),
        }
    }

    pub fn include_namespaces(&self) -> Vec<String> {
        list(self.k8s_namespaces.as_deref())
    }

    pub fn exclude_namespaces(&self) -> Vec<String> {
        list(self.k8s_exclude_namespaces.as_deref())
    }

    pub fn netns_dirs(&self) -> Vec<String> {
        list(Some(&self.k8s_netns_dirs))
    }

    /// The node name, trimmed; None when unset or empty.
    pub fn node(&self) -> Option<&str> {
        self.node_name.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }

    /// Whether pods of namespace `ns` are enriched and attached.
    pub fn namespace_allowed(&self, ns: &str) -> bool {
        let inc = self.include_namespaces();
        (inc.is_empty() || inc.iter().any(|n| n == ns)) && !self.exclude_namespaces().iter().any(|n| n == ns)
    }
}

fn list(s: Option<&str>) -> Vec<String> {
    s.unwrap_or("").split(',').map(str::trim).filter(|x| !x.is_empty()).map(String::from).collect()
}

/// A Kubernetes label selector as the API server parses it
/// (k8s.io/apimachinery labels.Parse): comma-separated requirements `key`,
/// `!key`, `key=v`, `key==v`, `key!=v`, `key in (v1,v2)`, `key notin (v1,v2)`.
/// Checked at start-up so a typo fails there, naming the variable, instead of
/// as a 400 from every pod list.
fn check_label_selector(sel: &str) -> Result<(), String> {
    fn name_ok(n: &str) -> bool {
        let b = n.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    }
    fn key_ok(k: &str) -> bool {
        match k.split_once('/') {
            Some((prefix, name)) => {
                !prefix.is_empty()
                    && prefix.len() <= 253
                    && prefix.split('.').all(|l| {
                        let b = l.as_bytes();
                        !b.is_empty()
                            && b.len() <= 63
                            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                            && b[0] != b'-'
                            && b[b.len() - 1] != b'-'
                    })
                    && name_ok(name)
            }
            None => name_ok(k),
        }
    }
    let value_ok = |v: &str| v.is_empty() || name_ok(v);
    // Split on commas outside parentheses.
    let mut reqs = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in sel.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                reqs.push(&sel[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err("unbalanced parentheses".into());
        }
    }
    if depth != 0 {
        return Err("unbalanced parentheses".into());
    }
    reqs.push(&sel[start..]);
    if sel.trim().is_empty() {
        return Ok(());
    }
    for r in reqs {
        let r = r.trim();
        if let Some(k) = r.strip_prefix('!') {
            if !key_ok(k.trim()) {
                return Err(format!("bad key in {r:?}"));
            }
            continue;
        }
        let words: Vec<&str> = r.splitn(2, char::is_whitespace).collect();
        if words.len() == 2 {
            let rest = words[1].trim_start();
            let set = rest.strip_prefix("notin").or_else(|| rest.strip_prefix("in"));
            if let Some(set) = set {
                let set = set.trim();
                let inner = set.strip_prefix('(').and_then(|x| x.strip_suffix(')'));
                let Some(inner) = inner else { return Err(format!("expected (values) in {r:?}")) };
                if !key_ok(words[0]) || !inner.split(',').all(|v| value_ok(v.trim())) {
                    return Err(format!("bad key or value in {r:?}"));
                }
                continue;
            }
        }
        let (k, v) = if let Some((k, v)) = r.split_once("!=") {
            (k, Some(v))
        } else if let Some((k, v)) = r.split_once("==") {
            (k, Some(v))
        } else if let Some((k, v)) = r.split_once('=') {
            (k, Some(v))
        } else {
            (r, None)
        };
        if !key_ok(k.trim()) {
            return Err(format!("bad key in {r:?}"));
        }
        if let Some(v) = v {
            if !value_ok(v.trim()) {
                return Err(format!("bad value in {r:?}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_like_the_api_server() {
        for ok in [
            "",
            "app=web",
            "app==web,tier!=db",
            "app.kubernetes.io/name=cnflow",
            "env in (prod, staging),!canary",
            "tier notin (db),release",
            "app=",
        ] {
            assert!(check_label_selector(ok).is_ok(), "{ok:?}: {:?}", check_label_selector(ok));
        }
        for bad in
            ["app=we b", "=web", "app in prod", "app in (prod", "-app=x", "Bad_Prefix.io/x=y", "a/b/c=d", "app=web)"]
        {
            assert!(check_label_selector(bad).is_err(), "{bad:?}");
        }
    }
    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn defaults() {
        let c = K8sConfig::default();
        assert_eq!(c.mode().unwrap(), Mode::Auto);
        assert_eq!(c.k8s_resync_secs, 300);
        assert!(c.k8s_services);
        assert!(c.namespace_allowed("anything"));
        assert_eq!(c.node(), None);
    }

    #[test]
    fn namespaces_filter() {
        let c = K8sConfig::from_vars(vars(&[
            ("CNFLOW_NODE_NAME", "node-1"),
            ("CNFLOW_K8S_NAMESPACES", "shop, web"),
            ("CNFLOW_K8S_EXCLUDE_NAMESPACES", "web"),
        ]))
        .unwrap();
        assert_eq!(c.node(), Some("node-1"));
        assert!(c.namespace_allowed("shop"));
        assert!(!c.namespace_allowed("web"));
        assert!(!c.namespace_allowed("kube-system"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = K8sConfig::from_vars(vars(&[("CNFLOW_K8S", "maybe")])).unwrap_err().to_string();
        assert!(e.contains("CNFLOW_K8S"), "{e}");
        let e = K8sConfig::from_vars(vars(&[("CNFLOW_K8S_RESYNC_SECS", "0")])).unwrap_err().to_string();
        assert!(e.contains("CNFLOW_K8S_RESYNC_SECS"), "{e}");
        let e = K8sConfig::from_vars(vars(&[("CNFLOW_K8S_RESYNC_SECS", "x")])).unwrap_err().to_string();
        assert!(e.to_lowercase().contains("k8s_resync_secs"), "{e}");
        let e = K8sConfig::from_vars(vars(&[("CNFLOW_K8S_NAMESPACES", "Bad_NS")])).unwrap_err().to_string();
        assert!(e.contains("CNFLOW_K8S_NAMESPACES"), "{e}");
        let e = K8sConfig::from_vars(vars(&[("CNFLOW_NODE_NAME", "a b")])).unwrap_err().to_string();
        assert!(e.contains("CNFLOW_NODE_NAME"), "{e}");
    }
}
