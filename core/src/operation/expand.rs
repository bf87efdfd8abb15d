//! LocalVolumeExpand: grow a volume (plain or HA), online.
//!
//! Steps: `Grow` (the volume's required capacity is raised; the volume reconciler carries
//! it into the placement and every replica, the agents grow their logical volumes and, for
//! HA, the DRBD device) → `Wait` until every replica reports the new size → Succeeded.
//! The filesystem grows on the node through CSI NodeExpandVolume when the pod uses it.
//! Logical volumes never shrink safely, so an abort is possible only before `Grow` wrote
//! the new size.

use super::{at_step, finish, Machine, Op, OpStep, Start, VolumeChange, World};
use crate::placement::check_growth;
use hwameistor_api::quantity::format_size;
use hwameistor_api::{LocalVolume, OperationPhase, OperationStatus, PoolClass, VolumeState};

pub const STEP_GROW: &str = "Grow";
pub const STEP_WAIT: &str = "WaitForReplicas";

pub struct Expand {
    pub required_capacity_bytes: i64,
}

impl Expand {
    fn grown(&self, v: &LocalVolume) -> bool {
        v.spec.required_capacity_bytes >= self.required_capacity_bytes
    }
}

impl Machine for Expand {
    fn start(&self, _op: &Op, w: &World, v: &LocalVolume) -> Start {
        let want = self.required_capacity_bytes;
        let have = v.spec.required_capacity_bytes;
        let allocated = v
            .status
            .as_ref()
            .and_then(|s| s.allocated_capacity_bytes)
            .unwrap_or(0);
        if want < have {
            return Start::Fail(format!(
                "volumes never shrink: it has {} and {} was asked",
                format_size(have),
                format_size(want)
            ));
        }
        if want == have && allocated >= want {
            return Start::Done(format!("the volume has {} already", format_size(have)));
        }
        let Some(config) = v.spec.config.as_ref() else {
            return Start::Wait("the volume is not placed yet".into());
        };
        let Some(class) = PoolClass::from_pool_name(&v.spec.pool_name) else {
            return Start::Fail(format!("unknown pool {}", v.spec.pool_name));
        };
        let name = v.metadata.name.clone().unwrap_or_default();
        for a in &config.replicas {
            if let Err(e) = check_growth(w.nodes, &a.hostname, class, w.placed, &name, want) {
                return Start::Fail(format!(
                    "no room to grow to {}: {e}; free space in that pool (or migrate the volume) and create the expansion again",
                    format_size(want)
                ));
            }
        }
        Start::Go(Box::new(OperationStatus {
            step: Some(STEP_GROW.into()),
            original_capacity_bytes: Some(have),
            ..Default::default()
        }))
    }

    fn run(&self, op: &Op, w: &World, v: &LocalVolume) -> OpStep {
        if !self.grown(v) {
            if op.status.step.as_deref() != Some(STEP_GROW) {
                return at_step(op, STEP_GROW, None);
            }
            return OpStep::UpdateVolume(Box::new(VolumeChange {
                required_capacity_bytes: Some(self.required_capacity_bytes),
                ..Default::default()
            }));
        }
        let st = v.status.clone().unwrap_or_default();
        let allocated = st.allocated_capacity_bytes;
        if st.state == Some(VolumeState::Ready)
            && allocated.is_some_and(|a| a >= self.required_capacity_bytes)
        {
            return finish(
                op,
                w,
                OperationPhase::Succeeded,
                format!(
                    "grown to {}",
                    format_size(allocated.unwrap_or(self.required_capacity_bytes))
                ),
            );
        }
        let mut next = op.status.clone();
        next.step = Some(STEP_WAIT.into());
        next.allocated_capacity_bytes = allocated;
        next.message = st.message.clone();
        if next == *op.status {
            OpStep::Wait {
                seconds: super::POLL_SECONDS,
            }
        } else {
            OpStep::Status(Box::new(next))
        }
    }

    fn abortable(&self, _op: &Op, v: &LocalVolume) -> Result<(), String> {
        if self.grown(v) {
            Err("the new size was written to the volume and logical volumes cannot shrink safely; the expansion completes".into())
        } else {
            Ok(())
        }
    }

    fn undo(&self, _op: &Op, _w: &World, _v: &LocalVolume) -> Option<OpStep> {
        // Abortable only before anything changed: nothing to undo.
        None
    }
}
