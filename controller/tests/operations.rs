//! The operation reconcilers against an API server with the volume reconciler and a fake
//! node agent: migrations (HA over "DRBD", plain over the "block mover"), a conversion and
//! an expansion run to their end as resources, PersistentVolumes follow the volume, aborts
//! leave the volume as it was, refusals change nothing, and ended operations go after their
//! time-to-live.

mod common;

use common::{eventually, start_scoped, Cluster, ANNOTATION_HOLD_COPY, GI};
use hwameistor_api::{
    Accessibility, LocalVolume, LocalVolumeConvert, LocalVolumeConvertSpec, LocalVolumeExpand,
    LocalVolumeExpandSpec, LocalVolumeMigrate, LocalVolumeMigrateSpec, LocalVolumeReplica,
    LocalVolumeSpec, OperationPhase, OperationStatus, PoolClass, VolumeState, CSI_DRIVER_NAME,
    LABEL_GROUP_OPERATION, LABEL_VOLUME, LABEL_VOLUME_GROUP, TOPOLOGY_NODE_KEY,
};
use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    PersistentVolume, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

/// Creates a volume of 1 GiB pinned to `first` (HA: its second replica anywhere in this
/// test's scope) and waits until it is Ready (and Healthy).
async fn ready_volume(c: &Cluster, base: &str, first: &str, replicas: i64) -> LocalVolume {
    let api: Api<LocalVolume> = Api::all(c.client.clone());
    let name = c.name(base);
    let v = LocalVolume::new(
        &name,
        LocalVolumeSpec {
            pool_name: PoolClass::Hdd.pool_name().into(),
            volume_kind: Default::default(),
            required_capacity_bytes: GI,
            replica_number: replicas,
            convertible: false,
            accessibility: Accessibility {
                nodes: vec![first.to_string()],
            },
            pvc_namespace: None,
            pvc_name: None,
            fs_type: Some("xfs".into()),
            config: None,
            split_brain_resolution: None,
            operation: None,
            thin: false,
            data_source: None,
        },
    );
    api.create(&PostParams::default(), &v)
        .await
        .expect("create volume");
    eventually("volume Ready", || async {
        api.get(&name).await.ok().is_some_and(|v| {
            let st = v.status.clone().unwrap_or_default();
            st.state == Some(VolumeState::Ready)
                && (replicas == 1 || st.ha_state == Some(hwameistor_api::HaState::Healthy))
        })
    })
    .await;
    // What the CSI driver reports as the accessible nodes: where it is placed.
    let v = api.get(&name).await.expect("volume");
    let nodes: Vec<String> = v
        .spec
        .config
        .iter()
        .flat_map(|c| c.replicas.iter().map(|a| a.hostname.clone()))
        .collect();
    let patch = serde_json::json!({ "spec": { "accessibility": { "nodes": nodes } } });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("accessibility")
}

/// A PersistentVolume for `v` as the external-provisioner makes it (node affinity on the
/// CSI topology key, reclaim policy Delete).
async fn pv_for(c: &Cluster, v: &LocalVolume) -> PersistentVolume {
    let nodes: Vec<String> = v.spec.accessibility.nodes.clone();
    let mut pv = PersistentVolume::default();
    pv.metadata.name = Some(v.name_any());
    pv.spec = Some(PersistentVolumeSpec {
        capacity: Some(BTreeMap::from([("storage".into(), Quantity("1Gi".into()))])),
        access_modes: Some(vec!["ReadWriteOnce".into()]),
        persistent_volume_reclaim_policy: Some("Delete".into()),
        csi: Some(CSIPersistentVolumeSource {
            driver: CSI_DRIVER_NAME.into(),
            volume_handle: v.name_any(),
            ..Default::default()
        }),
        node_affinity: Some(VolumeNodeAffinity {
            required: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: TOPOLOGY_NODE_KEY.into(),
                        operator: "In".into(),
                        values: Some(nodes),
                    }]),
                    match_fields: None,
                }],
            }),
        }),
        ..Default::default()
    });
    Api::<PersistentVolume>::all(c.client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .expect("create PV")
}

