//! PyGmy, "a rubbish raytracer" by Dave Griffiths, as pprocess ships it in
//! its examples, ported to Rust: the same scene (ten reflective balls in a
//! ring around a bigger one, over a chequered plane, two lights), the same
//! shading (light sums, one reflection bounce summed over every object hit,
//! ten-sample ambient occlusion) and the same camera, rendered row by row.
//!
//! Where PyGmy draws occlusion samples from Python's `random`, this port
//! seeds a small generator with the pixel's position, so that every style
//! of rendering (serial, exchange, map, queue, reused processes) produces
//! the same image, byte for byte.

use std::time::{Duration, Instant};

/// The image's width, as in PyGmy's `scene.py`.
pub const WIDTH: u32 = 300;
/// The image's height.
pub const HEIGHT: u32 = 200;
/// Bytes per pixel (RGB).
const CHANNELS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq)]
struct V3 {
    x: f64,
    y: f64,
    z: f64,
}

const fn v3(x: f64, y: f64, z: f64) -> V3 {
    V3 { x, y, z }
}

impl V3 {
    fn add(self, o: Self) -> Self {
        v3(self.x + o.x, self.y + o.y, self.z + o.z)
    }
    fn sub(self, o: Self) -> Self {
        v3(self.x - o.x, self.y - o.y, self.z - o.z)
    }
    fn mul(self, k: f64) -> Self {
        v3(self.x * k, self.y * k, self.z * k)
    }
    fn dot(self, o: Self) -> f64 {
        self.x * o.x + self.y * o.y + self.z * o.z
    }
    fn sq(self) -> f64 {
        self.dot(self)
    }
    fn mag(self) -> f64 {
        self.sq().sqrt()
    }
    fn norm(self) -> Self {
        let mag = self.mag();
        if mag == 0.0 {
            self
        } else {
            self.mul(1.0 / mag)
        }
    }
    fn reflect(self, normal: Self) -> Self {
        self.sub(normal.mul(self.dot(normal) * 2.0))
    }
}

/// A segment from `start` to `end`.
#[derive(Clone, Copy, Debug)]
struct Line {
    start: V3,
    end: V3,
}

impl Line {
    fn vec(self) -> V3 {
        self.end.sub(self.start)
    }
}

#[derive(Clone, Copy, Debug)]
enum Shader {
    /// Lights and reflection half and half, darkened by occlusion.
    Everything,
    /// The plane's: lights halved in a pattern, plus reflection.
    Spot,
}

#[derive(Clone, Copy, Debug)]
enum Shape {
    Sphere { pos: V3, radius: f64 },
    Plane { normal: V3, dist: f64 },
}

#[derive(Clone, Copy, Debug)]
struct Object {
    shape: Shape,
    shader: Shader,
}

