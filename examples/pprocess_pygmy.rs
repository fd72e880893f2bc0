//! pprocess's PyGmy raytracer (`PyGmy/scene.py` with `ppygmy.py`), in Rust:
//! each row rendered by a channel-style function that sends `(row, pixels)`
//! to its parent, managed on an exchange whose store draws the row.
//!
//! The first argument is the process limit (default: the number of cores).
//! The image is compared with a serial render and written to
//! `target/pygmy.png`.
//!
//! ```text
//! cargo run --release --example pprocess_pygmy -- 4
//! ```

use std::time::Instant;

use pproc::{Channel, Exchange, parallel};
use pproc_workspace::pygmy::{self, HEIGHT, Image};

/// Renders row `sy`, sending it on `channel` with its position.
#[parallel]
fn render_row(channel: Channel<(u32, Vec<u8>)>, sy: u32) {
    // The parent reads one value; if it is gone, nobody wants this one.
    let _ = channel.send(&(sy, pygmy::render_row(sy)));
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
    .limit(limit);
    let mut render = exchange.manage(render_row::call);
    for y in 0..HEIGHT {
        render.call(y)?;
    }
    let image = exchange.finish()?.image;
    image.finish("pygmy", limit, t.elapsed())
}
