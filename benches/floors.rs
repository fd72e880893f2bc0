//! Every common job beside its floor, in one run: what the same work costs
//! without pproc (rayon, a hand-written fork and socketpair, a bare
//! re-exec, memcpy), and what it costs through pproc's public API.
//!
//! Each row is measured in interleaved rounds: a round runs every contender
//! once, in turn, starting one further along each round, so slow drift of
//! the machine (frequency, other load) spreads over all of them. A row
//! prints each contender's median and best, its median over the floor's
//! (the row's first line), and the 1-minute load average when the row
//! ended.
//!
//! `cargo bench --bench floors`; add `-- --quick` (or set
//! `PPROC_BENCH_QUICK=1`) for a short run on smaller sizes that still runs
//! every row.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};
use pproc::{Bytes, Channel, Exchange, Handle, Map, Pool, Streams, parallel};
use rayon::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};

/// Set in the environment of the spawn floor's child: exit at once.
const FLOOR_ENV: &str = "PPROC_BENCH_FLOOR";

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// The buffer the hand-written floors gather frames in, and read into.
const BUFFER: usize = 64 * KIB;

/// Rounds of the pmap function's inner loop: about 10 us on a 2020s core.
const SPIN_ROUNDS: u32 = 4_000;

/// The sizes and round counts of one run.
struct Plan {
    dirs: usize,
    files_per_dir: usize,
    items: u64,
    values: u64,
    big: usize,
    small: usize,
    calls: u32,
    /// Rounds of the slow rows (the hash tree and the pmap), of the
    /// others, and of the rows whose samples are short.
    slow_rounds: usize,
    rounds: usize,
    short_rounds: usize,
    /// Untimed rounds before each row, but the pmap's.
    warmup: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                dirs: 4,
                files_per_dir: 100,
                items: 2_000,
                values: 20_000,
                big: 4 * MIB,
                small: MIB,
                calls: 200,
                slow_rounds: 2,
                rounds: 2,
                short_rounds: 5,
                warmup: 0,
            }
        } else {
            Self {
                dirs: 40,
                files_per_dir: 100,
                items: 100_000,
                values: 200_000,
                big: 64 * MIB,
                small: MIB,
                calls: 2_000,
                slow_rounds: 3,
                rounds: 10,
                short_rounds: 50,
                warmup: 1,
            }
        }
    }
}

fn main() {
    if std::env::var_os(FLOOR_ENV).is_some() {
        std::process::exit(0);
    }
    let started = Instant::now();
    let (_, quick) = pproc_workspace::bench_preamble("floors");
    print_machine();
    let plan = Plan::new(quick);
    print_head();

    // Words after `--` that are not flags pick rows: `-- stream echo`.
    let picked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |row: &str| picked.is_empty() || picked.iter().any(|p| p == row);
    if want("hash") {
        let tree = Tree::create(plan.dirs, plan.files_per_dir);
        run_row(hash_row(&plan, &tree));
    }
    if want("pmap") {
        run_row(pmap_row(&plan));
    }
    if want("stream") {
        run_row(stream_row(&plan));
    }
    if want("echo") {
        run_row(echo_row(&plan, plan.big, true));
        run_row(echo_row(&plan, plan.small, false));
    }
    if want("calls") {
        run_row(calls_row(&plan));
    }
    if want("spawn") {
        run_row(spawn_row(&plan));
    }
    if want("remote") {
        run_row(remote_calls_row(&plan, &Via::Env));
        run_row(remote_echo_row(&plan, &Via::Env));
        run_row(connect_row(&plan, &Via::Env));
        // Through a real sshd on loopback, where the test bed can start
        // one (ci/scaleout).
        if let Some(bed) = pproc_workspace::testbed::sshd() {
            let ssh = Via::Ssh(bed.config().to_owned());
            run_row(remote_calls_row(&plan, &ssh));
            run_row(remote_echo_row(&plan, &ssh));
            run_row(connect_row(&plan, &ssh));
        }
    }

    println!();
    println!(
        "wall time {:.1} s; ratio: the median over the row's first line (its floor); load: \
         1-minute load average at the row's end",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// Rows, contenders and their rounds.

/// One contender: runs the work once and says how long it took.
trait Runner {
    fn run(&mut self) -> Duration;

    /// A note for its line, once its rounds are over.
    fn finish(&mut self) -> String {
        String::new()
    }
}

/// A contender that is a closure timing itself.
struct Timed<F>(F);

impl<F: FnMut() -> Duration> Runner for Timed<F> {
    fn run(&mut self) -> Duration {
        (self.0)()
    }
}

struct Entry<'a> {
    name: String,
    runner: Box<dyn Runner + 'a>,
}

fn entry<'a>(name: impl Into<String>, f: impl FnMut() -> Duration + 'a) -> Entry<'a> {
    Entry {
        name: name.into(),
        runner: Box::new(Timed(f)),
    }
}

