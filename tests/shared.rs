//! Large buffers through shared memory, in real children: a value that
//! holds a `Bytes` of 4 MiB or more crosses in a slab the parent lends (or
//! a sealed memfd, from a child), the receiver's `Bytes` is a view of it,
//! and one sent on unchanged goes back as the same memory. A slab is not
//! written again while a child holds it. A child that passes lying
//! descriptors or names slabs it was not lent gets `Error::Codec`, and no
//! descriptor is left open.

use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use pproc::{Bytes, Channel, Error, Map, parallel};
use pproc_workspace::{open_fds, serial};

const MIB: usize = 1 << 20;

/// Where a `Bytes` starts to cross in shared memory.
const FROM: usize = 4 * MIB;

/// The channel protocol's frame tags.
const DATA: u8 = 2;
const SHARED: u8 = 10;
const SLAB: u8 = 11;
const SLAB_BACK: u8 = 12;
const RELEASE: u8 = 13;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from((i * 7 + usize::from(seed)) % 253).unwrap())
        .collect()
}

/// Sends back each buffer as it came, or reversed if `reverse`, with
/// whether it arrived as a view of shared memory.
#[parallel]
fn pass_on(ch: Channel<(bool, Bytes), Bytes>, reverse: bool) {
    while let Ok(mut block) = ch.recv() {
        let shared = block.is_shared();
        if reverse {
            block.reverse();
        }
        ch.send(&(shared, block)).expect("the parent reads on");
    }
}

/// Sends back each buffer alone, as it came.
#[parallel]
fn bounce(ch: Channel<Bytes, Bytes>) {
    while let Ok(block) = ch.recv() {
        ch.send(&block).expect("the parent reads on");
    }
}

#[test]
fn a_large_buffer_sent_on_unchanged_comes_back_as_the_same_memory() {
    let _serial = serial();
    // Slabs other tests left free: the counts below are this test's own.
    pproc::free_shared_memory();
    let before = open_fds();
    let h = bounce::start().unwrap();
    for (i, len) in [FROM, 2 * FROM + 17].into_iter().enumerate() {
        let block = Bytes::from(pattern(len, u8::try_from(i).unwrap()));
        h.send(&block).unwrap();
        let back = h.recv().unwrap();
        assert!(back.is_shared(), "{len} bytes arrive in shared memory");
        assert_eq!(back, block);
        // And once more, from the view: it goes out as the memfd it is.
        h.send(&back).unwrap();
        let again = h.recv().unwrap();
        assert!(again.is_shared());
        assert_eq!(again, block);
    }
    // Below the threshold, bytes are copied as they always were.
    h.send(&Bytes::from(pattern(FROM - 1, 9))).unwrap();
    assert!(!h.recv().unwrap().is_shared());
    h.close();
    h.join().unwrap();
    // Two slabs were made, one for each size, and kept for reuse; the
    // child is gone, so both are free now.
    assert_eq!(before.opened_since().len(), 2);
    assert_eq!(pproc::free_shared_memory(), 6 * MIB + 10 * MIB);
    assert_eq!(before.opened_since(), Vec::<String>::new());
}

/// Keeps every buffer it is sent until an empty one, then says whether
/// each still holds what it held when it came.
#[parallel]
fn hoard(ch: Channel<bool, Bytes>) {
    let mut kept = Vec::new();
    while let Ok(block) = ch.recv() {
        if block.is_empty() {
            break;
        }
        kept.push((block.to_vec(), block));
    }
    let intact = kept.iter().all(|(copy, block)| copy[..] == block[..]);
    ch.send(&intact).expect("the parent reads on");
}

#[test]
fn a_slab_is_not_written_again_while_its_child_holds_it() {
    let _serial = serial();
    pproc::free_shared_memory();
    let before = open_fds();
    // More than the pool's 256 MiB in all: the later ones go through
    // memfds of their own.
    let h = hoard::start().unwrap();
    for seed in 0..9 {
        h.send(&Bytes::from(pattern(32 * MIB, seed))).unwrap();
    }
    h.send(&Bytes::new()).unwrap();
    assert!(h.recv().unwrap(), "every buffer the child kept is intact");
    h.close();
    h.join().unwrap();
    assert!(pproc::free_shared_memory() <= 256 * MIB);
    assert_eq!(before.opened_since(), Vec::<String>::new());

    // A child that lets go of each buffer: one slab serves every send.
    let h = bounce::start().unwrap();
    for seed in 0..6 {
        let block = Bytes::from(pattern(FROM, seed));
        h.send(&block).unwrap();
        assert_eq!(h.recv().unwrap(), block);
    }
    h.close();
    h.join().unwrap();
    // A slab is released only with the child's next frame, so two take
    // turns.
    assert!(pproc::free_shared_memory() <= 2 * 6 * MIB);
}

