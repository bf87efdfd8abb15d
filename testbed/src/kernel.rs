//! The guest kernel: Debian's current `linux-image-*-amd64` package, unpacked once into the
//! cache with just the modules the testbed needs (plus their dependencies) and an uncompressed
//! `vmlinux` for fast boots under TCG.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::error::{Error, IoContext};
use crate::guest_files as gf;
use crate::util::{hash_strings, run};

pub(crate) struct Kernel {
    pub version: String,
    /// `vmlinux` (uncompressed, PVH) when it could be extracted, else `vmlinuz`.
    pub image: PathBuf,
    /// Holds `lib/modules/<version>/` with the module subset and its depmod output.
    pub root: PathBuf,
    /// Module names to load at boot, in order.
    pub load: Vec<String>,
    /// The package the kernel came from (cache key input).
    pub package: String,
}

pub(crate) fn kernel(cache: &Path) -> Result<Kernel, Error> {
    let kdir = cache.join("kernel");
    std::fs::create_dir_all(&kdir).ctx(|| format!("create {}", kdir.display()))?;
    // The module selection is part of the prepared kernel, so it keys the marker.
    let modules_key = hash_strings(gf::MODULES.iter().map(|(m, _)| *m).chain(["kernel-v1"]));
    let marker = kdir.join(format!("current-{modules_key}"));
    // Once a kernel is cached it is used as is: no apt round trip on later runs. Delete the
    // cache directory to pick up a newer Debian kernel.
    if let Ok(pkg) = std::fs::read_to_string(&marker) {
        let pkg = pkg.trim().to_string();
        if let Ok(k) = load_kernel(&kdir.join(format!("{pkg}-{modules_key}")), &pkg) {
            return Ok(k);
        }
    }
    let pkg = kernel_package()?;
    let t0 = Instant::now();
    let dl = kdir.join("download");
    std::fs::create_dir_all(&dl).ctx(|| format!("create {}", dl.display()))?;
    let deb = match find_deb(&dl, &pkg)? {
        Some(d) => d,
        None => {
            run(
                Command::new("apt-get")
                    .args(["download", "-q", &pkg])
                    .current_dir(&dl),
                "apt",
            )?;
            find_deb(&dl, &pkg)?.ok_or_else(|| Error::HostCommand {
                cmd: format!("apt-get download {pkg}"),
                detail: "no .deb appeared".into(),
            })?
        }
    };
    let staging = kdir.join(format!("{pkg}.tmp"));
    let _ = std::fs::remove_dir_all(&staging);
    let full = staging.join("full");
    std::fs::create_dir_all(&full).ctx(|| format!("create {}", full.display()))?;
    run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&full),
        "dpkg",
    )?;

    let mods = full.join("lib/modules");
    let version = std::fs::read_dir(&mods)
        .ctx(|| format!("read {}", mods.display()))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .next()
        .ok_or_else(|| Error::HostCommand {
            cmd: format!("dpkg-deb -x {}", deb.display()),
            detail: "no lib/modules/<version> in the kernel package".into(),
        })?;
    run(
        Command::new("depmod").arg("-b").arg(&full).arg(&version),
        "kmod",
    )?;
    let src_mods = mods.join(&version);
    let dep_text = std::fs::read_to_string(src_mods.join("modules.dep"))
        .ctx(|| "read modules.dep".to_string())?;
    let builtin = std::fs::read_to_string(src_mods.join("modules.builtin")).unwrap_or_default();
    let deps = parse_modules_dep(&dep_text);

    // Copy each wanted module with its dependency closure.
    let root = staging.join("root");
    let dst_mods = root.join("lib/modules").join(&version);
    let mut load = Vec::new();
    let mut copied = std::collections::BTreeSet::new();
    for (name, required) in gf::MODULES {
        let Some((path, _)) = deps.get(*name) else {
            let is_builtin = builtin
                .lines()
                .any(|l| module_name(l).as_deref() == Some(*name));
            if *required && !is_builtin {
                return Err(Error::HostCommand {
                    cmd: format!("select kernel modules from {pkg}"),
                    detail: format!("module {name} is neither a module nor built in"),
                });
            }
            continue;
        };
        load.push(name.to_string());
        let mut stack = vec![path.clone()];
        while let Some(rel) = stack.pop() {
            if !copied.insert(rel.clone()) {
                continue;
            }
            let dst = dst_mods.join(&rel);
            if let Some(p) = dst.parent() {
                std::fs::create_dir_all(p).ctx(|| format!("create {}", p.display()))?;
            }
            std::fs::copy(src_mods.join(&rel), &dst).ctx(|| format!("copy module {rel}"))?;
            if let Some(n) = module_name(&rel) {
                if let Some((_, d)) = deps.get(&n) {
                    stack.extend(d.iter().cloned());
                }
            }
        }
    }
    for f in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        let src = src_mods.join(f);
        if src.exists() {
            std::fs::copy(&src, dst_mods.join(f)).ctx(|| format!("copy {f}"))?;
        }
    }
    run(
        Command::new("depmod").arg("-b").arg(&root).arg(&version),
        "kmod",
    )?;
    let vmlinuz_src = full.join("boot").join(format!("vmlinuz-{version}"));
    std::fs::copy(&vmlinuz_src, staging.join("vmlinuz"))
        .ctx(|| format!("copy {}", vmlinuz_src.display()))?;
    // Under TCG, decompressing the xz bzImage takes seconds of every boot; an uncompressed ELF
    // with a PVH entry note boots directly. Fall back to the bzImage when extraction fails.
    match extract_vmlinux(&staging.join("vmlinuz"), &staging.join("vmlinux")) {
        Ok(()) => {}
        Err(e) => tracing::warn!("booting the compressed kernel: {e}"),
    }
    std::fs::write(staging.join("version"), &version).ctx(|| "write kernel version".into())?;
    std::fs::write(staging.join("modules.load"), load.join("\n") + "\n")
        .ctx(|| "write module list".into())?;
    std::fs::remove_dir_all(&full).ctx(|| format!("remove {}", full.display()))?;
    let final_dir = kdir.join(format!("{pkg}-{modules_key}"));
    let _ = std::fs::remove_dir_all(&final_dir);
    std::fs::rename(&staging, &final_dir).ctx(|| format!("rename to {}", final_dir.display()))?;
    std::fs::write(&marker, &pkg).ctx(|| format!("write {}", marker.display()))?;
    // 70 MB that a re-download replaces in seconds.
    let _ = std::fs::remove_file(&deb);
    tracing::info!(%pkg, %version, elapsed = ?t0.elapsed(), "kernel prepared");
    load_kernel(&final_dir, &pkg)
}