struct Row<'a> {
    work: String,
    rounds: usize,
    warmup: usize,
    /// The first is the floor the others are measured against.
    entries: Vec<Entry<'a>>,
}

/// How long `f` takes.
fn clock(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn run_row(mut row: Row<'_>) {
    let n = row.entries.len();
    for _ in 0..row.warmup {
        for e in &mut row.entries {
            e.runner.run();
        }
    }
    let mut samples = vec![Vec::with_capacity(row.rounds); n];
    for round in 0..row.rounds {
        for turn in 0..n {
            let i = (round + turn) % n;
            samples[i].push(row.entries[i].runner.run());
        }
    }
    let notes: Vec<String> = row.entries.iter_mut().map(|e| e.runner.finish()).collect();
    let load = load_average();
    let medians: Vec<Duration> = samples.iter_mut().map(|s| median(s)).collect();
    let floor = medians[0].as_secs_f64();
    for (i, e) in row.entries.iter().enumerate() {
        let work = if i == 0 { row.work.as_str() } else { "" };
        let load = if i == 0 { load.clone() } else { String::new() };
        let ratio = medians[i].as_secs_f64() / floor;
        let line = format!(
            "{work:<36} {:<38} {:>10} {:>10} {:>9} {load:>5}  {}",
            e.name,
            human(medians[i]),
            human(samples[i][0]),
            format!("{ratio:.2}x"),
            notes[i]
        );
        println!("{}", line.trim_end());
    }
}

fn print_head() {
    println!(
        "{:<36} {:<38} {:>10} {:>10} {:>9} {:>5}  note",
        "work", "contender", "median", "best", "ratio", "load"
    );
}

/// Sorts `samples` and returns the median.
fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} us", s * 1e6)
    }
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

// ---------------------------------------------------------------------------
// SHA-256 of a tree of small files.

/// A temporary tree of small files, removed when dropped.
struct Tree {
    root: PathBuf,
    dirs: Vec<PathBuf>,
    files: Vec<PathBuf>,
    bytes: usize,
}

impl Tree {
    fn create(dirs: usize, per_dir: usize) -> Self {
        let root = std::env::temp_dir().join(format!("pproc-floors-{}", std::process::id()));
        let mut tree = Self {
            root,
            dirs: Vec::new(),
            files: Vec::new(),
            bytes: 0,
        };
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        for d in 0..dirs {
            let dir = tree.root.join(format!("d{d:03}"));
            fs::create_dir_all(&dir).expect("a directory of the tree");
            for f in 0..per_dir {
                // From 1 to 7 KiB, 4 KiB on average.
                let len = KIB + usize::try_from(xorshift(&mut state) % (6 * KIB as u64)).unwrap();
                let body: Vec<u8> = (0..len)
                    .map(|_| xorshift(&mut state).to_le_bytes()[0])
                    .collect();
                let path = dir.join(format!("f{f:03}"));
                fs::write(&path, &body).expect("a file of the tree");
                tree.files.push(path);
                tree.bytes += len;
            }
            tree.dirs.push(dir);
        }
        tree
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn sha256_file(path: &Path) -> [u8; 32] {
    let body = fs::read(path).expect("a file of the tree");
    Sha256::digest(&body).into()
}

#[parallel]
fn hash(path: PathBuf) -> [u8; 32] {
    sha256_file(&path)
}

/// The digests of a directory's files, in name order.
#[parallel]
fn hash_dir(dir: PathBuf) -> Vec<[u8; 32]> {
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("a directory of the tree")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    files.sort();
    files.iter().map(|f| sha256_file(f)).collect()
}

fn hash_row<'a>(plan: &Plan, tree: &'a Tree) -> Row<'a> {
    let files = &tree.files;
    let expected: Vec<[u8; 32]> = files.iter().map(|f| sha256_file(f)).collect();
    let check = move |got: Vec<[u8; 32]>| assert!(got == expected, "the digests differ");
    let check2 = check.clone();
    let check3 = check.clone();
    let check4 = check.clone();
    Row {
        work: format!(
            "SHA-256 of {} files ({} MiB)",
            files.len(),
            tree.bytes.div_ceil(MIB)
        ),
        rounds: plan.slow_rounds,
        warmup: plan.warmup,
        entries: vec![
            entry("rayon par_iter", move || {
                let mut got = Vec::new();
                let took = clock(|| got = files.par_iter().map(|f| sha256_file(f)).collect());
                check(got);
                took
            }),
            entry("Map::new(hash::call, files)", move || {
                let items = files.clone();
                let mut got = Vec::new();
                let took = clock(|| {
                    got = Map::new(hash::call, items)
                        .collect::<pproc::Result<_>>()
                        .expect("map");
                });
                check2(got);
                took
            }),
            entry("  .reuse(false): a process per file", move || {
                let items = files.clone();
                let mut got = Vec::new();
                let took = clock(|| {
                    got = Map::new(hash::call, items)
                        .reuse(false)
                        .collect::<pproc::Result<_>>()
                        .expect("map");
                });
                check3(got);
                took
            }),
            entry(
                format!("Map::new(hash_dir::call, {} dirs)", tree.dirs.len()),
                move || {
                    let items = tree.dirs.clone();
                    let mut got: Vec<Vec<[u8; 32]>> = Vec::new();
                    let took = clock(|| {
                        got = Map::new(hash_dir::call, items)
                            .collect::<pproc::Result<_>>()
                            .expect("map");
                    });
                    check4(got.concat());
                    took
                },
            ),
        ],
    }
}

