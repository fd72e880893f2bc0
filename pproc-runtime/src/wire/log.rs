//! A worker's result log: frames a reusable worker writes into memory it
//! shares with its parent instead of into its socket.
//!
//! A worker that answers every call of a batch with a write of its own
//! pays a system call (and a wake-up of its parent) per call, which for
//! calls of microseconds costs more than the calls. Through the log, the
//! worker appends each frame to a shared memory file (a `memfd` its parent
//! made) and tells the parent how far the log has grown with one `LOG`
//! frame on the socket now and then: when the batch runs out of calls,
//! before any other frame, before it blocks, and once a frame has waited
//! its sender's flush bound (a millisecond by default: the process's
//! flusher thread sees to it). The parent reads the log's frames as if they had come
//! through the socket at the place of that `LOG` frame.
//!
//! The memory outlives the worker: when a worker dies, even by `SIGKILL`,
//! the parent reads what it had appended and not yet announced (the
//! header's `committed` count, stored after each frame), so the calls it
//! had finished are delivered and only the call it was running fails.
//!
//! The log is a line, not a ring. It starts again from its start with each
//! batch: the parent sends a `LOG` frame ahead of a batch's calls once it
//! has read every answer to the last, and the worker, reading it, starts
//! over. Each start is an epoch, and every position carries its epoch, so
//! that nothing of an earlier batch is read twice. A frame that does not
//! fit goes through the socket, after a `LOG` frame for what came before
//! it. The parent trusts nothing it reads there: a position past the log's
//! end, before what it has read, or of an epoch to come, is an
//! [`Error::Codec`], and the frames are checked as a socket's are.

use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

use crate::error::{Error, Result};

/// The descriptor at which a worker finds its log.
pub(crate) const LOG_FD: i32 = 4;

/// The log's size: room for thousands of small answers a batch. Pages are
/// only backed once written, and a batch starts again from the start.
const SIZE: usize = 256 * 1024;

/// [`SIZE`], as `ftruncate` takes it.
const FILE_SIZE: i64 = 256 * 1024;

/// Bytes before the frames: the `committed` count, padded to a cache line.
const HEAD: usize = 64;

/// A position in the log as `LOG` frames and the header carry it: the
/// epoch in the high half, the offset in the low one.
fn pack(epoch: u32, at: usize) -> u64 {
    (u64::from(epoch) << 32) | (at as u64 & u64::from(u32::MAX))
}

fn unpack(position: u64) -> (u32, usize) {
    let epoch = u32::try_from(position >> 32).unwrap_or(u32::MAX);
    let at = usize::try_from(position & u64::from(u32::MAX)).unwrap_or(usize::MAX);
    (epoch, at)
}

/// A shared, writable mapping of a log.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    fd: OwnedFd,
}

// SAFETY: the mapping is memory this value owns; it moves between threads
// like a `Box<[u8]>`, and every access goes through `&self`/`&mut self`.
unsafe impl Send for Mapping {}

impl Mapping {
    fn of(fd: OwnedFd) -> Result<Self> {
        let len = NonZeroUsize::new(SIZE).unwrap_or(NonZeroUsize::MIN);
        // SAFETY: a new shared mapping of a file this value keeps open; no
        // Rust object lives at the address it returns.
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd.as_fd(),
                0,
            )
        }
        .map_err(Error::from_errno)?;
        Ok(Self {
            ptr: ptr.cast(),
            fd,
        })
    }

    /// The header: the epoch and how far it is written.
    fn committed(&self) -> &AtomicU64 {
        // SAFETY: the mapping is page-aligned and at least `HEAD` bytes
        // long, so its first eight bytes are a valid, aligned `AtomicU64`
        // for as long as `self` lives.
        unsafe { self.ptr.cast::<AtomicU64>().as_ref() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `of`, unmapped once.
        let _ = unsafe { munmap(self.ptr.cast(), SIZE) };
    }
}

/// The parent's end: it made the log, and reads it.
#[derive(Debug)]
pub(crate) struct Reader {
    map: Mapping,
    /// The batch being read, and how far.
    epoch: u32,
    read: usize,
}

impl Reader {
    /// A new, empty log.
    pub(crate) fn create() -> Result<Self> {
        let fd = memfd_create(c"pproc-log", MFdFlags::MFD_CLOEXEC).map_err(Error::from_errno)?;
        nix::unistd::ftruncate(&fd, FILE_SIZE).map_err(Error::from_errno)?;
        Ok(Self {
            map: Mapping::of(fd)?,
            epoch: 0,
            read: 0,
        })
    }

