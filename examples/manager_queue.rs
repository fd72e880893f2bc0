//! The remote queue of multiprocessing's manager documentation: one program
//! serves a queue on a TCP address, a second puts messages in it, a third
//! takes them out; all three authenticate with a shared key.
//!
//! `cargo run --release --example manager_queue` runs all three (this
//! program, in three roles) and checks that every message got through, in
//! order. By hand, with `PPROC_EXAMPLE_KEY` set in each:
//!
//! ```text
//! manager_queue --serve            # prints the address it listens on
//! manager_queue --get 127.0.0.1:PORT
//! manager_queue --put 127.0.0.1:PORT
//! ```

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use pproc::Manager;

const KEY_VAR: &str = "PPROC_EXAMPLE_KEY";
const MESSAGES: usize = 10;

fn key() -> Vec<u8> {
    std::env::var(KEY_VAR)
        .expect("the key is in PPROC_EXAMPLE_KEY")
        .into_bytes()
}

/// Serves the queue until standard input closes.
fn serve() -> pproc::Result<()> {
    let manager = Manager::serve("127.0.0.1:0", key())?;
    // Created here so that it exists before any client asks (clients that
    // ask first would create it the same way).
    let _jobs = manager.named("jobs").queue::<String>(Some(4))?;
    println!("{}", manager.address());
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    manager.shutdown()
}

fn put(addr: &str) -> pproc::Result<()> {
    let manager = Manager::connect(addr, key())?;
    let jobs = manager.named("jobs").queue::<String>(Some(4))?;
    for i in 0..MESSAGES {
        // Waits while the queue holds 4: the getter sets the pace.
        jobs.put(&format!("hello {i}"))?;
    }
    jobs.put(&"done".to_owned())?;
    println!("put {MESSAGES} messages and `done`");
    Ok(())
}

fn get(addr: &str) -> pproc::Result<()> {
    let manager = Manager::connect(addr, key())?;
    let jobs = manager.named("jobs").queue::<String>(Some(4))?;
    loop {
        let message = jobs.get()?;
        println!("got {message:?}");
        if message == "done" {
            return Ok(());
        }
    }
}

fn main() -> pproc::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["--serve"] => return serve(),
        ["--put", addr] => return put(addr),
        ["--get", addr] => return get(addr),
        [] => {}
        _ => panic!("usage: manager_queue [--serve | --put ADDR | --get ADDR]"),
    }
    // All three roles, as three programs.
    let me = std::env::current_exe().map_err(pproc::Error::Io)?;
    // A long random key: the manager's only protection.
    let mut random = [0_u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .map_err(pproc::Error::Io)?;
    let key: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let run = |args: &[&str]| {
        Command::new(&me)
            .args(args)
            .env(KEY_VAR, &key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(pproc::Error::Io)
    };
    let mut server = run(&["--serve"])?;
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("piped"))
        .read_line(&mut line)
        .map_err(pproc::Error::Io)?;
    let address = line.trim().trim_start_matches("tcp:").to_owned();
    println!("server: listening on {address}");
    let getter = run(&["--get", &address])?;
    let putter = run(&["--put", &address])?;
    let put_out = putter.wait_with_output().map_err(pproc::Error::Io)?;
    let get_out = getter.wait_with_output().map_err(pproc::Error::Io)?;
    print!("putter: {}", String::from_utf8_lossy(&put_out.stdout));
    let got = String::from_utf8_lossy(&get_out.stdout).into_owned();
    for line in got.lines() {
        println!("getter: {line}");
    }
    drop(server.stdin.take()); // the server's cue to stop
    let served = server.wait().map_err(pproc::Error::Io)?;
    assert!(put_out.status.success() && get_out.status.success() && served.success());
    let expected: Vec<String> = (0..MESSAGES)
        .map(|i| format!("got \"hello {i}\""))
        .chain(["got \"done\"".to_owned()])
        .collect();
    assert_eq!(got.lines().collect::<Vec<_>>(), expected);
    println!("every message got through, in order");
    Ok(())
}
