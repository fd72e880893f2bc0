//! Large frames through shared memory: a frame whose value holds a byte
//! run of [`SHARED_FROM`] bytes or more is written once into a sealed
//! `memfd`, and the socket carries only a `SHARED` frame (the tag and the
//! length) with the descriptor attached (`SCM_RIGHTS`).
//!
//! The receiver trusts nothing of it: the descriptor must be a memfd
//! sealed against writing, growing and shrinking (so the sender can
//! neither change the bytes while they are decoded nor cut the mapping
//! short under the reader), whose size is the announced length, within the
//! connection's frame limit. It is mapped private and read-only; a
//! [`Bytes`](crate::Bytes) decoded from it borrows the mapping instead of
//! copying, and becomes writable (copy on write, page by page) when it is
//! first borrowed mutably.
//!
//! A `Bytes` that arrived this way and is sent on unchanged, as the whole
//! value of a frame, goes out as the same memfd: nothing is copied.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, mprotect, munmap};
use serde::de::DeserializeOwned;

use super::codec;
use crate::error::{Error, Result};
use crate::lock::lock;

/// A [`Bytes`](crate::Bytes) this long or longer makes its frame go
/// through shared memory, where the connection allows it (a Unix socket).
/// Below it, the socket's own copy is faster (measured: a 1 MiB echo
/// takes 1.2 times as long through a memfd), and costs no descriptor;
/// above it, a memfd is as fast and halves each side's peak memory.
pub(crate) const SHARED_FROM: usize = 4 << 20;

/// How many descriptors may arrive ahead of the frames they belong to:
/// more breaks the connection, so a peer cannot fill the descriptor table.
pub(crate) const MAX_QUEUED: usize = 16;

/// How many mappings keep their memfd open, to send it on unchanged. The
/// rest close it once mapped: a program that keeps many received buffers
/// must not run out of descriptors for them.
const MAX_KEPT: usize = 64;

/// The seals a received memfd must carry.
const SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// Mappings with their memfd open, kept so that [`Mapping::holding`] can
/// tell whether a run lies in one: start address to end and mapping.
type Live = BTreeMap<usize, (usize, Weak<Mapping>)>;

static LIVE: Mutex<Live> = Mutex::new(BTreeMap::new());

/// How many mappings keep their memfd.
static KEPT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The mapping whose frame this thread decodes now.
    static DECODING: Cell<Option<NonNull<Mapping>>> = const { Cell::new(None) };
}

/// A received memfd, mapped.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// The memfd, while it may be sent on: one of at most [`MAX_KEPT`].
    fd: Option<OwnedFd>,
    /// Set once some part has been borrowed mutably: the mapping is
    /// writable then, and no longer what the memfd holds.
    written: AtomicBool,
}

