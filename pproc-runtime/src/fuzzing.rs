//! Not public API: entry points over every decoder that a peer's bytes
//! reach, for the fuzz targets in `fuzz/` and the property tests. Each
//! takes arbitrary bytes and must return, whatever they are: no panic, no
//! abort, no hang, and memory in proportion to the bytes.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::net::UnixStream;

use serde::{Deserialize, Serialize};

use crate::wire::codec::decode;
use crate::wire::conn::Conn;
use crate::wire::frame::{PanicReport, Refusal, remote, split_call, tag};
use crate::wire::spec::Spec;

/// A user type with every shape serde gives values: what results,
/// arguments and messages decode as.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum Sample {
    /// A unit variant.
    Unit,
    /// Numbers of every width.
    Numbers(i8, u16, i32, u64, i128, f32, f64),
    /// A character and a flag.
    Letter(char, bool),
    /// A string.
    Text(String),
    /// A byte vector.
    Bytes(Vec<u8>),
    /// Recursion through a sequence.
    Many(Vec<Sample>),
    /// Recursion through a map.
    Table(BTreeMap<String, Sample>),
    /// Recursion through boxes and options.
    Pair(Box<Sample>, Option<Box<Sample>>),
    /// A struct variant.
    Named {
        /// A path.
        path: std::path::PathBuf,
        /// A hash map.
        counts: HashMap<u32, Vec<String>>,
    },
}

/// Decodes `body` as each kind of value a user might give pproc.
fn user_values(body: &[u8]) {
    let _ = decode::<()>(body);
    let _ = decode::<u64>(body);
    let _ = decode::<String>(body);
    let _ = decode::<Vec<u8>>(body);
    let _ = decode::<Vec<String>>(body);
    let _ = decode::<(u64, String, Option<Vec<u64>>)>(body);
    let _ = decode::<HashMap<String, Vec<u64>>>(body);
    let _ = decode::<Sample>(body);
}

/// Decodes one frame's body as its reader would, by its tag.
pub fn body(frame_tag: u8, body: &[u8]) {
    match frame_tag {
        tag::ARGS | tag::DATA | tag::RESULT => user_values(body),
        tag::PANIC => drop(decode::<PanicReport>(body)),
        tag::FAIL => drop(decode::<Refusal>(body)),
        tag::ERROR => drop(remote(body)),
        tag::CALL | tag::INIT => call_body(body),
        _ => {
            user_values(body);
            drop(decode::<PanicReport>(body));
            drop(decode::<Refusal>(body));
            drop(remote(body));
            call_body(body);
        }
    }
}

/// Reads `data` as a stream of frames through a real connection, with a
/// small frame limit so that the limit is met too, and decodes each body
/// by its tag. The first byte picks the end that reads: one of peers, a
/// parent that has lent slab 0 (holding a frame of 16 bytes), or a child
/// that borrows its parent's slabs.
pub fn frames(data: &[u8]) {
    let Some((&role, data)) = data.split_first() else {
        return;
    };
    let Ok((ours, theirs)) = UnixStream::pair() else {
        return;
    };
    let Ok(mut conn) = Conn::new(ours.into()) else {
        return;
    };
    match role % 3 {
        1 => {
            // One slab for the whole run, so that its number (0, the first
            // this process makes) is one an input can name.
            static SLAB: std::sync::OnceLock<Option<std::sync::Arc<crate::wire::shm::Slab>>> =
                std::sync::OnceLock::new();
            let slab = SLAB.get_or_init(|| {
                let mut slab = crate::wire::shm::Slab::take(16)?;
                slab.write(&[0; 16]).ok()?;
                Some(slab.finish())
            });
            let Some(slab) = slab else {
                return;
            };
            conn.lend_for_fuzzing(std::sync::Arc::clone(slab));
        }
        2 => conn.borrow_slabs(),
        _ => {}
    }
    conn.set_max_frame(4096);
    let mut theirs = theirs;
    // The socket holds far more than a fuzz input: the write completes,
    // and closing the end marks the stream's end.
    if std::io::Write::write_all(&mut theirs, data).is_err() {
        return;
    }
    drop(theirs);
    // Everything that was written, then the end.
    while matches!(conn.fill(), Ok(n) if n > 0) {}
    while let Ok(Some(())) = conn.with_frame(body) {}
}

