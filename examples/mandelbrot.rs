//! The main job: a Mandelbrot image computed serially, then in parallel child
//! processes, with the two timings compared.
//!
//! `band` is an ordinary Rust function that renders a horizontal band of rows.
//! Marking it `#[parallel]` is all it takes to run it in a child process:
//! `main` calls the plain function once for the serial baseline, then starts
//! a call per band on a [`pproc::Exchange`] that runs at most one child per
//! core and starts the next band whenever any child finishes. No worker
//! set-up, no serialisation code, no `init` call: each child is a
//! re-execution of this very binary, dispatched to `band_at` before `main`
//! would run. The two images must agree byte for byte.
//!
//! ```text
//! cargo run --release --example mandelbrot [OUTPUT.png] [--hosts HOST[=SLOTS],...] [--ssh-config FILE]
//! ```
//!
//! The picture is written to `target/mandelbrot.png` unless a path is given.
//! With `--hosts`, the bands run on those hosts instead, reached with ssh
//! (through `FILE`, if given, as `ssh -F`), each taking `SLOTS` bands at
//! once (by default as many as this machine has cores): the same code, on
//! a [`pproc::Cluster`].
//! Set `MANDELBROT_SCALE` (a positive float, default `1.0`) to scale the
//! width and height of the 1600×1200 image, for example `0.25` for a quick
//! run or `2` for a machine with many cores; the work grows with its square.

use std::error::Error;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use pproc::{Builder, Cluster, Exchange, Ssh, parallel};

/// Width and height of the image at `MANDELBROT_SCALE=1`.
const BASE_WIDTH: f64 = 1600.0;
const BASE_HEIGHT: f64 = 1200.0;
/// Iterations before a point is taken to be inside the set.
const MAX_ITER: u32 = 2000;
/// Bands per core: more bands than cores, so the costly rows through the
/// middle of the set are shared out instead of landing on one child.
const BANDS_PER_CORE: usize = 8;

/// The view: the whole set, centred, 3.5 units wide.
const CENTRE_X: f64 = -0.75;
const CENTRE_Y: f64 = 0.0;
const VIEW_WIDTH: f64 = 3.5;

/// Bytes per pixel (RGB).
const CHANNELS: usize = 3;

/// Renders rows `y0..y1` of a `width`×`height` image, as RGB bytes.
#[parallel]
fn band(y0: u32, y1: u32, width: u32, height: u32, max_iter: u32) -> Vec<u8> {
    let scale = VIEW_WIDTH / f64::from(width);
    let mut out = Vec::with_capacity((y1 - y0) as usize * width as usize * CHANNELS);
    for y in y0..y1 {
        let ci = CENTRE_Y + (f64::from(y) - f64::from(height) / 2.0) * scale;
        for x in 0..width {
            let cr = CENTRE_X + (f64::from(x) - f64::from(width) / 2.0) * scale;
            out.extend_from_slice(&colour(escape(cr, ci, max_iter)));
        }
    }
    out
}

/// The smooth (fractional) iteration count at which `c` escapes, or `None`
/// for a point that stays bounded for `max_iter` iterations.
fn escape(cr: f64, ci: f64, max_iter: u32) -> Option<f64> {
    // A large escape radius makes the smooth count continuous.
    const BAILOUT: f64 = 256.0 * 256.0;
    let (mut zr, mut zi) = (0.0_f64, 0.0_f64);
    for i in 0..max_iter {
        let (zr2, zi2) = (zr * zr, zi * zi);
        if zr2 + zi2 > BAILOUT {
            let log_zn = (zr2 + zi2).ln() / 2.0;
            let nu = (log_zn / std::f64::consts::LN_2).log2();
            return Some(f64::from(i) + 1.0 - nu);
        }
        zi = 2.0 * zr * zi + ci;
        zr = zr2 - zi2 + cr;
    }
    None
}

/// Maps a smooth iteration count to a colour: black inside the set, a cosine
/// palette (deep blue through white to orange) outside.
fn colour(smooth: Option<f64>) -> [u8; 3] {
    let Some(n) = smooth else {
        return [0, 0, 0];
    };
    // Compress the range, so the thin outer bands and the deep filaments
    // both get colour.
    let t = n.max(0.0).sqrt() * 0.18;
    let channel = |phase: f64| {
        let v = 0.5 + 0.5 * (std::f64::consts::TAU * (t + phase)).cos();
        // `v` is in 0..=1, so the cast cannot truncate or wrap.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let byte = (v * 255.0).round() as u8;
        byte
    };
    [channel(0.5), channel(0.6), channel(0.7)]
}

/// Image size for a `MANDELBROT_SCALE`, at least one pixel each way.
fn dimensions(scale: f64) -> Result<(u32, u32), Box<dyn Error>> {
    let side = |base: f64| {
        let v = (base * scale).round();
        if (1.0..=65_535.0).contains(&v) {
            // Range-checked just above.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok(v as u32)
        } else {
            Err(format!(
                "MANDELBROT_SCALE={scale} gives a side of {v} pixels"
            ))
        }
    };
    Ok((side(BASE_WIDTH)?, side(BASE_HEIGHT)?))
}

fn scale_from_env() -> Result<f64, Box<dyn Error>> {
    match std::env::var("MANDELBROT_SCALE") {
        Err(std::env::VarError::NotPresent) => Ok(1.0),
        Err(e) => Err(format!("MANDELBROT_SCALE: {e}").into()),
        Ok(s) => match s.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
            _ => Err(format!("MANDELBROT_SCALE must be a positive number, not {s:?}").into()),
        },
    }
}