/// Publishes a block mover for each of `nodes`, as their agents would (the fake agent's
/// copies never connect to it).
async fn publish_movers(c: &Cluster, nodes: &[&str]) {
    for n in nodes {
        let patch = serde_json::json!({ "status": { "mover": { "endpoint": "198.51.100.1:43000", "publicKey": "k" } } });
        Api::<hwameistor_api::LocalStorageNode>::all(c.client.clone())
            .patch_status(n, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("mover");
    }
}

fn pv_nodes(pv: &PersistentVolume) -> Vec<String> {
    hwameistor_controller::pv_affinity::affinity_nodes(pv)
}

async fn status_of<K>(c: &Cluster, name: &str) -> Option<OperationStatus>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope> + HasStatus,
{
    Api::<K>::all(c.client.clone())
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|o| o.op_status())
}

trait HasStatus {
    fn op_status(&self) -> Option<OperationStatus>;
}
impl HasStatus for LocalVolumeMigrate {
    fn op_status(&self) -> Option<OperationStatus> {
        self.status.clone()
    }
}
impl HasStatus for LocalVolumeConvert {
    fn op_status(&self) -> Option<OperationStatus> {
        self.status.clone()
    }
}
impl HasStatus for LocalVolumeExpand {
    fn op_status(&self) -> Option<OperationStatus> {
        self.status.clone()
    }
}

