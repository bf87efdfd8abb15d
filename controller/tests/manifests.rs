//! Every deployment manifest parses into the Kubernetes types, carries no field those types
//! do not know (a typo would be silently dropped by the API server), and says what the
//! driver needs.

use hwameistor_api::{PoolClass, CSI_DRIVER_NAME};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

const IMAGE: &str = "ghcr.io/hwameistor-rs/hwameistor:0.1.0";

#[derive(Default)]
struct Objects {
    files: Vec<String>,
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    csi_drivers: Vec<CSIDriver>,
    deployments: Vec<Deployment>,
    daemon_sets: Vec<DaemonSet>,
    storage_classes: Vec<StorageClass>,
    config_maps: Vec<ConfigMap>,
    services: Vec<Service>,
    mutating: Vec<MutatingWebhookConfiguration>,
    validating: Vec<ValidatingWebhookConfiguration>,
    /// VolumeSnapshotClasses (the cluster's CRD: no typed struct here).
    snapshot_classes: Vec<serde_json::Value>,
}

/// Every key of `original` must survive a round trip through the typed object.
fn assert_known_fields(original: &serde_json::Value, typed: &serde_json::Value, at: &str) {
    match (original, typed) {
        (serde_json::Value::Object(o), serde_json::Value::Object(t)) => {
            for (k, v) in o {
                let Some(tv) = t.get(k) else {
                    panic!("{at}.{k} is not a field of the Kubernetes type (typo?)")
                };
                assert_known_fields(v, tv, &format!("{at}.{k}"));
            }
        }
        (serde_json::Value::Array(o), serde_json::Value::Array(t)) => {
            assert_eq!(o.len(), t.len(), "{at}: list length changed");
            for (i, (a, b)) in o.iter().zip(t).enumerate() {
                assert_known_fields(a, b, &format!("{at}[{i}]"));
            }
        }
        _ => {}
    }
}

fn typed<T: DeserializeOwned + Serialize>(doc: &serde_json::Value, at: &str) -> T {
    let t: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{at}: {e}"));
    let back = serde_json::to_value(&t).unwrap_or_else(|e| panic!("{at}: {e}"));
    assert_known_fields(doc, &back, at);
    t
}

fn load() -> Objects {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/deploy");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("manifests/deploy")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut out = Objects::default();
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&file).expect("read manifest");
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let value = serde_yaml_ng::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{name} document {i}: {e}"));
            if value.is_null() {
                continue;
            }
            let json: serde_json::Value = serde_json::to_value(&value).expect("yaml to json");
            let kind = json
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default()
                .to_string();
            let at = format!("{name}#{i} {kind}");
            match kind.as_str() {
                "Namespace" => out.namespaces.push(typed(&json, &at)),
                "ServiceAccount" => out.service_accounts.push(typed(&json, &at)),
                "ClusterRole" => out.cluster_roles.push(typed(&json, &at)),
                "ClusterRoleBinding" => out.cluster_role_bindings.push(typed(&json, &at)),
                "Role" => out.roles.push(typed(&json, &at)),
                "RoleBinding" => out.role_bindings.push(typed(&json, &at)),
                "CSIDriver" => out.csi_drivers.push(typed(&json, &at)),
                "Deployment" => out.deployments.push(typed(&json, &at)),
                "DaemonSet" => out.daemon_sets.push(typed(&json, &at)),
                "StorageClass" => out.storage_classes.push(typed(&json, &at)),
                "ConfigMap" => out.config_maps.push(typed(&json, &at)),
                "Service" => out.services.push(typed(&json, &at)),
                "MutatingWebhookConfiguration" => out.mutating.push(typed(&json, &at)),
                "ValidatingWebhookConfiguration" => out.validating.push(typed(&json, &at)),
                "VolumeSnapshotClass" => out.snapshot_classes.push(json.clone()),
                other => panic!("{at}: unexpected kind {other:?}"),
            }
        }
        out.files.push(name);
    }
    out
}

/// The agent binary of this target directory (built by `cargo build --workspace`).
fn agent_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("HWAMEISTOR_AGENT_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let p = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("hwameistor-agent");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` first (or set HWAMEISTOR_AGENT_BIN)",
        p.display()
    );
    p
}