fn load_kernel(dir: &Path, pkg: &str) -> Result<Kernel, Error> {
    let version = std::fs::read_to_string(dir.join("version"))
        .ctx(|| format!("read {}/version", dir.display()))?;
    let load = std::fs::read_to_string(dir.join("modules.load"))
        .ctx(|| format!("read {}/modules.load", dir.display()))?;
    let vmlinux = dir.join("vmlinux");
    let vmlinuz = if vmlinux.exists() {
        vmlinux
    } else {
        dir.join("vmlinuz")
    };
    if !vmlinuz.exists() {
        return Err(Error::io(
            format!("{} missing", vmlinuz.display()),
            std::io::ErrorKind::NotFound.into(),
        ));
    }
    Ok(Kernel {
        version: version.trim().to_string(),
        image: vmlinuz,
        root: dir.join("root"),
        load: load.lines().map(str::to_string).collect(),
        package: pkg.to_string(),
    })
}

/// Decompresses the xz payload of a bzImage into an ELF `vmlinux` and checks that it has the
/// PVH entry note QEMU needs to boot an uncompressed kernel.
fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<(), Error> {
    let data = std::fs::read(bzimage).ctx(|| format!("read {}", bzimage.display()))?;
    let magic = b"\xfd7zXZ\x00";
    let start = data
        .windows(magic.len())
        .position(|w| w == magic)
        .ok_or_else(|| Error::HostCommand {
            cmd: "extract vmlinux".into(),
            detail: "no xz payload in the kernel image".into(),
        })?;
    let payload = out.with_extension("xz");
    std::fs::write(&payload, &data[start..]).ctx(|| format!("write {}", payload.display()))?;
    let stdin = File::open(&payload).ctx(|| format!("open {}", payload.display()))?;
    let stdout = File::create(out).ctx(|| format!("create {}", out.display()))?;
    // --single-stream: the payload is followed by other bzImage data.
    let res = run(
        Command::new("xz")
            .args(["-dc", "--single-stream"])
            .stdin(stdin)
            .stdout(stdout),
        "xz-utils",
    );
    let _ = std::fs::remove_file(&payload);
    let checked = res.and_then(|_| {
        let elf = std::fs::read(out).ctx(|| format!("read {}", out.display()))?;
        if has_pvh_note(&elf) {
            Ok(())
        } else {
            Err(Error::HostCommand {
                cmd: "extract vmlinux".into(),
                detail: "the kernel has no PVH entry note".into(),
            })
        }
    });
    if checked.is_err() {
        let _ = std::fs::remove_file(out);
    }
    checked
}