// ---------------------------------------------------------------------------
// A small CPU-bound function over many items.

#[parallel]
fn spin(x: u64) -> u64 {
    let mut v = x;
    for _ in 0..SPIN_ROUNDS {
        v = v
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        v ^= v >> 29;
    }
    v
}

fn pmap_row(plan: &Plan) -> Row<'static> {
    let items: Vec<u64> = (0..plan.items).collect();
    let probe = 2_000;
    let inline = clock(|| {
        for x in 0..probe {
            std::hint::black_box(spin(std::hint::black_box(x)));
        }
    }) / u32::try_from(probe).unwrap();
    let expected: Vec<u64> = items.iter().map(|&x| spin(x)).collect();
    let sum: u64 = expected.iter().fold(0, |a, &b| a.wrapping_add(b));
    let check =
        move |got: &[u64]| assert!(got.iter().fold(0_u64, |a, &b| a.wrapping_add(b)) == sum);
    let items2 = items.clone();
    Row {
        work: format!("{} fn over {} items", human(inline), plan.items),
        rounds: plan.slow_rounds,
        warmup: 0,
        entries: vec![
            entry("rayon par_iter", move || {
                let mut got = Vec::new();
                let took = clock(|| got = items.par_iter().map(|&x| spin(x)).collect());
                check(&got);
                took
            }),
            entry("pproc::pmap(spin::call, items)", move || {
                let items = items2.clone();
                let mut got = Vec::new();
                let took = clock(|| got = pproc::pmap(spin::call, items).expect("pmap"));
                check(&got);
                took
            }),
        ],
    }
}

// ---------------------------------------------------------------------------
// Streaming values from a child.

#[parallel]
fn count(ch: Channel<u64>, n: u64) {
    for i in 0..n {
        ch.send(&i).expect("the parent listens");
    }
}