/// Keeps its argument until `go` exists, then writes to `verdict` whether
/// it still holds what it held when it came.
#[parallel]
fn keep_detached(block: Bytes, seed: u8, go: String, verdict: String) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::path::Path::new(&go).exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let intact = block.is_shared() && block[..] == pattern(FROM, seed)[..];
    std::fs::write(&verdict, if intact { "intact" } else { "changed" }).unwrap();
}

#[test]
fn a_detached_child_keeps_the_slab_its_arguments_came_in() {
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("pproc-shared-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (go, verdict) = (dir.join("go"), dir.join("verdict"));
    let path = |p: &std::path::Path| p.display().to_string();
    let block = Bytes::from(pattern(FROM, 7));
    keep_detached::start(block, 7, path(&go), path(&verdict))
        .unwrap()
        .detach()
        .unwrap();
    // Buffers of the same size, which a slab that came free would take.
    let h = bounce::start().unwrap();
    for seed in 0..3 {
        let block = Bytes::from(pattern(FROM, seed));
        h.send(&block).unwrap();
        assert_eq!(h.recv().unwrap(), block);
    }
    h.close();
    h.join().unwrap();
    std::fs::write(&go, "").unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !verdict.exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Written whole before the file is seen: read until it says something.
    let mut said = String::new();
    while said.is_empty() && std::time::Instant::now() < until {
        said = std::fs::read_to_string(&verdict).unwrap_or_default();
    }
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(said, "intact");
}

#[test]
fn a_view_that_is_written_to_goes_out_as_what_it_holds_now() {
    // Every test here runs alone: the descriptor checks see them all.
    let _serial = serial();
    let h = pass_on::start(true).unwrap();
    let data = pattern(FROM, 1);
    h.send(&Bytes::from(data.clone())).unwrap();
    let (shared, back) = h.recv().unwrap();
    assert!(shared, "the child's copy is a view");
    let mut reversed = data.clone();
    reversed.reverse();
    assert_eq!(back, reversed);
    // Written in the parent too, then grown: the view becomes a vector.
    let mut back = back;
    assert!(back.is_shared());
    back[0] = 1;
    assert_eq!(back[..2], [1, reversed[1]]);
    back.as_mut_vec().push(2);
    assert!(!back.is_shared());
    assert_eq!(back.len(), FROM + 1);
    h.close();
    h.join().unwrap();
}

#[parallel]
fn sizes(blocks: (Bytes, String, Vec<Bytes>)) -> (usize, usize, Vec<(usize, bool)>) {
    let (first, text, rest) = blocks;
    (
        first.len(),
        text.len(),
        rest.iter().map(|b| (b.len(), b.is_shared())).collect(),
    )
}

#[parallel]
fn make(len: usize) -> Bytes {
    Bytes::from(pattern(len, 5))
}

#[test]
fn large_arguments_results_and_items_cross_in_shared_memory() {
    let _serial = serial();
    let args = (
        Bytes::from(pattern(FROM, 2)),
        "pproc ".repeat(1000),
        vec![
            Bytes::from(pattern(MIB, 3)),
            Bytes::from(pattern(10, 4)),
            Bytes::from(pattern(FROM + 1, 5)),
        ],
    );
    let (first, text, rest) = sizes::start(args).unwrap().join().unwrap();
    assert_eq!((first, text), (FROM, 6000));
    assert_eq!(rest, [(MIB, false), (10, false), (FROM + 1, true)]);

    let back = make::start(FROM + 5).unwrap().join().unwrap();
    assert!(back.is_shared());
    assert_eq!(back, pattern(FROM + 5, 5));

    // On reused workers, several at once.
    let lens: Vec<usize> = (0..4).map(|i| FROM + i * 4096).collect();
    let made: Vec<Bytes> = Map::new(make::call, lens.clone())
        .collect::<pproc::Result<_>>()
        .unwrap();
    for (block, len) in made.iter().zip(lens) {
        assert_eq!(*block, pattern(len, 5));
    }
}

/// How a lying child passes a frame that stands for one in shared memory.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
enum Lie {
    /// No descriptor comes with it.
    NoDescriptor,
    /// A memfd that is not sealed.
    Unsealed,
    /// A sealed memfd of another size than the frame says.
    WrongSize,
    /// A descriptor that is not a memfd.
    NotAMemfd,
    /// More descriptors than may wait for their frames.
    TooMany,
    /// A body that is not a tag and a length.
    BadBody,
    /// A slab, lent to its parent.
    SlabToParent,
    /// A slab sent back that the parent did not lend.
    BackNotLent,
    /// A slab released that the parent did not lend.
    ReleaseNotLent,
    /// A release that names no slab.
    ReleaseBadBody,
}

fn memfd(bytes: &[u8], seal: bool) -> OwnedFd {
    // SAFETY: a C string literal and valid flags.
    let fd = unsafe { libc::memfd_create(c"lie".as_ptr(), libc::MFD_ALLOW_SEALING) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: a descriptor of our own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes).unwrap();
    let fd = OwnedFd::from(file);
    if seal {
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        // SAFETY: a memfd of our own and valid seals.
        assert_eq!(
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) },
            0
        );
    }
    fd
}

