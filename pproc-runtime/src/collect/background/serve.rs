//! The background child's side: runs the call detached from the program
//! that started it, keeps what it delivers, and hands it out to one
//! collector at a time at its filesystem address.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use crate::child::{panic, prelude};
use crate::error::Error;
use crate::lock::{lock, wait};
use crate::process::setup::ignore_sigpipe;
use crate::registry::{self, Context};
use crate::wire::codec;
use crate::wire::conn::{self, Conn};
use crate::wire::frame::{EXIT_PROTOCOL, Refusal, tag};
use crate::wire::shm::Payload;
use crate::wire::wait::Deadline;

/// The results of a background call, as its child keeps them, and how far
/// collectors have read them.
#[derive(Default)]
struct Kept {
    /// Frames for collectors: `DATA` (or `ERROR`) values, then one end
    /// frame.
    frames: Vec<(u8, Arc<[u8]>)>,
    ended: bool,
    /// Frames that collectors have acknowledged: the next collector starts
    /// after them.
    acked: usize,
    /// Frames written, or being written, to the current collector.
    offered: usize,
    /// The current collector went away, or sent what it should not.
    left: bool,
}

impl Kept {
    /// Whether a collector has read everything, the end frame included.
    fn done(&self) -> bool {
        self.ended && self.acked == self.frames.len()
    }
}

/// What the call's reader, the collectors' server and their writers share.
type Keeper = Arc<(Mutex<Kept>, Condvar)>;

/// The background child's side: runs in the re-executed program, from the
/// dispatcher, with the listening socket at `fd`. Returns the exit status.
pub(crate) fn serve(fd: RawFd, fingerprint: u64, name: &str, streams: bool) -> i32 {
    let Some(fd) = prelude::adopt(fd) else {
        return EXIT_PROTOCOL;
    };
    let listener = UnixListener::from(fd);
    ignore_sigpipe();
    let Ok((stream, _)) = listener.accept() else {
        return EXIT_PROTOCOL;
    };
    let Ok(mut conn) = Conn::new(stream.into()) else {
        return EXIT_PROTOCOL;
    };
    if let Err(code) = prelude::check_build(&mut conn, fingerprint) {
        return code;
    }
    let entry = match prelude::find(&mut conn, name) {
        Ok(entry) => entry,
        Err(code) => return code,
    };
    let Some(args) = prelude::first_frame(&mut conn) else {
        return EXIT_PROTOCOL;
    };
    let Ok(address) = listener
        .local_addr()
        .map(|a| a.as_pathname().map(Path::to_path_buf))
    else {
        return EXIT_PROTOCOL;
    };
    // Detach: this process exits at once (its parent reaps it), the fork
    // lives on in a session of its own, a child of nobody here. We are
    // still single-threaded, before `main`.
    // SAFETY: no other thread exists yet in this process.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => return 0,
        Ok(nix::unistd::ForkResult::Child) => {}
        Err(_) => return EXIT_PROTOCOL,
    }
    drop(conn); // the parent sees the handover end: the call runs
    let _ = nix::unistd::setsid();
    // Hold none of the starter's terminal or pipes: a shell pipeline or a
    // `Command::output` waiting on them would wait for this child too.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..=2 {
            // SAFETY: dup2 onto the standard descriptors, which this
            // process owns; `null` stays open until the calls return.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    run(&listener, entry, args, streams);
    if let Some(address) = address {
        let _ = std::fs::remove_file(address);
    }
    0
}

/// Runs the call, keeping what it delivers, and serves collectors until one
/// has read it all.
fn run(listener: &UnixListener, entry: &registry::Entry, args: Payload, streams: bool) {
    let Ok((ours, theirs)) = conn::socketpair() else {
        return;
    };
    let (Ok(ours), Ok(theirs)) = (Conn::new(ours), Conn::new(theirs)) else {
        return;
    };
    let kept: Keeper = Arc::default();
    let reader = {
        let kept = Arc::clone(&kept);
        std::thread::spawn(move || keep(ours, &kept, streams))
    };
    let server = {
        let kept = Arc::clone(&kept);
        let listener = listener.try_clone();
        std::thread::spawn(move || {
            if let Ok(listener) = listener {
                hand_out(&listener, &kept);
            }
        })
    };
    entry.run(Context::new(args, panic::share(theirs)));
    let _ = reader.join();
    let _ = server.join();
}