fn wire() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Appends one frame, a little-endian `u32` length then bincode, to `out`.
fn put_frame(out: &mut Vec<u8>, value: &impl Serialize) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    bincode::serde::encode_into_std_write(value, out, wire()).expect("encode");
    let len = u32::try_from(out.len() - at - 4).expect("a small frame");
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// Reads frames from `sock` until it closes, decoding each as a `u64`:
/// their sum and count, and when the first arrived.
fn sum_frames(sock: &mut UnixStream) -> (u64, u64, Instant) {
    let mut buf = vec![0_u8; BUFFER];
    let (mut start, mut end) = (0, 0);
    let (mut sum, mut count) = (0_u64, 0_u64);
    let mut first = None;
    loop {
        // Decode every whole frame in the buffer.
        while end - start >= 4 {
            let len = u32::from_le_bytes(buf[start..start + 4].try_into().unwrap()) as usize;
            if end - start < 4 + len {
                break;
            }
            let body = &buf[start + 4..start + 4 + len];
            let (v, _): (u64, _) = bincode::serde::decode_from_slice(body, wire()).expect("decode");
            first.get_or_insert_with(Instant::now);
            sum = sum.wrapping_add(v);
            count += 1;
            start += 4 + len;
        }
        buf.copy_within(start..end, 0);
        end -= start;
        start = 0;
        match sock.read(&mut buf[end..]) {
            Ok(0) => return (sum, count, first.unwrap_or_else(Instant::now)),
            Ok(k) => end += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Forks a child that runs `body` on its end of a socketpair, then exits.
fn fork_child(body: impl FnOnce(UnixStream)) -> (UnixStream, Pid) {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    // SAFETY: the child only reads and writes its socket with buffers that
    // exist before the fork, and leaves with `_exit`; it takes no lock
    // that another thread of this program may hold.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(ours);
            body(theirs);
            // SAFETY: ends the child at once, running nothing of the parent's.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => (ours, child),
    }
}

/// `n` values streamed from a forked child in frames, gathered in a 64 KiB
/// buffer (`gather`) or written one by one: their sum and count, and the
/// time from the first value to the child's end.
fn stream_floor(n: u64, gather: bool) -> ((u64, u64), Duration) {
    let mut out = Vec::with_capacity(BUFFER + 64);
    let (mut sock, child) = fork_child(|mut sock| {
        for i in 0..n {
            put_frame(&mut out, &i);
            if !gather || out.len() >= BUFFER {
                sock.write_all(&out).expect("write");
                out.clear();
            }
        }
        sock.write_all(&out).expect("write");
    });
    let (sum, count, first) = sum_frames(&mut sock);
    waitpid(child, None).expect("waitpid");
    ((sum, count), first.elapsed())
}

fn stream_row(plan: &Plan) -> Row<'static> {
    let n = plan.values;
    let expected = (n * (n - 1) / 2, n);
    // The rate of the stream: each contender is timed from its first value
    // to its child's end, so that starting a child (a fork here, a spawn
    // for pproc: see the spawn row) is not counted.
    Row {
        work: format!("stream {n} u64, child to parent"),
        rounds: plan.rounds,
        warmup: plan.warmup,
        entries: vec![
            entry("fork: frames in a 64 KiB buffer", move || {
                let (got, took) = stream_floor(n, true);
                assert_eq!(got, expected);
                took
            }),
            entry("fork: a write per frame", move || {
                let (got, took) = stream_floor(n, false);
                assert_eq!(got, expected);
                took
            }),
            entry("count::start(n), iterate the handle", move || {
                let h = count::start(n).expect("start");
                let mut got = (h.recv().expect("a first value"), 1);
                let took = clock(|| {
                    for v in h.iter() {
                        got.0 += v.expect("a value");
                        got.1 += 1;
                    }
                    h.join().expect("join");
                });
                assert_eq!(got, expected);
                took
            }),
        ],
    }
}

// ---------------------------------------------------------------------------
// Echoing bytes through a running child.

/// A payload type that the echo rows send through a channel, one line
/// each: a child function that echoes it, and its label.
macro_rules! echo_payloads {
    ($($name:ident: $ty:ty => $label:literal,)*) => {
        $(
            #[parallel]
            fn $name(ch: Channel<$ty, $ty>) -> u64 {
                echo_loop(&ch)
            }
        )*

        /// A contender for each payload type, its child started.
        fn pproc_echoes(data: &[u8], memory: bool) -> Vec<Entry<'_>> {
            vec![$(
                Entry {
                    name: $label.to_owned(),
                    runner: Box::new(EchoChild::start($name::start, data, memory)),
                },
            )*]
        }
    };
}

echo_payloads! {
    echo_vec: Vec<u8> => "Channel<Vec<u8>, Vec<u8>>",
    echo_bytebuf: ByteBuf => "Channel<ByteBuf, ByteBuf>",
    echo_bytes: Bytes => "Channel<Bytes, Bytes>",
}

/// Sends back what arrives until an empty payload; returns this process's
/// peak resident memory in KiB.
fn echo_loop<T: Serialize + DeserializeOwned + AsRef<[u8]>>(ch: &Channel<T, T>) -> u64 {
    loop {
        let v = ch.recv().expect("the parent sends");
        if v.as_ref().is_empty() {
            return memory_kib("VmHWM");
        }
        ch.send(&v).expect("the parent listens");
    }
}

/// A field of `/proc/self/status` in KiB.
fn memory_kib(field: &str) -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets this process's peak resident memory to what it holds now; false
/// where the kernel does not allow it.
fn reset_peak() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak resident memory over the process's at the start of the last
/// samples, the most of them, in KiB.
#[derive(Default)]
struct Peak {
    most: Option<u64>,
}

impl Peak {
    /// Runs `f` and notes the parent's peak memory above what it held.
    fn watch(&mut self, f: impl FnOnce()) {
        let ok = reset_peak();
        let before = memory_kib("VmRSS");
        f();
        if ok {
            let over = memory_kib("VmHWM").saturating_sub(before);
            self.most = Some(self.most.map_or(over, |m| m.max(over)));
        }
    }

    fn note(&self) -> String {
        self.most.map_or_else(String::new, |kib| {
            format!("parent peak +{} MiB", kib.div_ceil(1024))
        })
    }
}

/// A child that echoes `T`s, and returns its peak memory.
type Echoer<T> = Handle<u64, T, T, Streams>;

