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
//!
//! A parent writes what it sends its own children into slabs instead: a
//! pool of memfds it keeps mapped and reuses, so that a large send is one
//! copy into pages that are already there, not into fresh ones (a fresh
//! page costs a fault and zeroing, which together take three times as long
//! as the copy). A slab is sealed against resizing and against any new
//! writable mapping (`F_SEAL_FUTURE_WRITE`): the child can map it only to
//! read, and only the parent, which the child trusts as it trusts its
//! arguments, can write it. The parent lends a slab with each `SLAB` frame
//! and writes it again only once the child has said, with a `RELEASE`
//! frame, that it dropped what it mapped. A child that sends a buffer it
//! was lent back unchanged sends a `SLAB_BACK` frame that names the slab,
//! which the parent checks against what it lent. The other way, from a
//! child to its parent (or between processes that do not trust each
//! other), frames go through sealed memfds: a parent trusts no child with
//! its memory.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
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

/// The seals of a slab: its size is fixed, and no mapping made after
/// them can write it (the lender's own, made before, still can).
const SLAB_SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_FUTURE_WRITE;

/// Slab sizes are multiples of this.
const SLAB_GRAIN: usize = 2 << 20;

/// The most bytes of slabs a process keeps, lent and free: past it, a
/// large send goes through a sealed memfd of its own. Free slabs are the
/// cache that makes a send one copy; this bounds what that cache holds.
pub(crate) const POOL_BYTES: usize = 256 << 20;

/// The mappings that can be passed on as they are (a kept memfd, a lent
/// slab, a view of one of ours), so that [`Mapping::holding`] can tell
/// whether a run lies in one: start address (and, as views of one slab
/// start alike, the mapping's own) to end and mapping.
type Live = BTreeMap<(usize, usize), (usize, Weak<Mapping>)>;

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
    kind: Kind,
}

/// What a [`Mapping`] maps.
#[derive(Debug)]
enum Kind {
    /// A sealed memfd a peer sent, mapped private.
    Sealed,
    /// Slab `slab` of the parent, lent with a frame and mapped private;
    /// `releases` tells the parent once it is unmapped.
    Borrowed { slab: u32, releases: Arc<Releases> },
    /// The start of one of this process's own slabs, which a child sent
    /// back: shared with that child and with other views, so never
    /// written in place.
    Own(Arc<Slab>),
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
            kind: Kind::Sealed,
        });
        if keep {
            mapping.go_live();
        }
        Ok(mapping)
    }

    /// Maps `fd`, slab `slab` of the parent, which lent it with a frame of
    /// `len` bytes at its start, once it has checked that it is a memfd
    /// that long at least, which only its parent can write. Mapped
    /// private and read-only, and not populated: a child that only passes
    /// the buffer on never touches its pages.
    pub(crate) fn borrow(
        fd: &OwnedFd,
        slab: u32,
        len: usize,
        max: usize,
        releases: &Arc<Releases>,
    ) -> Result<Arc<Self>> {
        let Some(length) = NonZeroUsize::new(len).filter(|length| length.get() <= max) else {
            return Err(Error::codec(format_args!(
                "a lent slab's frame of {len} bytes is outside the limit of 1 to {max} bytes"
            )));
        };
        let seals = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GET_SEALS)
            .map_err(|_| Error::codec("a lent slab came with a descriptor that is not a memfd"))?;
        if seals & SLAB_SEALS != SLAB_SEALS {
            return Err(Error::codec(
                "a lent slab is not sealed against resizing and new writers",
            ));
        }
        let size = nix::sys::stat::fstat(fd)
            .map_err(Error::from_errno)?
            .st_size;
        if usize::try_from(size).map_or(true, |size| size < len) {
            return Err(Error::codec(format_args!(
                "a lent slab's frame is {len} bytes, and the slab holds {size}"
            )));
        }
        // SAFETY: a fresh private mapping of the first `len` bytes of a
        // file at least that long and sealed against shrinking.
        let ptr = unsafe {
            mmap(
                None,
                length,
                ProtFlags::PROT_READ,
                MapFlags::MAP_PRIVATE,
                fd.as_fd(),
                0,
            )
        }
        .map_err(Error::from_errno)?
        .cast::<u8>();
        let mapping = Arc::new(Self {
            ptr,
            len,
            fd: None,
            written: AtomicBool::new(false),
            kind: Kind::Borrowed {
                slab,
                releases: Arc::clone(releases),
            },
        });
        mapping.go_live();
        Ok(mapping)
    }

    /// A view of the first `len` bytes of `slab`, one of ours.
    fn own(slab: Arc<Slab>, len: usize) -> Arc<Self> {
        debug_assert!(len <= slab.size);
        let mapping = Arc::new(Self {
            ptr: slab.ptr,
            len,
            fd: None,
            written: AtomicBool::new(false),
            kind: Kind::Own(slab),
        });
        mapping.go_live();
        mapping
    }

    /// Registers this mapping, so that [`holding`](Self::holding) finds it.
    fn go_live(self: &Arc<Self>) {
        let start = self.ptr.as_ptr() as usize;
        let key = (start, Arc::as_ptr(self) as usize);
        lock(&LIVE).insert(key, (start + self.len, Arc::downgrade(self)));
    }

    /// Whether [`slice_mut`](Self::slice_mut) may write this mapping: not
    /// where it is one of our own slabs, which others read.
    pub(crate) fn writable(&self) -> bool {
        !matches!(self.kind, Kind::Own(_))
    }

    /// The slab of ours this mapping is a view of.
    pub(crate) fn own_slab(&self) -> Option<&Arc<Slab>> {
        match &self.kind {
            Kind::Own(slab) => Some(slab),
            _ => None,
        }
    }

    /// The slab this mapping is, and what it tells the lender with, where
    /// it is one a parent lent.
    pub(crate) fn lent_by(&self) -> Option<(u32, &Arc<Releases>)> {
        match &self.kind {
            Kind::Borrowed { slab, releases } => Some((*slab, releases)),
            _ => None,
        }
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
        assert!(self.writable(), "a mapping of our own that others read");
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

    /// The live mapping that `run` lies in, if it still holds what was
    /// sent in it and can be passed on.
    pub(crate) fn holding(run: &[u8]) -> Option<Arc<Self>> {
        let addr = run.as_ptr() as usize;
        let live = lock(&LIVE);
        let (_, (end, mapping)) = live.range(..=(addr, usize::MAX)).next_back()?;
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
            KEPT.fetch_sub(1, Ordering::Relaxed);
        }
        let key = (
            self.ptr.as_ptr() as usize,
            std::ptr::from_ref(self) as usize,
        );
        if self.fd.is_some() || !matches!(self.kind, Kind::Sealed) {
            lock(&LIVE).remove(&key);
        }
        if matches!(self.kind, Kind::Own(_)) {
            // The slab stays mapped; dropping `kind` lets it go.
            return;
        }
        // SAFETY: our own mapping, which nothing borrows once it drops.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
        if let Kind::Borrowed { slab, releases } = &self.kind {
            // Unmapped first: the parent may write the slab once told.
            releases.push(*slab);
        }
    }
}

