use pproc::{parallel, Channel};

#[parallel]
fn stream(n: u32, ch: Channel<u32, ()>) {
    for i in 0..n {
        ch.send(&i).unwrap();
    }
}

fn main() {}
