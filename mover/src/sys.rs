//! The few Linux calls std does not wrap: block device size and zeroing, hole punching and
//! page cache advice. Each is a single syscall on a descriptor the caller keeps open.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

// From <linux/fs.h>: _IOR(0x12, 114, size_t) and _IO(0x12, 127). The encoding is the generic
// one (x86, arm, aarch64, riscv, s390); the crate builds only for those.
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64",
    target_arch = "s390x"
)))]
compile_error!("the block ioctl numbers in sys.rs use the generic Linux ioctl encoding");
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
const BLKZEROOUT: libc::c_ulong = 0x127f;

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The size of the block device open at `fd`.
pub(crate) fn block_device_size(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at `size`.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) })?;
    Ok(size)
}

/// Makes `len` bytes at `offset` of the block device read as zeros.
pub(crate) fn block_zero_out(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [offset, len];
    // SAFETY: BLKZEROOUT reads two u64 (start, length) through the pointer, which points at
    // `range`.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), BLKZEROOUT as _, range.as_ptr()) })
}

/// Deallocates `len` bytes at `offset` of a regular file, keeping its size: they read as zeros.
pub(crate) fn punch_hole(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    let (offset, len) = to_off(offset, len)?;
    // SAFETY: fallocate takes plain integers.
    check(unsafe {
        libc::fallocate(
            fd.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    })
}

#[derive(Clone, Copy)]
pub(crate) enum Advice {
    /// Read ahead more: the source is read once, front to back.
    Sequential,
    /// Drop the cached pages, so the next read comes from the device.
    DontNeed,
}

pub(crate) fn fadvise(fd: BorrowedFd<'_>, advice: Advice) -> io::Result<()> {
    let advice = match advice {
        Advice::Sequential => libc::POSIX_FADV_SEQUENTIAL,
        Advice::DontNeed => libc::POSIX_FADV_DONTNEED,
    };
    // SAFETY: posix_fadvise takes plain integers; offset 0 and length 0 mean the whole file.
    let ret = unsafe { libc::posix_fadvise(fd.as_raw_fd(), 0, 0, advice) };
    // posix_fadvise returns the error number instead of setting errno.
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    Ok(())
}

fn to_off(offset: u64, len: u64) -> io::Result<(libc::off_t, libc::off_t)> {
    let conv = |v: u64| {
        libc::off_t::try_from(v)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset beyond off_t"))
    };
    Ok((conv(offset)?, conv(len)?))
}
