use pproc::{parallel, Channel};

struct Frame(Vec<u8>);

#[parallel]
fn frames(ch: Channel<Frame, ()>) {
    ch.send(&Frame(Vec::new())).unwrap();
}

fn main() {}