/// A running child that echoes payloads of type `T`.
struct EchoChild<'a, T> {
    handle: Option<Echoer<T>>,
    data: &'a [u8],
    memory: bool,
    peak: Peak,
}

impl<'a, T: Serialize + DeserializeOwned + AsRef<[u8]> + From<Vec<u8>>> EchoChild<'a, T> {
    fn start(start: fn() -> pproc::Result<Echoer<T>>, data: &'a [u8], memory: bool) -> Self {
        Self {
            handle: Some(start().expect("start")),
            data,
            memory,
            peak: Peak::default(),
        }
    }
}

impl<T: Serialize + DeserializeOwned + AsRef<[u8]> + From<Vec<u8>>> Runner for EchoChild<'_, T> {
    fn run(&mut self) -> Duration {
        let h = self.handle.as_ref().expect("a running child");
        let payload = T::from(self.data.to_vec());
        let mut back = None;
        let mut took = Duration::ZERO;
        let mut once = || {
            took = clock(|| {
                h.send(&payload).expect("send");
                back = Some(h.recv().expect("recv"));
            });
        };
        if self.memory {
            self.peak.watch(once);
        } else {
            once();
        }
        assert!(
            back.is_some_and(|b| b.as_ref() == self.data),
            "echoed wrong"
        );
        took
    }

    fn finish(&mut self) -> String {
        let h = self.handle.take().expect("a running child");
        h.send(&T::from(Vec::new())).expect("send");
        let child = h.join().expect("join");
        if self.memory {
            format!(
                "{}, child peak {} MiB",
                self.peak.note(),
                child.div_ceil(1024)
            )
        } else {
            String::new()
        }
    }
}

/// A forked child that echoes raw bytes over a socketpair.
struct EchoFork<'a> {
    sock: Option<UnixStream>,
    child: Pid,
    data: &'a [u8],
    back: Vec<u8>,
    memory: bool,
    peak: Peak,
}

impl<'a> EchoFork<'a> {
    fn start(data: &'a [u8], memory: bool) -> Self {
        let mut buf = vec![0_u8; BUFFER];
        let (sock, child) = fork_child(|mut sock| {
            loop {
                match sock.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => sock.write_all(&buf[..k]).expect("write"),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => panic!("read: {e}"),
                }
            }
        });
        sock.set_nonblocking(true).expect("non-blocking");
        Self {
            sock: Some(sock),
            child,
            data,
            back: vec![1; data.len()],
            memory,
            peak: Peak::default(),
        }
    }
}

/// Writes `out` to a non-blocking `sock` while reading as many bytes back
/// into `back`.
fn pump(sock: &UnixStream, out: &[u8], back: &mut [u8]) {
    let (mut sent, mut got) = (0, 0);
    while got < back.len() {
        let events = if sent < out.len() {
            PollFlags::POLLIN | PollFlags::POLLOUT
        } else {
            PollFlags::POLLIN
        };
        let mut fds = [PollFd::new(sock.as_fd(), events)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => panic!("poll: {e}"),
        }
        if sent < out.len() {
            match (&*sock).write(&out[sent..]) {
                Ok(k) => sent += k,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) => panic!("write: {e}"),
            }
        }
        match (&*sock).read(&mut back[got..]) {
            Ok(0) => panic!("the echo child closed its socket"),
            Ok(k) => got += k,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

impl Runner for EchoFork<'_> {
    fn run(&mut self) -> Duration {
        let sock = self.sock.as_ref().expect("a running child");
        self.back.fill(0);
        let mut took = Duration::ZERO;
        let back = &mut self.back;
        let data = self.data;
        let mut once = || took = clock(|| pump(sock, data, back));
        if self.memory {
            self.peak.watch(once);
        } else {
            once();
        }
        assert!(self.back == self.data, "echoed wrong");
        took
    }

    fn finish(&mut self) -> String {
        if let Some(sock) = self.sock.take() {
            sock.shutdown(Shutdown::Both).expect("shutdown");
        }
        waitpid(self.child, None).expect("waitpid");
        if self.memory {
            self.peak.note()
        } else {
            String::new()
        }
    }
}

fn echo_row(plan: &Plan, size: usize, big: bool) -> Row<'static> {
    // The row's data lives as long as the program: rows are few.
    let data: &'static [u8] = Vec::leak((0..size).map(|i| (i % 251) as u8).collect());
    let mut entries = vec![Entry {
        name: "socketpair raw copy, forked child".to_owned(),
        runner: Box::new(EchoFork::start(data, big)),
    }];
    if big {
        let mut dst = vec![1_u8; size];
        entries.push(entry(format!("memcpy {} MiB", size / MIB), move || {
            let took = clock(|| dst.copy_from_slice(std::hint::black_box(data)));
            std::hint::black_box(&dst);
            took
        }));
    }
    entries.extend(pproc_echoes(data, big));
    Row {
        work: format!("echo {} MiB to a running child", size / MIB),
        rounds: if big { plan.rounds } else { plan.short_rounds },
        warmup: plan.warmup,
        entries,
    }
}