fn deployment<'a>(o: &'a Objects, name: &str) -> &'a Deployment {
    o.deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no Deployment {name}"))
}

/// A binary of this target directory (built by `cargo build --workspace`).
fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let p = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` first",
        p.display()
    );
    p
}

/// Roles every cluster has: bindings to them need no role in the manifests.
const BUILT_IN_ROLES: [&str; 3] = [
    "system:kube-scheduler",
    "system:volume-scheduler",
    "extension-apiserver-authentication-reader",
];

fn container<'a>(cs: &'a [Container], name: &str) -> &'a Container {
    cs.iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn args(c: &Container) -> Vec<String> {
    c.args.clone().unwrap_or_default()
}

fn grants(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        r.api_groups
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|g| g == group)
            && r.resources
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|x| x == resource)
            && r.verbs.iter().any(|v| v == verb)
    })
}

#[test]
fn files_are_numbered_in_apply_order() {
    let o = load();
    assert_eq!(
        o.files,
        [
            "00-namespace.yaml",
            "10-rbac.yaml",
            "20-csidriver.yaml",
            "30-controller.yaml",
            "40-node.yaml",
            "50-storageclasses.yaml",
            "60-scheduler.yaml",
            "70-snapshots.yaml"
        ]
    );
    assert_eq!(o.namespaces.len(), 1);
    assert_eq!(o.namespaces[0].metadata.name.as_deref(), Some("hwameistor"));
}

#[test]
fn csi_driver_object() {
    let o = load();
    assert_eq!(o.csi_drivers.len(), 2);
    // Raw-disk volumes: nothing to attach, capacity published per node.
    let disk = &o.csi_drivers[1];
    assert_eq!(
        disk.metadata.name.as_deref(),
        Some(hwameistor_csi::disk_controller::DISK_DRIVER_NAME)
    );
    assert_eq!(disk.spec.attach_required, Some(false));
    assert_eq!(disk.spec.storage_capacity, Some(true));
    let d = &o.csi_drivers[0];
    assert_eq!(d.metadata.name.as_deref(), Some(CSI_DRIVER_NAME));
    assert_eq!(d.spec.attach_required, Some(true));
    assert_eq!(d.spec.pod_info_on_mount, Some(false));
    assert_eq!(d.spec.storage_capacity, Some(true));
    assert_eq!(d.spec.fs_group_policy.as_deref(), Some("File"));
    assert_eq!(
        d.spec.volume_lifecycle_modes,
        Some(vec!["Persistent".to_string()])
    );
}

#[test]
fn controller_deployment_has_the_sidecars_and_flags() {
    let o = load();
    let pod = deployment(&o, "hwameistor-controller")
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("pod spec");
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("hwameistor-controller")
    );
    let main = container(&pod.containers, "controller");
    assert_eq!(main.image.as_deref(), Some(IMAGE));
    assert_eq!(
        main.command,
        Some(vec!["hwameistor-controller".to_string()])
    );
    // Every flag the manifest passes is one the binary knows.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_hwameistor-controller"))
        .arg("--help")
        .output()
        .expect("run --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for a in args(main) {
        let flag = a.split('=').next().unwrap_or_default();
        assert!(
            help.contains(flag),
            "hwameistor-controller has no flag {flag}"
        );
    }
    let snapshotter = args(container(&pod.containers, "csi-snapshotter"));
    for flag in [
        "--csi-address=/csi/csi.sock",
        "--leader-election",
        "--extra-create-metadata",
    ] {
        assert!(
            snapshotter.iter().any(|a| a == flag),
            "csi-snapshotter lacks {flag}"
        );
    }
    let provisioner = args(container(&pod.containers, "csi-provisioner"));
    for flag in [
        "--feature-gates=Topology=true",
        "--strict-topology",
        "--immediate-topology=false",
        "--enable-capacity",
        "--capacity-ownerref-level=2",
        "--extra-create-metadata",
        "--leader-election",
        "--csi-address=/csi/csi.sock",
    ] {
        assert!(
            provisioner.iter().any(|a| a == flag),
            "provisioner lacks {flag}"
        );
    }
    for name in ["csi-attacher", "csi-resizer", "liveness-probe"] {
        assert!(
            args(container(&pod.containers, name))
                .iter()
                .any(|a| a == "--csi-address=/csi/csi.sock"),
            "{name}"
        );
    }
    // disk.hwameistor.io: the controller serves its socket, its own provisioner uses it
    // (with the same topology and capacity flags), both mount it.
    assert!(args(main).contains(&"--disk-csi-endpoint=unix:///csi-disk/csi.sock".to_string()));
    let disk_provisioner = container(&pod.containers, "csi-provisioner-disk");
    let disk_args = args(disk_provisioner);
    for flag in provisioner
        .iter()
        .filter(|f| !f.starts_with("--csi-address"))
    {
        assert!(disk_args.contains(flag), "disk provisioner lacks {flag}");
    }
    assert!(disk_args.contains(&"--csi-address=/csi-disk/csi.sock".to_string()));
    for c in [main, disk_provisioner] {
        assert!(
            c.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == "disk-socket-dir" && m.mount_path == "/csi-disk"),
            "{}",
            c.name
        );
    }
    for name in [
        "controller",
        "csi-provisioner",
        "csi-attacher",
        "csi-resizer",
        "liveness-probe",
    ] {
        let mounts = container(&pod.containers, name)
            .volume_mounts
            .clone()
            .unwrap_or_default();
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "socket-dir" && m.mount_path == "/csi"),
            "{name} does not share the socket"
        );
    }
    let env: Vec<String> = container(&pod.containers, "csi-provisioner")
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(
        env.contains(&"POD_NAME".into()) && env.contains(&"NAMESPACE".into()),
        "capacity ownerref needs POD_NAME and NAMESPACE: {env:?}"
    );
}

#[test]
fn node_daemonset_mounts_and_privileges() {
    let o = load();
    assert_eq!(o.daemon_sets.len(), 1);
    let pod = o.daemon_sets[0]
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("pod spec");
    assert_eq!(
        pod.host_pid,
        Some(true),
        "nsenter --target 1 needs the host PID namespace"
    );
    let agent = container(&pod.containers, "agent");
    assert_eq!(agent.image.as_deref(), Some(IMAGE));
    assert_eq!(
        agent.security_context.as_ref().and_then(|s| s.privileged),
        Some(true)
    );
    let a = args(agent);
    for flag in [
        "--host-mode=nsenter",
        "--csi-endpoint=unix:///csi/csi.sock",
        "--node-name=$(NODE_NAME)",
    ] {
        assert!(a.iter().any(|x| x == flag), "agent lacks {flag}");
    }
    // Every flag the manifest passes is one the agent binary knows.
    let help = std::process::Command::new(agent_binary())
        .arg("--help")
        .output()
        .expect("run agent --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for x in &a {
        let flag = x.split('=').next().unwrap_or_default();
        assert!(help.contains(flag), "hwameistor-agent has no flag {flag}");
    }
    let node_name = agent
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .find(|e| e.name == "NODE_NAME")
        .expect("NODE_NAME");
    assert_eq!(
        node_name
            .value_from
            .and_then(|v| v.field_ref)
            .map(|f| f.field_path),
        Some("spec.nodeName".to_string())
    );
    let mounts: BTreeMap<String, (String, Option<String>)> = agent
        .volume_mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.mount_path, (m.name, m.mount_propagation)))
        .collect();
    assert_eq!(
        mounts.get("/var/lib/kubelet").and_then(|m| m.1.as_deref()),
        Some("Bidirectional")
    );
    for path in ["/dev", "/sys", "/run/udev", "/csi"] {
        assert!(mounts.contains_key(path), "agent does not mount {path}");
    }
    let registrar = args(container(&pod.containers, "node-driver-registrar"));
    assert!(registrar
        .iter()
        .any(|a| a
            == "--kubelet-registration-path=/var/lib/kubelet/plugins/lvm.hwameistor.io/csi.sock"));
    let volumes = pod.volumes.unwrap_or_default();
    let plugin = volumes
        .iter()
        .find(|v| v.name == "plugin-dir")
        .and_then(|v| v.host_path.clone())
        .expect("plugin-dir");
    assert_eq!(plugin.path, "/var/lib/kubelet/plugins/lvm.hwameistor.io");
    container(&pod.containers, "liveness-probe");
    // disk.hwameistor.io: the agent serves its node service on a socket of its own, which
    // a second registrar announces to the kubelet.
    let agent = container(&pod.containers, "agent");
    assert!(args(agent).contains(&"--disk-csi-endpoint=unix:///csi-disk/csi.sock".to_string()));
    let registrar = args(container(&pod.containers, "node-driver-registrar-disk"));
    assert!(registrar.contains(&"--csi-address=/csi-disk/csi.sock".to_string()));
    assert!(registrar.contains(
        &"--kubelet-registration-path=/var/lib/kubelet/plugins/disk.hwameistor.io/csi.sock"
            .to_string()
    ));
    let disk_plugin = volumes
        .iter()
        .find(|v| v.name == "disk-plugin-dir")
        .and_then(|v| v.host_path.clone())
        .expect("disk-plugin-dir");
    assert_eq!(
        disk_plugin.path,
        "/var/lib/kubelet/plugins/disk.hwameistor.io"
    );
}

#[test]
fn storage_classes_use_parameters_the_driver_accepts() {
    let o = load();
    let names: Vec<String> = o
        .storage_classes
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    let (lvm, disk) = o.storage_classes.split_at(8);
    assert_eq!(
        names[8..],
        [
            "hwameistor-disk-hdd",
            "hwameistor-disk-ssd",
            "hwameistor-disk-nvme"
        ]
    );
    let types = [
        hwameistor_api::DiskType::Hdd,
        hwameistor_api::DiskType::Ssd,
        hwameistor_api::DiskType::Nvme,
    ];
    for (sc, t) in disk.iter().zip(types) {
        assert_eq!(
            sc.provisioner,
            hwameistor_csi::disk_controller::DISK_DRIVER_NAME
        );
        assert_eq!(
            sc.volume_binding_mode.as_deref(),
            Some("WaitForFirstConsumer"),
            "a disk volume needs its node"
        );
        assert_eq!(sc.allow_volume_expansion, Some(false));
        let params: std::collections::HashMap<String, String> = sc
            .parameters
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let parsed = hwameistor_csi::disk_controller::parse_params(&params)
            .unwrap_or_else(|e| panic!("{:?}: {e}", sc.metadata.name));
        assert_eq!(parsed.disk_type, t);
    }
    let names = names[..8].to_vec();
    assert_eq!(
        names,
        [
            "hwameistor-lvm-hdd",
            "hwameistor-lvm-ssd",
            "hwameistor-lvm-nvme",
            "hwameistor-lvm-hdd-ha",
            "hwameistor-lvm-ssd-ha",
            "hwameistor-lvm-nvme-ha",
            "hwameistor-lvm-hdd-convertible",
            "hwameistor-lvm-hdd-thin"
        ]
    );
    let classes = PoolClass::ALL.iter().chain(PoolClass::ALL.iter());
    for (i, (sc, &class)) in lvm[..6].iter().zip(classes).enumerate() {
        assert_eq!(sc.provisioner, CSI_DRIVER_NAME);
        assert_eq!(
            sc.volume_binding_mode.as_deref(),
            Some("WaitForFirstConsumer")
        );
        assert_eq!(sc.allow_volume_expansion, Some(true));
        let params = sc.parameters.clone().unwrap_or_default();
        let parsed = hwameistor_csi::params::parse(&params)
            .unwrap_or_else(|e| panic!("{:?}: {e}", sc.metadata.name));
        assert_eq!(parsed.pool_class, class);
        assert_eq!(parsed.fs_type, Some(hwameistor_csi::params::FsType::Xfs));
        // The first three are plain, the -ha ones replicated on two nodes.
        assert_eq!(parsed.replicas.get(), if i < 3 { 1 } else { 2 });
        assert!(!parsed.convertible && !parsed.thin);
    }
    let parse = |i: usize| {
        hwameistor_csi::params::parse(&lvm[i].parameters.clone().unwrap_or_default())
            .expect("valid")
    };
    let convertible = parse(6);
    assert!(convertible.convertible && !convertible.thin && convertible.replicas.get() == 1);
    assert_eq!(convertible.pool_class, PoolClass::Hdd);
    let thin = parse(7);
    assert!(thin.thin && !thin.convertible && thin.replicas.get() == 1);
    assert_eq!(thin.pool_class, PoolClass::Hdd);
}

#[test]
fn rbac_binds_existing_accounts_to_existing_roles_with_what_the_code_needs() {
    let o = load();
    let accounts: Vec<(String, String)> = o
        .service_accounts
        .iter()
        .map(|s| {
            (
                s.metadata.namespace.clone().unwrap_or_default(),
                s.metadata.name.clone().unwrap_or_default(),
            )
        })
        .collect();
    let subject_ok = |ns: &Option<String>, name: &str| {
        accounts
            .iter()
            .any(|(n, a)| Some(n) == ns.as_ref() && a == name)
    };
    for b in &o.cluster_role_bindings {
        assert!(
            BUILT_IN_ROLES.contains(&b.role_ref.name.as_str())
                || o.cluster_roles
                    .iter()
                    .any(|r| r.metadata.name.as_deref() == Some(b.role_ref.name.as_str())),
            "{:?}",
            b.metadata.name
        );
        for s in b.subjects.clone().unwrap_or_default() {
            assert!(
                subject_ok(&s.namespace, &s.name),
                "{:?} binds unknown {}",
                b.metadata.name,
                s.name
            );
        }
    }
    for b in &o.role_bindings {
        assert!(
            BUILT_IN_ROLES.contains(&b.role_ref.name.as_str())
                || o.roles
                    .iter()
                    .any(|r| r.metadata.name.as_deref() == Some(b.role_ref.name.as_str())),
            "{:?}",
            b.metadata.name
        );
        for s in b.subjects.clone().unwrap_or_default() {
            assert!(
                subject_ok(&s.namespace, &s.name),
                "{:?} binds unknown {}",
                b.metadata.name,
                s.name
            );
        }
    }
    let role = |name: &str| -> Vec<PolicyRule> {
        o.cluster_roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .and_then(|r| r.rules.clone())
            .unwrap_or_default()
    };
    let controller = role("hwameistor-controller");
    for (res, verb) in [
        ("localvolumes", "watch"),
        ("localvolumes", "create"),
        ("localvolumes", "delete"),
        ("localvolumes", "patch"),
        ("localvolumes/status", "patch"),
        ("localvolumereplicas", "create"),
        ("localvolumereplicas", "delete"),
        ("localvolumereplicas", "patch"),
        ("localstoragenodes", "list"),
    ] {
        assert!(
            grants(&controller, "hwameistor.io", res, verb),
            "controller cannot {verb} {res}"
        );
    }
    assert!(grants(&controller, "events.k8s.io", "events", "create"));
    assert!(
        grants(&controller, "", "pods", "list"),
        "placement reads a volume's pods to keep them together"
    );
    for (res, verb) in [
        ("localvolumegroups", "create"),
        ("localvolumegroups", "patch"),
        ("localvolumegroups", "delete"),
        ("localvolumegroups/status", "patch"),
    ] {
        assert!(
            grants(&controller, "hwameistor.io", res, verb),
            "controller cannot {verb} {res}"
        );
    }
    // Raw-disk volumes: the controller binds and gives back whole disks (their volumeRef),
    // and never makes, removes or reports disks: that is each node's agent.
    for (res, verb) in [
        ("localdiskvolumes", "watch"),
        ("localdiskvolumes", "patch"),
        ("localdiskvolumes/status", "update"),
        ("localdisks", "watch"),
        ("localdisks", "patch"),
    ] {
        assert!(
            grants(&controller, "hwameistor.io", res, verb),
            "controller cannot {verb} {res}"
        );
    }
    for (res, verb) in [
        ("localdisks", "create"),
        ("localdisks", "delete"),
        ("localdisks/status", "update"),
        ("localdisks/status", "patch"),
    ] {
        assert!(
            !grants(&controller, "hwameistor.io", res, verb),
            "the controller must not {verb} {res}: disks are their agents'"
        );
    }
    // Snapshots: the CSI controller writes the objects, the node's agent takes them and
    // reports (and the snapshotter sidecar answers for VolumeSnapshotContents).
    for (res, verb) in [
        ("localvolumesnapshots", "create"),
        ("localvolumesnapshots", "delete"),
        ("localvolumesnapshots", "watch"),
    ] {
        assert!(
            grants(&controller, "hwameistor.io", res, verb),
            "controller cannot {verb} {res}"
        );
    }
    let snapshotter = role("hwameistor-csi-snapshotter");
    assert!(grants(
        &snapshotter,
        "snapshot.storage.k8s.io",
        "volumesnapshotcontents/status",
        "patch"
    ));
    let node = role("hwameistor-node");
    for (res, verb) in [
        ("localvolumesnapshots", "watch"),
        ("localvolumesnapshots", "patch"),
        ("localvolumesnapshots/status", "update"),
    ] {
        assert!(
            grants(&node, "hwameistor.io", res, verb),
            "agent cannot {verb} {res}"
        );
    }
    let node = role("hwameistor-node");
    for (res, verb) in [
        ("localdiskvolumes", "watch"),
        ("localdiskvolumes/status", "update"),
    ] {
        assert!(
            grants(&node, "hwameistor.io", res, verb),
            "agent cannot {verb} {res}"
        );
    }
    assert!(grants(
        &node,
        "hwameistor.io",
        "localvolumereplicas/status",
        "update"
    ));
    // Fencing: the agent records a lost peer outdated on the volume (compare-and-swap).
    assert!(grants(&node, "hwameistor.io", "localvolumes", "get"));
    assert!(grants(&node, "hwameistor.io", "localvolumes", "patch"));
    assert!(
        !grants(&node, "hwameistor.io", "localvolumes", "create")
            && !grants(&node, "hwameistor.io", "localvolumes", "delete"),
        "the node agent never creates or deletes volumes"
    );
    assert!(grants(&node, "", "nodes", "get"), "the storage IP");
    let node_leases = o
        .roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some("hwameistor-node-leases"))
        .expect("node lease role");
    for verb in ["get", "create", "patch"] {
        assert!(grants(
            node_leases.rules.as_deref().unwrap_or_default(),
            "coordination.k8s.io",
            "leases",
            verb
        ));
    }
    let leases = o
        .roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some("hwameistor-controller-leases"))
        .expect("lease role");
    assert!(grants(
        leases.rules.as_deref().unwrap_or_default(),
        "coordination.k8s.io",
        "leases",
        "update"
    ));
}

#[test]
fn the_scheduler_calls_the_extender_it_deploys_over_tls_it_can_verify() {
    let o = load();
    // The extender: our image, flags the binary knows, the certificate Secret the Service
    // names (install generates it).
    let ext = deployment(&o, "hwameistor-scheduler-extender");
    let pod = ext
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("pod spec");
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("hwameistor-scheduler-extender")
    );
    let c = container(&pod.containers, "extender");
    assert_eq!(c.image.as_deref(), Some(IMAGE));
    assert_eq!(
        c.command,
        Some(vec!["hwameistor-scheduler-extender".to_string()])
    );
    let help = std::process::Command::new(workspace_binary("hwameistor-scheduler-extender"))
        .arg("--help")
        .output()
        .expect("run extender --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for a in args(c) {
        let flag = a.split('=').next().unwrap_or_default();
        assert!(help.contains(flag), "the extender has no flag {flag}");
    }
    let svc = o
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("hwameistor-scheduler-extender"))
        .expect("extender Service");
    let secret = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("hwameistor.io/serving-cert-secret"))
        .expect("the Service asks for a serving certificate")
        .clone();
    let secret_volume = |pod: &k8s_openapi::api::core::v1::PodSpec, name: &str| {
        pod.volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .and_then(|v| v.secret.as_ref())
            .and_then(|s| s.secret_name.clone())
    };
    assert_eq!(secret_volume(&pod, "tls"), Some(secret.clone()));
    let mounts = c.volume_mounts.clone().unwrap_or_default();
    let tls_dir = mounts
        .iter()
        .find(|m| m.name == "tls")
        .map(|m| m.mount_path.clone())
        .expect("tls mounted");
    assert!(args(c).contains(&format!("--tls-cert={tls_dir}/tls.crt")));
    assert!(args(c).contains(&format!("--tls-key={tls_dir}/tls.key")));
    let port = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|p| p.first())
        .expect("port");
    assert_eq!(
        c.ports
            .as_ref()
            .and_then(|p| p.first())
            .and_then(|p| p.name.clone()),
        port.target_port.as_ref().map(|t| match t {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s.clone(),
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => i.to_string(),
        })
    );

    // The scheduler: its configuration names the Service, verbs the extender serves, and a
    // CA file mounted from the same Secret.
    let sched = deployment(&o, "hwameistor-scheduler");
    let spod = sched
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("pod spec");
    let ks = container(&spod.containers, "kube-scheduler");
    let cmd = ks.command.clone().unwrap_or_default();
    let config_path = cmd
        .iter()
        .find_map(|a| a.strip_prefix("--config="))
        .expect("--config");
    let cm = o
        .config_maps
        .iter()
        .find(|m| m.metadata.name.as_deref() == Some("hwameistor-scheduler-config"))
        .expect("config map");
    let file = config_path.rsplit('/').next().unwrap_or_default();
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(file))
        .expect("the file --config names");
    let cfg: serde_json::Value =
        serde_json::to_value(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text).expect("yaml"))
            .expect("json");
    assert_eq!(cfg["kind"], "KubeSchedulerConfiguration");
    assert_eq!(cfg["profiles"][0]["schedulerName"], "hwameistor-scheduler");
    let e = &cfg["extenders"][0];
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    assert_eq!(
        e["urlPrefix"],
        format!(
            "https://hwameistor-scheduler-extender.{ns}.svc:{}",
            port.port
        )
    );
    assert_eq!(e["filterVerb"], "filter");
    assert_eq!(e["prioritizeVerb"], "prioritize");
    assert_eq!(e["nodeCacheCapable"], true);
    assert_eq!(e["enableHTTPS"], true);
    assert_eq!(e["ignorable"], false);
    let ca_file = e["tlsConfig"]["caFile"].as_str().expect("caFile");
    let ca_mount = ks
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| ca_file.starts_with(&m.mount_path))
        .expect("the CA file is mounted");
    assert_eq!(secret_volume(&spod, &ca_mount.name), Some(secret));
    assert_eq!(cfg["leaderElection"]["resourceNamespace"], ns.as_str());

    // RBAC: the extender reads what its caches watch and may bind pods.
    let rules = o
        .cluster_roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some("hwameistor-scheduler-extender"))
        .and_then(|r| r.rules.clone())
        .expect("extender role");
    for (group, res) in [
        ("hwameistor.io", "localstoragenodes"),
        ("hwameistor.io", "localvolumes"),
        ("hwameistor.io", "localvolumereplicas"),
        ("", "persistentvolumeclaims"),
        ("", "persistentvolumes"),
        ("storage.k8s.io", "storageclasses"),
    ] {
        for verb in ["list", "watch"] {
            assert!(
                grants(&rules, group, res, verb),
                "extender cannot {verb} {res}"
            );
        }
    }
    assert!(grants(&rules, "", "pods/binding", "create"));
    assert!(
        !grants(&rules, "hwameistor.io", "localvolumes", "patch"),
        "read only"
    );
}

#[test]
fn the_admission_webhooks_fail_open_skip_system_namespaces_and_reach_the_extender() {
    let o = load();
    let svc = o
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("hwameistor-scheduler-extender"))
        .expect("service");
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let secret = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("hwameistor.io/serving-cert-secret"))
        .cloned();
    let m = &o.mutating[0];
    let v = &o.validating[0];
    for annotations in [&m.metadata.annotations, &v.metadata.annotations] {
        assert_eq!(
            annotations
                .as_ref()
                .and_then(|a| a.get("hwameistor.io/serving-cert-secret"))
                .cloned(),
            secret,
            "one certificate for the one server"
        );
    }
    let hook = &m.webhooks.as_ref().expect("webhooks")[0];
    assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"), "fail-open");
    assert_eq!(hook.side_effects, "None");
    let target = hook.client_config.service.as_ref().expect("service");
    assert_eq!(target.name, "hwameistor-scheduler-extender");
    assert_eq!(target.namespace, ns);
    assert_eq!(target.path.as_deref(), Some("/mutate-pods"));
    let rule = &hook.rules.as_ref().expect("rules")[0];
    assert_eq!(rule.resources.as_deref(), Some(&["pods".to_string()][..]));
    assert_eq!(
        rule.operations.as_deref(),
        Some(&["CREATE".to_string()][..])
    );
    let skipped: Vec<String> = hook
        .namespace_selector
        .as_ref()
        .and_then(|s| s.match_expressions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.key == "kubernetes.io/metadata.name" && e.operator == "NotIn")
        .flat_map(|e| e.values.unwrap_or_default())
        .collect();
    assert!(
        skipped.contains(&"kube-system".to_string()) && skipped.contains(&ns),
        "{skipped:?}"
    );
    for hook in v.webhooks.as_ref().expect("webhooks") {
        assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"), "fail-open");
        let target = hook.client_config.service.as_ref().expect("service");
        assert_eq!(target.path.as_deref(), Some("/validate"));
        let resources: Vec<String> = hook
            .rules
            .iter()
            .flatten()
            .flat_map(|r| r.resources.clone().unwrap_or_default())
            .collect();
        for r in [
            "localvolumes",
            "localdiskclaims",
            "localvolumemigrates",
            "localvolumeconverts",
            "localvolumeexpands",
        ] {
            assert!(resources.contains(&r.to_string()), "{r} is not validated");
        }
    }
    // The server answers those paths (its 404 message lists what it serves).
    let help = std::process::Command::new(workspace_binary("hwameistor-scheduler-extender"))
        .arg("--help")
        .output()
        .expect("run extender --help");
    assert!(String::from_utf8_lossy(&help.stdout).contains("--scheduler-name"));
}

#[test]
fn every_binary_the_manifests_run_from_our_image_is_built_into_it() {
    let o = load();
    let containerfile =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Containerfile"))
            .expect("Containerfile");
    let built: Vec<&str> = containerfile
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "--bin")
        .map(|w| w[1])
        .collect();
    let pods = o
        .deployments
        .iter()
        .filter_map(|d| d.spec.as_ref().and_then(|s| s.template.spec.clone()))
        .chain(
            o.daemon_sets
                .iter()
                .filter_map(|d| d.spec.as_ref().and_then(|s| s.template.spec.clone())),
        );
    let mut seen = 0;
    for pod in pods {
        for c in pod
            .containers
            .iter()
            .filter(|c| c.image.as_deref() == Some(IMAGE))
        {
            let bin = c
                .command
                .as_ref()
                .and_then(|cmd| cmd.first())
                .unwrap_or_else(|| panic!("container {} names no binary", c.name));
            assert!(
                built.contains(&bin.as_str()),
                "{bin} is run from the image but the Containerfile does not build it ({built:?})"
            );
            assert!(
                containerfile.contains(&format!("/out/{bin}")),
                "{bin} is built but not installed into the image"
            );
            seen += 1;
        }
    }
    assert!(seen >= 3, "controller, agent and extender");
}

#[test]
fn the_snapshot_class_names_our_driver_with_parameters_it_accepts() {
    let o = load();
    let [class] = o.snapshot_classes.as_slice() else {
        panic!(
            "one VolumeSnapshotClass, found {}",
            o.snapshot_classes.len()
        );
    };
    assert_eq!(class["apiVersion"], "snapshot.storage.k8s.io/v1");
    assert_eq!(class["metadata"]["name"], "hwameistor-lvm-snapshot");
    assert_eq!(class["driver"], CSI_DRIVER_NAME);
    assert_eq!(class["deletionPolicy"], "Delete");
    for key in class.as_object().expect("object").keys() {
        assert!(
            [
                "apiVersion",
                "kind",
                "metadata",
                "driver",
                "deletionPolicy",
                "parameters"
            ]
            .contains(&key.as_str()),
            "{key} is not a VolumeSnapshotClass field"
        );
    }
    let params: std::collections::HashMap<String, String> =
        serde_json::from_value(class.get("parameters").cloned().unwrap_or_default())
            .unwrap_or_default();
    hwameistor_csi::snapshots::parse_params(&params).expect("parameters the driver accepts");
}