/// The slabs a child has unmapped and not yet told its parent of.
#[derive(Debug, Default)]
pub(crate) struct Releases {
    slabs: Mutex<Vec<u32>>,
    any: AtomicBool,
}

impl Releases {
    fn push(&self, slab: u32) {
        lock(&self.slabs).push(slab);
        self.any.store(true, Ordering::Release);
    }

    /// Whether some wait to be told.
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// The slabs to tell of now.
    pub(crate) fn take(&self) -> Vec<u32> {
        let mut slabs = lock(&self.slabs);
        self.any.store(false, Ordering::Release);
        std::mem::take(&mut *slabs)
    }
}

/// One of this process's slabs: a memfd mapped shared and writable here,
/// lent to children to read.
#[derive(Debug)]
pub(crate) struct Slab {
    id: u32,
    ptr: NonNull<u8>,
    size: usize,
    fd: OwnedFd,
    /// How long the frame it holds now is.
    len: AtomicUsize,
}

// SAFETY: plain shared memory; it is written only by the holder of a
// [`SlabWriter`], who alone holds the slab then.
unsafe impl Send for Slab {}
// SAFETY: as for `Send`.
unsafe impl Sync for Slab {}

impl Drop for Slab {
    fn drop(&mut self) {
        // SAFETY: our own mapping; nothing holds the slab any more.
        let _ = unsafe { munmap(self.ptr.cast(), self.size) };
    }
}

/// This process's slabs. A slab that only the pool holds is free; any
/// other holder (a writer, a lend, a view) keeps it from being written.
#[derive(Debug)]
struct Pool {
    /// The process the slabs belong to: a forked child starts a pool of
    /// its own, for its parent's slabs are its parent's to write.
    pid: u32,
    slabs: Vec<Arc<Slab>>,
    bytes: usize,
    next: u32,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    pid: 0,
    slabs: Vec::new(),
    bytes: 0,
    next: 0,
});

