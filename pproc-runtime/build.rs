//! Refuses a target other than Linux, with one message, before anything
//! is compiled. The `links` key in Cargo.toml, which keeps one copy of the
//! runtime per process, needs a build script too.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" {
        println!(
            "cargo::error=pproc runs on Linux only (kernel 5.3 or later), not on `{os}`: it starts \
             children with posix_spawn, watches them through pidfds and ties them to their parent \
             with PR_SET_PDEATHSIG. On macOS or Windows, build and run inside a Linux container \
             or virtual machine."
        );
    }
}
