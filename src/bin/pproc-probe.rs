//! A binary target that starts children: `tests/targets.rs` runs it and
//! checks what it prints, and uses it as a foreign build for skew tests.

use pproc::parallel;

#[parallel]
fn greet(name: String) -> String {
    // The child's stdout is the parent's: this line must reach the terminal
    // and must not disturb the result.
    println!("child {} says hello to {name}", std::process::id());
    format!("hello, {name}")
}

fn main() -> pproc::Result<()> {
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
