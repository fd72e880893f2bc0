//! Spawn + join latency of a trivial function: pproc against the floor of
//! re-executing this same binary, `fork` + `waitpid`, and the crates a user
//! would pick instead (procspawn, crossmist).
//!
//! Run with `cargo bench --bench spawn`; add `-- --quick` (or set
//! `PPROC_BENCH_QUICK=1`) for a few runs per row and no 1 GiB rows.
//!
//! The small-parent rows are measured in interleaved rounds (one run of each
//! per round), so slow drift of the machine (frequency, other load) spreads
//! over all of them instead of biasing whichever ran last.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use pproc::parallel;

/// Set in the environment of the floor's child: exit at once.
const FLOOR_ENV: &str = "PPROC_BENCH_FLOOR";
/// Set in the environment of the subprocess that measures crossmist; its
/// value is the number of runs to time.
const CROSSMIST_ENV: &str = "PPROC_BENCH_CROSSMIST";
/// `1` asks for a quick run, as `--quick` does.
const QUICK_ENV: &str = "PPROC_BENCH_QUICK";

/// Runs per row, and untimed warm-up runs before them.
const FULL_RUNS: usize = 200;
const QUICK_RUNS: usize = 10;
const WARMUP_RUNS: usize = 5;

/// The size of the large parent's touched memory.
const LARGE_BYTES: usize = 1 << 30;
const PAGE: usize = 4096;

/// How long the crossmist subprocess may take before it is killed.
const CROSSMIST_TIMEOUT: Duration = Duration::from_mins(2);

#[parallel]
fn noop() {}

#[crossmist::func]
fn crossmist_noop() {}

fn main() {
    // The floor: the cost of exec'ing this binary and nothing more.
    if std::env::var_os(FLOOR_ENV).is_some() {
        std::process::exit(0);
    }
    // crossmist is measured in a subprocess of its own (and so are its
    // children, which inherit the variable and are dispatched by `init`).
    if let Some(runs) = std::env::var_os(CROSSMIST_ENV) {
        crossmist::init();
        let runs = runs
            .to_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(QUICK_RUNS);
        crossmist_subprocess(runs);
    }
    // procspawn's children run `main` up to here, then their closure.
    procspawn::init();

    let quick = std::env::args().any(|arg| arg == "--quick")
        || std::env::var(QUICK_ENV).is_ok_and(|v| v == "1");
    let runs = if quick { QUICK_RUNS } else { FULL_RUNS };

    print_header(runs, quick);

    let small = interleaved(
        runs,
        &mut [
            ("bare re-exec (floor)", &mut bare_reexec),
            ("fork + waitpid", &mut fork_waitpid),
            ("pproc", &mut pproc_noop),
            ("procspawn 1.0.2", &mut procspawn_noop),
        ],
    );
    let crossmist = crossmist_row(runs);

    let floor = small[0].median();
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>9}",
        "", "median", "p10", "p90", "vs floor"
    );
    for row in &small {
        print_row(row, floor, None);
    }
    match &crossmist {
        Ok(samples) => print_row(samples, floor, None),
        Err(why) => println!("{:<22} fails: {why}", "crossmist 1.1.2"),
    }

    if quick {
        println!("(--quick: the 1 GiB parent rows are skipped)");
        return;
    }

    let mut large = vec![0_u8; LARGE_BYTES];
    for byte in large.iter_mut().step_by(PAGE) {
        *byte = 1;
    }
    let large = std::hint::black_box(large);
    // Not interleaved: each fork of this parent write-protects its 1 GiB
    // and the child's exit tears down a copy of its page tables, which
    // would slow whatever ran next and charge fork's cost to pproc's row.
    let big_pproc = interleaved(runs, &mut [("pproc", &mut pproc_noop)]);
    let big_fork = interleaved(runs, &mut [("fork + waitpid", &mut fork_waitpid)]);
    println!("with a 1 GiB parent (every page touched), rows run one after the other:");
    print_row(&big_fork[0], floor, Some(small[1].median()));
    print_row(&big_pproc[0], floor, Some(small[2].median()));
    drop(std::hint::black_box(large));
}

// ---------------------------------------------------------------------------
// The things measured. Each does one complete spawn + join.

fn bare_reexec() {
    let exe = std::env::current_exe().expect("the path of this executable");
    let status = Command::new(exe)
        .env(FLOOR_ENV, "1")
        .status()
        .expect("re-executing this benchmark");
    assert!(status.success(), "the floor's child failed: {status}");
}

fn fork_waitpid() {
    // SAFETY: the child calls only `_exit`, which is async-signal-safe, so
    // forking a multi-threaded process is sound here.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: see above; nothing else runs in the child.
        unsafe { libc::_exit(0) };
    }
    assert!(pid > 0, "fork failed: {}", std::io::Error::last_os_error());
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child; `status` is a valid out pointer.
        let got = unsafe { libc::waitpid(pid, &raw mut status, 0) };
        if got == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        assert!(
            err.kind() == std::io::ErrorKind::Interrupted,
            "waitpid failed: {err}"
        );
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the forked child failed: status {status:#x}"
    );
}

fn pproc_noop() {
    noop::start()
        .expect("pproc: starting a child")
        .join()
        .expect("pproc: joining a child");
}

fn procspawn_noop() {
    procspawn::spawn((), |()| ())
        .join()
        .expect("procspawn: joining a child");
}

// ---------------------------------------------------------------------------
// crossmist, in a subprocess of the benchmark.