/// Whether a 64-bit little-endian ELF has a `Xen` note of type 18 (XEN_ELFNOTE_PHYS32_ENTRY).
fn has_pvh_note(elf: &[u8]) -> bool {
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a) as usize
        })
    };
    if elf.get(0..5) != Some(b"\x7fELF\x02") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        // PT_NOTE = 4
        if u32_at(ph) != Some(4) {
            continue;
        }
        let (Some(off), Some(size)) = (u64_at(ph + 8), u64_at(ph + 32)) else {
            continue;
        };
        let mut o = off;
        while o + 12 <= off + size {
            let (Some(namesz), Some(descsz), Some(typ)) = (u32_at(o), u32_at(o + 4), u32_at(o + 8))
            else {
                break;
            };
            let name = elf.get(o + 12..o + 12 + namesz).unwrap_or_default();
            if typ == 18 && name.starts_with(b"Xen") {
                return true;
            }
            o += 12 + namesz.div_ceil(4) * 4 + descsz.div_ceil(4) * 4;
        }
    }
    false
}

/// The versioned image package `linux-image-amd64` depends on, e.g. `linux-image-6.1.0-56-amd64`.
fn kernel_package() -> Result<String, Error> {
    let out = run(
        Command::new("apt-cache").args(["depends", "linux-image-amd64"]),
        "apt",
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .ok_or_else(|| Error::HostCommand {
            cmd: "apt-cache depends linux-image-amd64".into(),
            detail: format!("no linux-image dependency found (run apt-get update?):\n{text}"),
        })
}

fn find_deb(dir: &Path, pkg: &str) -> Result<Option<PathBuf>, Error> {
    let prefix = format!("{pkg}_");
    Ok(std::fs::read_dir(dir)
        .ctx(|| format!("read {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        }))
}

/// `kernel/fs/xfs/xfs.ko` -> `xfs`; `dm-thin-pool.ko` -> `dm_thin_pool`.
fn module_name(path: &str) -> Option<String> {
    let file = path.trim().rsplit('/').next()?;
    let stem = file.split(".ko").next()?;
    if stem.is_empty() || !file.contains(".ko") {
        return None;
    }
    Some(stem.replace('-', "_"))
}

/// modules.dep: `path: dep dep ...` -> name -> (path, deps).
fn parse_modules_dep(text: &str) -> std::collections::HashMap<String, (String, Vec<String>)> {
    text.lines()
        .filter_map(|l| {
            let (path, deps) = l.split_once(':')?;
            let name = module_name(path)?;
            Some((
                name,
                (
                    path.trim().to_string(),
                    deps.split_whitespace().map(str::to_string).collect(),
                ),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names() {
        assert_eq!(module_name("kernel/fs/xfs/xfs.ko").as_deref(), Some("xfs"));
        assert_eq!(
            module_name("kernel/drivers/md/dm-thin-pool.ko").as_deref(),
            Some("dm_thin_pool")
        );
        assert_eq!(module_name("kernel/x/y.ko.xz").as_deref(), Some("y"));
        assert_eq!(module_name("modules.order"), None);
    }

    #[test]
    fn modules_dep() {
        let d = parse_modules_dep(
            "kernel/drivers/md/dm-thin-pool.ko: kernel/drivers/md/persistent-data/dm-persistent-data.ko kernel/drivers/md/dm-mod.ko\nkernel/drivers/md/dm-mod.ko:\n",
        );
        assert_eq!(d["dm_thin_pool"].1.len(), 2);
        assert_eq!(d["dm_mod"].0, "kernel/drivers/md/dm-mod.ko");
    }

    #[test]
    fn pvh_note_needs_elf() {
        assert!(!has_pvh_note(b"not an elf"));
        assert!(!has_pvh_note(b"\x7fELF\x02\x01\x01"));
    }
}
