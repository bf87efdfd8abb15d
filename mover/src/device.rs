//! The device a copy reads or writes: a block device (an LV) or, in tests, a regular file.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

use crate::sys;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Block,
    File,
}

pub(crate) struct Device {
    file: File,
    kind: Kind,
    size: u64,
    path: PathBuf,
}

impl Device {
    /// Opens the source read-only: the mover never writes where it reads.
    pub fn open_source(path: &Path) -> io::Result<Device> {
        let device = Device::open(path, OpenOptions::new().read(true))?;
        // Only a hint: a copy works without it.
        let _ = sys::fadvise(device.file.as_fd(), sys::Advice::Sequential);
        Ok(device)
    }

    /// Opens an existing target read-write; it is never created or truncated here (a block
    /// device is made by LVM, a test file by the test).
    pub fn open_target(path: &Path) -> io::Result<Device> {
        Device::open(path, OpenOptions::new().read(true).write(true))
    }

    fn open(path: &Path, options: &OpenOptions) -> io::Result<Device> {
        let file = options.open(path)?;
        let meta = file.metadata()?;
        let (kind, size) = if meta.file_type().is_block_device() {
            (Kind::Block, sys::block_device_size(file.as_fd())?)
        } else if meta.is_file() {
            (Kind::File, meta.len())
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "neither a block device nor a regular file",
            ));
        };
        Ok(Device {
            file,
            kind,
            size,
            path: path.to_path_buf(),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    pub fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Drops the device's cached pages (after a sync), so the next read comes from the
    /// device itself and not from memory.
    pub fn drop_cache(&self) -> io::Result<()> {
        sys::fadvise(self.file.as_fd(), sys::Advice::DontNeed)
    }
}

/// How a target's zero chunks are made to read as zeros, the cheapest way the device allows;
/// falls back for good once a way turns out unsupported.
pub(crate) struct Zeroer {
    method: ZeroMethod,
    zeros: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ZeroMethod {
    BlockZeroOut,
    PunchHole,
    WriteZeros,
}

fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::ENOTTY | libc::EINVAL | libc::ENOSYS)
    )
}

impl Zeroer {
    pub fn new(kind: Kind) -> Self {
        Zeroer {
            method: match kind {
                Kind::Block => ZeroMethod::BlockZeroOut,
                Kind::File => ZeroMethod::PunchHole,
            },
            zeros: Vec::new(),
        }
    }

    pub fn zero(&mut self, device: &Device, offset: u64, len: u64) -> io::Result<()> {
        loop {
            let result = match self.method {
                ZeroMethod::BlockZeroOut => sys::block_zero_out(device.file.as_fd(), offset, len),
                ZeroMethod::PunchHole => sys::punch_hole(device.file.as_fd(), offset, len),
                ZeroMethod::WriteZeros => return self.write_zeros(device, offset, len),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if unsupported(&e) => {
                    tracing::debug!(device = %device.path.display(), method = ?self.method, error = %e,
                        "zeroing method unsupported, falling back");
                    self.method = match self.method {
                        ZeroMethod::BlockZeroOut if device.kind == Kind::File => {
                            ZeroMethod::PunchHole
                        }
                        _ => ZeroMethod::WriteZeros,
                    };
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn write_zeros(&mut self, device: &Device, offset: u64, len: u64) -> io::Result<()> {
        const BLOCK: u64 = 1024 * 1024;
        if self.zeros.is_empty() {
            self.zeros = vec![0; BLOCK as usize];
        }
        let mut done = 0;
        while done < len {
            let n = (len - done).min(BLOCK);
            device.write_at(&self.zeros[..n as usize], offset + done)?;
            done += n;
        }
        Ok(())
    }

    #[cfg(test)]
    fn force_write_zeros(&mut self) {
        self.method = ZeroMethod::WriteZeros;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroing_a_file_by_hole_or_by_writing() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t");
        std::fs::write(&path, vec![0xaau8; 3 * 65536])?;
        let dev = Device::open_target(&path)?;
        assert_eq!((dev.kind(), dev.size()), (Kind::File, 3 * 65536));
        let mut punch = Zeroer::new(Kind::File);
        punch.zero(&dev, 0, 65536)?;
        let mut write = Zeroer::new(Kind::File);
        write.force_write_zeros();
        write.zero(&dev, 2 * 65536, 65536)?;
        let data = std::fs::read(&path)?;
        assert_eq!(data.len(), 3 * 65536);
        assert!(data[..65536].iter().all(|&b| b == 0));
        assert!(data[65536..2 * 65536].iter().all(|&b| b == 0xaa));
        assert!(data[2 * 65536..].iter().all(|&b| b == 0));
        Ok(())
    }

    #[test]
    fn the_source_is_read_only_and_odd_files_are_refused() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("s");
        std::fs::write(&path, b"data")?;
        let src = Device::open_source(&path)?;
        assert!(src.write_at(b"x", 0).is_err());
        assert!(Device::open_source(dir.path()).is_err());
        Ok(())
    }
}