// ---------------------------------------------------------------------------
// Many tiny calls, at most two at once.

#[parallel]
fn tiny(x: u32) -> u32 {
    x.wrapping_mul(2_654_435_761)
}

/// Reads one frame from a blocking `sock` into `buf` and decodes it.
fn read_frame<T: DeserializeOwned>(sock: &mut UnixStream, buf: &mut [u8]) -> Option<T> {
    let mut head = [0_u8; 4];
    sock.read_exact(&mut head).ok()?;
    let len = u32::from_le_bytes(head) as usize;
    sock.read_exact(&mut buf[..len]).ok()?;
    Some(
        bincode::serde::decode_from_slice(&buf[..len], wire())
            .expect("decode")
            .0,
    )
}

/// `calls` tiny calls on two forked workers, each fed a call frame as soon
/// as it answers the last; the results in input order.
fn two_workers(calls: u32) -> Vec<u32> {
    let mut workers: Vec<(UnixStream, Pid)> = (0..2)
        .map(|_| {
            let mut buf = vec![0_u8; 64];
            let mut out = Vec::with_capacity(64);
            fork_child(move |mut sock| {
                while let Some(x) = read_frame::<u32>(&mut sock, &mut buf) {
                    out.clear();
                    put_frame(&mut out, &tiny(x));
                    sock.write_all(&out).expect("write");
                }
            })
        })
        .collect();
    let mut results = vec![0; calls as usize];
    let mut running: [Option<u32>; 2] = [None, None];
    let mut next = 0;
    let mut out = Vec::with_capacity(64);
    let mut buf = [0_u8; 64];
    let mut send = |w: &mut UnixStream, x: u32| {
        out.clear();
        put_frame(&mut out, &x);
        w.write_all(&out).expect("write");
    };
    for (slot, (w, _)) in running.iter_mut().zip(&mut workers) {
        if next < calls {
            send(w, next);
            *slot = Some(next);
            next += 1;
        }
    }
    while running.iter().any(Option::is_some) {
        let mut fds: Vec<PollFd<'_>> = workers
            .iter()
            .map(|(w, _)| PollFd::new(w.as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => panic!("poll: {e}"),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        for (i, (w, _)) in workers.iter_mut().enumerate() {
            if !ready[i] {
                continue;
            }
            let Some(x) = running[i].take() else {
                continue;
            };
            results[x as usize] = read_frame(w, &mut buf).expect("a result frame");
            if next < calls {
                send(w, next);
                running[i] = Some(next);
                next += 1;
            }
        }
    }
    for (w, child) in workers {
        // Each worker holds a copy of the sockets forked before it: shut
        // them down, so that every worker reads its end.
        w.shutdown(Shutdown::Both).expect("shutdown");
        waitpid(child, None).expect("waitpid");
    }
    results
}

fn calls_row(plan: &Plan) -> Row<'static> {
    let calls = plan.calls;
    let expected: Vec<u32> = (0..calls).map(tiny).collect();
    let sum: u64 = expected.iter().map(|&v| u64::from(v)).sum();
    let e1 = expected.clone();
    let e2 = expected.clone();
    let e3 = expected.clone();
    Row {
        work: format!("{calls} tiny calls, at most 2 at once"),
        rounds: plan.rounds,
        warmup: plan.warmup,
        entries: vec![
            entry("2 forked workers, socketpairs", move || {
                let mut got = Vec::new();
                let took = clock(|| got = two_workers(calls));
                assert_eq!(got, expected);
                took
            }),
            entry("Pool::new(2): start each, join each", move || {
                let mut got = Vec::new();
                let took = clock(|| {
                    let pool = Pool::new(2).expect("pool");
                    let pending: Vec<_> = (0..calls)
                        .map(|x| pool.start(tiny::call(x)).expect("start"))
                        .collect();
                    got = pending
                        .into_iter()
                        .map(|p| p.join().expect("join"))
                        .collect();
                    pool.shutdown().expect("shutdown");
                });
                assert_eq!(got, e1);
                took
            }),
            entry("Map .limit(2)", move || {
                let mut got = Vec::new();
                let took = clock(|| {
                    got = Map::new(tiny::call, 0..calls)
                        .limit(2)
                        .collect::<pproc::Result<_>>()
                        .expect("map");
                });
                assert_eq!(got, e2);
                took
            }),
            entry("Exchange .limit(2).reuse(true)", move || {
                let mut got: Vec<u32> = Vec::new();
                let took = clock(|| {
                    let mut ex = Exchange::new(Vec::new()).limit(2).reuse(true);
                    for x in 0..calls {
                        ex.start(tiny::call(x)).expect("start");
                    }
                    got = ex.finish().expect("finish");
                });
                assert_eq!(got.len(), e3.len());
                assert_eq!(got.iter().map(|&v| u64::from(v)).sum::<u64>(), sum);
                took
            }),
        ],
    }
}

// ---------------------------------------------------------------------------
// Spawn and join.

#[parallel]
fn trivial(x: u32) -> u32 {
    x + 1
}

fn spawn_row(plan: &Plan) -> Row<'static> {
    let exe = std::env::current_exe().expect("the path of this executable");
    Row {
        work: "spawn + join, trivial fn".to_owned(),
        rounds: plan.short_rounds,
        warmup: plan.warmup,
        entries: vec![
            entry("re-exec /proc/self/exe, exits in main", move || {
                clock(|| {
                    let status = Command::new(&exe)
                        .env(FLOOR_ENV, "1")
                        .stdin(Stdio::null())
                        .status()
                        .expect("re-executing this benchmark");
                    assert!(status.success(), "the floor's child failed: {status}");
                })
            }),
            entry("trivial::start(x)?.join()", || {
                clock(|| {
                    let got = trivial::start(1).expect("start").join().expect("join");
                    assert_eq!(got, 2);
                })
            }),
        ],
    }
}