impl Slab {
    /// A free slab to write a frame of `len` bytes into; `None` where the
    /// pool is full of lent ones, or the kernel gives no memfd.
    pub(crate) fn take(len: usize) -> Option<SlabWriter> {
        let size = len.checked_next_multiple_of(SLAB_GRAIN)?;
        let mut pool = lock(&POOL);
        let pool = &mut *pool;
        if pool.pid != std::process::id() {
            pool.pid = std::process::id();
            pool.slabs.clear();
            pool.bytes = 0;
        }
        let free = |slab: &Arc<Slab>| Arc::strong_count(slab) == 1;
        let fits = pool
            .slabs
            .iter()
            .filter(|slab| free(slab) && slab.size >= len)
            .min_by_key(|slab| slab.size);
        if let Some(slab) = fits {
            return Some(SlabWriter::new(Arc::clone(slab)));
        }
        // Make room: free slabs go, the largest first.
        while pool.bytes + size > POOL_BYTES {
            let largest = pool
                .slabs
                .iter()
                .enumerate()
                .filter(|(_, slab)| free(slab))
                .max_by_key(|(_, slab)| slab.size)
                .map(|(i, _)| i)?;
            pool.bytes -= pool.slabs.swap_remove(largest).size;
        }
        let slab = Arc::new(Self::create(pool.next, size)?);
        pool.next = pool.next.wrapping_add(1);
        pool.bytes += size;
        pool.slabs.push(Arc::clone(&slab));
        Some(SlabWriter::new(slab))
    }

    fn create(id: u32, size: usize) -> Option<Self> {
        let length = NonZeroUsize::new(size)?;
        let fd = memfd_create(
            c"pproc-slab",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .ok()?;
        nix::unistd::ftruncate(&fd, i64::try_from(size).ok()?).ok()?;
        // SAFETY: a fresh shared mapping of a file `size` bytes long, which
        // is sealed against shrinking below.
        let ptr = unsafe {
            mmap(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd.as_fd(),
                0,
            )
        }
        .ok()?
        .cast::<u8>();
        let slab = Self {
            id,
            ptr,
            size,
            fd,
            len: AtomicUsize::new(0),
        };
        let seals = nix::fcntl::SealFlag::from_bits_retain(SLAB_SEALS | libc::F_SEAL_SEAL);
        nix::fcntl::fcntl(&slab.fd, nix::fcntl::FcntlArg::F_ADD_SEALS(seals)).ok()?;
        Some(slab)
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    pub(crate) fn memfd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// How long the frame it holds is.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }
}

/// Frees the shared memory this process keeps to send large buffers in,
/// where no child holds it now; returns how many bytes that was.
///
/// A parent writes each value that holds a [`Bytes`](crate::Bytes) of
/// 4 MiB or more into a slab of shared memory that it lends to the child
/// and reuses once the child lets go, so that a large send is one copy
/// into memory that is already there. The slabs of one process hold at
/// most 256 MiB in all (past that, large sends go through memory of their
/// own); they stay until this is called or the process exits.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Bytes};
///
/// #[parallel]
/// fn len(block: Bytes) -> usize {
///     block.len()
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let block = Bytes::from(vec![7; 8 << 20]);
/// assert_eq!(len::start(block)?.join()?, 8 << 20);
/// // The child is gone, and the slab its argument crossed in is free.
/// assert!(pproc::free_shared_memory() >= 8 << 20);
/// assert_eq!(pproc::free_shared_memory(), 0);
/// # Ok(())
/// # }
/// ```
#[expect(
    clippy::must_use_candidate,
    reason = "called for what it frees as often as for the count"
)]
pub fn free_shared_memory() -> usize {
    let mut pool = lock(&POOL);
    if pool.pid != std::process::id() {
        return 0;
    }
    let mut freed = 0;
    pool.slabs.retain(|slab| {
        let free = Arc::strong_count(slab) == 1;
        if free {
            freed += slab.size;
        }
        !free
    });
    pool.bytes -= freed;
    freed
}

/// A slab being written, held alone.
pub(crate) struct SlabWriter {
    slab: Arc<Slab>,
    at: usize,
}

impl SlabWriter {
    fn new(slab: Arc<Slab>) -> Self {
        Self { slab, at: 0 }
    }

    /// Appends `bytes`.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let end = self.at + bytes.len();
        if end > self.slab.size {
            return Err(Error::codec(
                "a value serialized longer the second time than the first",
            ));
        }
        // SAFETY: in bounds (checked); the writer holds the slab alone: no
        // lend or view of it is alive, so nothing reads these bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.slab.ptr.as_ptr().add(self.at),
                bytes.len(),
            );
        }
        self.at = end;
        Ok(())
    }

    /// The slab, holding the frame written.
    pub(crate) fn finish(self) -> Arc<Slab> {
        self.slab.len.store(self.at, Ordering::Release);
        self.slab
    }
}

/// Where a large frame is written: a memfd of its own, or a slab.
pub(crate) enum Sink {
    Memfd(Memfd),
    Slab(SlabWriter),
}