/// A parent's reading of a worker's result log: the first eight bytes of
/// `data` are a `LOG` frame's body (the position it announces), the rest
/// what the worker wrote to the log; whatever the position announces is
/// read as frames and decoded by their tags.
pub fn log_frames(data: &[u8]) {
    let (announcement, written) = data.split_at(data.len().min(8));
    let Ok(mut reader) = crate::wire::log::Reader::create() else {
        return;
    };
    let Ok(fd) = reader.file().try_clone() else {
        return;
    };
    let Ok(mut writer) = crate::wire::log::Writer::adopt(fd) else {
        return;
    };
    writer.append(written);
    for bytes in [
        reader.announced(announcement).ok(),
        Some(reader.unannounced()),
    ] {
        let mut rest = bytes.as_deref().unwrap_or_default();
        while let Ok(Some(frame)) = crate::wire::codec::split_frame(rest, 1, rest.len()) {
            body(frame[0], &frame[1..]);
            rest = &rest[crate::wire::codec::HEADER + frame.len()..];
        }
    }
}

/// A host's link as its parent or its agent reads it: the first byte
/// picks the end (even: the parent, which skips to the agent's magic and
/// reads its hello first; odd: the agent), the rest is what the other end
/// sent.
pub fn link(data: &[u8]) {
    let Some((&end, data)) = data.split_first() else {
        return;
    };
    let Ok((ours, mut theirs)) = UnixStream::pair() else {
        return;
    };
    // As in `frames`: the socket holds the whole input.
    if std::io::Write::write_all(&mut theirs, data).is_err() {
        return;
    }
    drop(theirs);
    crate::remote::fuzz_link(end % 2 == 0, ours.into());
}

/// A worker's reading of a `CALL` frame: the name, then the arguments.
pub fn call_body(data: &[u8]) {
    if let Some((name, args)) = split_call(data) {
        let _ = crate::registry::lookup(&name);
        user_values(&args);
    }
}

/// The child's reading of its environment variable.
pub fn child_env(data: &[u8]) {
    if let Ok(spec) = std::str::from_utf8(data) {
        let _ = Spec::parse(spec);
    }
}

/// An authenticated client's request, answered by a manager's server: its
/// decoding and what the operation does with the values in it.
pub fn manager_request(data: &[u8]) {
    crate::manager::fuzz_requests(data);
}

