//! What a test asks for: VMs, their disks and files, and testbed options.

use std::time::Duration;

use crate::error::Error;
use crate::vm::DEFAULT_BOOT_TIMEOUT;

/// A virtio disk: a sparse image file in the testbed directory, identified in the guest by its
/// serial (`/dev/disk/by-id/virtio-<serial>`, `/sys/block/vdX/serial`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// 1-20 characters of `[A-Za-z0-9._-]` (virtio-blk carries at most 20 bytes).
    pub serial: String,
    /// A multiple of 512.
    pub size_bytes: u64,
}

impl DiskSpec {
    pub fn new(serial: impl Into<String>, size_bytes: u64) -> Self {
        DiskSpec {
            serial: serial.into(),
            size_bytes,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// Hostname of the VM; lowercase letters, digits and '-'.
    pub name: String,
    pub memory_mib: u32,
    pub cpus: u32,
    pub disks: Vec<DiskSpec>,
    /// Files written into the guest after every boot (its root filesystem lives in RAM).
    pub files: Vec<(String, Vec<u8>)>,
}

impl VmSpec {
    /// 512 MiB, one CPU, no disks.
    pub fn new(name: impl Into<String>) -> Self {
        VmSpec {
            name: name.into(),
            memory_mib: 512,
            cpus: 1,
            disks: vec![],
            files: vec![],
        }
    }

    pub fn disk(mut self, serial: impl Into<String>, size_bytes: u64) -> Self {
        self.disks.push(DiskSpec::new(serial, size_bytes));
        self
    }

    pub fn file(mut self, guest_path: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        self.files.push((guest_path.into(), data.into()));
        self
    }

    pub fn memory_mib(mut self, m: u32) -> Self {
        self.memory_mib = m;
        self
    }

    pub fn cpus(mut self, c: u32) -> Self {
        self.cpus = c;
        self
    }
}

#[derive(Debug, Clone)]
pub struct TestbedOptions {
    /// Per VM, from QEMU start until the guest daemon answers.
    pub boot_timeout: Duration,
}

impl Default for TestbedOptions {
    fn default() -> Self {
        TestbedOptions {
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
        }
    }
}

pub(crate) fn validate_disk(vm: &str, d: &DiskSpec) -> Result<(), Error> {
    let ok_serial = !d.serial.is_empty()
        && d.serial.len() <= 20
        && d.serial
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !ok_serial {
        return Err(Error::InvalidSpec(format!(
            "VM {vm}: disk serial {:?} must be 1-20 characters of [A-Za-z0-9._-]",
            d.serial
        )));
    }
    if d.size_bytes == 0 || !d.size_bytes.is_multiple_of(512) {
        return Err(Error::InvalidSpec(format!(
            "VM {vm}: disk {} size {} must be a positive multiple of 512",
            d.serial, d.size_bytes
        )));
    }
    Ok(())
}

pub(crate) fn validate(specs: &[VmSpec]) -> Result<(), Error> {
    if specs.is_empty() {
        return Err(Error::InvalidSpec("no VMs".into()));
    }
    if specs.len() > 200 {
        return Err(Error::InvalidSpec("at most 200 VMs".into()));
    }
    let mut names = std::collections::HashSet::new();
    for s in specs {
        let ok_name = !s.name.is_empty()
            && s.name.len() <= 63
            && !s.name.starts_with('-')
            && s.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok_name {
            return Err(Error::InvalidSpec(format!(
                "VM name {:?} must be a hostname: 1-63 of [a-z0-9-]",
                s.name
            )));
        }
        if !names.insert(&s.name) {
            return Err(Error::InvalidSpec(format!("duplicate VM name {}", s.name)));
        }
        if s.memory_mib < 128 || s.cpus == 0 {
            return Err(Error::InvalidSpec(format!(
                "VM {}: needs at least 128 MiB and one CPU",
                s.name
            )));
        }
        let mut serials = std::collections::HashSet::new();
        for d in &s.disks {
            validate_disk(&s.name, d)?;
            if !serials.insert(&d.serial) {
                return Err(Error::InvalidSpec(format!(
                    "VM {}: duplicate disk serial {}",
                    s.name, d.serial
                )));
            }
        }
        for (p, _) in &s.files {
            if !p.starts_with('/') {
                return Err(Error::InvalidSpec(format!(
                    "VM {}: file path {p} must be absolute",
                    s.name
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_validation() {
        assert!(validate(&[VmSpec::new("n1").disk("SER1", 1 << 20)]).is_ok());
        assert!(validate(&[VmSpec::new("N1")]).is_err());
        assert!(validate(&[VmSpec::new("n1"), VmSpec::new("n1")]).is_err());
        assert!(validate(&[VmSpec::new("n1").disk("a,b", 1 << 20)]).is_err());
        assert!(validate(&[VmSpec::new("n1").disk("x".repeat(21), 1 << 20)]).is_err());
        assert!(validate(&[VmSpec::new("n1").disk("a", 1000)]).is_err());
        assert!(validate(&[VmSpec::new("n1").disk("a", 1 << 20).disk("a", 1 << 20)]).is_err());
        assert!(validate(&[VmSpec::new("n1").file("rel/path", "x")]).is_err());
    }
}