// ---------------------------------------------------------------------------
// The header.

fn print_machine() {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned());
    println!("cpu:     {cpu}; Linux {kernel}");
    for (what, program, args) in [
        ("rustc:  ", "rustc", &["-V"][..]),
        ("commit: ", "git", &["rev-parse", "--short", "HEAD"][..]),
        ("date:   ", "date", &["-u", "+%Y-%m-%d %H:%M UTC"][..]),
    ] {
        if let Some(text) = pproc_workspace::command_output(program, args) {
            println!("{what} {text}");
        }
    }
    println!("load:    {} at the start", load_average());
    println!();
}

// ---------------------------------------------------------------------------
// Calls on another host, through a launcher.

/// The launcher the remote rows go through: `env`, which runs the agent
/// on this host (the rows show what the agent and the link cost on top of
/// the launcher's own pipe), or ssh to the test bed's node-a, on loopback,
/// with its configuration file.
#[derive(Clone)]
enum Via {
    Env,
    Ssh(std::path::PathBuf),
}

impl Via {
    fn name(&self) -> &'static str {
        match self {
            Self::Env => "env",
            Self::Ssh(_) => "ssh",
        }
    }

    /// A launcher to a host of its own, named `host`.
    fn launcher(&self, host: &str) -> pproc::Builder {
        match self {
            Self::Env => pproc::Builder::new().launcher(pproc::Prefix::new(["env"]).host(host)),
            Self::Ssh(config) => pproc::Builder::new().launcher(
                pproc::Ssh::new("node-a")
                    .config(config)
                    .option(format!("HostKeyAlias={host}")),
            ),
        }
    }

    /// `cluster` and one more host, named `host`: over ssh, a connection
    /// of its own (no multiplexing), as a host of its own would need.
    fn cluster(&self, cluster: pproc::Cluster, host: &str) -> pproc::Cluster {
        match self {
            Self::Env => cluster.host(pproc::Prefix::new(["env"]).host(host), 1),
            Self::Ssh(config) => cluster.host(
                pproc::Ssh::new("node-a")
                    .config(config)
                    .option(format!("HostKeyAlias={host}"))
                    .option("ControlPath=none"),
                1,
            ),
        }
    }

    /// The launcher's command running `program`, as a plain process.
    fn command(&self, program: &str) -> std::process::Command {
        match self {
            Self::Env => {
                let mut command = std::process::Command::new("env");
                command.arg(program);
                command
            }
            Self::Ssh(config) => {
                let mut command = std::process::Command::new("ssh");
                command
                    .arg("-F")
                    .arg(config)
                    .args(["-T", "node-a", program]);
                command
            }
        }
    }
}

/// A program started through the launcher that echoes what it reads.
struct Echo {
    child: std::process::Child,
    frame: Vec<u8>,
    back: Vec<u8>,
}

impl Echo {
    fn start(via: &Via) -> Self {
        let child = via
            .command("cat")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("cat through the launcher");
        let mut frame = Vec::new();
        put_frame(&mut frame, &[7_u8; 59].to_vec());
        let back = vec![0; frame.len()];
        Self { child, frame, back }
    }

