//! Helpers shared by the node VM tests.
#![allow(dead_code)]

use hwameistor_api::*;
use hwameistor_sandbox::{eventually, Error, Sandbox};
use hwameistor_testbed::{ProcessState, VmSpec};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use std::time::Duration;

pub const MIB: u64 = 1 << 20;
pub const WAIT: Duration = Duration::from_secs(90);

pub async fn start(nodes: Vec<VmSpec>) -> Sandbox {
    Sandbox::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_hwameistor-agent")),
        nodes,
    )
    .await
    .expect("sandbox: test API server, CRDs and node VMs")
}

pub async fn node_disks(sb: &Sandbox, node: &str) -> Vec<LocalDisk> {
    let api: Api<LocalDisk> = Api::all(sb.client.clone());
    api.list(&ListParams::default().labels(&format!("{LABEL_NODE}={node}")))
        .await
        .expect("list disks")
        .items
}

/// Waits until the node has `n` Active LocalDisks; returns them.
pub async fn wait_disks(sb: &Sandbox, node: &str, n: usize) -> Result<Vec<LocalDisk>, Error> {
    eventually(
        WAIT,
        &format!("{n} active LocalDisks on {node}"),
        || async {
            let d = node_disks(sb, node).await;
            let active = d
                .iter()
                .filter(|d| d.status.as_ref().and_then(|s| s.state) == Some(DiskPresence::Active))
                .count();
            Ok((active == n && d.len() == n).then_some(d))
        },
    )
    .await
}

pub fn by_serial<'a>(disks: &'a [LocalDisk], serial: &str) -> &'a LocalDisk {
    disks
        .iter()
        .find(|d| d.status.as_ref().and_then(|s| s.serial.as_deref()) == Some(serial))
        .unwrap_or_else(|| {
            panic!(
                "no LocalDisk with serial {serial} in {:#?}",
                disks.iter().map(|d| &d.status).collect::<Vec<_>>()
            )
        })
}

pub fn name(d: &LocalDisk) -> String {
    d.metadata.name.clone().expect("name")
}

pub async fn create_claim(
    sb: &Sandbox,
    name: &str,
    node: &str,
    sel: DiskSelector,
) -> LocalDiskClaim {
    let api: Api<LocalDiskClaim> = Api::all(sb.client.clone());
    let c = LocalDiskClaim::new(
        name,
        LocalDiskClaimSpec {
            node_name: node.into(),
            description: sel,
        },
    );
    api.create(&PostParams::default(), &c)
        .await
        .expect("create claim")
}

pub async fn wait_claim(
    sb: &Sandbox,
    name: &str,
    phase: ClaimPhase,
) -> Result<LocalDiskClaim, Error> {
    let api: Api<LocalDiskClaim> = Api::all(sb.client.clone());
    eventually(WAIT, &format!("claim {name} to be {phase:?}"), || async {
        let c = api.get(name).await?;
        Ok((c.status.as_ref().and_then(|s| s.phase) == Some(phase)).then_some(c))
    })
    .await
}

pub async fn create_replica(sb: &Sandbox, volume: &str, node: &str, bytes: i64) -> String {
    let api: Api<LocalVolumeReplica> = Api::all(sb.client.clone());
    // Named after the node too: nodes are unique per run, so runs on a shared cluster never collide.
    let name = replica::replica_name(volume, node);
    let mut r = LocalVolumeReplica::new(
        &name,
        LocalVolumeReplicaSpec {
            volume_name: volume.into(),
            pool_name: PoolClass::Hdd.pool_name().into(),
            node_name: node.into(),
            volume_kind: VolumeKind::Lvm,
            required_capacity_bytes: bytes,
            replication: None,
            copy_from: None,
            thin: false,
        },
    );
    r.metadata.labels = Some(
        [
            (LABEL_NODE.to_string(), node.to_string()),
            (LABEL_VOLUME.to_string(), volume.to_string()),
        ]
        .into(),
    );
    api.create(&PostParams::default(), &r)
        .await
        .expect("create replica");
    name
}

pub async fn wait_replica_ready(
    sb: &Sandbox,
    name: &str,
    bytes: i64,
) -> Result<LocalVolumeReplica, Error> {
    let api: Api<LocalVolumeReplica> = Api::all(sb.client.clone());
    eventually(
        WAIT,
        &format!("replica {name} Ready with {bytes} bytes"),
        || async {
            let r = api.get(name).await?;
            let st = r.status.clone().unwrap_or_default();
            Ok((st.state == Some(ReplicaState::Ready)
                && st.allocated_capacity_bytes.unwrap_or(0) >= bytes)
                .then_some(r))
        },
    )
    .await
}

pub async fn delete_replica(sb: &Sandbox, name: &str) {
    let api: Api<LocalVolumeReplica> = Api::all(sb.client.clone());
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete replica");
}

pub async fn wait_replica_gone(sb: &Sandbox, name: &str) -> Result<(), Error> {
    let api: Api<LocalVolumeReplica> = Api::all(sb.client.clone());
    eventually(WAIT, &format!("replica {name} to be deleted"), || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await
}

/// Waits until the agent process with `pid` on `node` has exited (a crash point fired).
pub async fn wait_exited(sb: &Sandbox, node: &str, pid: u32) -> Result<(), Error> {
    let vm = sb.testbed.vm(node);
    eventually(
        WAIT,
        &format!("agent pid {pid} on {node} to exit"),
        || async {
            Ok(matches!(vm.process_state(pid).await?, ProcessState::Exited { .. }).then_some(()))
        },
    )
    .await
}

/// The size in bytes of LV `vg/lv` in the VM, or None.
pub async fn lv_size(sb: &Sandbox, node: &str, vg: &str, lv: &str) -> Option<i64> {
    let out = sb
        .testbed
        .vm(node)
        .exec(&format!(
            "lvs --noheadings --units b --nosuffix -o lv_size {vg}/{lv}"
        ))
        .await
        .expect("exec lvs");
    if !out.success() {
        return None;
    }
    out.stdout.trim().parse().ok()
}

/// Fails the test with the agent's log attached.
pub async fn check<T>(sb: &Sandbox, node: &str, r: Result<T, Error>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!(
            "{e}\n--- agent log on {node} ---\n{}",
            sb.agent_log(node).await
        ),
    }
}
