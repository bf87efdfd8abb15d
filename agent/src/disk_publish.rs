//! Where this node's raw-disk volumes are published, recorded in their LocalDiskVolume
//! (`status.publishedTargets`, `status.publishedNode`) by the `disk.hwameistor.io` node
//! service: before a target is made and after it is gone. The agent wipes a deleted
//! volume's disk only while nothing is recorded (see [`hwameistor_core::disk_volume`]), so a
//! raw block volume bound into a pod, which no mount table shows, is never wiped under it.

use hwameistor_api::LocalDiskVolume;
use hwameistor_csi::node::PublishRecord;
use kube::api::PostParams;
use kube::{Api, Client};
use tonic::Status;

/// How often a record is retried when someone else wrote the volume's status meanwhile.
const ATTEMPTS: usize = 5;

pub struct DiskPublishRecord {
    client: Client,
    node: String,
}

impl DiskPublishRecord {
    pub fn new(client: Client, node: String) -> DiskPublishRecord {
        DiskPublishRecord { client, node }
    }

    /// Adds (`on`) or removes `target` in the volume's record.
    async fn change(&self, volume: &str, target: &str, on: bool) -> Result<(), Status> {
        let api: Api<LocalDiskVolume> = Api::all(self.client.clone());
        let unavailable = |e: kube::Error| {
            Status::unavailable(format!("recording where {volume} is published: {e}"))
        };
        for _ in 0..ATTEMPTS {
            let Some(mut v) = api.get_opt(volume).await.map_err(unavailable)? else {
                return if on {
                    Err(Status::not_found(format!(
                        "disk volume {volume} does not exist"
                    )))
                } else {
                    Ok(())
                };
            };
            if on {
                if v.spec.node_name != self.node {
                    return Err(Status::failed_precondition(format!(
                        "disk volume {volume} is on node {}, not on {}",
                        v.spec.node_name, self.node
                    )));
                }
                if v.metadata.deletion_timestamp.is_some() {
                    return Err(Status::failed_precondition(format!(
                        "disk volume {volume} is being deleted; it is not published again"
                    )));
                }
            }
            let st = v.status.get_or_insert_with(Default::default);
            let had = st.published_targets.iter().any(|t| t == target);
            if had == on {
                return Ok(());
            }
            if on {
                st.published_targets.push(target.to_string());
            } else {
                st.published_targets.retain(|t| t != target);
            }
            st.published_node = (!st.published_targets.is_empty()).then(|| self.node.clone());
            // A replace with the version read: a concurrent writer (the controller, the
            // agent's reconciler) makes it fail, and it is read again.
            match api.replace_status(volume, &PostParams::default(), &v).await {
                Ok(_) => {
                    tracing::info!(%volume, %target, published = on, "disk volume publish recorded");
                    return Ok(());
                }
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(Status::aborted(format!(
            "disk volume {volume} kept changing while its publish was recorded; retry"
        )))
    }
}

#[tonic::async_trait]
impl PublishRecord for DiskPublishRecord {
    async fn publishing(&self, volume_id: &str, target: &str) -> Result<(), Status> {
        self.change(volume_id, target, true).await
    }

    async fn unpublished(&self, volume_id: &str, target: &str) -> Result<(), Status> {
        self.change(volume_id, target, false).await
    }
}
