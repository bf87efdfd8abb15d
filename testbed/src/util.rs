//! Small host-side helpers shared by the asset builders.

use std::hash::Hasher;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::Error;

/// FNV-1a: a stable hash for cache keys (std's hasher may change between Rust releases).
pub(crate) struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
    }
}

pub(crate) fn hash_strings<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Fnv(0xcbf29ce484222325);
    for p in parts {
        h.write(p.as_bytes());
        h.write(&[0]);
    }
    format!("{:016x}", h.finish())
}

pub(crate) fn file_meta(p: &Path) -> String {
    match std::fs::metadata(p) {
        Ok(m) => format!("{} {} {}", p.display(), m.len(), m.mtime()),
        Err(_) => format!("{} absent", p.display()),
    }
}

/// Runs a host command, mapping "not found" to the Debian package that provides it.
pub(crate) fn run(cmd: &mut Command, package: &str) -> Result<std::process::Output, Error> {
    let desc = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::missing(format!("{:?}", cmd.get_program()), package)
        } else {
            Error::io(format!("run {desc}"), e)
        }
    })?;
    if !out.status.success() {
        return Err(Error::HostCommand {
            cmd: desc,
            detail: format!(
                "{}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(out)
}

/// First existing path among the usual bin directories.
pub(crate) fn find_prog(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}