    /// The file, for the worker to map.
    pub(crate) fn file(&self) -> &OwnedFd {
        &self.map.fd
    }

    /// Starts a new epoch, once every answer of the last was read: the
    /// body of the `LOG` frame that goes ahead of the next batch. `None`
    /// while the log is still at its start.
    pub(crate) fn restart(&mut self) -> Option<[u8; 4]> {
        if self.read == 0 {
            return None;
        }
        self.epoch = self.epoch.wrapping_add(1);
        self.read = 0;
        Some(self.epoch.to_le_bytes())
    }

    /// The frames a worker's `LOG` frame with `body` announces, as the
    /// bytes they came in.
    pub(crate) fn announced(&mut self, body: &[u8]) -> Result<Vec<u8>> {
        let position = <[u8; 8]>::try_from(body)
            .map_err(|_| Error::codec(format_args!("a log frame of {} bytes", body.len())))?;
        let (epoch, upto) = unpack(u64::from_le_bytes(position));
        if epoch != self.epoch || upto < self.read || upto > SIZE - HEAD {
            return Err(Error::codec(format_args!(
                "the log is announced up to byte {upto} of epoch {epoch}, but {} bytes of \
                 epoch {} were read, of {}",
                self.read,
                self.epoch,
                SIZE - HEAD
            )));
        }
        let bytes = self.copy(self.read, upto);
        self.read = upto;
        Ok(bytes)
    }

    /// What the worker appended and did not announce: read once it has
    /// died.
    pub(crate) fn unannounced(&mut self) -> Vec<u8> {
        let (epoch, committed) = unpack(self.map.committed().load(Ordering::Acquire));
        if epoch != self.epoch || committed <= self.read || committed > SIZE - HEAD {
            return Vec::new();
        }
        let bytes = self.copy(self.read, committed);
        self.read = committed;
        bytes
    }

    /// A copy of the log's bytes `from..to` (within bounds).
    fn copy(&self, from: usize, to: usize) -> Vec<u8> {
        let mut out = vec![0; to - from];
        // SAFETY: `HEAD + to` is within the mapping. The worker, another
        // process, may be writing elsewhere in it; these bytes are copied
        // out before anything is made of them, and checked as untrusted
        // input.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.map.ptr.as_ptr().add(HEAD + from),
                out.as_mut_ptr(),
                to - from,
            );
        }
        out
    }
}

/// The worker's end: it appends frames and announces them.
#[derive(Debug)]
pub(crate) struct Writer {
    map: Mapping,
    /// The batch being written, how far, and how far that was announced.
    epoch: u32,
    written: usize,
    announced: usize,
    /// When the oldest frame not yet announced was appended.
    since: Option<Instant>,
}

impl Writer {
    /// Maps the log its parent made, at `fd`.
    pub(crate) fn adopt(fd: OwnedFd) -> Result<Self> {
        let size = nix::sys::stat::fstat(&fd)
            .map_err(Error::from_errno)?
            .st_size;
        if usize::try_from(size).ok() != Some(SIZE) {
            return Err(Error::codec(format_args!(
                "a log of {size} bytes, not {SIZE}"
            )));
        }
        Ok(Self {
            map: Mapping::of(fd)?,
            epoch: 0,
            written: 0,
            announced: 0,
            since: None,
        })
    }

    /// Appends one whole frame, if it fits.
    pub(crate) fn append(&mut self, frame: &[u8]) -> bool {
        if frame.len() > SIZE - HEAD - self.written {
            return false;
        }
        // SAFETY: the range is within the mapping (checked above), and
        // the parent reads it only once the header says it is written.
        unsafe {
            std::ptr::copy_nonoverlapping(
                frame.as_ptr(),
                self.map.ptr.as_ptr().add(HEAD + self.written),
                frame.len(),
            );
        }
        self.written += frame.len();
        self.map
            .committed()
            .store(pack(self.epoch, self.written), Ordering::Release);
        self.since.get_or_insert_with(Instant::now);
        true
    }

    /// Whether frames wait to be announced.
    pub(crate) fn pending(&self) -> bool {
        self.written > self.announced
    }