impl Object {
    /// Where the segment first meets the object, and the normal there.
    fn intersect(&self, l: Line) -> Option<(V3, V3)> {
        let lvec = l.vec();
        match self.shape {
            Shape::Plane { normal, dist } => {
                let vd = normal.dot(lvec);
                if vd == 0.0 {
                    return None;
                }
                let t = -(normal.dot(l.start) + dist) / vd;
                (0.0..=1.0)
                    .contains(&t)
                    .then(|| (l.start.add(lvec.mul(t)), normal))
            }
            Shape::Sphere { pos, radius } => {
                let a = lvec.sq();
                let b = 2.0 * lvec.dot(l.start.sub(pos));
                let c = pos.sq() + l.start.sq() - 2.0 * pos.dot(l.start) - radius * radius;
                let i = b * b - 4.0 * a * c;
                if i <= 0.0 {
                    return None;
                }
                let t = (-b - i.sqrt()) / (2.0 * a);
                if t > 0.0 && t < 1.0 {
                    let at = l.start.add(lvec.mul(t));
                    Some((at, at.sub(pos).norm()))
                } else {
                    None
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Light {
    Parallel { direction: V3, col: V3 },
    Point { position: V3, col: V3 },
}

/// A deterministic stand-in for Python's `random.randrange(-100, 100)`.
struct Rng(u64);

impl Rng {
    fn for_pixel(sx: u32, sy: u32) -> Self {
        Self((u64::from(sy) << 32 | u64::from(sx)).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn range(&mut self) -> f64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let n = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33;
        f64::from(u32::try_from(n % 200).unwrap_or(0)) - 100.0
    }
}

/// What a shader knows about the point it shades.
#[derive(Clone, Copy)]
struct Hit {
    ray: Line,
    depth: u32,
    obj: usize,
    position: V3,
    normal: V3,
}

/// PyGmy's `world`: the objects, the lights and the camera.
struct World {
    objects: Vec<Object>,
    lights: Vec<Light>,
    width: u32,
    height: u32,
    backplane: f64,
    imageplane: f64,
    aspect: f64,
}

/// PyGmy's `scene.py`.
fn scene() -> World {
    let mut objects = Vec::new();
    let numballs = 10.0_f64;
    let offset = v3(0.0, -5.0, 55.0);
    let rad = 12.0;
    // PyGmy's own approximation of pi, kept so the scene is the same.
    #[allow(clippy::approx_constant)]
    let radperball = (2.0 * 3.141) / numballs;
    for i in 0..10_u32 {
        let angle = 0.3 + radperball * f64::from(i);
        let pos = v3(angle.sin() * rad, 0.0, angle.cos() * rad).add(offset);
        objects.push(Object {
            shape: Shape::Sphere { pos, radius: 2.0 },
            shader: Shader::Everything,
        });
    }
    objects.push(Object {
        shape: Shape::Sphere {
            pos: v3(3.0, 3.0, 0.0).add(offset),
            radius: 5.0,
        },
        shader: Shader::Everything,
    });
    objects.push(Object {
        shape: Shape::Plane {
            normal: v3(0.0, 1.0, 0.0),
            dist: 7.0,
        },
        shader: Shader::Spot,
    });
    let lights = vec![
        Light::Parallel {
            direction: v3(1.0, 1.0, -1.0).norm(),
            col: v3(0.3, 0.9, 0.1),
        },
        Light::Point {
            position: v3(5.0, 100.0, -5.0),
            col: v3(0.5, 0.5, 1.0),
        },
    ];
    World {
        objects,
        lights,
        width: WIDTH,
        height: HEIGHT,
        backplane: 2000.0,
        imageplane: 5.0,
        aspect: f64::from(WIDTH) / f64::from(HEIGHT),
    }
}

impl World {
    /// Whether any object but `obj` meets the segment.
    fn blocked(&self, obj: usize, l: Line) -> bool {
        self.objects
            .iter()
            .enumerate()
            .any(|(i, ob)| i != obj && ob.intersect(l).is_some())
    }

    fn light(&self, light: &Light, hit: &Hit) -> V3 {
        match *light {
            Light::Parallel { direction, col } => {
                let l = Line {
                    start: hit.position,
                    end: hit.position.add(direction.mul(1000.0)),
                };
                if self.blocked(hit.obj, l) {
                    return v3(0.0, 0.0, 0.0);
                }
                col.mul(direction.dot(hit.normal))
            }
            Light::Point { position, col } => {
                let l = Line {
                    start: hit.position,
                    end: position,
                };
                if self.blocked(hit.obj, l) {
                    return v3(0.0, 0.0, 0.0);
                }
                let direction = hit.position.sub(position).norm().mul(-1.0);
                col.mul(direction.dot(hit.normal))
            }
        }
    }

    fn lights(&self, hit: &Hit) -> V3 {
        self.lights.iter().fold(v3(0.0, 0.0, 0.0), |col, light| {
            col.add(self.light(light, hit))
        })
    }

    /// One bounce, summed over every object the reflected ray meets.
    fn reflected(&self, hit: &Hit, rng: &mut Rng) -> V3 {
        if hit.depth == 0 {
            return v3(0.0, 0.0, 0.0);
        }
        let ray = hit.ray.vec().reflect(hit.normal);
        let reflected = Line {
            start: hit.position,
            end: hit.position.add(ray),
        };
        let mut col = v3(0.0, 0.0, 0.0);
        for (i, ob) in self.objects.iter().enumerate() {
            if i == hit.obj {
                continue;
            }
            if let Some((position, normal)) = ob.intersect(reflected) {
                let next = Hit {
                    ray: reflected,
                    depth: hit.depth - 1,
                    obj: i,
                    position,
                    normal,
                };
                col = col.add(self.shade(&next, rng));
            }
        }
        col
    }

    /// The share of `samples` short random rays that meet nothing.
    fn occlusion(&self, samples: u32, hit: &Hit, rng: &mut Rng) -> f64 {
        let mut occluded = 0_u32;
        for _ in 0..samples {
            let ray = v3(rng.range(), rng.range(), rng.range()).norm().mul(2.5);
            let test = Line {
                start: hit.position,
                end: hit.position.add(ray),
            };
            if self.blocked(hit.obj, test) {
                occluded += 1;
            }
        }
        1.0 - f64::from(occluded) / f64::from(samples)
    }

    fn shade(&self, hit: &Hit, rng: &mut Rng) -> V3 {
        let mut col = self.lights(hit);
        match self.objects[hit.obj].shader {
            Shader::Everything => {
                let reflected = self.reflected(hit, rng);
                col = col.mul(0.5).add(reflected.mul(0.5));
                col.mul(self.occlusion(10, hit, rng))
            }
            Shader::Spot => {
                let jitter = hit.position.x.sin() + hit.position.z.cos();
                if jitter > 0.5 {
                    col = col.mul(0.5);
                }
                let reflected = self.reflected(hit, rng);
                reflected
                    .mul(0.5)
                    .add(col.mul(0.5 * self.occlusion(10, hit, rng)))
            }
        }
    }

    /// PyGmy's `render_row`: the row's pixels, RGB.
    fn render_row(&self, sy: u32) -> Vec<u8> {
        let mut row = Vec::with_capacity(self.width as usize * CHANNELS);
        for sx in 0..self.width {
            let x = 2.0 * (0.5 - f64::from(sx) / f64::from(self.width)) * self.aspect;
            let y = 2.0 * (0.5 - f64::from(sy) / f64::from(self.height));
            let ray = Line {
                start: v3(0.0, 0.0, 0.0),
                end: v3(x, y, self.imageplane).mul(self.backplane),
            };
            let mut rng = Rng::for_pixel(sx, sy);
            let mut col = v3(0.0, 0.0, 0.0);
            let mut depth = self.backplane;
            for (i, obj) in self.objects.iter().enumerate() {
                if let Some((position, normal)) = obj.intersect(ray)
                    && position.z < depth
                    && position.z > 0.0
                {
                    depth = position.z;
                    let hit = Hit {
                        ray,
                        depth: 2,
                        obj: i,
                        position,
                        normal,
                    };
                    col = self.shade(&hit, &mut rng);
                }
            }
            row.extend([col.x, col.y, col.z].map(channel));
        }
        row
    }
}

/// A colour component as a byte, as PIL stores `component * 255`.
fn channel(c: f64) -> u8 {
    // Clamped first, so the cast cannot truncate.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let byte = (c * 255.0).clamp(0.0, 255.0) as u8;
    byte
}

/// Renders row `sy` of PyGmy's scene: `WIDTH` RGB pixels.
#[must_use]
pub fn render_row(sy: u32) -> Vec<u8> {
    scene().render_row(sy)
}

/// An image being filled in row by row, with PyGmy's percentage counter.
#[derive(Debug)]
pub struct Image {
    pixels: Vec<u8>,
    rows: u32,
}

impl Default for Image {
    fn default() -> Self {
        Self::new()
    }
}

impl Image {
    /// A black image of PyGmy's size.
    #[must_use]
    pub fn new() -> Self {
        Self {
            pixels: vec![0; WIDTH as usize * HEIGHT as usize * CHANNELS],
            rows: 0,
        }
    }

    /// Draws row `sy`, and prints the share of the image done so far.
    ///
    /// # Panics
    ///
    /// If the row is not `WIDTH` pixels or `sy` is outside the image.
    pub fn draw(&mut self, (sy, row): (u32, Vec<u8>)) {
        let at = sy as usize * WIDTH as usize * CHANNELS;
        self.pixels[at..at + row.len()].copy_from_slice(&row);
        self.rows += 1;
        if self.rows.is_multiple_of(20) || self.rows == HEIGHT {
            println!("{:3}% {sy:3}", self.rows * 100 / HEIGHT);
        }
    }

    /// Renders the same image in this process, compares, reports the times
    /// side by side, and writes the picture to `target/<name>.png`.
    ///
    /// # Errors
    ///
    /// If the images differ, or the file cannot be written.
    pub fn finish(self, name: &str, processes: usize, parallel: Duration) -> pproc::Result<()> {
        let t = Instant::now();
        let world = scene();
        let serial: Vec<u8> = (0..HEIGHT).flat_map(|sy| world.render_row(sy)).collect();
        let serial_time = t.elapsed();
        if serial != self.pixels {
            return Err(pproc::Error::Codec {
                message: "the parallel image differs from the serial one".into(),
            });
        }
        println!("PyGmy {WIDTH}x{HEIGHT}, {HEIGHT} rows");
        println!("serial    {:6.2} s", serial_time.as_secs_f64());
        println!(
            "parallel  {:6.2} s  (at most {processes} processes)",
            parallel.as_secs_f64()
        );
        println!(
            "speedup   {:6.2}x  (images identical)",
            serial_time.as_secs_f64() / parallel.as_secs_f64()
        );
        let path = std::path::Path::new("target").join(format!("{name}.png"));
        write_png(&path, &self.pixels)
            .map_err(|err| pproc::Error::Io(std::io::Error::other(err)))?;
        println!("wrote {}", path.display());
        Ok(())
    }
}

fn write_png(
    path: &std::path::Path,
    pixels: &[u8],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut encoder = png::Encoder::new(file, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(pixels)?;
    Ok(())
}

/// The process limit: the first argument, or the number of cores (PyGmy's
/// `scene.py` takes it from the command line too).
///
/// # Panics
///
/// If the argument is not a number.
#[must_use]
pub fn limit() -> usize {
    std::env::args().nth(1).map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        |n| n.parse().expect("a number of processes"),
    )
}
