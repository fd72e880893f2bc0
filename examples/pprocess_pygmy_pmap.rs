//! pprocess's PyGmy raytracer in its `pmap` form (`scene_pmap.py`), in
//! Rust: rows rendered by a parallel map, drawn in order as they come.
//!
//! The first argument is the process limit (default: the number of cores).
//! The image is compared with a serial render and written to
//! `target/pygmy-pmap.png`.
//!
//! ```text
//! cargo run --release --example pprocess_pygmy_pmap -- 4
//! ```

use std::time::Instant;

use pproc::{Map, parallel};
use pproc_workspace::pygmy::{self, HEIGHT, Image};

/// Renders row `sy`.
#[parallel]
fn render_row(sy: u32) -> Vec<u8> {
    pygmy::render_row(sy)
}

fn main() -> pproc::Result<()> {
    let limit = pygmy::limit();
    println!("Number of processes: {limit}");
    let t = Instant::now();
    let mut image = Image::new();
    let rows = Map::new(render_row::call, 0..HEIGHT)
        .limit(limit)
        .reuse(false);
    for (sy, row) in (0..HEIGHT).zip(rows) {
        image.draw((sy, row?));
    }
    image.finish("pygmy-pmap", limit, t.elapsed())
}