    /// Whether the oldest frame not yet announced has waited `bound`.
    pub(crate) fn overdue(&self, bound: Duration) -> bool {
        self.since.is_some_and(|at| at.elapsed() >= bound)
    }

    /// When the oldest frame not yet announced was appended.
    pub(crate) fn since(&self) -> Option<Instant> {
        self.since
    }

    /// The body of the `LOG` frame that announces what is written.
    pub(crate) fn announce(&mut self) -> [u8; 8] {
        self.announced = self.written;
        self.since = None;
        pack(self.epoch, self.written).to_le_bytes()
    }

    /// Starts again from the start, as the parent's `LOG` frame with
    /// `body` says: it has read everything.
    pub(crate) fn restart(&mut self, body: &[u8]) -> Result<()> {
        let epoch = <[u8; 4]>::try_from(body)
            .map_err(|_| Error::codec(format_args!("a restart of {} bytes", body.len())))?;
        self.epoch = u32::from_le_bytes(epoch);
        self.written = 0;
        self.announced = 0;
        self.since = None;
        self.map
            .committed()
            .store(pack(self.epoch, 0), Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Reader, Writer) {
        let reader = Reader::create().unwrap();
        let fd = reader.file().try_clone().unwrap();
        (reader, Writer::adopt(fd).unwrap())
    }

    #[test]
    fn announced_frames_are_read_in_order_and_the_log_restarts() {
        let (mut reader, mut writer) = pair();
        assert_eq!(reader.restart(), None, "nothing to start again from");
        assert!(!writer.pending());
        assert!(writer.append(b"one"));
        assert!(writer.append(b"two"));
        assert!(writer.pending());
        let body = writer.announce();
        assert!(!writer.pending());
        assert_eq!(reader.announced(&body).unwrap(), b"onetwo");
        assert!(writer.append(b"three"));
        assert_eq!(reader.announced(&writer.announce()).unwrap(), b"three");
        // A new batch: both start again from the start.
        writer.restart(&reader.restart().unwrap()).unwrap();
        assert!(writer.append(b"four"));
        assert_eq!(reader.announced(&writer.announce()).unwrap(), b"four");
    }

    #[test]
    fn what_a_dead_worker_did_not_announce_is_still_read_once() {
        let (mut reader, mut writer) = pair();
        assert!(writer.append(b"said"));
        let body = writer.announce();
        assert!(writer.append(b"unsaid"));
        drop(writer);
        assert_eq!(reader.announced(&body).unwrap(), b"said");
        assert_eq!(reader.unannounced(), b"unsaid");
        assert_eq!(reader.unannounced(), b"");
    }

    #[test]
    fn a_worker_that_died_before_restarting_leaves_nothing_to_read_twice() {
        let (mut reader, mut writer) = pair();
        assert!(writer.append(b"old"));
        reader.announced(&writer.announce()).unwrap();
        // The parent starts a new batch; the worker dies before it reads
        // the restart.
        let _ = reader.restart().unwrap();
        drop(writer);
        assert_eq!(reader.unannounced(), b"");
    }

    #[test]
    fn a_frame_that_does_not_fit_is_refused() {
        let (_reader, mut writer) = pair();
        assert!(!writer.append(&vec![0; SIZE]));
        assert!(writer.append(&vec![0; SIZE - HEAD]));
        assert!(!writer.append(b"x"));
    }

    #[test]
    fn lying_positions_are_codec_errors() {
        let (mut reader, mut writer) = pair();
        for body in [
            pack(0, SIZE).to_le_bytes().to_vec(),
            pack(1, 0).to_le_bytes().to_vec(),
            pack(0, usize::MAX).to_le_bytes().to_vec(),
            vec![1, 2, 3],
        ] {
            assert!(matches!(reader.announced(&body), Err(Error::Codec { .. })));
        }
        assert!(writer.append(b"abcd"));
        reader.announced(&writer.announce()).unwrap();
        // Backwards.
        assert!(matches!(
            reader.announced(&pack(0, 2).to_le_bytes()),
            Err(Error::Codec { .. })
        ));
        assert!(matches!(writer.restart(&[1]), Err(Error::Codec { .. })));
    }

    #[test]
    fn a_file_of_another_size_is_not_adopted() {
        let fd = memfd_create(c"other", MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&fd, 4096).unwrap();
        assert!(matches!(Writer::adopt(fd), Err(Error::Codec { .. })));
    }
}