/// Writes a frame that lies as `lie` says, then a good value, straight
/// onto the channel's socket; waits for the parent.
#[parallel]
fn shared_liar(ch: Channel<Bytes, u8>, lie: Lie) {
    let payload = [1u8, 42];
    let len = (payload.len() as u64).to_le_bytes();
    let body: Vec<u8> = match lie {
        Lie::BadBody => [&[SHARED, DATA], &len[..7]].concat(),
        Lie::SlabToParent => [&[SLAB, DATA], &0u32.to_le_bytes()[..], &len].concat(),
        Lie::BackNotLent => [&[SLAB_BACK, DATA], &7u32.to_le_bytes()[..], &len].concat(),
        Lie::ReleaseNotLent => [&[RELEASE], &3u32.to_le_bytes()[..]].concat(),
        Lie::ReleaseBadBody => vec![RELEASE, 3, 0],
        _ => [&[SHARED, DATA], &len[..]].concat(),
    };
    let mut frame = u32::try_from(body.len()).unwrap().to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    let fds: Vec<OwnedFd> = match lie {
        Lie::NoDescriptor
        | Lie::BadBody
        | Lie::BackNotLent
        | Lie::ReleaseNotLent
        | Lie::ReleaseBadBody => vec![],
        Lie::Unsealed => vec![memfd(&payload, false)],
        Lie::SlabToParent => vec![memfd(&payload, true)],
        Lie::WrongSize => vec![memfd(&[1, 42, 0], true)],
        Lie::NotAMemfd => vec![std::fs::File::open("/proc/self/exe").unwrap().into()],
        Lie::TooMany => (0..20).map(|_| memfd(&payload, true)).collect(),
    };
    let raw: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
    // SAFETY: the descriptor stays open for the whole call.
    let sock = unsafe { BorrowedFd::borrow_raw(ch.as_raw_fd()) };
    let iov = [std::io::IoSlice::new(&frame)];
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None).expect("sendmsg");
    let _ = ch.recv();
}

#[test]
fn lying_descriptors_are_codec_errors_and_none_is_left_open() {
    let _serial = serial();
    let cases = [
        (Lie::NoDescriptor, "without its descriptor"),
        (Lie::Unsealed, "not sealed"),
        (Lie::WrongSize, "its memfd holds 3"),
        (Lie::NotAMemfd, "not a memfd"),
        (Lie::TooMany, "more than 16 descriptors"),
        (Lie::BadBody, "not a tag and a length"),
        (Lie::SlabToParent, "a process that borrows none"),
        (Lie::BackNotLent, "sent back slab 7, which it was not lent"),
        (
            Lie::ReleaseNotLent,
            "released slab 3, which it was not lent",
        ),
        (Lie::ReleaseBadBody, "not a tag and a slab number"),
    ];
    pproc::free_shared_memory();
    for (lie, expected) in cases {
        let before = open_fds();
        let h = shared_liar::start(lie).unwrap();
        match h.recv() {
            Err(Error::Codec { message }) => {
                assert!(message.contains(expected), "{lie:?}: {message}")
            }
            other => panic!("{lie:?}: expected a codec error, got {other:?}"),
        }
        // The stream has lost its framing: it stays broken.
        assert!(matches!(h.recv(), Err(Error::Codec { .. })), "{lie:?}");
        drop(h);
        assert_eq!(before.opened_since(), Vec::<String>::new(), "{lie:?}");
    }
}