/// Both halves of the manager's handshake, fed `data` as what the other
/// side says.
pub fn handshake(data: &[u8]) {
    crate::manager::fuzz_handshake(data);
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    use proptest::prelude::*;

    use super::*;
    use crate::wire::codec::encode;

    /// Counts the bytes this thread has allocated at once, at most.
    struct Counting;

    thread_local! {
        static NOW: Cell<usize> = const { Cell::new(0) };
        static PEAK: Cell<usize> = const { Cell::new(0) };
    }

    // SAFETY: forwards to the system allocator; the counters are
    // const-initialized thread locals, which neither allocate nor register
    // destructors.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let now = NOW.get() + layout.size();
            NOW.set(now);
            PEAK.set(PEAK.get().max(now));
            // SAFETY: the caller's layout, as it gave it.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            NOW.set(NOW.get().saturating_sub(layout.size()));
            // SAFETY: `ptr` came from `alloc` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    /// The most `f` had allocated at once, beyond what was allocated before.
    fn peak(f: impl FnOnce()) -> usize {
        let before = NOW.get();
        PEAK.set(before);
        f();
        PEAK.get() - before
    }

    /// What reading `len` hostile bytes may cost: a socket's read buffer,
    /// and a fixed multiple of the bytes.
    fn bound(len: usize) -> usize {
        256 * 1024 + 256 * len
    }

    /// One frame: its length, `tag`, then `body`.
    fn framed(tag: u8, body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(body.len() + 1).unwrap();
        [&len.to_le_bytes()[..], &[tag], body].concat()
    }

    /// Frames of every tag around real and mutated bodies.
    fn frame_bytes() -> impl Strategy<Value = Vec<u8>> {
        let body = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            any::<String>().prop_map(|s| encode(&s).unwrap()),
            (any::<u64>(), any::<String>()).prop_map(|v| encode(&v).unwrap()),
        ];
        let frame =
            (0u8..14, body, any::<Option<(usize, u8)>>()).prop_map(|(tag, mut body, flip)| {
                // A length byte, or any byte, changed.
                if let Some((at, byte)) = flip
                    && !body.is_empty()
                {
                    let at = at % body.len();
                    body[at] = byte;
                }
                framed(tag, &body)
            });
        // The first byte picks the end that reads (see `frames`).
        (any::<u8>(), proptest::collection::vec(frame, 0..6))
            .prop_map(|(role, frames)| [vec![role], frames.concat()].concat())
    }

    /// What an agent might say: junk a shell printed, the magic, a hello,
    /// then frames of the link's tags around real and mutated bodies.
    fn link_bytes() -> impl Strategy<Value = Vec<u8>> {
        use crate::remote::protocol::{self, Hello, MAGIC};
        let hello = Hello {
            version: protocol::VERSION,
            fingerprint: 7,
            hostname: "node".into(),
            pid: 1,
            cpus: 2,
        };
        let hello = framed(protocol::tag::HELLO, &encode(&hello).unwrap());
        // Every tag of the link's (32 to 43), and a few around them.
        let frame = (30u8..46, proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(tag, body)| framed(tag, &body));
        (
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..32),
            proptest::collection::vec(frame, 0..8),
        )
            .prop_map(move |(end, junk, frames)| {
                [
                    vec![end],
                    junk,
                    MAGIC.to_vec(),
                    hello.clone(),
                    frames.concat(),
                ]
                .concat()
            })
    }

    proptest! {
        #[test]
        fn link_frames_are_refused_within_bounds(data in link_bytes()) {
            prop_assert!(peak(|| link(&data)) <= bound(data.len()));
        }

        #[test]
        fn random_bytes_are_refused_within_bounds(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            for f in [frames, call_body, child_env, log_frames, link] {
                prop_assert!(peak(|| f(&data)) <= bound(data.len()));
            }
            for frame_tag in 0..9 {
                prop_assert!(peak(|| body(frame_tag, &data)) <= bound(data.len()));
            }
        }

        #[test]
        fn mutated_frames_are_refused_within_bounds(data in frame_bytes()) {
            prop_assert!(peak(|| frames(&data)) <= bound(data.len()));
        }

        #[test]
        fn lying_lengths_cost_nothing(claim in any::<u64>(), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            // A varint that claims `claim` bytes or elements, then `tail`.
            let mut data = vec![253];
            data.extend_from_slice(&claim.to_le_bytes());
            data.extend_from_slice(&tail);
            for frame_tag in 0..9 {
                prop_assert!(peak(|| body(frame_tag, &data)) <= bound(data.len()));
            }
        }

        #[test]
        fn manager_requests_are_answered_within_bounds(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            prop_assert!(peak(|| manager_request(&data)) <= bound(data.len()) + (4 << 20));
            prop_assert!(peak(|| handshake(&data)) <= bound(data.len()));
        }
    }

    #[test]
    fn real_values_still_decode() {
        let value = Sample::Pair(
            Box::new(Sample::Many(vec![Sample::Text("x".into()), Sample::Unit])),
            Some(Box::new(Sample::Letter('q', true))),
        );
        assert_eq!(decode::<Sample>(&encode(&value).unwrap()).unwrap(), value);
    }
}
