// What the closure needs, it takes as arguments: this builds, and runs in
// a child.

fn main() -> pproc::Result<()> {
    let offset = 10_u64;
    let h = pproc::spawn((5_u64, offset), |(x, offset): (u64, u64)| x + offset)?;
    assert_eq!(h.join()?, 15);
    Ok(())
}