impl Sink {
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        match self {
            Self::Memfd(memfd) => memfd.write(bytes),
            Self::Slab(slab) => slab.write(bytes),
        }
    }
}

/// The slabs a parent has lent to one child, each with the number of its
/// frames the child has not released yet.
#[derive(Debug, Default)]
pub(crate) struct Lent(HashMap<u32, (Arc<Slab>, u32)>);

impl Drop for Lent {
    /// Slabs still lent when the connection goes are the child's for good:
    /// a child that runs on without its channel (detached) may still read
    /// them, so they leave the pool and are never written again. Their
    /// memory goes once the child and the last view let go.
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let mut pool = lock(&POOL);
        for (slab, _) in self.0.values() {
            if let Some(i) = pool.slabs.iter().position(|kept| Arc::ptr_eq(kept, slab)) {
                pool.bytes -= slab.size;
                pool.slabs.swap_remove(i);
            }
        }
    }
}

impl Lent {
    /// Notes one more frame of `slab` lent.
    pub(crate) fn lend(&mut self, slab: Arc<Slab>) {
        self.0.entry(slab.id).or_insert((slab, 0)).1 += 1;
    }

    /// The child released one frame of slab `id`.
    pub(crate) fn release(&mut self, id: u32) -> Result<()> {
        let Some((_, frames)) = self.0.get_mut(&id) else {
            return Err(Error::codec(format_args!(
                "the child released slab {id}, which it was not lent"
            )));
        };
        *frames -= 1;
        if *frames == 0 {
            self.0.remove(&id);
        }
        Ok(())
    }

    /// The frame of `len` bytes that the child sends back in slab `id`,
    /// as a view of our own slab, if it was lent and holds such a frame.
    pub(crate) fn view(&self, id: u32, len: usize) -> Result<Arc<Mapping>> {
        match self.0.get(&id) {
            Some((slab, _)) if slab.len() == len => Ok(Mapping::own(Arc::clone(slab), len)),
            Some((slab, _)) => Err(Error::codec(format_args!(
                "the child sent back {len} bytes of slab {id}, which holds {}",
                slab.len()
            ))),
            None => Err(Error::codec(format_args!(
                "the child sent back slab {id}, which it was not lent"
            ))),
        }
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
    fn a_slab_is_written_again_only_once_nothing_holds_it() {
        // The only test here that takes slabs: the pool is the process's.
        let data = vec![6u8; SLAB_GRAIN + 1];
        let mut writer = Slab::take(data.len()).unwrap();
        writer.write(&data[..10]).unwrap();
        writer.write(&data[10..]).unwrap();
        assert!(writer.write(&vec![0; SLAB_GRAIN]).is_err(), "past its end");
        let slab = writer.finish();
        assert_eq!((slab.len(), slab.size), (data.len(), 2 * SLAB_GRAIN));
        // Lent: the next take makes another, and a child maps it to read.
        let mut lent = Lent::default();
        lent.lend(Arc::clone(&slab));
        let other = Slab::take(100).unwrap().finish();
        assert_ne!(other.id(), slab.id());
        let releases = Arc::new(Releases::default());
        let max = 1 << 30;
        let borrowed = Mapping::borrow(&slab.fd, slab.id(), data.len(), max, &releases).unwrap();
        assert_eq!(borrowed.bytes(), &data[..]);
        assert!(Mapping::borrow(&slab.fd, slab.id(), 3 * SLAB_GRAIN, max, &releases).is_err());
        // Sent back whole, it is a view of our own, which is never
        // written in place.
        assert!(lent.view(slab.id(), 5).is_err());
        let view = lent.view(slab.id(), data.len()).unwrap();
        assert!(!view.writable());
        assert!(Mapping::holding(&view.bytes()[1..]).is_some());
        // Unmapped, the child owes a release; released, the slab is free
        // once the view goes too.
        drop(borrowed);
        assert!(releases.any());
        assert_eq!(releases.take(), [slab.id()]);
        lent.release(slab.id()).unwrap();
        assert!(lent.release(slab.id()).is_err(), "released twice");
        drop(slab);
        drop(other);
        let held = free_shared_memory();
        assert_eq!(held, SLAB_GRAIN, "the view keeps its slab");
        drop(view);
        assert_eq!(free_shared_memory(), 2 * SLAB_GRAIN);

        // A slab still lent when the connection goes is never taken again.
        let slab = Slab::take(10).unwrap().finish();
        let mut lent = Lent::default();
        lent.lend(Arc::clone(&slab));
        drop(lent);
        let next = Slab::take(10).unwrap().finish();
        assert_ne!(next.id(), slab.id());
        drop((slab, next));
        assert_eq!(free_shared_memory(), SLAB_GRAIN, "only the second");
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