/// A band with its first row, so that bands can arrive in any order.
#[parallel]
fn band_at(y0: u32, y1: u32, width: u32, height: u32, max_iter: u32) -> (u32, Vec<u8>) {
    (y0, band(y0, y1, width, height, max_iter))
}

/// Renders the image in child processes, `bands` bands, at most `limit`
/// children at a time, started with `builder` (here, or on a cluster's
/// hosts). The exchange starts the next band as soon as any child
/// finishes, whichever it is.
fn render_parallel(
    width: u32,
    height: u32,
    bands: u32,
    limit: usize,
    builder: Builder,
) -> Result<Vec<u8>, Box<dyn Error>> {
    // The bar shows on a terminal (standard error), not in a pipe.
    let mut exchange = Exchange::new(Vec::new())
        .limit(limit)
        .builder(builder)
        .progress(true);
    for i in 0..bands {
        let y0 = height * i / bands;
        let y1 = height * (i + 1) / bands;
        exchange.start(band_at::call(y0, y1, width, height, MAX_ITER))?;
    }
    let row_bytes = width as usize * CHANNELS;
    let mut image = vec![0_u8; row_bytes * height as usize];
    for (y0, pixels) in exchange.finish()? {
        let at = y0 as usize * row_bytes;
        let rows = image
            .get_mut(at..at + pixels.len())
            .filter(|_| pixels.len().is_multiple_of(row_bytes))
            .ok_or_else(|| format!("the band at row {y0} has {} bytes", pixels.len()))?;
        rows.copy_from_slice(&pixels);
    }
    Ok(image)
}

fn write_png(path: &Path, width: u32, height: u32, rgb: &[u8]) -> Result<(), Box<dyn Error>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// What the command line asks for.
struct Options {
    out: PathBuf,
    /// Hosts and their slots, for `--hosts`.
    hosts: Vec<(String, usize)>,
    ssh_config: Option<PathBuf>,
}

fn options(cores: usize) -> Result<Options, Box<dyn Error>> {
    let mut options = Options {
        out: PathBuf::from("target/mandelbrot.png"),
        hosts: Vec::new(),
        ssh_config: None,
    };
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--hosts") => {
                let list = args.next().ok_or("--hosts needs HOST[=SLOTS],...")?;
                for host in list.to_string_lossy().split(',').filter(|h| !h.is_empty()) {
                    let (name, slots) = match host.split_once('=') {
                        Some((name, slots)) => (name, slots.parse()?),
                        None => (host, cores),
                    };
                    options.hosts.push((name.to_owned(), slots));
                }
            }
            Some("--ssh-config") => {
                options.ssh_config = Some(args.next().ok_or("--ssh-config needs a file")?.into());
            }
            _ => options.out = PathBuf::from(arg),
        }
    }
    Ok(options)
}

fn main() -> Result<(), Box<dyn Error>> {
    let (width, height) = dimensions(scale_from_env()?)?;
    let cores = thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let options = options(cores)?;
    let out = options.out;
    let (builder, slots, place) = if options.hosts.is_empty() {
        (Builder::new(), cores, format!("{cores} cores"))
    } else {
        let mut cluster = Cluster::new();
        for (host, slots) in &options.hosts {
            let mut ssh = Ssh::new(host);
            if let Some(config) = &options.ssh_config {
                ssh = ssh.config(config);
            }
            cluster = cluster.host(ssh, *slots);
        }
        let t = Instant::now();
        cluster.connect()?;
        let names: Vec<&str> = options.hosts.iter().map(|(h, _)| h.as_str()).collect();
        println!(
            "connected {} in {:.3} s",
            names.join(", "),
            secs(t.elapsed())
        );
        let slots = cluster.slots();
        let place = format!("{slots} slots on {}", names.join(", "));
        (Builder::new().cluster(&cluster), slots, place)
    };
    // Never more bands than rows.
    let bands = u32::try_from(slots * BANDS_PER_CORE)
        .unwrap_or(u32::MAX)
        .min(height);

    println!("mandelbrot {width}x{height}, {MAX_ITER} iterations, {bands} bands on {place}");

    let t = Instant::now();
    let serial = band(0, height, width, height, MAX_ITER);
    let serial_time = t.elapsed();
    println!("serial    {:6.2} s", secs(serial_time));

    let t = Instant::now();
    let parallel = render_parallel(width, height, bands, slots, builder)?;
    let parallel_time = t.elapsed();
    println!(
        "parallel  {:6.2} s  ({bands} child processes, at most {slots} at a time)",
        secs(parallel_time)
    );

    if let Some(i) = serial.iter().zip(&parallel).position(|(a, b)| a != b) {
        let pixel = i / CHANNELS;
        return Err(format!(
            "the parallel image differs from the serial one, first at pixel ({}, {})",
            pixel % width as usize,
            pixel / width as usize,
        )
        .into());
    }
    if serial.len() != parallel.len() {
        return Err(format!(
            "the parallel image has {} bytes, the serial one {}",
            parallel.len(),
            serial.len()
        )
        .into());
    }

    println!(
        "speedup   {:6.2}x  (images identical)",
        secs(serial_time) / secs(parallel_time)
    );

    write_png(&out, width, height, &parallel)?;
    println!("wrote {}", out.display());
    Ok(())
}
