// A closure that computes the item's value itself is not a task: a task is
// what a `#[parallel]` function's `call` makes.
fn main() {
    let _ = pproc::Map::new(|x: u64| x * 2, 0..10_u64);
}
