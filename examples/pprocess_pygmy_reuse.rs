//! pprocess's PyGmy raytracer in its reusable form (`scene_reuse.py`), in
//! Rust: rows rendered on an exchange of reused processes
//! (pprocess's `reuse=1` and `MakeReusable`), each process rendering row
//! after row.
//!
//! The first argument is the process limit (default: the number of cores).
//! The image is compared with a serial render and written to
//! `target/pygmy-reuse.png`.
//!
//! ```text
//! cargo run --release --example pprocess_pygmy_reuse -- 4
//! ```

use std::time::Instant;

use pproc::{Exchange, parallel};
use pproc_workspace::pygmy::{self, HEIGHT, Image};

/// Renders row `sy`, with its position.
#[parallel]
fn render_row(sy: u32) -> (u32, Vec<u8>) {
    (sy, pygmy::render_row(sy))
}

/// The exchange's store: the image, drawn as rows arrive.
#[derive(pproc::Exchange)]
struct PyGmyExchange {
    #[store(from = render_row, with = Image::draw)]
    image: Image,
}

fn main() -> pproc::Result<()> {
    let limit = pygmy::limit();
    println!("Number of processes: {limit}");
    let t = Instant::now();
    let mut exchange = Exchange::new(PyGmyExchange {
        image: Image::new(),
    })
    .limit(limit)
    .reuse(true);
    let mut render = exchange.manage(render_row::call);
    for y in 0..HEIGHT {
        render.call(y)?;
    }
    let image = exchange.finish()?.image;
    image.finish("pygmy-reuse", limit, t.elapsed())
}
