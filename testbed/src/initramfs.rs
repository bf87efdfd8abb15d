//! An initramfs tree and its serialisation as a cpio "newc" archive.
//!
//! The tree maps guest paths to entries; host files are added together with everything they
//! need at run time (symlink targets, the libraries `ldd` lists), so dynamic binaries from the
//! host's Debian packages run unchanged in the guest.
//!
//! Layout follows merged /usr: real directories under /usr, and /bin, /sbin, /lib, /lib64 are
//! symlinks into it. Guest paths are canonicalised accordingly, so a host path spelled /sbin/lvm
//! or /usr/sbin/lvm lands in one place.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, IoContext};

#[derive(Debug, Clone)]
pub(crate) enum Source {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone)]
pub(crate) enum Entry {
    Dir,
    File {
        src: Source,
        mode: u32,
    },
    Symlink(String),
    /// Character device node.
    CharDev {
        major: u32,
        minor: u32,
        mode: u32,
    },
}

/// Top-level directories that are symlinks into /usr in the guest.
const USR_MERGED: [&str; 4] = ["bin", "sbin", "lib", "lib64"];

/// Canonical guest path without the leading '/': `/sbin/lvm` -> `usr/sbin/lvm`.
pub(crate) fn guest_canon(path: &str) -> String {
    let p = path.trim_start_matches('/');
    for top in USR_MERGED {
        if p == top {
            return format!("usr/{top}");
        }
        if let Some(rest) = p.strip_prefix(top).and_then(|r| r.strip_prefix('/')) {
            return format!("usr/{top}/{rest}");
        }
    }
    p.to_string()
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Tree {
    entries: BTreeMap<String, Entry>,
}

impl Tree {
    /// A tree holding the merged-/usr skeleton.
    pub(crate) fn with_skeleton() -> Self {
        let mut t = Tree::default();
        for top in USR_MERGED {
            t.mkdir(&format!("usr/{top}"));
            t.entries
                .insert(top.to_string(), Entry::Symlink(format!("usr/{top}")));
        }
        t
    }

    fn mkdir(&mut self, path: &str) {
        let mut cur = String::new();
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(comp);
            let canon = guest_canon(&cur);
            // Do not replace a merged-/usr symlink (or anything else) already present.
            self.entries.entry(canon.clone()).or_insert(Entry::Dir);
            cur = canon;
        }
    }

    fn insert(&mut self, guest: &str, e: Entry) {
        let canon = guest_canon(guest);
        if let Some(parent) = Path::new(&canon).parent().and_then(|p| p.to_str()) {
            if !parent.is_empty() {
                self.mkdir(parent);
            }
        }
        self.entries.insert(canon, e);
    }

    pub(crate) fn dir(&mut self, guest: &str) {
        self.mkdir(&guest_canon(guest));
    }

    pub(crate) fn bytes(&mut self, guest: &str, data: impl Into<Vec<u8>>, mode: u32) {
        self.insert(
            guest,
            Entry::File {
                src: Source::Bytes(data.into()),
                mode,
            },
        );
    }

    pub(crate) fn symlink(&mut self, guest: &str, target: &str) {
        self.insert(guest, Entry::Symlink(target.to_string()));
    }

    pub(crate) fn char_dev(&mut self, guest: &str, major: u32, minor: u32, mode: u32) {
        self.insert(guest, Entry::CharDev { major, minor, mode });
    }

    pub(crate) fn contains(&self, guest: &str) -> bool {
        self.entries.contains_key(&guest_canon(guest))
    }

    /// Copies a host file to `guest` (regular file, mode kept). Symlinks are resolved: the
    /// content is read from the final target.
    pub(crate) fn host_file_as(&mut self, host: &Path, guest: &str) -> Result<(), Error> {
        let meta = std::fs::metadata(host).ctx(|| format!("stat {}", host.display()))?;
        let mode = meta.permissions().mode() & 0o7777;
        self.insert(
            guest,
            Entry::File {
                src: Source::Host(host.to_path_buf()),
                mode,
            },
        );
        Ok(())
    }

    /// Adds a host file at its own path. A symlink stays a symlink (programs such as
    /// systemd-udevd -> udevadm dispatch on argv[0]) pointing at the canonical path of its
    /// target, which is added too. ELF files bring their libraries.
    pub(crate) fn host_path(&mut self, host: &Path) -> Result<(), Error> {
        self.host_path_opts(host, true)
    }

    /// `libs = false` for files that are themselves libraries from an `ldd` listing: that
    /// listing is already the transitive closure.
    pub(crate) fn host_path_opts(&mut self, host: &Path, libs: bool) -> Result<(), Error> {
        let guest = host_guest_path(host)?;
        if self.contains(&guest) {
            return Ok(());
        }
        let lmeta = std::fs::symlink_metadata(host).ctx(|| format!("stat {}", host.display()))?;
        if lmeta.file_type().is_symlink() {
            let target =
                std::fs::canonicalize(host).ctx(|| format!("resolve {}", host.display()))?;
            let tguest = host_guest_path(&target)?;
            self.symlink(&guest, &format!("/{}", guest_canon(&tguest)));
            return self.host_path_opts(&target, libs);
        }
        if lmeta.is_dir() {
            self.dir(&guest);
            return Ok(());
        }
        self.host_file_as(host, &guest)?;
        if libs && is_elf(host) {
            for lib in ldd(host)? {
                self.host_path_opts(&lib, false)?;
            }
        }
        Ok(())
    }

    /// Adds every entry of a host directory, recursively.
    pub(crate) fn host_dir(&mut self, host: &Path) -> Result<(), Error> {
        let rd = std::fs::read_dir(host).ctx(|| format!("read dir {}", host.display()))?;
        self.host_path(host)?;
        for e in rd {
            let e = e.ctx(|| format!("read dir {}", host.display()))?;
            let p = e.path();
            let ft = e.file_type().ctx(|| format!("stat {}", p.display()))?;
            if ft.is_dir() {
                self.host_dir(&p)?;
            } else {
                self.host_path(&p)?;
            }
        }
        Ok(())
    }

    /// Copies a host directory tree to `guest` (a different place). Symlinks inside are copied
    /// as their targets' content. `libs`: also add the libraries of ELF executables.
    pub(crate) fn host_dir_as(
        &mut self,
        host: &Path,
        guest: &str,
        libs: bool,
    ) -> Result<(), Error> {
        self.dir(guest);
        let rd = std::fs::read_dir(host).ctx(|| format!("read dir {}", host.display()))?;
        for e in rd {
            let e = e.ctx(|| format!("read dir {}", host.display()))?;
            let p = e.path();
            let name = e.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            let g = format!("{}/{name}", guest.trim_end_matches('/'));
            if p.is_dir() {
                self.host_dir_as(&p, &g, libs)?;
            } else {
                self.host_file_as(&p, &g)?;
                if libs && is_elf(&p) {
                    for lib in ldd(&p)? {
                        self.host_path_opts(&lib, false)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes the tree as a cpio newc archive.
    pub(crate) fn write_newc(&self, out: &mut impl Write) -> Result<(), Error> {
        let mut w = NewcWriter { out, ino: 1 };
        for (path, e) in &self.entries {
            match e {
                Entry::Dir => w.entry(path, 0o040755, 2, (0, 0), &[])?,
                Entry::Symlink(t) => w.entry(path, 0o120777, 1, (0, 0), t.as_bytes())?,
                Entry::CharDev { major, minor, mode } => {
                    w.entry(path, 0o020000 | mode, 1, (*major, *minor), &[])?
                }
                Entry::File { src, mode } => {
                    let data = match src {
                        Source::Bytes(b) => std::borrow::Cow::Borrowed(b.as_slice()),
                        Source::Host(p) => {
                            let mut v = Vec::new();
                            std::fs::File::open(p)
                                .and_then(|mut f| f.read_to_end(&mut v))
                                .ctx(|| format!("read {}", p.display()))?;
                            std::borrow::Cow::Owned(v)
                        }
                    };
                    w.entry(path, 0o100000 | mode, 1, (0, 0), &data)?
                }
            }
        }
        w.entry("TRAILER!!!", 0, 1, (0, 0), &[])?;
        Ok(())
    }
}

/// The guest path for a host path: the parent directory is canonicalised (so /lib/x and
/// /usr/lib/x agree) but the file name is kept, since a symlink's name is what callers use.
fn host_guest_path(host: &Path) -> Result<String, Error> {
    let name = host
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::InvalidSpec(format!("odd host path {}", host.display())))?;
    let parent = host.parent().unwrap_or(Path::new("/"));
    let parent = std::fs::canonicalize(parent).ctx(|| format!("resolve {}", parent.display()))?;
    let parent = parent
        .to_str()
        .ok_or_else(|| Error::InvalidSpec(format!("non-UTF-8 host path {}", host.display())))?;
    Ok(guest_canon(&format!(
        "{}/{name}",
        parent.trim_end_matches('/')
    )))
}

pub(crate) fn is_elf(p: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map(|_| &magic == b"\x7fELF")
        .unwrap_or(false)
}

/// Libraries a dynamic ELF file needs, as absolute host paths (the loader included).
pub(crate) fn ldd(p: &Path) -> Result<Vec<PathBuf>, Error> {
    let out = Command::new("ldd").arg(p).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::missing("ldd", "libc-bin")
        } else {
            Error::io("run ldd", e)
        }
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // Static binaries: "not a dynamic executable" (exit 1); nothing to add.
        let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        if all.contains("not a dynamic executable") || all.contains("statically linked") {
            return Ok(vec![]);
        }
        return Err(Error::HostCommand {
            cmd: format!("ldd {}", p.display()),
            detail: all,
        });
    }
    let mut libs = Vec::new();
    for line in stdout.lines() {
        let line = line.trim();
        if line.contains("not found") {
            return Err(Error::HostCommand {
                cmd: format!("ldd {}", p.display()),
                detail: format!("missing library: {line}"),
            });
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

struct NewcWriter<'a, W: Write> {
    out: &'a mut W,
    ino: u32,
}

impl<W: Write> NewcWriter<'_, W> {
    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> Result<(), Error> {
        let namesize = name.len() + 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed, so archives are reproducible
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            namesize,
            0
        );
        self.ino += 1;
        let pad = |n: usize| (4 - n % 4) % 4;
        let ctx = || "write initramfs".to_string();
        self.out.write_all(header.as_bytes()).ctx(ctx)?;
        self.out.write_all(name.as_bytes()).ctx(ctx)?;
        self.out
            .write_all(&[0u8; 4][..1 + pad(header.len() + namesize)])
            .ctx(ctx)?;
        self.out.write_all(data).ctx(ctx)?;
        self.out.write_all(&[0u8; 3][..pad(data.len())]).ctx(ctx)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canon() {
        assert_eq!(guest_canon("/sbin/lvm"), "usr/sbin/lvm");
        assert_eq!(guest_canon("/lib64/ld.so"), "usr/lib64/ld.so");
        assert_eq!(guest_canon("/libfoo"), "libfoo");
        assert_eq!(guest_canon("/etc/lvm/lvm.conf"), "etc/lvm/lvm.conf");
        assert_eq!(guest_canon("lib"), "usr/lib");
    }

    #[test]
    fn newc_is_readable_by_cpio() {
        let mut t = Tree::with_skeleton();
        t.bytes("/etc/hello", b"hello\n".to_vec(), 0o644);
        t.symlink("/bin/sh", "/usr/bin/busybox");
        let mut buf = Vec::new();
        t.write_newc(&mut buf).unwrap();
        assert_eq!(buf.len() % 4, 0);
        if Path::new("/usr/bin/cpio").exists() {
            let mut child = Command::new("cpio")
                .args(["-t", "--quiet"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(&buf).unwrap();
            let out = child.wait_with_output().unwrap();
            let list = String::from_utf8_lossy(&out.stdout);
            assert!(list.contains("etc/hello"), "{list}");
            assert!(list.contains("usr/bin/sh"), "{list}");
            assert!(list.lines().any(|l| l == "bin"), "{list}");
        }
    }
}