async fn wait_phase<K>(c: &Cluster, name: &str, phase: OperationPhase) -> OperationStatus
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + HasStatus,
{
    let mut last = None;
    // A minute: the full test run loads the machine.
    for _ in 0..1200 {
        last = status_of::<K>(c, name).await;
        if last.as_ref().and_then(|s| s.phase) == Some(phase) {
            return last.unwrap_or_default();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let volumes = Api::<LocalVolume>::all(c.client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let replicas = Api::<LocalVolumeReplica>::all(c.client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let mine = |n: &str| n.ends_with(&c.id);
    let vs: Vec<_> = volumes
        .iter()
        .filter(|v| mine(&v.name_any()))
        .map(|v| (&v.spec, &v.status))
        .collect();
    let rs: Vec<_> = replicas
        .iter()
        .filter(|r| mine(&r.spec.node_name))
        .map(|r| {
            (
                r.name_any(),
                r.metadata.generation,
                &r.spec.replication,
                &r.status,
            )
        })
        .collect();
    panic!("{name} did not reach {phase:?}: {last:?}\nvolumes: {vs:#?}\nreplicas: {rs:#?}");
}

fn migrate(c: &Cluster, base: &str, volume: &str, from: &str, to: &[&str]) -> LocalVolumeMigrate {
    LocalVolumeMigrate::new(
        &c.name(base),
        LocalVolumeMigrateSpec {
            volume_name: volume.into(),
            source_node: from.into(),
            target_nodes: to.iter().map(|n| n.to_string()).collect(),
            migrate_all_volumes: true,
            bandwidth_limit_bytes_per_second: None,
            abort: false,
            ttl_seconds_after_finished: None,
        },
    )
}

async fn replica_nodes(c: &Cluster, volume: &str) -> Vec<String> {
    let mut n: Vec<String> = Api::<LocalVolumeReplica>::all(c.client.clone())
        .list(&ListParams::default().labels(&format!("{LABEL_VOLUME}={volume}")))
        .await
        .expect("replicas")
        .items
        .into_iter()
        .map(|r| r.spec.node_name)
        .collect();
    n.sort();
    n
}

#[tokio::test]
async fn ha_migration_moves_a_replica_and_its_pv_then_releases_the_volume() {
    let c = start_scoped().await;
    let n1 = c.add_node("n1", 20 * GI, 20 * GI).await;
    let n2 = c.add_node("n2", 20 * GI, 20 * GI).await;
    let v = ready_volume(&c, "ha", &n1, 2).await;
    let name = v.name_any();
    let pv = pv_for(&c, &v).await;
    let old_uid = pv.metadata.uid.clone();
    let n3 = c.add_node("n3", 20 * GI, 20 * GI).await;
    let source = if v.spec.accessibility.nodes.contains(&n2) {
        n2.clone()
    } else {
        n1.clone()
    };
    let staying = if source == n2 { n1.clone() } else { n2.clone() };

    let ops: Api<LocalVolumeMigrate> = Api::all(c.client.clone());
    let op = ops
        .create(
            &PostParams::default(),
            &migrate(&c, "mig", &name, &source, &[]),
        )
        .await
        .expect("create migrate");
    let st = wait_phase::<LocalVolumeMigrate>(&c, &op.name_any(), OperationPhase::Succeeded).await;
    assert_eq!(st.target_node.as_deref(), Some(n3.as_str()));
    assert!(st.start_time.is_some() && st.completion_time.is_some());
    assert!(
        st.message
            .as_deref()
            .is_some_and(|m| m.contains(&format!("moved from {source} to {n3}"))),
        "{st:?}"
    );
    let mut want = vec![staying.clone(), n3.clone()];
    want.sort();
    assert_eq!(replica_nodes(&c, &name).await, want);
    let volumes: Api<LocalVolume> = Api::all(c.client.clone());
    // The final phase is written first, then the volume is let go.
    eventually("released", || async {
        volumes
            .get(&name)
            .await
            .is_ok_and(|v| v.spec.operation.is_none())
    })
    .await;
    let v = volumes.get(&name).await.expect("volume");
    let cfg = v.spec.config.clone().expect("config");
    assert!(cfg.replicas.iter().all(|a| !a.leaving && !a.outdated));
    let mut access = v.spec.accessibility.nodes.clone();
    access.sort();
    assert_eq!(access, want);
    // The PV: re-created with the new nodes, its own reclaim policy, the saved copy gone.
    let pv = Api::<PersistentVolume>::all(c.client.clone())
        .get(&name)
        .await
        .expect("PV");
    assert_eq!(pv_nodes(&pv), want);
    assert_ne!(pv.metadata.uid, old_uid, "re-created");
    assert_eq!(
        pv.spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref()),
        Some("Delete")
    );
    assert!(!v
        .annotations()
        .contains_key(hwameistor_controller::pv_affinity::ANNOTATION_PV_REWRITE));
}

#[tokio::test]
async fn plain_migration_copies_and_an_abort_mid_copy_leaves_the_volume_as_it_was() {
    let c = start_scoped().await;
    let n1 = c.add_node("n1", 20 * GI, 20 * GI).await;
    let v = ready_volume(&c, "plain", &n1, 1).await;
    let name = v.name_any();
    let n2 = c.add_node("n2", 20 * GI, 20 * GI).await;
    // Both nodes run a block mover.
    publish_movers(&c, &[&n1, &n2]).await;
    let volumes: Api<LocalVolume> = Api::all(c.client.clone());
    let hold =
        serde_json::json!({ "metadata": { "annotations": { ANNOTATION_HOLD_COPY: "true" } } });
    volumes
        .patch(&name, &PatchParams::default(), &Patch::Merge(&hold))
        .await
        .expect("hold");

    let ops: Api<LocalVolumeMigrate> = Api::all(c.client.clone());
    let op = ops
        .create(
            &PostParams::default(),
            &migrate(&c, "mig", &name, &n1, &[&n2]),
        )
        .await
        .expect("create migrate");
    let op_name = op.name_any();
    eventually("copy at 25 %", || async {
        status_of::<LocalVolumeMigrate>(&c, &op_name)
            .await
            .is_some_and(|s| {
                s.step.as_deref() == Some("Copy")
                    && s.progress.as_ref().is_some_and(|p| p.percent == 25)
            })
    })
    .await;
    // Nobody may use it meanwhile, on either node.
    let cfg = volumes
        .get(&name)
        .await
        .expect("v")
        .spec
        .config
        .expect("config");
    assert!(hwameistor_core::volume::publish_refusal(&cfg, &n1).is_some());
    assert!(hwameistor_core::volume::publish_refusal(&cfg, &n2).is_some());

    let abort = serde_json::json!({ "spec": { "abort": true } });
    ops.patch(&op_name, &PatchParams::default(), &Patch::Merge(&abort))
        .await
        .expect("abort");
    let st = wait_phase::<LocalVolumeMigrate>(&c, &op_name, OperationPhase::Aborted).await;
    assert!(
        st.message
            .as_deref()
            .is_some_and(|m| m.contains("as it was")),
        "{st:?}"
    );
    eventually("the copy's replica removed", || async {
        replica_nodes(&c, &name).await == [n1.clone()]
    })
    .await;
    // The final phase is written first, then the volume is let go.
    eventually("the volume let go", || async {
        volumes
            .get(&name)
            .await
            .is_ok_and(|v| v.spec.operation.is_none())
    })
    .await;
    let v = volumes.get(&name).await.expect("volume");
    let cfg = v.spec.config.clone().expect("config");
    assert_eq!(cfg.replicas.len(), 1);
    assert!(!cfg.replicas[0].leaving && cfg.replicas[0].hostname == n1);

    // Again, not held: it copies, then the source goes.
    let release =
        serde_json::json!({ "metadata": { "annotations": { ANNOTATION_HOLD_COPY: null } } });
    volumes
        .patch(&name, &PatchParams::default(), &Patch::Merge(&release))
        .await
        .expect("release");
    let pv = pv_for(&c, &v).await;
    let op2 = ops
        .create(
            &PostParams::default(),
            &migrate(&c, "mig2", &name, &n1, &[&n2]),
        )
        .await
        .expect("create migrate");
    wait_phase::<LocalVolumeMigrate>(&c, &op2.name_any(), OperationPhase::Succeeded).await;
    assert_eq!(replica_nodes(&c, &name).await, vec![n2.clone()]);
    let pv = Api::<PersistentVolume>::all(c.client.clone())
        .get(&pv.name_any())
        .await
        .expect("PV");
    assert_eq!(pv_nodes(&pv), vec![n2.clone()]);
    // The first one is kept as history.
    assert_eq!(
        status_of::<LocalVolumeMigrate>(&c, &op_name)
            .await
            .and_then(|s| s.phase),
        Some(OperationPhase::Aborted)
    );
}

/// Labels `volumes` as one group named `group` (what the group maintenance does for the
/// volumes a pod uses together).
async fn group_volumes(c: &Cluster, group: &str, volumes: &[&str]) {
    let api: Api<LocalVolume> = Api::all(c.client.clone());
    for v in volumes {
        let patch = serde_json::json!({ "metadata": { "labels": { LABEL_VOLUME_GROUP: group } } });
        api.patch(v, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("group label");
    }
}

#[tokio::test]
async fn a_group_migration_takes_the_groups_other_volumes_to_the_same_node() {
    let c = start_scoped().await;
    let n1 = c.add_node("n1", 20 * GI, 20 * GI).await;
    let a = ready_volume(&c, "ga", &n1, 1).await.name_any();
    let b = ready_volume(&c, "gb", &n1, 1).await.name_any();
    let solo = ready_volume(&c, "solo", &n1, 1).await.name_any();
    group_volumes(&c, &c.name("lvg"), &[&a, &b]).await;
    let n2 = c.add_node("n2", 20 * GI, 20 * GI).await;
    let n3 = c.add_node("n3", 20 * GI, 20 * GI).await;
    publish_movers(&c, &[&n1, &n2, &n3]).await;
    // The member's copy is held: the lead waits for it once its own volume moved.
    let volumes: Api<LocalVolume> = Api::all(c.client.clone());
    let hold =
        serde_json::json!({ "metadata": { "annotations": { ANNOTATION_HOLD_COPY: "true" } } });
    volumes
        .patch(&b, &PatchParams::default(), &Patch::Merge(&hold))
        .await
        .expect("hold");

    let ops: Api<LocalVolumeMigrate> = Api::all(c.client.clone());
    let lead = ops
        .create(&PostParams::default(), &migrate(&c, "gmig", &a, &n1, &[]))
        .await
        .expect("create migrate")
        .name_any();
    let member = hwameistor_core::operation::group::member_operation_name(&lead, &b);
    eventually("the lead waits for its member", || async {
        status_of::<LocalVolumeMigrate>(&c, &lead)
            .await
            .is_some_and(|s| s.step.as_deref() == Some("GroupMembers"))
    })
    .await;
    let st = status_of::<LocalVolumeMigrate>(&c, &lead)
        .await
        .expect("status");
    let target = st.target_node.clone().expect("target");
    assert_eq!(st.group_volumes, vec![b.clone()]);
    assert_eq!(st.phase, Some(OperationPhase::Running));
    assert!(
        st.message
            .as_deref()
            .is_some_and(|m| m.contains(&format!("waiting for the group's other volumes: {b}"))),
        "{st:?}"
    );
    assert_eq!(replica_nodes(&c, &a).await, vec![target.clone()]);
    // The member's operation: labelled and owned by the lead, pinned to its target.
    let m = ops.get(&member).await.expect("member operation");
    assert_eq!(
        m.labels().get(LABEL_GROUP_OPERATION).map(String::as_str),
        Some(lead.as_str())
    );
    assert_eq!(m.owner_references()[0].name, lead);
    assert_eq!(m.spec.target_nodes, vec![target.clone()]);
    assert!(!m.spec.migrate_all_volumes);
    let release =
        serde_json::json!({ "metadata": { "annotations": { ANNOTATION_HOLD_COPY: null } } });
    volumes
        .patch(&b, &PatchParams::default(), &Patch::Merge(&release))
        .await
        .expect("release");
    let st = wait_phase::<LocalVolumeMigrate>(&c, &lead, OperationPhase::Succeeded).await;
    assert!(
        st.message
            .as_deref()
            .is_some_and(|m| m.contains(&format!("followed: {b} (operations {member})"))),
        "{st:?}"
    );
    assert_eq!(replica_nodes(&c, &b).await, vec![target.clone()]);
    // Not in the group: it stays.
    assert_eq!(replica_nodes(&c, &solo).await, vec![n1.clone()]);
    assert!([n2, n3].contains(&target));
}

#[tokio::test]
async fn refusals_change_nothing_and_a_held_volume_makes_the_next_one_wait() {
    let c = start_scoped().await;
    let n1 = c.add_node("n1", 20 * GI, 20 * GI).await;
    let v = ready_volume(&c, "vol", &n1, 1).await;
    let name = v.name_any();
    let ops: Api<LocalVolumeMigrate> = Api::all(c.client.clone());
    let bad = ops
        .create(
            &PostParams::default(),
            &migrate(&c, "bad", &name, "nowhere", &[]),
        )
        .await
        .expect("create");
    let st = wait_phase::<LocalVolumeMigrate>(&c, &bad.name_any(), OperationPhase::Failed).await;
    assert!(
        st.message
            .as_deref()
            .is_some_and(|m| m.contains("no replica on nowhere")),
        "{st:?}"
    );

    // Held by a (foreign) operation: an expansion waits and says by whom.
    let volumes: Api<LocalVolume> = Api::all(c.client.clone());
    let hold = serde_json::json!({ "spec": { "operation": { "kind": "Migrate", "name": "someone", "uid": "x" } } });
    volumes
        .patch(&name, &PatchParams::default(), &Patch::Merge(&hold))
        .await
        .expect("hold");
    let exp: Api<LocalVolumeExpand> = Api::all(c.client.clone());
    let e = exp
        .create(
            &PostParams::default(),
            &LocalVolumeExpand::new(
                &c.name("grow"),
                LocalVolumeExpandSpec {
                    volume_name: name.clone(),
                    required_capacity_bytes: 2 * GI,
                    abort: false,
                    ttl_seconds_after_finished: Some(4),
                },
            ),
        )
        .await
        .expect("create expand");
    let st = wait_phase::<LocalVolumeExpand>(&c, &e.name_any(), OperationPhase::Pending).await;
    assert!(
        st.message
            .as_deref()
            .is_some_and(|m| m.contains("Migrate someone")),
        "{st:?}"
    );
    assert_eq!(
        volumes
            .get(&name)
            .await
            .expect("v")
            .spec
            .required_capacity_bytes,
        GI
    );
    let free = serde_json::json!({ "spec": { "operation": null } });
    volumes
        .patch(&name, &PatchParams::default(), &Patch::Merge(&free))
        .await
        .expect("free");
    let st = wait_phase::<LocalVolumeExpand>(&c, &e.name_any(), OperationPhase::Succeeded).await;
    assert_eq!(st.original_capacity_bytes, Some(GI));
    let v = volumes.get(&name).await.expect("v");
    assert_eq!(v.spec.required_capacity_bytes, 2 * GI);
    assert_eq!(
        v.status.and_then(|s| s.allocated_capacity_bytes),
        Some(2 * GI)
    );
    // Its time-to-live was four seconds (long enough to be seen Succeeded: times are kept to
    // the second): the history goes.
    eventually("expired expansion removed", || async {
        exp.get_opt(&e.name_any()).await.ok().flatten().is_none()
    })
    .await;
}

#[tokio::test]
async fn conversion_makes_a_plain_volume_ha_on_a_second_node() {
    let c = start_scoped().await;
    let n1 = c.add_node("n1", 20 * GI, 20 * GI).await;
    let v = ready_volume(&c, "conv", &n1, 1).await;
    let name = v.name_any();
    let n2 = c.add_node("n2", 20 * GI, 20 * GI).await;
    let ops: Api<LocalVolumeConvert> = Api::all(c.client.clone());
    let op = ops
        .create(
            &PostParams::default(),
            &LocalVolumeConvert::new(
                &c.name("conv"),
                LocalVolumeConvertSpec {
                    volume_name: name.clone(),
                    replica_number: 2,
                    convert_all_volumes: true,
                    target_node: Some(n2.clone()),
                    abort: false,
                    ttl_seconds_after_finished: None,
                },
            ),
        )
        .await
        .expect("create convert");
    let st = wait_phase::<LocalVolumeConvert>(&c, &op.name_any(), OperationPhase::Succeeded).await;
    assert_eq!(st.target_node.as_deref(), Some(n2.as_str()));
    let v = Api::<LocalVolume>::all(c.client.clone())
        .get(&name)
        .await
        .expect("volume");
    let cfg = v.spec.config.clone().expect("config");
    assert!(cfg.resource_id >= 0 && !cfg.initial);
    assert_eq!(v.spec.replica_number, 2);
    let mut want = vec![n1.clone(), n2.clone()];
    want.sort();
    assert_eq!(replica_nodes(&c, &name).await, want);
    assert!(cfg.replicas.iter().any(|a| a.hostname == n1 && a.primary));
    // The status follows the config on the volume reconciler's next pass.
    eventually("Healthy", || async {
        Api::<LocalVolume>::all(c.client.clone())
            .get(&name)
            .await
            .is_ok_and(|v| {
                v.status.and_then(|s| s.ha_state) == Some(hwameistor_api::HaState::Healthy)
            })
    })
    .await;
}

async fn k8s_node(c: &Cluster, name: &str, unschedulable: bool) {
    let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(c.client.clone());
    let mut n = k8s_openapi::api::core::v1::Node::default();
    n.metadata.name = Some(name.into());
    n.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
        unschedulable: Some(unschedulable),
        ..Default::default()
    });
    match api.get_opt(name).await.expect("get node") {
        None => {
            api.create(&PostParams::default(), &n)
                .await
                .expect("create node");
        }
        Some(_) => {
            let patch = serde_json::json!({ "spec": { "unschedulable": unschedulable } });
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("cordon");
        }
    }
}

fn evictor_ctx(c: &Cluster) -> std::sync::Arc<hwameistor_controller::volume_reconciler::Context> {
    hwameistor_controller::volume_reconciler::Context::new_scoped(
        c.client.clone(),
        &c.name("evictor"),
        c.metrics.clone(),
        Default::default(),
        Some(c.scope()),
    )
}

#[tokio::test]
async fn a_cordoned_node_is_emptied_by_the_evictor_and_uncordoning_stops_it() {
    let c = start_scoped().await;
    let n1 = c.add_node("n1", 20 * GI, 20 * GI).await;
    let n2 = c.add_node("n2", 20 * GI, 20 * GI).await;
    let plain = ready_volume(&c, "plain", &n1, 1).await.name_any();
    let ha = ready_volume(&c, "ha", &n1, 2).await.name_any();
    let n3 = c.add_node("n3", 20 * GI, 20 * GI).await;
    publish_movers(&c, &[&n1, &n2, &n3]).await;
    for n in [&n1, &n2, &n3] {
        k8s_node(&c, n, false).await;
    }
    let ctx = evictor_ctx(&c);
    // Schedulable: nothing happens.
    hwameistor_controller::evictor::check_once(&ctx)
        .await
        .expect("pass");
    let ops: Api<LocalVolumeMigrate> = Api::all(c.client.clone());
    let evicting = |vol: &str| hwameistor_core::operation::evict::migration_name(&n1, vol);
    assert!(ops.get_opt(&evicting(&plain)).await.expect("get").is_none());

    k8s_node(&c, &n1, true).await;
    let reports = hwameistor_controller::evictor::check_once(&ctx)
        .await
        .expect("pass");
    assert!(
        reports.iter().any(|(n, r)| n == &n1 && r.moving.len() == 2),
        "{reports:?}"
    );
    for vol in [&plain, &ha] {
        wait_phase::<LocalVolumeMigrate>(&c, &evicting(vol), OperationPhase::Succeeded).await;
        assert!(
            !replica_nodes(&c, vol).await.contains(&n1),
            "{vol} left {n1}"
        );
    }
    let reports = hwameistor_controller::evictor::check_once(&ctx)
        .await
        .expect("pass");
    let r = &reports.iter().find(|(n, _)| n == &n1).expect("report").1;
    assert_eq!((r.moved, r.moving.len(), r.stuck.len()), (2, 0, 0), "{r:?}");

    // A new volume on n2, held mid-copy when n2 is cordoned; uncordoning aborts it.
    let held = ready_volume(&c, "held", &n2, 1).await.name_any();
    let hold =
        serde_json::json!({ "metadata": { "annotations": { ANNOTATION_HOLD_COPY: "true" } } });
    Api::<LocalVolume>::all(c.client.clone())
        .patch(&held, &PatchParams::default(), &Patch::Merge(&hold))
        .await
        .expect("hold");
    k8s_node(&c, &n2, true).await;
    hwameistor_controller::evictor::check_once(&ctx)
        .await
        .expect("pass");
    let op = hwameistor_core::operation::evict::migration_name(&n2, &held);
    eventually("copying", || async {
        status_of::<LocalVolumeMigrate>(&c, &op)
            .await
            .is_some_and(|s| s.step.as_deref() == Some("Copy"))
    })
    .await;
    k8s_node(&c, &n2, false).await;
    hwameistor_controller::evictor::check_once(&ctx)
        .await
        .expect("pass");
    wait_phase::<LocalVolumeMigrate>(&c, &op, OperationPhase::Aborted).await;
    eventually("back on n2 only", || async {
        replica_nodes(&c, &held).await == vec![n2.clone()]
    })
    .await;
}

#[tokio::test]
async fn deleting_a_running_migration_undoes_it_before_the_object_goes() {
    let c = start_scoped().await;
    let n1 = c.add_node("n1", 20 * GI, 20 * GI).await;
    let v = ready_volume(&c, "del", &n1, 1).await;
    let name = v.name_any();
    let n2 = c.add_node("n2", 20 * GI, 20 * GI).await;
    publish_movers(&c, &[&n1, &n2]).await;
    let hold =
        serde_json::json!({ "metadata": { "annotations": { ANNOTATION_HOLD_COPY: "true" } } });
    Api::<LocalVolume>::all(c.client.clone())
        .patch(&name, &PatchParams::default(), &Patch::Merge(&hold))
        .await
        .expect("hold");
    let ops: Api<LocalVolumeMigrate> = Api::all(c.client.clone());
    let op = ops
        .create(
            &PostParams::default(),
            &migrate(&c, "mig", &name, &n1, &[&n2]),
        )
        .await
        .expect("create");
    let op_name = op.name_any();
    eventually("copying", || async {
        status_of::<LocalVolumeMigrate>(&c, &op_name)
            .await
            .is_some_and(|s| s.step.as_deref() == Some("Copy"))
    })
    .await;
    let held = ops.get(&op_name).await.expect("op");
    assert!(held
        .finalizers()
        .iter()
        .any(|f| f == hwameistor_api::FINALIZER_OPERATION));
    ops.delete(&op_name, &Default::default())
        .await
        .expect("delete");
    eventually("the operation gone", || async {
        ops.get_opt(&op_name).await.ok().flatten().is_none()
    })
    .await;
    let v = Api::<LocalVolume>::all(c.client.clone())
        .get(&name)
        .await
        .expect("volume");
    assert!(v.spec.operation.is_none(), "the volume was let go");
    let cfg = v.spec.config.expect("config");
    assert_eq!(cfg.replicas.len(), 1);
    assert!(!cfg.replicas[0].leaving && cfg.replicas[0].hostname == n1);
    eventually("the copy's replica removed", || async {
        replica_nodes(&c, &name).await == vec![n1.clone()]
    })
    .await;
}