/// The body of the crossmist subprocess: times `runs` spawn + join and
/// prints the samples in nanoseconds on one line. Never returns.
fn crossmist_subprocess(runs: usize) -> ! {
    let once = || -> std::io::Result<()> {
        crossmist_noop.spawn()?.join()?;
        Ok(())
    };
    let mut samples = Vec::with_capacity(runs);
    for i in 0..WARMUP_RUNS + runs {
        let start = Instant::now();
        if let Err(err) = once() {
            eprintln!("crossmist: spawn + join failed: {err}");
            std::process::exit(1);
        }
        if i >= WARMUP_RUNS {
            samples.push(start.elapsed().as_nanos().to_string());
        }
    }
    println!("samples {}", samples.join(" "));
    std::process::exit(0);
}

/// Runs the crossmist subprocess: its samples, or why it failed.
fn crossmist_row(runs: usize) -> Result<Samples, String> {
    let exe = std::env::current_exe().map_err(|err| format!("no path to this program: {err}"))?;
    let mut child = Command::new(exe)
        .env(CROSSMIST_ENV, runs.to_string())
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("could not start its subprocess: {err}"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + CROSSMIST_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    // Its children may hold the pipes open after it exits; do not wait on
    // them for ever.
    let stdout = stdout
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_default();
    let stderr = stderr
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_default();
    let Some(status) = status else {
        return Err(format!(
            "no result within {}s (killed)",
            CROSSMIST_TIMEOUT.as_secs()
        ));
    };
    if status.success()
        && let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("samples "))
    {
        let ns: Result<Vec<u64>, _> = line.split_whitespace().map(str::parse).collect();
        if let Ok(ns) = ns
            && !ns.is_empty()
        {
            return Ok(Samples::new(
                "crossmist 1.1.2",
                ns.into_iter().map(Duration::from_nanos).collect(),
            ));
        }
    }
    Err(failure_text(&stderr, status))
}

/// Reads a pipe to its end on a thread; the text arrives on the receiver.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

/// The first panic in `stderr` as `message (at file:line:col)`, else its
/// last line, else the exit status.
fn failure_text(stderr: &str, status: ExitStatus) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    if let Some(i) = lines.iter().position(|l| l.contains(" panicked at ")) {
        let location = lines[i]
            .split(" panicked at ")
            .nth(1)
            .unwrap_or_default()
            .trim_end_matches(':');
        // Registry paths are long; keep the crate-relative part.
        let location = location
            .find("crossmist-")
            .map_or(location, |at| &location[at..]);
        let message = lines.get(i + 1).copied().unwrap_or("").trim();
        return format!("{message} (panic at {location}; {status})");
    }
    match lines.iter().rev().find(|l| !l.trim().is_empty()) {
        Some(last) => format!("{} ({status})", last.trim()),
        None => format!("{status}, nothing on stderr"),
    }
}

// ---------------------------------------------------------------------------
// Timing and statistics.

struct Samples {
    name: &'static str,
    sorted: Vec<Duration>,
}

impl Samples {
    fn new(name: &'static str, mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Self {
            name,
            sorted: samples,
        }
    }

    /// Nearest-rank percentile, `p` in 0..=100.
    fn percentile(&self, p: usize) -> Duration {
        let n = self.sorted.len();
        let rank = (p * n).div_ceil(100).clamp(1, n);
        self.sorted[rank - 1]
    }

    fn median(&self) -> Duration {
        self.percentile(50)
    }
}

type Bench<'a> = (&'static str, &'a mut dyn FnMut());

/// Times `runs` calls of each bench, one of each per round, after a few
/// untimed rounds.
fn interleaved(runs: usize, benches: &mut [Bench<'_>]) -> Vec<Samples> {
    for _ in 0..WARMUP_RUNS {
        for (_, f) in benches.iter_mut() {
            f();
        }
    }
    let mut times = vec![Vec::with_capacity(runs); benches.len()];
    for _ in 0..runs {
        for ((_, f), times) in benches.iter_mut().zip(&mut times) {
            let start = Instant::now();
            f();
            times.push(start.elapsed());
        }
    }
    benches
        .iter()
        .zip(times)
        .map(|((name, _), times)| Samples::new(name, times))
        .collect()
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn print_row(row: &Samples, floor: Duration, small: Option<Duration>) {
    let median = row.median();
    let of_small = small.map_or_else(String::new, |small| {
        format!(
            "   ({:.2}x of small)",
            median.as_secs_f64() / small.as_secs_f64()
        )
    });
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>8.2}x{of_small}",
        row.name,
        ms(median),
        ms(row.percentile(10)),
        ms(row.percentile(90)),
        median.as_secs_f64() / floor.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// The header.

fn print_header(runs: usize, quick: bool) {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned());
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned());
    println!("machine: {cores} cores, {cpu}; Linux {kernel}; transparent hugepages: {thp}");
    if let Some(rustc) = pproc_workspace::command_output("rustc", &["-V"]) {
        println!("rustc:   {rustc}");
    }
    if let Some(commit) = pproc_workspace::command_output("git", &["rev-parse", "--short", "HEAD"])
    {
        let dirty = pproc_workspace::command_output("git", &["status", "--porcelain"]).is_some();
        let dirty = if dirty {
            " (with uncommitted changes)"
        } else {
            ""
        };
        println!("commit:  {commit}{dirty}");
    }
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("profile: {profile}");
    let flags = if quick { " -- --quick" } else { "" };
    println!("command: cargo bench --bench spawn{flags}");
    println!();
    println!(
        "spawn + join of a trivial function, {runs} runs each after {WARMUP_RUNS} warm-up \
         (median, p10-p90)"
    );
}
