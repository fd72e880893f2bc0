//! pprocess's PyGmy raytracer in its queue form (`scene_queue.py`), in
//! Rust: rows rendered on a queue, drawn as they arrive, in any order.
//!
//! The first argument is the process limit (default: the number of cores).
//! The image is compared with a serial render and written to
//! `target/pygmy-queue.png`.
//!
//! ```text
//! cargo run --release --example pprocess_pygmy_queue -- 4
//! ```

use std::time::Instant;

use pproc::{Queue, parallel};
use pproc_workspace::pygmy::{self, HEIGHT, Image};

/// Renders row `sy`, with its position.
#[parallel]
fn render_row(sy: u32) -> (u32, Vec<u8>) {
    (sy, pygmy::render_row(sy))
}

fn main() -> pproc::Result<()> {
    let limit = pygmy::limit();
    println!("Number of processes: {limit}");
    let t = Instant::now();
    let mut image = Image::new();
    for row in Queue::new(render_row::call, 0..HEIGHT)
        .limit(limit)
        .reuse(false)
    {
        image.draw(row?);
    }
    image.finish("pygmy-queue", limit, t.elapsed())
}
