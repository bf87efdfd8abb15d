//! One operation per volume at a time.
//!
//! The CSI spec lets a plugin refuse a call while another is running for the same volume
//! (ABORTED, and the CO retries), which keeps e.g. a stage and an unstage from interleaving
//! their mount commands.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tonic::{Code, Status};

#[derive(Clone, Default)]
pub struct InFlight {
    ids: Arc<Mutex<HashSet<String>>>,
}

/// Held while an operation on a volume runs; releases the volume when dropped.
pub struct Guard {
    ids: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl InFlight {
    pub fn begin(&self, id: &str) -> Result<Guard, Status> {
        let mut ids = self
            .ids
            .lock()
            .map_err(|_| Status::internal("operation table poisoned"))?;
        if !ids.insert(id.to_string()) {
            return Err(Status::new(
                Code::Aborted,
                format!("an operation on volume {id} is already in progress"),
            ));
        }
        Ok(Guard {
            ids: self.ids.clone(),
            id: id.to_string(),
        })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(mut ids) = self.ids.lock() {
            ids.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_operation_on_a_volume_is_aborted_until_the_first_ends() {
        let f = InFlight::default();
        let g = f.begin("v1").expect("first");
        assert_eq!(f.begin("v1").err().map(|s| s.code()), Some(Code::Aborted));
        assert!(f.begin("v2").is_ok());
        drop(g);
        assert!(f.begin("v1").is_ok());
    }
}