// SAFETY: the mapping is plain memory that lives as long as the value; the
// only writes to it go through `Mapping::slice_mut`, whose callers own
// disjoint ranges.
unsafe impl Send for Mapping {}
// SAFETY: as for `Send`: shared access reads only.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `fd`, which a peer sent for a frame of `len` bytes, once it has
    /// checked that the memfd is sealed and that long.
    pub(crate) fn adopt(fd: OwnedFd, len: usize, max: usize) -> Result<Arc<Self>> {
        let Some(length) = NonZeroUsize::new(len).filter(|length| length.get() <= max) else {
            return Err(Error::codec(format_args!(
                "a shared-memory frame of {len} bytes is outside the limit of 1 to {max} bytes"
            )));
        };
        let seals = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GET_SEALS).map_err(|_| {
            Error::codec("a shared-memory frame came with a descriptor that is not a memfd")
        })?;
        if seals & SEALS != SEALS {
            return Err(Error::codec(
                "a shared-memory frame came with a memfd that is not sealed against writing and resizing",
            ));
        }
        let size = nix::sys::stat::fstat(&fd)
            .map_err(Error::from_errno)?
            .st_size;
        if usize::try_from(size).ok() != Some(len) {
            return Err(Error::codec(format_args!(
                "a shared-memory frame announces {len} bytes, and its memfd holds {size}"
            )));
        }
        // SAFETY: a fresh private mapping of `len` bytes of a file that is
        // that long and sealed against shrinking: every byte of it can be
        // read for as long as it is mapped. Read-only, so that populating
        // it reads the shared pages instead of copying them.
        let ptr = unsafe {
            mmap(
                None,
                length,
                ProtFlags::PROT_READ,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_POPULATE,
                fd.as_fd(),
                0,
            )
        }
        .map_err(Error::from_errno)?
        .cast::<u8>();
        let keep = KEPT
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_KEPT).then_some(n + 1)
            })
            .is_ok();
        let mapping = Arc::new(Self {
            ptr,
            len,
            fd: keep.then_some(fd),
            written: AtomicBool::new(false),
        });
        if keep {
            let start = ptr.as_ptr() as usize;
            lock(&LIVE).insert(start, (start + len, Arc::downgrade(&mapping)));
        }
        Ok(mapping)
    }

    /// The bytes, as the memfd holds them unless some were written.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for the life of `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// `len` bytes at `at`, to write.
    ///
    /// # Safety
    ///
    /// No other reference to these bytes may be alive while the slice is:
    /// the caller owns the range alone.
    #[expect(clippy::mut_from_ref, reason = "callers own disjoint ranges")]
    pub(crate) unsafe fn slice_mut(&self, at: usize, len: usize) -> &mut [u8] {
        assert!(at + len <= self.len, "a range inside the mapping");
        if !self.written.swap(true, Ordering::AcqRel) {
            // SAFETY: the range is the whole of our own mapping; private,
            // so writes go to pages of this process's own.
            let made = unsafe {
                mprotect(
                    self.ptr.cast(),
                    self.len,
                    ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                )
            };
            assert!(
                made.is_ok(),
                "a private mapping of our own can be made writable"
            );
        }
        // SAFETY: in bounds (asserted), writable (above), and the caller
        // owns the range.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(at), len) }
    }

    /// The offset of `bytes` in this mapping, if they lie in it.
    pub(crate) fn offset_of(&self, bytes: &[u8]) -> Option<usize> {
        let start = self.ptr.as_ptr() as usize;
        let at = (bytes.as_ptr() as usize).checked_sub(start)?;
        (at + bytes.len() <= self.len).then_some(at)
    }

    /// The live mapping that `run` lies in, if it still holds what its
    /// memfd does and the memfd is kept.
    pub(crate) fn holding(run: &[u8]) -> Option<Arc<Self>> {
        let addr = run.as_ptr() as usize;
        let live = lock(&LIVE);
        let (_, (end, mapping)) = live.range(..=addr).next_back()?;
        if addr + run.len() > *end {
            return None;
        }
        let mapping = mapping.upgrade()?;
        (!mapping.written.load(Ordering::Acquire)).then_some(mapping)
    }

    /// The memfd, to send it on.
    pub(crate) fn memfd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(AsFd::as_fd)
    }

    /// Runs `f`, which decodes a frame held in this mapping: a
    /// [`Bytes`](crate::Bytes) decoded from it borrows it.
    pub(crate) fn decoding<R>(self: &Arc<Self>, f: impl FnOnce() -> R) -> R {
        struct Reset(Option<NonNull<Mapping>>);
        impl Drop for Reset {
            fn drop(&mut self) {
                DECODING.set(self.0);
            }
        }
        let _reset = Reset(DECODING.replace(Some(NonNull::from(&**self))));
        f()
    }

    /// The mapping of the frame being decoded, if `bytes` lie in it and
    /// are long enough to be worth keeping it for.
    pub(crate) fn decoded(bytes: &[u8]) -> Option<(Arc<Self>, usize)> {
        if bytes.len() < SHARED_FROM {
            return None;
        }
        let mapping = DECODING.get()?;
        // SAFETY: `decoding` holds an `Arc` of it while the pointer is set.
        let mapping = unsafe { mapping.as_ref() };
        let at = mapping.offset_of(bytes)?;
        // SAFETY: as above: the `Arc` that `decoding` borrows is alive.
        let arc = unsafe {
            Arc::increment_strong_count(mapping);
            Arc::from_raw(mapping)
        };
        Some((arc, at))
    }
}

/// A frame's payload kept to be decoded later: a copy, or the mapping of
/// the memfd it arrived in.
#[derive(Debug)]
pub(crate) enum Payload {
    Copied(Vec<u8>),
    Mapped(Arc<Mapping>),
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Copied(bytes)
    }
}

