// A closure that captures a variable cannot run in a child, which has none
// of the parent's variables: the build stops and says what to do instead.

fn main() {
    let offset = 10_u64;
    let _ = pproc::spawn(5_u64, move |x: u64| x + offset);
}
