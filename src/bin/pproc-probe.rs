//! A binary target that starts children: `tests/targets.rs` runs it and
//! checks what it prints, and uses it as a foreign build for skew tests.

use pproc::{Channel, parallel};

#[parallel]
fn greet(name: String) -> String {
    // The child's stdout is the parent's: this line must reach the terminal
    // and must not disturb the result.
    println!("child {} says hello to {name}", std::process::id());
    format!("hello, {name}")
}

/// Sends `0..n`, `ms` milliseconds apart: a call that outlives the probe
/// when started in the background.
#[parallel]
fn count_slowly(ch: Channel<u64>, n: u64, ms: u64) {
    for i in 0..n {
        std::thread::sleep(std::time::Duration::from_millis(ms));
        ch.send(&i).expect("the background child keeps every value");
    }
}

/// Starts a call in the background and exits at once:
/// `pproc-probe background ADDRESS count N MS` or
/// `pproc-probe background ADDRESS double X`.
fn background(args: &[String]) -> pproc::Result<()> {
    let number = |i: usize| -> u64 { args[i].parse().expect("a number") };
    match args[1].as_str() {
        "count" => pproc::start_background(&args[0], count_slowly::call(number(2), number(3))),
        "double" => pproc::start_background(&args[0], pproc_workspace::double::call(number(2))),
        other => panic!("unknown background call {other}"),
    }
}

/// Starts a pool of `n` workers, prints its workers' pids on one line and
/// leaves without dropping the pool: `pproc-probe pool N`. The workers must
/// not outlive the probe.
fn pool(args: &[String]) -> pproc::Result<()> {
    let n: usize = args[0].parse().expect("a number");
    let pool = pproc::Pool::new(n)?;
    assert_eq!(pool.map(pproc_workspace::double::call, 0..4)?, [0, 2, 4, 6]);
    let pids: Vec<String> = pproc_workspace::children()
        .iter()
        .map(ToString::to_string)
        .collect();
    println!("{}", pids.join(" "));
    std::mem::forget(pool);
    std::process::exit(0);
}

/// Starts two process trees ([`pproc_workspace::nest`](fn@pproc_workspace::nest), each child in its
/// own process group), prints every pid in them on one line, then waits
/// for ever: `pproc-probe tree`. Whatever ends the probe must end them all.
fn tree() -> pproc::Result<()> {
    let nests = (0..2)
        .map(|_| pproc_workspace::nest::start(false))
        .collect::<pproc::Result<Vec<_>>>()?;
    let mut pids: Vec<u32> = nests.iter().map(pproc::Handle::pid).collect();
    for nest in &nests {
        pids.extend(nest.recv()?);
    }
    let line: Vec<String> = pids.iter().map(ToString::to_string).collect();
    println!("{}", line.join(" "));
    std::io::Write::flush(&mut std::io::stdout()).map_err(pproc::Error::Io)?;
    loop {
        std::thread::park();
    }
}

/// Starts a manager, prints its pid and leaves without shutting it down:
/// `pproc-probe manager`. The manager must not outlive the probe.
fn manager() -> pproc::Result<()> {
    let manager = pproc::Manager::start()?;
    let counter = manager.value(&0_u64)?;
    assert_eq!(counter.add(2)?, 2);
    println!("{}", manager.pid().unwrap_or_default());
    std::io::Write::flush(&mut std::io::stdout()).map_err(pproc::Error::Io)?;
    std::mem::forget(manager);
    std::process::exit(0);
}

fn main() -> pproc::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("background") => return background(&args[1..]),
        Some("pool") => return pool(&args[1..]),
        Some("tree") => return tree(),
        Some("manager") => return manager(),
        _ => {}
    }
    let handles = (0..4)
        .map(|i| greet::start(format!("probe {i}")))
        .collect::<pproc::Result<Vec<_>>>()?;
    for h in handles {
        println!("result: {}", h.join()?);
    }
    println!(
        "parallel from a double: {}",
        pproc_workspace::double::start(4)?.join()?
    );
    Ok(())
}
