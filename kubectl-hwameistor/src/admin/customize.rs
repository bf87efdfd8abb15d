//! Install-time changes to the manifests: the system namespace, image registry and tag for
//! air-gapped clusters, and where the node DaemonSet may run.

use super::manifests::{known_namespaced, Bundle};
use crate::errors::AdminError;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A toleration for the node DaemonSet, from `key[=value]:Effect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TolerationArg {
    pub key: String,
    pub value: Option<String>,
    pub effect: String,
}

impl TolerationArg {
    fn to_json(&self) -> Value {
        match &self.value {
            Some(v) => {
                json!({"key": self.key, "operator": "Equal", "value": v, "effect": self.effect})
            }
            None => json!({"key": self.key, "operator": "Exists", "effect": self.effect}),
        }
    }
}

/// What `install`/`upgrade` flags change in the manifests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Customization {
    /// The system namespace to install into.
    pub namespace: String,
    /// Registry (and optional path) replacing the registry of every image.
    pub registry: Option<String>,
    /// Tag for HwameiStor's own images (see [`rewrite_image`]).
    pub image_tag: Option<String>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<TolerationArg>,
    /// Leave out the hwameistor-scheduler and its extender (everything labelled
    /// [`COMPONENT_LABEL`]=[`SCHEDULER_COMPONENT`]).
    pub no_scheduler: bool,
}

/// The label that groups objects by the part of the system they make up.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// The value of [`COMPONENT_LABEL`] on the scheduler's objects.
pub const SCHEDULER_COMPONENT: &str = "scheduler";

/// Parses `k=v,k2=v2`.
pub fn parse_node_selector(s: &str) -> Result<BTreeMap<String, String>, AdminError> {
    let mut out = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => {
                return Err(AdminError::InvalidArgument(format!(
                    "node selector {pair:?} is not key=value (example: --node-selector storage=true,zone=a)"
                )))
            }
        }
    }
    Ok(out)
}

/// Parses `key[=value]:Effect` (Effect is NoSchedule, PreferNoSchedule or NoExecute).
pub fn parse_toleration(s: &str) -> Result<TolerationArg, AdminError> {
    let bad = |why: &str| {
        AdminError::InvalidArgument(format!(
            "toleration {s:?} {why} (expected key[=value]:Effect, e.g. node-role.kubernetes.io/control-plane:NoSchedule)"
        ))
    };
    let (kv, effect) = s.rsplit_once(':').ok_or_else(|| bad("has no :Effect"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(bad(
            "has an effect that is not NoSchedule, PreferNoSchedule or NoExecute",
        ));
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (kv, None),
    };
    if key.is_empty() {
        return Err(bad("has no key"));
    }
    Ok(TolerationArg {
        key: key.to_string(),
        value,
        effect: effect.to_string(),
    })
}

/// Splits an image reference into (registry host if any, repository path, tag, digest).
fn split_image(image: &str) -> (Option<&str>, &str, Option<&str>, Option<&str>) {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    // The first component is a registry only if it looks like a host (docker's rule).
    let (registry, path) = match rest.split_once('/') {
        Some((first, tail))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (Some(first), tail)
        }
        _ => (None, rest),
    };
    // A tag is a ':' after the last '/', so a registry port is never mistaken for one.
    let last_slash = path.rfind('/').map(|i| i + 1).unwrap_or(0);
    match path[last_slash..].find(':') {
        Some(i) => (
            registry,
            &path[..last_slash + i],
            Some(&path[last_slash + i + 1..]),
            digest,
        ),
        None => (registry, path, None, digest),
    }
}

/// Rewrites one image reference. The registry replaces the original registry of every
/// image (mirrors keep the repository path). The tag is only changed on HwameiStor's own
/// images, those with "hwameistor" in the repository path: CSI sidecars have versions of
/// their own, and forcing ours on them would name images that do not exist. A new tag
/// drops any digest, which would otherwise pin the old image.
pub fn rewrite_image(image: &str, registry: Option<&str>, tag: Option<&str>) -> String {
    let (old_registry, path, old_tag, digest) = split_image(image);
    let registry = registry.map(|r| r.trim_end_matches('/')).or(old_registry);
    let ours = path.contains("hwameistor");
    let (tag, digest) = match tag {
        Some(t) if ours => (Some(t), None),
        _ => (old_tag, digest),
    };
    let mut out = String::new();
    if let Some(r) = registry {
        out.push_str(r);
        out.push('/');
    }
    out.push_str(path);
    if let Some(t) = tag {
        out.push(':');
        out.push_str(t);
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    out
}

/// The pod spec of a workload object, if it has one.
fn pod_spec_mut(obj: &mut Value) -> Option<&mut Value> {
    obj.pointer_mut("/spec/template/spec")
}

/// The namespace the manifests were written for: that of their Namespace object.
pub fn manifest_namespace(bundle: &Bundle) -> String {
    bundle
        .of_kind("Namespace")
        .next()
        .map(|o| o.name().to_string())
        .unwrap_or_else(|| hwameistor_api::SYSTEM_NAMESPACE.to_string())
}

fn retarget(v: Option<&mut Value>, from: &str, to: &str) {
    if let Some(v) = v {
        if v.as_str() == Some(from) {
            *v = Value::String(to.to_string());
        }
    }
}

/// Applies every customization to the bundle in place.
pub fn customize(bundle: &mut Bundle, c: &Customization) {
    let from = manifest_namespace(bundle);
    let to = if c.namespace.is_empty() {
        from.clone()
    } else {
        c.namespace.clone()
    };
    if c.no_scheduler {
        bundle.objects.retain(|o| {
            o.value
                .pointer("/metadata/labels")
                .and_then(|l| l.get(COMPONENT_LABEL))
                .and_then(Value::as_str)
                != Some(SCHEDULER_COMPONENT)
        });
    }
    for o in &mut bundle.objects {
        let kind = o.kind().to_string();
        let v = &mut o.value;
        if kind == "Namespace" {
            retarget(v.pointer_mut("/metadata/name"), &from, &to);
        }
        match known_namespaced(&kind) {
            // Namespaced objects always name their namespace, so printed manifests apply
            // to the right place whatever the current kubectl context says.
            Some(true) => match v.pointer_mut("/metadata") {
                Some(Value::Object(meta)) => {
                    let ns = meta
                        .entry("namespace")
                        .or_insert_with(|| Value::String(to.clone()));
                    retarget(Some(ns), &from, &to);
                }
                _ => retarget(v.pointer_mut("/metadata/namespace"), &from, &to),
            },
            _ => retarget(v.pointer_mut("/metadata/namespace"), &from, &to),
        }
        if let Some(Value::Array(subjects)) = v.get_mut("subjects") {
            for s in subjects {
                retarget(s.get_mut("namespace"), &from, &to);
            }
        }
        if let Some(Value::Array(hooks)) = v.get_mut("webhooks") {
            for h in hooks {
                retarget(h.pointer_mut("/clientConfig/service/namespace"), &from, &to);
                // A webhook never sent its own namespace's objects keeps not being sent them.
                if let Some(Value::Array(exprs)) =
                    h.pointer_mut("/namespaceSelector/matchExpressions")
                {
                    for e in exprs {
                        if let Some(Value::Array(values)) = e.get_mut("values") {
                            for val in values {
                                retarget(Some(val), &from, &to);
                            }
                        }
                    }
                }
            }
        }
        retarget(
            v.pointer_mut("/spec/conversion/webhook/clientConfig/service/namespace"),
            &from,
            &to,
        );
        // Configuration files carried in ConfigMaps (the scheduler's) name Services by
        // their DNS name and the namespace of their leases.
        if kind == "ConfigMap" && from != to {
            if let Some(Value::Object(data)) = v.get_mut("data") {
                for text in data.values_mut() {
                    if let Value::String(t) = text {
                        *t = t
                            .replace(&format!(".{from}.svc"), &format!(".{to}.svc"))
                            .replace(
                                &format!("resourceNamespace: {from}\n"),
                                &format!("resourceNamespace: {to}\n"),
                            );
                    }
                }
            }
        }

        let Some(pod) = pod_spec_mut(v) else { continue };
        for list in ["containers", "initContainers"] {
            if let Some(Value::Array(containers)) = pod.get_mut(list) {
                for ctr in containers {
                    if let Some(Value::String(image)) = ctr.get_mut("image") {
                        *image =
                            rewrite_image(image, c.registry.as_deref(), c.image_tag.as_deref());
                    }
                }
            }
        }
        // Placement flags are for the node agent, which is the (only) DaemonSet: the
        // controller may run anywhere.
        if kind == "DaemonSet" {
            if !c.node_selector.is_empty() {
                let sel = pod
                    .as_object_mut()
                    .map(|p| p.entry("nodeSelector").or_insert_with(|| json!({})));
                if let Some(Value::Object(sel)) = sel {
                    for (k, val) in &c.node_selector {
                        sel.insert(k.clone(), Value::String(val.clone()));
                    }
                }
            }
            if !c.tolerations.is_empty() {
                let tol = pod
                    .as_object_mut()
                    .map(|p| p.entry("tolerations").or_insert_with(|| json!([])));
                if let Some(Value::Array(tol)) = tol {
                    for t in &c.tolerations {
                        let t = t.to_json();
                        if !tol.contains(&t) {
                            tol.push(t);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_registry_everywhere_and_tag_only_on_our_images() {
        let r = |i: &str| rewrite_image(i, Some("harbor.local:5000/mirror/"), Some("v9"));
        assert_eq!(
            r("ghcr.io/hwameistor/agent:v1"),
            "harbor.local:5000/mirror/hwameistor/agent:v9"
        );
        assert_eq!(
            r("hwameistor/controller"),
            "harbor.local:5000/mirror/hwameistor/controller:v9"
        );
        assert_eq!(
            r("registry.k8s.io/sig-storage/csi-provisioner:v5.2.0"),
            "harbor.local:5000/mirror/sig-storage/csi-provisioner:v5.2.0"
        );
        assert_eq!(
            r("localhost:5000/hwameistor/agent@sha256:ab"),
            "harbor.local:5000/mirror/hwameistor/agent:v9"
        );
        assert_eq!(
            rewrite_image("busybox:1.36", None, Some("v9")),
            "busybox:1.36"
        );
        assert_eq!(
            rewrite_image("my.reg:443/x/hwameistor-csi:v1", None, Some("v2")),
            "my.reg:443/x/hwameistor-csi:v2"
        );
    }

    #[test]
    fn parses_selectors_and_tolerations() {
        let s = parse_node_selector("storage=true, zone=a").unwrap();
        assert_eq!(s.get("zone").map(String::as_str), Some("a"));
        assert!(parse_node_selector("storage")
            .unwrap_err()
            .to_string()
            .contains("key=value"));
        assert_eq!(
            parse_toleration("node-role.kubernetes.io/control-plane:NoSchedule").unwrap(),
            TolerationArg {
                key: "node-role.kubernetes.io/control-plane".into(),
                value: None,
                effect: "NoSchedule".into()
            }
        );
        assert_eq!(
            parse_toleration("dedicated=storage:NoExecute")
                .unwrap()
                .value
                .as_deref(),
            Some("storage")
        );
        assert!(parse_toleration("dedicated=storage").is_err());
        assert!(parse_toleration("dedicated:Sometimes").is_err());
    }

    #[test]
    fn customizes_namespace_images_and_node_placement() {
        let yaml = "
apiVersion: v1
kind: Namespace
metadata: {name: hwameistor}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: hwameistor-node, namespace: hwameistor}
spec:
  template:
    spec:
      containers: [{name: agent, image: ghcr.io/hwameistor/agent:v1}]
      initContainers: [{name: init, image: busybox:1}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: hwameistor-controller}
spec: {template: {spec: {containers: [{name: c, image: ghcr.io/hwameistor/controller:v1}]}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: hwameistor}
subjects: [{kind: ServiceAccount, name: hwameistor, namespace: hwameistor}]
";
        let mut b = Bundle::parse([("t.yaml", yaml)]).unwrap();
        let c = Customization {
            namespace: "storage-system".into(),
            registry: Some("mirror.local".into()),
            image_tag: Some("v2".into()),
            node_selector: parse_node_selector("storage=true").unwrap(),
            tolerations: vec![parse_toleration("dedicated:NoSchedule").unwrap()],
            no_scheduler: false,
        };
        customize(&mut b, &c);
        let v = |i: usize, p: &str| {
            b.objects[i]
                .value
                .pointer(p)
                .cloned()
                .unwrap_or(Value::Null)
        };
        assert_eq!(v(0, "/metadata/name"), "storage-system");
        assert_eq!(v(1, "/metadata/namespace"), "storage-system");
        assert_eq!(
            v(1, "/spec/template/spec/containers/0/image"),
            "mirror.local/hwameistor/agent:v2"
        );
        assert_eq!(
            v(1, "/spec/template/spec/initContainers/0/image"),
            "mirror.local/busybox:1"
        );
        assert_eq!(
            v(1, "/spec/template/spec/nodeSelector"),
            json!({"storage": "true"})
        );
        assert_eq!(
            v(1, "/spec/template/spec/tolerations"),
            json!([{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}])
        );
        // The Deployment had no namespace: it gets the target one; no node placement.
        assert_eq!(v(2, "/metadata/namespace"), "storage-system");
        assert_eq!(v(2, "/spec/template/spec/nodeSelector"), Value::Null);
        assert_eq!(v(3, "/subjects/0/namespace"), "storage-system");
        // Applying twice does not duplicate tolerations.
        customize(&mut b, &c);
        let tolerations = b.objects[1]
            .value
            .pointer("/spec/template/spec/tolerations");
        assert_eq!(tolerations.and_then(Value::as_array).map(Vec::len), Some(1));
    }

    #[test]
    fn the_scheduler_follows_the_namespace_or_is_left_out() {
        let mut b = Bundle::embedded().expect("embedded manifests");
        let scheduler_objects = |b: &Bundle| {
            b.objects
                .iter()
                .filter(|o| {
                    o.value
                        .pointer("/metadata/labels/app.kubernetes.io~1component")
                        == Some(&json!("scheduler"))
                })
                .count()
        };
        assert!(
            scheduler_objects(&b) >= 10,
            "the scheduler is in the manifests"
        );
        let c = Customization {
            namespace: "storage-system".into(),
            ..Default::default()
        };
        customize(&mut b, &c);
        let config = b
            .of_kind("ConfigMap")
            .find(|o| o.name() == "hwameistor-scheduler-config")
            .and_then(|o| o.value.pointer("/data/config.yaml"))
            .and_then(Value::as_str)
            .expect("scheduler config")
            .to_string();
        assert!(
            config.contains("https://hwameistor-scheduler-extender.storage-system.svc:443"),
            "{config}"
        );
        assert!(
            config.contains("resourceNamespace: storage-system\n"),
            "{config}"
        );
        let skipped = b
            .of_kind("MutatingWebhookConfiguration")
            .next()
            .and_then(|o| {
                o.value
                    .pointer("/webhooks/0/namespaceSelector/matchExpressions/0/values")
                    .cloned()
            })
            .expect("the pod webhook's namespace selector");
        assert_eq!(skipped, json!(["kube-system", "storage-system"]));
        // The kube-system RoleBinding stays there.
        assert!(b
            .of_kind("RoleBinding")
            .any(|o| o.value.pointer("/metadata/namespace") == Some(&json!("kube-system"))));
        let mut without = Bundle::embedded().expect("embedded manifests");
        customize(
            &mut without,
            &Customization {
                no_scheduler: true,
                ..Default::default()
            },
        );
        assert_eq!(scheduler_objects(&without), 0);
        assert!(
            without.of_kind("DaemonSet").next().is_some(),
            "the rest stays"
        );
    }
}
