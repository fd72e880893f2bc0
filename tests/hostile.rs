//! Hostile input: no byte a peer sends can abort, hang or bloat the process
//! that reads it. Children write frames that lie about the lengths inside
//! them, calls decode results as the wrong type, and an authenticated
//! manager client sends requests that lie; each gets `Error::Codec`, and
//! the reader goes on.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, BorrowedFd};

use hmac::{Hmac, KeyInit, Mac};
use pproc::manager::{Address, Manager};
use pproc::{BatchSize, Call, Channel, Error, Handle, Pool, Queue, Streams, parallel};
use sha2::Sha256;

/// The channel protocol's frame tags (a frame is a little-endian `u32`
/// body length, then the body: a tag byte and a bincode value).
const DATA: u8 = 2;
const RESULT: u8 = 3;
const PANIC: u8 = 4;
const FAIL: u8 = 5;
const ERROR: u8 = 7;
const LOG: u8 = 9;

/// A bincode string whose length claims a terabyte, followed by three
/// bytes.
fn lying_string() -> Vec<u8> {
    let mut body = vec![253];
    body.extend_from_slice(&(1u64 << 40).to_le_bytes());
    body.extend_from_slice(b"abc");
    body
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len() + 1).unwrap();
    let mut frame = len.to_le_bytes().to_vec();
    frame.push(tag);
    frame.extend_from_slice(body);
    frame
}

/// Writes `bytes` straight onto the channel's socket; exits at once if
/// `exit`, or else waits for the parent.
#[parallel]
fn liar(ch: Channel<String, u8>, bytes: Vec<u8>, exit: bool) -> String {
    // SAFETY: the descriptor stays open for the whole call.
    let fd = unsafe { BorrowedFd::borrow_raw(ch.as_raw_fd()) };
    let mut file = std::fs::File::from(fd.try_clone_to_owned().expect("dup"));
    file.write_all(&bytes).expect("write");
    if exit {
        // Without a result frame of its own.
        std::process::exit(0);
    }
    let _ = ch.recv();
    String::new()
}

/// Item `bad` writes a `LOG` frame announcing its worker's result log up
/// to a position past its end, straight onto the worker's socket.
#[parallel]
fn log_liar(x: u64, bad: u64) -> u64 {
    if x == bad {
        // SAFETY: a worker's channel is at descriptor 3 for its whole life.
        let fd = unsafe { BorrowedFd::borrow_raw(3) };
        let mut file = std::fs::File::from(fd.try_clone_to_owned().expect("dup"));
        file.write_all(&frame(LOG, &u64::MAX.to_le_bytes()))
            .expect("write");
    }
    x
}

#[parallel]
fn square(x: u64) -> u64 {
    x * x
}

#[parallel]
fn echo(text: String) -> String {
    text
}

fn lie(tag: u8, exit: bool) -> Handle<String, u8, String, Streams> {
    liar::start(frame(tag, &lying_string()), exit).unwrap()
}

fn codec_message<T: std::fmt::Debug>(result: pproc::Result<T>) -> String {
    match result {
        Err(Error::Codec { message }) => message,
        other => panic!("expected a codec error, got {other:?}"),
    }
}

#[test]
fn lying_end_frames_are_codec_errors() {
    for tag in [RESULT, PANIC, FAIL] {
        let message = codec_message(lie(tag, true).join());
        assert!(message.contains("do not decode as a `"), "{message}");
    }
    let message = codec_message(lie(RESULT, true).join());
    assert!(message.contains("alloc::string::String"), "{message}");
}

#[test]
fn lying_values_cost_their_frame_only() {
    for tag in [DATA, ERROR] {
        let mut bytes = frame(tag, &lying_string());
        // A good value after the lying one.
        bytes.extend(frame(DATA, &[2, b'o', b'k']));
        let h = liar::start(bytes, false).unwrap();
        codec_message(h.recv());
        assert_eq!(h.recv().unwrap(), "ok", "tag {tag}");
        h.send(&0).unwrap();
        assert_eq!(h.join().unwrap(), "");
    }
}

#[test]
fn a_result_decoded_as_another_type_is_a_codec_error() {
    let call = Call::<String>::new(square::NAME, &(1u64 << 20));
    let message = codec_message(call.start().unwrap().join());
    assert!(message.contains("alloc::string::String"), "{message}");
    // The same on a pool worker, which goes on serving.
    let pool = Pool::new(1).unwrap();
    let call = Call::<String>::new(square::NAME, &(1u64 << 20));
    codec_message(pool.start(call).unwrap().join());
    assert_eq!(pool.start(square::call(3)).unwrap().join().unwrap(), 9);
}

