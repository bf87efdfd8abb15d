//! Where the target remembers how far a copy got, so a restarted agent or a new connection
//! resumes instead of starting over.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil;

/// How far a copy got: chunks `0..next_chunk` are on the target's device and synced.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub operation: String,
    pub uid: String,
    pub volume: String,
    pub chunk_size: u32,
    /// The source's size in bytes.
    pub size: u64,
    pub total_chunks: u64,
    pub next_chunk: u64,
}

impl Checkpoint {
    /// Refuses a checkpoint of another copy or another cut into chunks: applying it would
    /// skip chunks that were never written.
    pub fn ensure_same_copy(&self, expected: &Checkpoint) -> Result<(), CheckpointError> {
        let fields: [(&'static str, String, String); 6] = [
            (
                "operation",
                self.operation.clone(),
                expected.operation.clone(),
            ),
            ("uid", self.uid.clone(), expected.uid.clone()),
            ("volume", self.volume.clone(), expected.volume.clone()),
            (
                "chunkSize",
                self.chunk_size.to_string(),
                expected.chunk_size.to_string(),
            ),
            ("size", self.size.to_string(), expected.size.to_string()),
            (
                "totalChunks",
                self.total_chunks.to_string(),
                expected.total_chunks.to_string(),
            ),
        ];
        for (field, stored, wanted) in fields {
            if stored != wanted {
                return Err(CheckpointError::Mismatch {
                    field,
                    stored,
                    expected: wanted,
                });
            }
        }
        if self.next_chunk > self.total_chunks {
            return Err(CheckpointError::Corrupt(format!(
                "next chunk {} beyond the {} chunks",
                self.next_chunk, self.total_chunks
            )));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("checkpoint is unreadable: {0}")]
    Corrupt(String),
    #[error(
        "checkpoint belongs to another copy: its {field} is {stored:?}, this copy's {expected:?}"
    )]
    Mismatch {
        field: &'static str,
        stored: String,
        expected: String,
    },
}

impl CheckpointError {
    /// A failing disk may recover; a checkpoint of another copy or an unreadable one will not.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CheckpointError::Io { .. })
    }
}

/// Keeps one copy's checkpoint. Called from blocking threads, never from async code.
pub trait CheckpointStore: Send + Sync {
    fn load(&self) -> Result<Option<Checkpoint>, CheckpointError>;
    /// Replaces the stored checkpoint atomically: after a crash the old or the new one is
    /// there, never a torn one.
    fn save(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError>;
    /// Forgets the checkpoint (the agent does, once it recorded the verified copy).
    fn remove(&self) -> Result<(), CheckpointError>;
}

/// A checkpoint in a JSON file, replaced atomically (temp file, fsync, rename).
pub struct FileCheckpointStore {
    path: PathBuf,
}

impl FileCheckpointStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileCheckpointStore { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: io::Error) -> CheckpointError {
        CheckpointError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

impl CheckpointStore for FileCheckpointStore {
    fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| CheckpointError::Corrupt(format!("{}: {e}", self.path.display())))
    }

    fn save(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let text = serde_json::to_vec_pretty(checkpoint)
            .map_err(|e| CheckpointError::Corrupt(e.to_string()))?;
        fsutil::replace_file(&self.path, &text, 0o600).map_err(|e| self.io(e))
    }

    fn remove(&self) -> Result<(), CheckpointError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            operation: "m".into(),
            uid: "u".into(),
            volume: "v".into(),
            chunk_size: 4096,
            size: 10_000,
            total_chunks: 3,
            next_chunk: 1,
        }
    }

    #[test]
    fn saved_atomically_and_loaded_back() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = FileCheckpointStore::new(dir.path().join("copy.json"));
        assert_eq!(store.load()?, None);
        let mut c = checkpoint();
        store.save(&c)?;
        c.next_chunk = 2;
        store.save(&c)?;
        assert_eq!(store.load()?, Some(c));
        // Only the checkpoint itself is left: no temp file.
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 1);
        store.remove()?;
        store.remove()?;
        assert_eq!(store.load()?, None);
        Ok(())
    }

    #[test]
    fn another_copys_checkpoint_is_refused() {
        let stored = checkpoint();
        assert!(stored.ensure_same_copy(&checkpoint()).is_ok());
        let mut other = checkpoint();
        other.uid = "u2".into();
        assert!(matches!(
            stored.ensure_same_copy(&other),
            Err(CheckpointError::Mismatch { field: "uid", .. })
        ));
        let mut other = checkpoint();
        other.chunk_size = 8192;
        assert!(matches!(
            stored.ensure_same_copy(&other),
            Err(CheckpointError::Mismatch {
                field: "chunkSize",
                ..
            })
        ));
        let mut beyond = checkpoint();
        beyond.next_chunk = 4;
        assert!(matches!(
            beyond.ensure_same_copy(&checkpoint()),
            Err(CheckpointError::Corrupt(_))
        ));
    }

    #[test]
    fn garbage_is_reported_not_applied() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("copy.json");
        std::fs::write(&path, b"{\"operation\": ")?;
        let store = FileCheckpointStore::new(&path);
        assert!(matches!(store.load(), Err(CheckpointError::Corrupt(_))));
        Ok(())
    }
}