/// Reads what the call sends into `kept`: its values (or its result, as a
/// value), then an end frame.
fn keep(mut conn: Conn, kept: &Keeper, streams: bool) {
    let (state, ready) = &**kept;
    let push = |tag: u8, body: Vec<u8>, end: bool| {
        let mut kept = lock(state);
        kept.frames.push((tag, body.into()));
        kept.ended |= end;
        ready.notify_all();
    };
    let end_without_result = || {
        // The stream ended without an end frame: report it as an exit
        // without a result.
        let failure = Refusal::Codec {
            message: "the background call ended without a result".into(),
        };
        push(tag::FAIL, codec::encode(&failure).unwrap_or_default(), true);
    };
    loop {
        // Whole frames first; the end frame ends the call (its channel may
        // stay open: the panic hook keeps a copy).
        loop {
            let frame = match conn.with_frame(|tag, body| (tag, body.to_vec())) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => return end_without_result(),
            };
            match frame {
                (tag::DATA, body) if streams => push(tag::DATA, body, false),
                (tag::ERROR, body) if streams => push(tag::ERROR, body, false),
                (tag::DATA | tag::ERROR, _) => {}
                (tag::RESULT, body) => {
                    if !streams {
                        push(tag::DATA, body, false);
                    }
                    push(tag::RESULT, codec::encode(&()).unwrap_or_default(), true);
                    return;
                }
                (tag, body) => return push(tag, body, true),
            }
        }
        if conn.is_eof() {
            return end_without_result();
        }
        let waited = conn.wait(None, Deadline::Never).and_then(|_| conn.fill());
        if waited.is_err() {
            return end_without_result();
        }
    }
}

/// Serves collectors, one at a time, each from the first frame that no
/// collector has acknowledged, until one has acknowledged the end frame.
fn hand_out(listener: &UnixListener, kept: &Keeper) {
    loop {
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        if serve_collector(&stream, kept) {
            return;
        }
    }
}

/// Serves one collector: writes it the frames it lacks as they come, while
/// a thread of its own reads its acknowledgements. Returns whether it
/// acknowledged the end frame.
fn serve_collector(stream: &UnixStream, kept: &Keeper) -> bool {
    let (state, _) = &**kept;
    {
        let mut kept = lock(state);
        kept.offered = kept.acked;
        kept.left = false;
    }
    // Two descriptors for the one socket: the reader's `Conn` buffers
    // what it reads, and the writer must read nothing.
    let acks = stream
        .try_clone()
        .map_err(Error::Io)
        .and_then(|ours| Conn::new(ours.into()));
    let Ok(acks) = acks else {
        return false;
    };
    let reader = {
        let kept = Arc::clone(kept);
        std::thread::Builder::new()
            .name("pproc-background-acks".into())
            .spawn(move || read_acks(acks, &kept))
    };
    let Ok(reader) = reader else {
        return false;
    };
    write_frames(stream, kept);
    // Ends the reader's wait if the collector is still connected.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = reader.join();
    lock(state).done()
}

/// Writes the current collector the frames it lacks, as they come, until
/// it has acknowledged the end frame, left, or cannot be written to.
fn write_frames(stream: &UnixStream, kept: &Keeper) {
    let (state, ready) = &**kept;
    loop {
        let frames = {
            let mut kept = lock(state);
            while kept.offered == kept.frames.len() && !kept.left && !kept.done() {
                kept = wait(ready, kept);
            }
            if kept.left || kept.done() {
                return;
            }
            let from = kept.offered;
            // Counted before they are written: the collector may
            // acknowledge one before its write returns here.
            kept.offered = kept.frames.len();
            kept.frames[from..].to_vec()
        };
        for (tag, body) in &frames {
            if conn::write_frame(stream.as_fd(), *tag, body).is_err() {
                return; // the collector went away
            }
        }
    }
}

/// Reads a collector's acknowledgements into `kept` until it acknowledges
/// the end frame. A collector that leaves, or sends anything but an `ACK`
/// for a frame it was sent, is marked as gone and its socket shut down, so
/// that the writer stops too.
fn read_acks(mut conn: Conn, kept: &Keeper) {
    let (state, ready) = &**kept;
    // An `ACK` is a tag alone: a longer length is garbage, refused before
    // anything is allocated for it.
    conn.set_max_frame(1);
    loop {
        match conn.with_frame(|tag, body| tag == tag::ACK && body.is_empty()) {
            Ok(Some(true)) => {
                let mut kept = lock(state);
                if kept.acked == kept.offered {
                    break; // it acknowledges a frame it was not sent
                }
                kept.acked += 1;
                ready.notify_all();
                if kept.done() {
                    return;
                }
                continue;
            }
            Ok(Some(false)) | Err(_) => break,
            Ok(None) => {}
        }
        if conn.is_eof() {
            break;
        }
        if conn
            .wait(None, Deadline::Never)
            .and_then(|_| conn.fill())
            .is_err()
        {
            break;
        }
    }
    lock(state).left = true;
    ready.notify_all();
    // Wakes a writer that waits for room in the socket.
    let _ = nix::sys::socket::shutdown(conn.raw_fd(), nix::sys::socket::Shutdown::Both);
}
