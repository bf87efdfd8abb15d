//! Whether what was installed is up: CRDs Established, Deployments available, DaemonSet
//! pods ready.

use super::manifests::ObjectKey;
use crate::client::Cluster;
use crate::errors::AdminError;
use crate::progress::Progress;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use serde::Serialize;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(500);

/// Readiness of one workload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    #[serde(flatten)]
    pub key: ObjectKey,
    pub desired: i32,
    pub ready: i32,
    /// Ready and running the latest spec.
    pub up_to_date: bool,
}

impl WorkloadStatus {
    pub fn is_ready(&self) -> bool {
        self.up_to_date && self.ready >= self.desired
    }

    pub fn summary(&self) -> String {
        format!("{} {}/{} ready", self.key, self.ready, self.desired)
    }
}

pub fn crd_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// Waits until every named CRD is Established, so the custom resources can be used.
pub async fn wait_crds_established(
    cluster: &Cluster,
    names: &[String],
    timeout: Duration,
) -> Result<(), AdminError> {
    let api: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    let start = Instant::now();
    loop {
        let mut pending = Vec::new();
        for n in names {
            let crd = api
                .get_opt(n)
                .await
                .map_err(|e| AdminError::api(format!("reading CRD {n}"), e))?;
            if !crd.as_ref().is_some_and(crd_established) {
                pending.push(n.clone());
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(AdminError::Timeout {
                what: "CRDs to be Established".into(),
                waited: start.elapsed(),
                detail: format!("not Established yet: {}", pending.join(", ")),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Current readiness of a Deployment, DaemonSet or StatefulSet; None for other kinds. A
/// workload that does not exist counts as not ready.
pub async fn workload_status(
    cluster: &Cluster,
    key: &ObjectKey,
) -> Result<Option<WorkloadStatus>, AdminError> {
    let ns = key.namespace.as_deref().unwrap_or(&cluster.namespace);
    let client = cluster.client.clone();
    let err = |e: kube::Error| AdminError::api(format!("reading {key}"), e);
    let status = |desired: i32, ready: i32, up_to_date: bool| WorkloadStatus {
        key: key.clone(),
        desired,
        ready,
        up_to_date,
    };
    let missing = status(1, 0, false);
    let current = |observed: Option<i64>, generation: Option<i64>| {
        observed.unwrap_or(0) >= generation.unwrap_or(0)
    };
    Ok(Some(match key.kind.as_str() {
        "Deployment" => match Api::<Deployment>::namespaced(client, ns)
            .get_opt(&key.name)
            .await
            .map_err(err)?
        {
            None => missing,
            Some(d) => {
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let st = d.status.unwrap_or_default();
                let up = current(st.observed_generation, d.metadata.generation)
                    && st.updated_replicas.unwrap_or(0) >= want;
                status(want, st.available_replicas.unwrap_or(0), up)
            }
        },
        "DaemonSet" => match Api::<DaemonSet>::namespaced(client, ns)
            .get_opt(&key.name)
            .await
            .map_err(err)?
        {
            None => missing,
            Some(d) => {
                let st = d.status.unwrap_or_default();
                let want = st.desired_number_scheduled;
                let up = current(st.observed_generation, d.metadata.generation)
                    && st.updated_number_scheduled.unwrap_or(0) >= want;
                status(want, st.number_ready, up)
            }
        },
        "StatefulSet" => match Api::<StatefulSet>::namespaced(client, ns)
            .get_opt(&key.name)
            .await
            .map_err(err)?
        {
            None => missing,
            Some(s) => {
                let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let st = s.status.unwrap_or_default();
                status(
                    want,
                    st.ready_replicas.unwrap_or(0),
                    current(st.observed_generation, s.metadata.generation),
                )
            }
        },
        _ => return Ok(None),
    }))
}

/// Waits until every workload is ready, reporting each one as it becomes ready.
pub async fn wait_workloads_ready(
    cluster: &Cluster,
    keys: &[ObjectKey],
    timeout: Duration,
    progress: &Progress,
) -> Result<Vec<WorkloadStatus>, AdminError> {
    let start = Instant::now();
    let mut reported = std::collections::BTreeSet::new();
    loop {
        let mut all = Vec::new();
        for k in keys {
            if let Some(s) = workload_status(cluster, k).await? {
                if s.is_ready() && reported.insert(k.clone()) {
                    progress.note(&format!("ready: {}", s.summary()));
                }
                all.push(s);
            }
        }
        let waiting: Vec<String> = all
            .iter()
            .filter(|s| !s.is_ready())
            .map(WorkloadStatus::summary)
            .collect();
        if waiting.is_empty() {
            return Ok(all);
        }
        progress.status(&format!("waiting for {}", waiting.join(", ")));
        if start.elapsed() >= timeout {
            return Err(AdminError::Timeout {
                what: "HwameiStor to become ready".into(),
                waited: start.elapsed(),
                detail: format!(
                    "{}; the objects are applied and will keep starting: check `kubectl -n {} get pods` and `kubectl hwameistor diagnose`",
                    waiting.join(", "),
                    cluster.namespace
                ),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}