#[test]
fn lying_arguments_are_refused_by_the_child() {
    // Serialized as the byte 253 and eight raw bytes: a string length
    // that claims a terabyte, as `echo`'s child reads it.
    let lying = (253u8, (1u64 << 40).to_le_bytes());
    let message = codec_message(
        Call::<String>::new(echo::NAME, &lying)
            .start()
            .unwrap()
            .join(),
    );
    assert!(message.contains("arguments"), "{message}");
    let pool = Pool::new(1).unwrap();
    codec_message(
        pool.start(Call::<String>::new(echo::NAME, &lying))
            .unwrap()
            .join(),
    );
    let hello = pool
        .start(echo::call("hello".into()))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(hello, "hello");
}

/// A manager client, written from the protocol's description: the
/// handshake, then length-prefixed bincode requests.
struct RawClient(TcpStream);

impl RawClient {
    fn connect(addr: std::net::SocketAddr, key: &[u8]) -> Self {
        let mac = |role: &[u8], challenge: &[u8]| {
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
            mac.update(role);
            mac.update(challenge);
            mac.finalize().into_bytes()
        };
        let mut stream = TcpStream::connect(addr).unwrap();
        let mut hello = [0; 41];
        stream.read_exact(&mut hello).unwrap();
        assert_eq!(&hello[..8], b"PPROCMGR");
        let ours = [7u8; 32];
        let mut answer = mac(b"pproc client", &hello[9..]).to_vec();
        answer.extend_from_slice(&ours);
        stream.write_all(&answer).unwrap();
        let mut reply = [0; 33];
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(reply[0], 1, "the key is accepted");
        assert_eq!(reply[1..], mac(b"pproc server", &ours)[..]);
        Self(stream)
    }

    /// Sends one request body, returns the answer's body.
    fn ask(&mut self, body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(body.len()).unwrap();
        self.0.write_all(&len.to_le_bytes()).unwrap();
        self.0.write_all(body).unwrap();
        let mut len = [0; 4];
        self.0.read_exact(&mut len).unwrap();
        let mut answer = vec![0; u32::from_le_bytes(len) as usize];
        self.0.read_exact(&mut answer).unwrap();
        answer
    }
}

#[test]
fn a_manager_refuses_lying_requests_and_serves_on() {
    let key = b"hostile test key";
    let server = Manager::serve("127.0.0.1:0", key).unwrap();
    let Address::Tcp(addr) = server.address().clone() else {
        panic!("a TCP manager");
    };
    let counter = server.value(&0_u64).unwrap();
    let mut raw = RawClient::connect(addr, key);
    // `Op::Call { object: 1, op: Custom(Call { method: <a terabyte>, args }) }`.
    let mut call = vec![1, 1, 10, 0];
    call.extend(lying_string());
    // `Op::Create { kind: Map, types: <a terabyte>, .. }`.
    let mut create = vec![0, 0];
    create.extend(lying_string());
    for (i, request) in [call, create, vec![9; 3], Vec::new()].iter().enumerate() {
        let answer = raw.ask(request);
        // `Answer::Fault(message)`: variant 2.
        assert_eq!(answer.first(), Some(&2), "request {i}: {answer:?}");
        let message = String::from_utf8_lossy(&answer);
        assert!(message.contains("does not decode"), "{message}");
        // Other clients are served throughout.
        assert_eq!(counter.add(1).unwrap(), i as u64 + 1);
    }
    // A frame that announces a gigabyte and sends ten bytes costs ten: the
    // server waits for the rest, and serves the others meanwhile.
    raw.0.write_all(&(1u32 << 30).to_le_bytes()).unwrap();
    raw.0.write_all(b"ten bytes!").unwrap();
    assert_eq!(counter.add(1).unwrap(), 5);
    drop(raw);
    assert_eq!(counter.get().unwrap(), 5);
}

#[test]
fn lying_log_frames_are_codec_errors() {
    // From a child that has no log.
    let message = codec_message(liar::start(frame(LOG, &[0; 8]), true).unwrap().join());
    assert!(message.contains("without a log"), "{message}");
    // From a worker that has one: the batch fails with a codec error, and
    // every item gets an outcome.
    let mut queue = Queue::new(|x| log_liar::call(x, 3), 0..10)
        .limit(1)
        .batch(BatchSize::Fixed(10));
    let outcomes: Vec<_> = std::iter::from_fn(|| queue.next_indexed()).collect();
    assert_eq!(outcomes.len(), 10);
    assert!(
        outcomes
            .iter()
            .any(|(_, outcome)| matches!(outcome, Err(Error::Codec { .. }))),
        "{outcomes:?}"
    );
    for (index, outcome) in &outcomes {
        if let Ok(x) = outcome {
            assert_eq!(*x, *index as u64);
        }
    }
}