    /// As [`start`](Self::start), with a frame of `len` bytes.
    fn with_frame(via: &Via, len: usize) -> Self {
        let mut echo = Self::start(via);
        echo.frame = vec![7; len];
        echo.back = vec![0; len];
        echo
    }

    /// One frame there and back: written while it is read back, so that a
    /// frame larger than the pipes hold does not wait on itself.
    fn round_trip(&mut self) {
        let input = self.child.stdin.as_mut().expect("stdin");
        let output = self.child.stdout.as_mut().expect("stdout");
        let frame = &self.frame;
        if frame.len() <= 4 * KIB {
            input.write_all(frame).expect("write");
            input.flush().expect("flush");
        } else {
            std::thread::scope(|s| {
                s.spawn(|| input.write_all(frame).expect("write"));
                output.read_exact(&mut self.back).expect("read");
            });
        }
        if frame.len() <= 4 * KIB {
            output.read_exact(&mut self.back).expect("read");
        }
        assert!(self.back == self.frame, "echoed wrong");
    }
}

fn remote_calls_row(plan: &Plan, via: &Via) -> Row<'static> {
    let calls = plan.calls / 4;
    let local = Pool::new(1).expect("pool");
    let mut echo = Echo::start(via);
    let remote = Pool::with_builder(1, via.launcher(&format!("bench-{}", via.name())))
        .expect("a pool on the host");
    Row {
        work: format!("{calls} calls in turn, one warm worker, via {}", via.name()),
        rounds: plan.rounds,
        warmup: plan.warmup.max(1),
        entries: vec![
            entry(
                "local Pool(1) call + a frame there and back via the launcher",
                move || {
                    clock(|| {
                        for x in 0..calls {
                            let got = local
                                .start(tiny::call(x))
                                .expect("start")
                                .join()
                                .expect("join");
                            assert_eq!(got, tiny(x));
                            echo.round_trip();
                        }
                    })
                },
            ),
            entry("Pool(1) on the host: start, join", move || {
                clock(|| {
                    for x in 0..calls {
                        let got = remote
                            .start(tiny::call(x))
                            .expect("start")
                            .join()
                            .expect("join");
                        assert_eq!(got, tiny(x));
                    }
                })
            }),
        ],
    }
}

/// Large payloads there and back to a warm child on another host: what a
/// big argument or result costs over the link, beside the launcher's own
/// pipe carrying as much.
fn remote_echo_row(plan: &Plan, via: &Via) -> Row<'static> {
    let len = plan.small;
    let times = 16;
    let mut echo = Echo::with_frame(via, len);
    let h = via
        .launcher(&format!("echo-{}", via.name()))
        .start(echo_bytes::call())
        .expect("an echo on the host");
    let payload = Bytes::from(vec![7_u8; len]);
    Row {
        work: format!(
            "echo {times} x {} KiB to a warm child, via {}",
            len / KIB,
            via.name()
        ),
        rounds: plan.rounds,
        warmup: plan.warmup.max(1),
        entries: vec![
            entry(
                "the same bytes there and back via the launcher",
                move || {
                    clock(|| {
                        for _ in 0..times {
                            echo.round_trip();
                        }
                    })
                },
            ),
            entry("Channel<Bytes, Bytes> on the host", move || {
                clock(|| {
                    for _ in 0..times {
                        h.send(&payload).expect("send");
                        assert_eq!(h.recv().expect("recv").len(), len);
                    }
                })
            }),
        ],
    }
}

/// A cluster of `n` hosts of names not used before.
fn fresh_hosts(via: &Via, n: usize) -> pproc::Cluster {
    static ROUND: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let round = ROUND.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (0..n).fold(pproc::Cluster::new(), |cluster, i| {
        via.cluster(cluster, &format!("connect-{round}-{i}"))
    })
}

fn connect_row(plan: &Plan, via: &Via) -> Row<'static> {
    let connect = |n: usize| {
        let via = via.clone();
        move || {
            let cluster = fresh_hosts(&via, n);
            let took = clock(|| cluster.connect().expect("connect"));
            // Let go after each round, so that agents do not pile up.
            cluster.disconnect();
            took
        }
    };
    Row {
        work: format!("connect hosts via {}, a handshake each", via.name()),
        rounds: plan.rounds,
        warmup: plan.warmup,
        entries: vec![
            entry("1 host", connect(1)),
            // As many as this machine has cores, then twice as many: the
            // handshakes overlap as far as the cores let them.
            entry("Cluster::connect, 2 hosts at once", connect(2)),
            entry("Cluster::connect, 4 hosts at once", connect(4)),
        ],
    }
}
