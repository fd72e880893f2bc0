//! Supervising child processes: a batch of jobs of which some hang, crash,
//! run out of memory or spin, each under a deadline and resource limits;
//! a serving child answering requests from several threads; a timer; and a
//! process tree stopped gracefully.
//!
//! `cargo run --release --example supervision`

use std::time::{Duration, Instant};

use pproc::{Builder, Channel, Error, Reply, Request, parallel};
use serde::{Deserialize, Serialize};

/// What a job does: most work, some misbehave.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
enum Job {
    /// Sums the squares below `n`.
    Sum(u64),
    /// Never returns.
    Hang,
    /// Panics.
    Crash,
    /// Allocates `n` MiB.
    Hog(usize),
    /// Burns CPU for ever.
    Spin,
}

#[parallel]
fn run_job(job: Job) -> u64 {
    match job {
        Job::Sum(n) => (0..n).map(|i| i * i).sum(),
        Job::Hang => loop {
            std::thread::park();
        },
        Job::Crash => panic!("job gave up"),
        Job::Hog(mib) => {
            let block = vec![1_u8; mib << 20];
            block.iter().map(|b| u64::from(*b)).sum()
        }
        Job::Spin => {
            let mut x = 0_u64;
            loop {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
    }
}

/// A dictionary served from a child process.
#[parallel]
fn dictionary(ch: Channel<Reply<String>, Request<String>>) {
    let words = [("one", "un"), ("two", "deux"), ("three", "trois")];
    ch.try_serve(|word| {
        words
            .iter()
            .find(|(en, _)| *en == word)
            .map(|(_, fr)| (*fr).to_owned())
            .ok_or_else(|| format!("no translation for {word:?}"))
    })
    .expect("the parent keeps its end open");
}

/// A heartbeat: this run's process id.
#[parallel]
fn heartbeat() -> u32 {
    std::process::id()
}

/// A worker that starts helpers of its own, then works for ever.
#[parallel]
fn crew(ch: Channel<u32>) {
    let helpers: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new("sleep")
                .arg("600")
                .spawn()
                .expect("sleep starts")
        })
        .collect();
    ch.send(&u32::try_from(helpers.len()).unwrap_or_default())
        .expect("the parent listens");
    loop {
        std::thread::park();
    }
}

fn describe(result: &pproc::Result<u64>) -> String {
    match result {
        Ok(value) => format!("ok: {value}"),
        Err(Error::Timeout) => "killed at its deadline".into(),
        Err(Error::Panicked { message, .. }) => format!("panicked: {message}"),
        Err(Error::LimitExceeded(limit)) => format!("stopped: {limit}"),
        Err(other) => format!("failed: {other}"),
    }
}

fn main() -> pproc::Result<()> {
    // 1. A batch under limits.
    let jobs = [
        Job::Sum(1_000_000),
        Job::Hang,
        Job::Crash,
        Job::Hog(4096),
        Job::Spin,
        Job::Sum(10),
    ];
    // Output captured: a child that runs out of memory reports it on its
    // standard error, which stays off the terminal.
    let limits = Builder::new()
        .capture_output(true)
        .deadline(Duration::from_secs(3))
        .memory_limit(1 << 30)
        .cpu_limit(Duration::from_secs(1));
    let started = Instant::now();
    let handles = jobs
        .iter()
        .map(|job| limits.start(run_job::call(*job)))
        .collect::<pproc::Result<Vec<_>>>()?;
    let results = pproc::join_all(handles, None);
    println!(
        "{} jobs, each with a 3 s deadline, 1 GiB of address space and 1 s of CPU:",
        jobs.len()
    );
    for (job, result) in jobs.iter().zip(&results) {
        println!("  {:<18} {}", format!("{job:?}"), describe(result));
    }
    println!("  all settled in {:.2} s", started.elapsed().as_secs_f64());
    assert_eq!(
        *results[0].as_ref().expect("the sum"),
        333_332_833_333_500_000
    );
    assert!(matches!(results[1], Err(Error::Timeout)));
    assert!(matches!(results[2], Err(Error::Panicked { .. })));
    assert!(matches!(
        results[3],
        Err(Error::LimitExceeded(pproc::Limit::Memory { .. }))
    ));
    assert!(matches!(
        results[4],
        Err(Error::LimitExceeded(pproc::Limit::CpuTime { .. }))
    ));
    assert_eq!(*results[5].as_ref().expect("the small sum"), 285);

    // 2. Request and reply from several threads at once.
    let dict = dictionary::start()?;
    let answers: Vec<pproc::Result<String>> = std::thread::scope(|s| {
        let dict = &dict;
        let asked: Vec<_> = ["one", "two", "three", "four"]
            .into_iter()
            .map(|word| {
                s.spawn(move || dict.call_timeout(&word.to_owned(), Duration::from_secs(5)))
            })
            .collect();
        asked
            .into_iter()
            .map(|t| t.join().expect("a caller thread"))
            .collect()
    });
    println!("a dictionary in a child, asked from four threads:");
    for answer in &answers {
        match answer {
            Ok(word) => println!("  {word}"),
            Err(err) => println!("  {err}"),
        }
    }
    assert_eq!(answers[2].as_deref().ok(), Some("trois"));
    assert!(matches!(answers[3], Err(Error::Remote { .. })));
    dict.close();
    dict.join()?;

    // 3. A timer: twenty heartbeats a second, each in a process of its own.
    let timer = pproc::rate(20.0, heartbeat::call)?;
    let beats: Vec<u32> = timer.iter().take(10).collect::<pproc::Result<_>>()?;
    let _ = timer.stop();
    let processes: std::collections::HashSet<u32> = beats.iter().copied().collect();
    println!("10 heartbeats at 20/s, from {} processes", processes.len());
    assert_eq!(processes.len(), 10);

    // 4. A process tree, stopped as a whole.
    let crew = crew::start()?;
    let helpers = crew.recv()?;
    let tree = pproc::tree();
    println!("a crew of 1 + {helpers} processes:");
    for node in &tree {
        println!("  {}{} ({})", "  ".repeat(node.level), node.name, node.pid);
    }
    let members: Vec<u32> = tree.iter().map(|node| node.pid).collect();
    assert_eq!(members.len(), 1 + helpers as usize);
    crew.terminate(Duration::from_millis(500))?;
    // The helpers were re-parented as they died: wait for the kernel to
    // be done with them.
    let gone = Instant::now() + Duration::from_secs(10);
    while members.iter().any(|pid| alive(*pid)) && Instant::now() < gone {
        std::thread::sleep(Duration::from_millis(10));
    }
    let left = members.iter().filter(|pid| alive(**pid)).count();
    println!("after terminate: {left} of them left");
    assert_eq!(left, 0);
    assert!(matches!(crew.join(), Err(Error::Signaled { .. })));
    Ok(())
}

/// Whether process `pid` runs (a zombie is dead).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}
