//! Where DRBD configuration files are written.
//!
//! The tools may run elsewhere than the agent's own filesystem (through `nsenter` into the
//! host's mount namespace, or inside a test VM), so [`DrbdCli`](super::DrbdCli) writes its
//! files through [`ConfigFiles`]. [`LocalConfigFiles`] writes in this process's filesystem:
//! under nsenter the configuration directory must therefore be the same host directory
//! mounted at the same path in the agent's container (a hostPath volume).

use async_trait::async_trait;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Reading and replacing whole small files by absolute path.
#[async_trait]
pub trait ConfigFiles: Send + Sync + 'static {
    /// The file's content; `None` when it does not exist.
    async fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>>;
    /// Replaces the file atomically (readers see the old or the new content, never a
    /// part), creating its directory when missing.
    async fn write(&self, path: &str, data: &[u8]) -> io::Result<()>;
    /// Removes the file; no error when it is already gone.
    async fn remove(&self, path: &str) -> io::Result<()>;
}

/// Files in this process's filesystem, replaced by writing a temporary file beside the
/// target, syncing it and renaming it over the target.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalConfigFiles;

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("file task failed: {e}")))?
}

fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no directory"))?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other("path has no file name"))?;
    std::fs::create_dir_all(dir)?;
    // Unique per process and call, and hidden (no `.res` suffix), so a concurrent write of
    // the same file does not collide and drbdadm's `*.res` include never sees it.
    let tmp: PathBuf = dir.join(format!(
        ".{file_name}.tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // The rename itself must survive a crash too.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[async_trait]
impl ConfigFiles for LocalConfigFiles {
    async fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        let path = PathBuf::from(path);
        blocking(move || match std::fs::read(&path) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }

    async fn write(&self, path: &str, data: &[u8]) -> io::Result<()> {
        let path = PathBuf::from(path);
        let data = data.to_vec();
        blocking(move || write_atomically(&path, &data)).await
    }

    async fn remove(&self, path: &str) -> io::Result<()> {
        let path = PathBuf::from(path);
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_files_are_replaced_whole_and_removal_is_idempotent() {
        let dir = std::env::temp_dir().join(format!(
            "hwameistor-drbd-files-{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let path = dir.join("sub").join("r0.res");
        let p = path.to_str().expect("utf-8 temp path");
        let files = LocalConfigFiles;
        assert_eq!(files.read(p).await.expect("read missing"), None);
        files.write(p, b"one").await.expect("write");
        files.write(p, b"two").await.expect("overwrite");
        assert_eq!(
            files.read(p).await.expect("read").as_deref(),
            Some(&b"two"[..])
        );
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["r0.res"]);
        files.remove(p).await.expect("remove");
        files.remove(p).await.expect("remove again");
        assert_eq!(files.read(p).await.expect("read removed"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