impl Payload {
    /// Keeps `body`, the payload of a frame being read: the mapping it
    /// lies in, whole, or else a copy.
    pub(crate) fn of(body: &[u8]) -> Self {
        if let Some((mapping, 0)) = Mapping::decoded(body)
            && mapping.len == body.len()
        {
            return Self::Mapped(mapping);
        }
        Self::Copied(body.to_vec())
    }

    pub(crate) fn into_vec(self) -> Vec<u8> {
        match self {
            Self::Copied(bytes) => bytes,
            Self::Mapped(mapping) => codec::copy_of(mapping.bytes()),
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Self::Copied(bytes) => bytes,
            Self::Mapped(mapping) => mapping.bytes(),
        }
    }

    /// Decodes the payload: a [`Bytes`](crate::Bytes) in it borrows the
    /// mapping.
    pub(crate) fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        match self {
            Self::Copied(bytes) => codec::decode(bytes),
            Self::Mapped(mapping) => mapping.decoding(|| codec::decode(mapping.bytes())),
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.fd.is_some() {
            lock(&LIVE).remove(&(self.ptr.as_ptr() as usize));
            KEPT.fetch_sub(1, Ordering::Relaxed);
        }
        // SAFETY: our own mapping, which nothing borrows once it drops.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

/// A memfd being written, to be sealed and sent.
pub(crate) struct Memfd {
    file: File,
    len: usize,
}

impl Memfd {
    /// A new, empty memfd; `None` where the kernel gives none (the caller
    /// sends through the socket instead).
    pub(crate) fn create() -> Option<Self> {
        let fd = memfd_create(
            c"pproc",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .ok()?;
        Some(Self {
            file: File::from(fd),
            len: 0,
        })
    }

    /// Appends `bytes`.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file.write_all(bytes).map_err(Error::Io)?;
        self.len += bytes.len();
        Ok(())
    }

    /// Seals what was written: the memfd and its length.
    pub(crate) fn seal(self) -> Result<(OwnedFd, usize)> {
        let fd = OwnedFd::from(self.file);
        let seals = nix::fcntl::SealFlag::from_bits_retain(SEALS | libc::F_SEAL_SEAL);
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_ADD_SEALS(seals))
            .map_err(Error::from_errno)?;
        Ok((fd, self.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(bytes: &[u8]) -> OwnedFd {
        let mut memfd = Memfd::create().unwrap();
        memfd.write(bytes).unwrap();
        memfd.seal().unwrap().0
    }

    #[test]
    fn a_sealed_memfd_maps_and_reads_back() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mapping = Mapping::adopt(sealed(&data), data.len(), 1 << 20).unwrap();
        assert_eq!(mapping.bytes(), &data[..]);
        assert_eq!(mapping.offset_of(&mapping.bytes()[10..20]), Some(10));
        assert_eq!(mapping.offset_of(&data[..]), None);
    }

    #[test]
    fn a_memfd_that_lies_is_refused() {
        // The wrong length either way, a limit, no seals, not a memfd.
        assert!(Mapping::adopt(sealed(b"abc"), 4, 100).is_err());
        assert!(Mapping::adopt(sealed(b"abc"), 2, 100).is_err());
        assert!(Mapping::adopt(sealed(b"abc"), 3, 2).is_err());
        let mut open = Memfd::create().unwrap();
        open.write(b"abc").unwrap();
        let err = Mapping::adopt(OwnedFd::from(open.file), 3, 100).unwrap_err();
        assert!(err.to_string().contains("not sealed"), "{err}");
        let file = File::open("/proc/self/exe").unwrap();
        let err = Mapping::adopt(file.into(), 3, 100).unwrap_err();
        assert!(err.to_string().contains("not a memfd"), "{err}");
    }

    #[test]
    fn a_written_mapping_is_no_longer_sent_on() {
        let data = vec![5u8; 8192];
        let mapping = Mapping::adopt(sealed(&data), data.len(), 1 << 20).unwrap();
        let run = &mapping.bytes()[100..200];
        assert!(Mapping::holding(run).is_some_and(|m| Arc::ptr_eq(&m, &mapping)));
        // SAFETY: nothing else borrows this range.
        unsafe { mapping.slice_mut(0, 10) }.fill(9);
        assert_eq!(&mapping.bytes()[..11], &[9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 5]);
        assert!(Mapping::holding(&mapping.bytes()[100..200]).is_none());
    }
}
