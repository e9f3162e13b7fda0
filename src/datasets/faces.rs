//! Seeded synthetic image data: a stand-in for the real-vs-fake face set (FFHQ photos vs StyleGAN
//! fakes) written in the same ImageFolder layout, and a procedural multi-class "shapes" set that
//! stands in for ImageNet as the pretraining task.
//!
//! Both kinds of face are cartoon portraits drawn from the same distribution of layouts: an oval
//! face shaded as a lit sphere, ears, neck and shoulders, hair, eyes with iris, pupil and glint,
//! brows, a shaded nose and lips, on a soft background, with varied skin, hair and eye colours,
//! position, scale, tilt, turn and lighting. A **real** one is drawn directly at full resolution
//! (2 × 2 supersampled, anti-aliased edges) with a touch of sensor noise. A **fake** one is built
//! coarse to fine the way a skip-architecture generator builds it: the face is reduced to a half
//! (65 %) or a quarter of the resolution, then brought back by one or two ×2 transposed
//! convolutions (zero insertion followed by a 4 × 4 kernel), each step adding back only part of
//! the detail of that scale, with noise injected at the coarse scale. The kernel is bilinear plus
//! a random perturbation of random strength that unbalances the four output phases, which leaves
//! a faint periodic checkerboard (spectral peaks at the up-sampling frequencies): sometimes clear,
//! mostly invisible under the noise. Each fake gets its own perturbation, so the pattern has no
//! fixed sign that a linear model on raw pixels could pick up, while its energy at those
//! frequencies gives it away. Fakes also have slightly warmer, more saturated colours.
//!
//! Every value comes from ChaCha8 streams (one per image, so images can be drawn in parallel) and
//! IEEE-exact `f32` arithmetic only (`+ − × ÷ √`, floor; no `sin`, `exp` or other libm calls),
//! so a seed gives byte-identical PNGs on every machine.

use std::path::Path;

use anyhow::{Context, Result, bail};
use image::ImageEncoder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::images::to_byte;

/// Size and randomness of the synthetic real-vs-fake face set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FacesConfig {
    /// Picks every image; the same seed writes byte-identical files.
    pub seed: u64,
    /// Images in `train/`, half real and half fake (an odd one out is real).
    pub n_train: usize,
    /// Images in `val/`.
    pub n_val: usize,
    /// Images in `test/`.
    pub n_test: usize,
    /// Side of the square images, at least 16.
    pub size: u32,
}

impl Default for FacesConfig {
    /// The course report's split sizes: 1,400 / 200 / 400 images of 64 × 64.
    fn default() -> Self {
        FacesConfig {
            seed: 0,
            n_train: 1400,
            n_val: 200,
            n_test: 400,
            size: 64,
        }
    }
}

/// The class folders, in label order.
pub const FACE_CLASSES: [&str; 2] = ["0_real", "1_fake"];

/// Writes `root/{train,val,test}/{0_real,1_fake}/NNNNN.png` (numbered from 00000 within each
/// class folder), deterministic from `cfg.seed`.
///
/// # Errors
/// A size below 16, a split folder that already exists and is not empty (stale files from another
/// configuration would silently join the set), or a failure to create or write a file.
pub fn write_synthetic_faces(root: &Path, cfg: &FacesConfig) -> Result<()> {
    if cfg.size < 16 {
        bail!("synthetic face size must be at least 16, got {}", cfg.size);
    }
    let splits = [
        ("train", cfg.n_train),
        ("val", cfg.n_val),
        ("test", cfg.n_test),
    ];
    for (split, _) in splits {
        let dir = root.join(split);
        if dir.exists() {
            let mut entries =
                std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
            if entries.next().is_some() {
                bail!(
                    "refusing to write synthetic faces into non-empty folder {}",
                    dir.display()
                );
            }
        }
    }

    // One job per image: (split index, class, index within class).
    let mut jobs = Vec::new();
    for (s, &(split, n)) in splits.iter().enumerate() {
        let counts = [n - n / 2, n / 2];
        for (class, &count) in counts.iter().enumerate() {
            let dir = root.join(split).join(FACE_CLASSES[class]);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            jobs.extend((0..count).map(|i| (s, class, i)));
        }
    }
    jobs.par_iter().try_for_each(|&(s, class, i)| {
        let stream = ((s as u64) << 40) | ((class as u64) << 32) | i as u64;
        let mut rng = stream_rng(cfg.seed, stream);
        let rgb = if class == 0 {
            real_face(&mut rng, cfg.size)
        } else {
            fake_face(&mut rng, cfg.size)
        };
        let path = root
            .join(splits[s].0)
            .join(FACE_CLASSES[class])
            .join(format!("{i:05}.png"));
        write_png(&path, &rgb, cfg.size)
    })
}

/// A ChaCha8 generator for one image: the seed picks the key, the image its stream.
fn stream_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// Encodes `size × size` RGB bytes as a PNG file.
fn write_png(path: &Path, rgb: &[u8], size: u32) -> Result<()> {
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(rgb, size, size, image::ColorType::Rgb8)
        .with_context(|| format!("encoding {}", path.display()))?;
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Size and randomness of the procedural shapes set.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapesConfig {
    /// Picks every image.
    pub seed: u64,
    /// Number of images; labels cycle through the classes, so classes are balanced.
    pub n: usize,
    /// Side of the square images (at least 1).
    pub size: u32,
    /// Number of classes, 1 to [`SHAPE_CLASSES`]`.len()`; the first ones of that list are used.
    pub classes: usize,
    /// Fraction of the images (0 to 1) that form one more class, `resampled`: a shape of any
    /// class reduced and brought back up the way the fake faces are made (see
    /// [`write_synthetic_faces`]), so that the backbone learns features that see up-sampling
    /// traces, as ImageNet features see fine textures.
    pub resampled: f32,
}

impl Default for ShapesConfig {
    /// 10,000 images of 64 × 64 in 10 classes.
    fn default() -> Self {
        ShapesConfig {
            seed: 0,
            n: 10_000,
            size: 64,
            classes: 10,
            resampled: 0.0,
        }
    }
}

/// The shape and texture classes, in label order.
pub const SHAPE_CLASSES: [&str; 12] = [
    "circle", "square", "triangle", "star", "stripes", "checker", "rings", "blobs", "cross",
    "dots", "hexagon", "crescent",
];

/// The procedural shapes set as bytes, the way an image stage stores images.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeSet {
    /// n × 3 × size × size RGB bytes, channel-major per image.
    pub bytes: Vec<u8>,
    pub labels: Vec<u32>,
    /// Class names in label order.
    pub classes: Vec<String>,
    /// Made-up names (`circle/00000.png`, …) so that figures can refer to images.
    pub files: Vec<String>,
}

/// The pretraining source task: `cfg.n` procedural shapes and textures with random colours,
/// positions, scales, rotations, backgrounds and noise.
///
/// # Panics
/// If `cfg.classes` is 0 or above `SHAPE_CLASSES.len()`, or `cfg.size` is 0; check the
/// configuration before calling.
pub fn synthetic_shapes(cfg: &ShapesConfig) -> ShapeSet {
    assert!(
        (1..=SHAPE_CLASSES.len()).contains(&cfg.classes),
        "shapes: classes must be 1 to {}, got {}",
        SHAPE_CLASSES.len(),
        cfg.classes
    );
    assert!(cfg.size > 0, "shapes: size must be positive");
    let s = cfg.size as usize;
    let plane = s * s;
    let mut bytes = vec![0u8; cfg.n * 3 * plane];
    let mut labels = vec![0u32; cfg.n];
    bytes
        .par_chunks_mut(3 * plane)
        .zip(labels.par_iter_mut())
        .enumerate()
        .for_each(|(i, (out, label))| {
            // Streams from 2⁶² on, apart from the face set's, in case both use one seed.
            let mut rng = stream_rng(cfg.seed, (1 << 62) | i as u64);
            let shape = i % cfg.classes;
            // Drawn only when asked for, so that sets without the class stay as they were.
            let resampled = cfg.resampled > 0.0 && rng.uniform() < cfg.resampled;
            let rgb = if resampled {
                *label = cfg.classes as u32;
                resampled_shape(&mut rng, shape, cfg.size)
            } else {
                *label = shape as u32;
                shape_image(&mut rng, shape, cfg.size)
            };
            for (p, px) in rgb.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    out[c * plane + p] = px[c];
                }
            }
        });
    let mut classes: Vec<String> = SHAPE_CLASSES[..cfg.classes]
        .iter()
        .map(|c| c.to_string())
        .collect();
    if cfg.resampled > 0.0 {
        classes.push(RESAMPLED_CLASS.to_string());
    }
    let files = labels
        .iter()
        .enumerate()
        .map(|(i, &l)| format!("{}/{:05}.png", classes[l as usize], i))
        .collect();
    ShapeSet {
        bytes,
        labels,
        classes,
        files,
    }
}

/// The name of the extra class of [`ShapesConfig::resampled`].
pub const RESAMPLED_CLASS: &str = "resampled";

/// A shape of class `class` passed through the fake faces' generator chain (one or two ×2
/// steps), with the same noise; `size × size` RGB bytes.
fn resampled_shape(rng: &mut ChaCha8Rng, class: usize, size: u32) -> Vec<u8> {
    let steps = if rng.uniform() < 0.65 { 1 } else { 2 };
    let res = size.div_ceil(1 << steps) << steps;
    let full: Vec<Rgb> = shape_image(rng, class, res)
        .chunks_exact(3)
        .map(|p| std::array::from_fn(|c| f32::from(p[c]) / 255.0))
        .collect();
    // Clearer traces than most fakes carry (amplitude 0.03–0.10, where most fakes are below
    // 0.01). Measured at 0.01–0.06 the class was not learnt (held-out accuracy at chance) and
    // fine-tuning beat boosting by less (0.63 / 0.68 against 0.59 / 0.60 on the report).
    let strength = |rng: &mut ChaCha8Rng| 0.03 + 0.07 * rng.uniform();
    let mut img = generator_resample(rng, full, res, steps, strength);
    let sigma = rng.range(0.3, 2.5) / 255.0;
    add_noise(rng, &mut img, sigma);
    to_bytes(&centre_crop(&img, res, size))
}

// ---------------------------------------------------------------------------------------------
// Random numbers and small maths, all IEEE-exact.

trait Draw {
    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f32;
    /// Uniform in [a, b).
    fn range(&mut self, a: f32, b: f32) -> f32 {
        a + (b - a) * self.uniform()
    }
    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: usize) -> usize;
    /// Roughly standard normal: a scaled sum of three uniforms, within ±3.
    fn normal(&mut self) -> f32 {
        (self.uniform() + self.uniform() + self.uniform() - 1.5) * 2.0
    }
    /// A unit vector in a uniformly random direction (rejection sampling, no trigonometry).
    fn direction(&mut self) -> (f32, f32) {
        loop {
            let (x, y) = (self.range(-1.0, 1.0), self.range(-1.0, 1.0));
            let r2 = x * x + y * y;
            if r2 > 0.01 && r2 <= 1.0 {
                let r = r2.sqrt();
                return (x / r, y / r);
            }
        }
    }
}

impl<R: Rng> Draw for R {
    fn uniform(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
    }
    fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

type Rgb = [f32; 3];

fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

fn scale(a: Rgb, k: f32) -> Rgb {
    [a[0] * k, a[1] * k, a[2] * k]
}

fn jitter(rng: &mut impl Draw, c: Rgb, amount: f32) -> Rgb {
    c.map(|v| (v + amount * rng.normal()).clamp(0.0, 1.0))
}

fn clamp01(x: f32) -> f32 {
    x.clamp(0.0, 1.0)
}

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = clamp01((x - e0) / (e1 - e0));
    t * t * (3.0 - 2.0 * t)
}

/// Coverage of a region with signed distance `d` (negative inside) for an edge `aa` wide.
fn cover(d: f32, aa: f32) -> f32 {
    clamp01(0.5 - d / aa)
}

/// Approximate signed distance to the ellipse with semi-axes `a`, `b` centred at the origin
/// (first-order: the implicit function over its gradient), good near the outline.
fn ellipse_sd(x: f32, y: f32, a: f32, b: f32) -> f32 {
    let (qx, qy) = (x / a, y / b);
    let r = (qx * qx + qy * qy).sqrt();
    let g = ((qx / a) * (qx / a) + (qy / b) * (qy / b)).sqrt();
    if r < 1e-6 {
        -a.min(b)
    } else {
        (r - 1.0) * r / g
    }
}

/// A smooth bump: 1 at the centre falling to 0 at radius 1 (a cheap stand-in for a Gaussian).
fn bump(r2: f32) -> f32 {
    let t = clamp01(1.0 - r2);
    t * t
}

/// A triangle wave with period 1 between 0 and 0.5: the distance to the nearest integer.
fn tri(x: f32) -> f32 {
    (x - (x + 0.5).floor()).abs()
}

// ---------------------------------------------------------------------------------------------
// Faces.

/// Everything that varies between portraits, in image units (the image is the unit square).
struct Face {
    bg_top: Rgb,
    bg_bottom: Rgb,
    bg_light: (f32, f32, f32, f32), // centre x, y, radius, strength
    centre: (f32, f32),
    rx: f32,
    ry: f32,
    /// Cosine and sine of the head's tilt.
    rot: (f32, f32),
    /// Turn to the side, as a fraction of the face half-width the features shift by.
    yaw: f32,
    skin: Rgb,
    /// Unit light direction; y points down, z towards the viewer.
    light: [f32; 3],
    ambient: f32,
    hair: Rgb,
    hairline: f32,
    hair_volume: f32,
    long_hair: bool,
    side_hair: f32,
    clothes: Rgb,
    eye_x: f32,
    eye_y: f32,
    eye_w: f32,
    eye_h: f32,
    iris: Rgb,
    gaze: f32,
    brow_gap: f32,
    brow_thick: f32,
    brow_tilt: f32,
    nose_len: f32,
    mouth_y: f32,
    mouth_w: f32,
    smile: f32,
    lip: Rgb,
    lip_thick: f32,
    blush: f32,
    /// Edge width in pixels (1 is crisp; wider is softer focus).
    softness: f32,
}

const SKIN_LIGHT: Rgb = [0.97, 0.82, 0.70];
const SKIN_DARK: Rgb = [0.42, 0.27, 0.18];
const HAIR: [Rgb; 6] = [
    [0.09, 0.07, 0.06],
    [0.30, 0.19, 0.10],
    [0.50, 0.33, 0.17],
    [0.83, 0.68, 0.42],
    [0.62, 0.26, 0.10],
    [0.62, 0.61, 0.60],
];
const IRIS: [Rgb; 4] = [
    [0.33, 0.20, 0.10],
    [0.22, 0.42, 0.62],
    [0.30, 0.45, 0.25],
    [0.15, 0.10, 0.07],
];

impl Face {
    fn random(rng: &mut impl Draw) -> Face {
        let hue = [
            rng.range(0.2, 0.95),
            rng.range(0.2, 0.95),
            rng.range(0.2, 0.95),
        ];
        let bg_top = mix(hue, [0.9, 0.9, 0.9], rng.range(0.0, 0.6));
        let bg_bottom = scale(mix(hue, jitter(rng, hue, 0.2), 0.5), rng.range(0.6, 1.0));
        let rx = rng.range(0.19, 0.25);
        let tilt = rng.range(-0.18, 0.18);
        let cos = 1.0 / (1.0 + tilt * tilt).sqrt();
        let (lx, ly) = (rng.range(-0.7, 0.7), rng.range(-0.7, 0.1));
        let lz = rng.range(0.6, 1.0);
        let ln = (lx * lx + ly * ly + lz * lz).sqrt();
        let tone = rng.uniform();
        let skin = jitter(rng, mix(SKIN_LIGHT, SKIN_DARK, tone * tone), 0.025);
        let hair = HAIR[rng.below(HAIR.len())];
        let hair = jitter(rng, hair, 0.04);
        let clothes = [
            rng.range(0.05, 0.9),
            rng.range(0.05, 0.9),
            rng.range(0.05, 0.9),
        ];
        let iris = IRIS[rng.below(IRIS.len())];
        let iris = jitter(rng, iris, 0.03);
        let lip = mix(skin, [0.75, 0.25, 0.28], rng.range(0.3, 0.6));
        Face {
            bg_top,
            bg_bottom,
            bg_light: (
                rng.uniform(),
                rng.range(0.0, 0.5),
                rng.range(0.3, 0.7),
                rng.range(0.0, 0.25),
            ),
            centre: (0.5 + rng.range(-0.06, 0.06), 0.5 + rng.range(-0.04, 0.05)),
            rx,
            ry: rx * rng.range(1.2, 1.38),
            rot: (cos, tilt * cos),
            yaw: rng.range(-0.15, 0.15),
            skin,
            light: [lx / ln, ly / ln, lz / ln],
            ambient: rng.range(0.45, 0.7),
            hair,
            hairline: rng.range(-0.75, -0.35),
            hair_volume: rng.range(1.06, 1.22),
            long_hair: rng.uniform() < 0.45,
            side_hair: rng.range(-0.3, 0.35),
            clothes,
            eye_x: rng.range(0.3, 0.4),
            eye_y: rng.range(-0.14, -0.02),
            eye_w: rng.range(0.13, 0.18),
            eye_h: rng.range(0.06, 0.09),
            iris,
            gaze: rng.range(-0.3, 0.3),
            brow_gap: rng.range(0.12, 0.18),
            brow_thick: rng.range(0.022, 0.045),
            brow_tilt: rng.range(-0.25, 0.3),
            nose_len: rng.range(0.2, 0.3),
            mouth_y: rng.range(0.44, 0.56),
            mouth_w: rng.range(0.2, 0.3),
            smile: rng.range(-0.1, 0.5),
            lip,
            lip_thick: rng.range(0.035, 0.06),
            blush: rng.range(0.0, 0.25),
            softness: rng.range(0.9, 1.7),
        }
    }

    /// The colour at image point (u, v); `aa` is the edge width in image units.
    fn colour(&self, u: f32, v: f32, aa: f32) -> Rgb {
        let (cx, cy) = self.centre;
        let (rx, ry) = (self.rx, self.ry);
        // Background: vertical gradient and a soft light patch.
        let mut col = mix(self.bg_top, self.bg_bottom, clamp01(v));
        let (bx, by, br, bs) = self.bg_light;
        let glow = bs * bump(((u - bx) * (u - bx) + (v - by) * (v - by)) / (br * br));
        col = mix(col, [1.0, 1.0, 1.0], glow);

        // Head frame: rotated with the tilt, origin at the face centre, still in image units.
        let (c, s) = self.rot;
        let (dx, dy) = (u - cx, v - cy);
        let x = c * dx + s * dy;
        let y = -s * dx + c * dy;
        let (fx, fy) = (x / rx, y / ry);
        let [lx, ly, lz] = self.light;
        // Lambert shading of a sphere fitted to an ellipse with semi-axes (a, b) at (0, oy).
        let lambert = |a: f32, b: f32, oy: f32| {
            let (nx, ny) = (x / a, (y - oy) / b);
            let nz = (1.0 - nx * nx - ny * ny).max(0.0).sqrt();
            (nx * lx + ny * ly + nz * lz).max(0.0)
        };

        // Long hair behind the head.
        let hv = self.hair_volume;
        if self.long_hair {
            let a = rx * hv * 1.08;
            let b = ry * 1.5;
            let back = cover(ellipse_sd(x, y - 0.45 * ry, a, b), aa) * cover(y - 1.5 * ry, aa);
            if back > 0.0 {
                let shade = 0.35 + 0.45 * lambert(a, b, 0.45 * ry);
                col = mix(col, scale(self.hair, shade), back);
            }
        }
        // Shoulders (upright, in image coordinates) and neck.
        let (sx, sy) = (u - cx, v - (cy + 1.85 * ry));
        let shoulders = cover(ellipse_sd(sx, sy, 2.4 * rx, 0.85 * ry), aa);
        if shoulders > 0.0 {
            let shade = 0.6 + 0.4 * clamp01(0.5 - sy / (0.85 * ry) * 0.5 - lx * sx / (2.4 * rx));
            col = mix(col, scale(self.clothes, shade), shoulders);
        }
        let neck_d = (x.abs() - 0.42 * rx).max(0.4 * ry - y);
        let neck = cover(neck_d, aa) * cover(v - (cy + 1.55 * ry), aa).max(1.0 - shoulders);
        if neck > 0.0 {
            let shade = 0.55 + 0.2 * smoothstep(0.5 * ry, 1.3 * ry, y);
            col = mix(
                col,
                scale(self.skin, shade),
                neck * (1.0 - shoulders * 0.95),
            );
        }
        // Ears, then the face.
        for side in [-1.0f32, 1.0] {
            let ear = cover(
                ellipse_sd(x - side * 0.97 * rx, y - 0.02 * ry, 0.14 * rx, 0.24 * ry),
                aa,
            );
            if ear > 0.0 {
                col = mix(
                    col,
                    scale(self.skin, 0.55 + 0.3 * (0.5 + 0.5 * side * lx)),
                    ear,
                );
            }
        }
        let face_d = ellipse_sd(x, y, rx, ry);
        let face = cover(face_d, aa);
        if face > 0.0 {
            let shade = self.ambient + (1.0 - self.ambient) * lambert(rx * 1.02, ry * 1.02, 0.0);
            let mut skin = scale(self.skin, shade);
            // Shadow under the chin and a little warmth on the cheeks.
            skin = scale(
                skin,
                1.0 - 0.25 * smoothstep(0.75, 1.0, fy) * (1.0 - fx.abs()),
            );
            for side in [-1.0f32, 1.0] {
                let (bx, by) = (fx - side * 0.5 - self.yaw, fy - 0.22);
                skin = mix(
                    skin,
                    [0.9, 0.4, 0.4],
                    self.blush * bump((bx * bx + by * by) / 0.05),
                );
            }
            col = mix(col, skin, face);
        }
        // Hair on top: inside the hair outline and above the hairline, or beside the face.
        let hair_d = ellipse_sd(x, y + 0.08 * ry, rx * hv, ry * (hv - 0.02));
        let hair_out = cover(hair_d, aa);
        if hair_out > 0.0 {
            let hairline = (self.hairline + 0.55 * fx * fx + 0.1 * self.yaw * fx) * ry;
            let above = cover(y - hairline, aa);
            let beside = (1.0 - face) * cover(y - self.side_hair * ry, aa);
            let amount = hair_out * above.max(beside);
            if amount > 0.0 {
                let shine = lambert(rx * hv, ry * hv, -0.08 * ry);
                let strands = 0.04 * tri(fx * 7.0 + 0.3 * fy);
                col = mix(col, scale(self.hair, 0.4 + 0.6 * shine + strands), amount);
            }
        }
        if face_d > 2.0 * aa {
            return col;
        }

        // Features, in face units: they shift with the turn.
        let shift = self.yaw;
        for side in [-1.0f32, 1.0] {
            let ex = (side * self.eye_x + shift) * rx;
            let ey = self.eye_y * ry;
            let a = self.eye_w * rx * (1.0 - 1.5 * self.yaw * side);
            let b = self.eye_h * ry;
            let (ox, oy) = (x - ex, y - ey);
            // Brow: a thin ellipse above the eye, tilted by shearing.
            let by = oy + self.brow_gap * ry + side * self.brow_tilt * ox * 0.5 - 0.3 * ox * ox / a;
            let brow = cover(ellipse_sd(ox, by, a * 1.15, self.brow_thick * ry), aa);
            col = mix(col, scale(self.hair, 0.6), brow * 0.9);
            if ox.abs() > 1.4 * a || oy.abs() > 2.0 * b {
                continue;
            }
            let eye_d = ellipse_sd(ox, oy, a, b);
            // Eyelid: a dark rim, thicker on the upper lid.
            let lid = cover(ellipse_sd(ox, oy + 0.15 * b, a * 1.1, b * 1.3), aa);
            col = mix(
                col,
                scale(self.skin, 0.3),
                lid * smoothstep(0.3 * b, -0.6 * b, oy) * 0.8,
            );
            let white = cover(eye_d, aa);
            if white > 0.0 {
                let ir = 0.95 * b;
                let (ix, iy) = (ox - self.gaze * a * 0.4, oy - 0.1 * b);
                let rr = (ix * ix + iy * iy).sqrt();
                let mut eye = [0.93, 0.91, 0.88];
                eye = mix(eye, self.iris, cover(rr - ir, aa));
                eye = mix(eye, [0.03, 0.03, 0.04], cover(rr - 0.45 * ir, aa));
                let (hx, hy) = (ix + 0.35 * ir, iy + 0.35 * ir);
                let glint = cover((hx * hx + hy * hy).sqrt() - 0.22 * ir, aa);
                eye = mix(eye, [1.0, 1.0, 1.0], glint * 0.9);
                // The upper lid shades the top of the eye.
                eye = scale(eye, 1.0 - 0.3 * smoothstep(-0.2 * b, -b, oy));
                col = mix(col, eye, white);
            }
        }
        // Nose: a soft shadow on the side away from the light, nostrils and a highlight.
        let nx = (shift * 1.3) * rx;
        let (ox, oy) = (x - nx, y - (self.eye_y + 0.1 + self.nose_len * 0.5) * ry);
        let side = if lx > 0.0 { -1.0 } else { 1.0 };
        let (qx, qy) = (
            (ox - side * 0.07 * rx) / (0.07 * rx),
            oy / (self.nose_len * 0.55 * ry),
        );
        let ridge = bump(qx * qx + qy * qy);
        col = scale(col, 1.0 - 0.22 * ridge);
        let tip_y = (self.eye_y + 0.12 + self.nose_len) * ry;
        for s in [-1.0f32, 1.0] {
            let d = ellipse_sd(x - nx - s * 0.075 * rx, y - tip_y, 0.045 * rx, 0.025 * ry);
            col = scale(col, 1.0 - 0.5 * cover(d, aa * 1.5));
        }
        let (tx, ty) = (x - nx, y - tip_y + 0.06 * ry);
        col = mix(
            col,
            [1.0, 1.0, 1.0],
            0.12 * bump((tx * tx + ty * ty) / (0.006 * rx * rx * 9.0)),
        );
        // Mouth: lips curved by the smile, with a dark line between them.
        let mx = shift * 1.1 * rx;
        let (ox, oy) = (x - mx, y - self.mouth_y * ry);
        let w = self.mouth_w * rx;
        let curve = oy + self.smile * ox * ox / w;
        let lt = self.lip_thick * ry;
        let upper = cover(ellipse_sd(ox, curve + 0.5 * lt, w, 0.7 * lt), aa);
        let lower = cover(ellipse_sd(ox, curve - 0.6 * lt, 0.85 * w, lt), aa);
        let lips = upper.max(lower);
        if lips > 0.0 {
            let shade = self.ambient + (1.0 - self.ambient) * lambert(rx, ry, 0.0);
            col = mix(
                col,
                scale(self.lip, shade * (0.85 + 0.25 * clamp01(-curve / lt))),
                lips,
            );
            let line = cover(curve.abs() - 0.12 * lt, aa) * cover(ox.abs() - 0.95 * w, aa);
            col = mix(col, scale(self.lip, 0.3), line);
        }
        col
    }
}

/// Draws `face` at `res × res` with 2 × 2 supersampling; returns RGB floats in [0, 1].
fn render(face: &Face, res: u32) -> Vec<Rgb> {
    const SS: u32 = 2;
    let n = res as usize;
    let px = 1.0 / res as f32;
    let aa = face.softness * px;
    let mut out = vec![[0.0; 3]; n * n];
    for j in 0..res {
        for i in 0..res {
            let mut acc = [0.0f32; 3];
            for sj in 0..SS {
                for si in 0..SS {
                    let u = (i as f32 + (si as f32 + 0.5) / SS as f32) * px;
                    let v = (j as f32 + (sj as f32 + 0.5) / SS as f32) * px;
                    let c = face.colour(u, v, aa);
                    for k in 0..3 {
                        acc[k] += c[k];
                    }
                }
            }
            out[j as usize * n + i as usize] = scale(acc, 1.0 / (SS * SS) as f32);
        }
    }
    out
}

/// Adds per-pixel, per-channel noise of standard deviation about `sigma` plus a shared
/// luminance part, as a sensor would.
fn add_noise(rng: &mut impl Draw, img: &mut [Rgb], sigma: f32) {
    for p in img.iter_mut() {
        let shared = 0.6 * rng.normal();
        for v in p.iter_mut() {
            *v += sigma * (shared + 0.8 * rng.normal());
        }
    }
}

fn to_bytes(img: &[Rgb]) -> Vec<u8> {
    img.iter()
        .flat_map(|p| p.map(|v| to_byte(v * 255.0)))
        .collect()
}

/// A "real" portrait: drawn at full resolution with sensor noise; `size × size` RGB bytes.
fn real_face(rng: &mut ChaCha8Rng, size: u32) -> Vec<u8> {
    let face = Face::random(rng);
    let mut img = render(&face, size);
    let sigma = rng.range(0.6, 3.0) / 255.0;
    add_noise(rng, &mut img, sigma);
    to_bytes(&img)
}

/// A "fake" portrait, built coarse to fine the way a skip-architecture generator builds it: the
/// face is drawn, reduced to a half or a quarter of the size, and brought back up by ×2
/// transposed convolutions with slightly unbalanced kernels, each step adding back only part of
/// the detail lost at that scale (so fakes are a little softer). `size × size` RGB bytes.
fn fake_face(rng: &mut ChaCha8Rng, size: u32) -> Vec<u8> {
    let face = Face::random(rng);
    let steps = if rng.uniform() < 0.65 { 1 } else { 2 };
    let res = size.div_ceil(1 << steps) << steps;
    // Artifact strength: a cubed uniform, so most fakes are subtle and a few are obvious.
    let strength = |rng: &mut ChaCha8Rng| {
        let u = rng.uniform();
        0.002 + 0.05 * u * u * u
    };
    let mut img = generator_resample(rng, render(&face, res), res, steps, strength);
    let sigma = rng.range(0.3, 2.5) / 255.0;
    add_noise(rng, &mut img, sigma);
    // Generators' colours run slightly warm and saturated (a weak cue: a stronger one lets
    // boosting on raw pixels find fakes by colour alone).
    let sat = rng.range(0.0, 0.06);
    let warm = rng.range(0.0, 0.0125);
    for p in img.iter_mut() {
        let lum = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
        *p = mix([lum; 3], *p, 1.0 + sat);
        p[0] += warm;
        p[2] -= warm;
    }
    to_bytes(&centre_crop(&img, res, size))
}

/// The central `size × size` of an image of side `res` (when `size` is not a multiple of the
/// up-sampling factor).
fn centre_crop(img: &[Rgb], res: u32, size: u32) -> Vec<Rgb> {
    let off = ((res - size) / 2) as usize;
    let (r, s) = (res as usize, size as usize);
    (0..s * s)
        .map(|k| img[(k / s + off) * r + k % s + off])
        .collect()
}

/// Reduces `full` (side `res`, a multiple of 2^`steps`) by `steps` halvings and brings it back
/// the way a skip-architecture generator builds an image coarse to fine: ×2 transposed
/// convolutions with slightly unbalanced kernels, each step adding back only part of the detail
/// lost at that scale, with noise injected at the coarsest scale. `strength` draws how unbalanced
/// the kernels are (the checkerboard's amplitude).
fn generator_resample(
    rng: &mut ChaCha8Rng,
    full: Vec<Rgb>,
    res: u32,
    steps: usize,
    strength: impl FnOnce(&mut ChaCha8Rng) -> f32,
) -> Vec<Rgb> {
    // Resolution pyramid: levels[l] is res / 2^l on a side.
    let mut levels = vec![full];
    for l in 0..steps {
        let next = downsample(&levels[l], res >> l);
        levels.push(next);
    }
    let mut img = levels[steps].clone();
    // Noise injected at the coarsest scale comes out smooth and carries the kernel's pattern.
    let sigma = rng.range(0.4, 2.0) / 255.0;
    add_noise(rng, &mut img, sigma);
    let strength = strength(rng);
    let balanced = [bilinear_kernel(); 3];
    for l in (0..steps).rev() {
        let side = res >> (l + 1);
        let step_strength = strength * rng.range(0.7, 1.3);
        let kernel = up_kernel(rng, step_strength);
        let smooth = upsample(&levels[l + 1], side, &balanced);
        let keep = rng.range(0.55, 1.0);
        img = upsample(&img, side, &kernel);
        for ((p, fine), coarse) in img.iter_mut().zip(&levels[l]).zip(&smooth) {
            for c in 0..3 {
                p[c] += keep * (fine[c] - coarse[c]);
            }
        }
    }
    img
}

/// Halves an image of side `res` (even) by averaging 2 × 2 blocks.
fn downsample(img: &[Rgb], res: u32) -> Vec<Rgb> {
    let (n, h) = (res as usize, res as usize / 2);
    (0..h * h)
        .map(|k| {
            let (y, x) = (2 * (k / h), 2 * (k % h));
            let q = [
                img[y * n + x],
                img[y * n + x + 1],
                img[(y + 1) * n + x],
                img[(y + 1) * n + x + 1],
            ];
            std::array::from_fn(|c| 0.25 * (q[0][c] + q[1][c] + q[2][c] + q[3][c]))
        })
        .collect()
}

/// The balanced ×2 kernel: `[1, 3, 3, 1] / 4` in each direction (bilinear with pixel centres).
fn bilinear_kernel() -> [f32; 16] {
    const K1: [f32; 4] = [0.25, 0.75, 0.75, 0.25];
    std::array::from_fn(|t| K1[t / 4] * K1[t % 4])
}

/// One 4 × 4 transposed-convolution kernel per channel for ×2 up-sampling: bilinear
/// (`[1, 3, 3, 1] / 4` in each direction, which gives every output phase the same gain) plus a
/// random perturbation whose phase gains have standard deviation `strength`.
fn up_kernel(rng: &mut impl Draw, strength: f32) -> [[f32; 16]; 3] {
    let base = bilinear_kernel();
    let shared: [f32; 16] = std::array::from_fn(|_| rng.normal());
    std::array::from_fn(|_| {
        let p: [f32; 16] = std::array::from_fn(|t| shared[t] + 0.3 * rng.normal());
        let gains = phase_gains(&p);
        let mean = gains.iter().sum::<f32>() / 4.0;
        let sd = (gains.iter().map(|g| (g - mean) * (g - mean)).sum::<f32>() / 4.0).sqrt();
        let mut k: [f32; 16] = std::array::from_fn(|t| base[t] + strength * p[t] / sd.max(1e-3));
        // Keep the average gain at 1 so brightness is unchanged.
        let g = phase_gains(&k).iter().sum::<f32>() / 4.0;
        for t in &mut k {
            *t /= g;
        }
        k
    })
}

/// Rows (and columns) of the 4 × 4 kernel that reach output phase 0 and phase 1.
const PHASE_TAPS: [[usize; 2]; 2] = [[1, 3], [0, 2]];

/// Sum of the kernel taps that feed each of the four output phases (row-major py, px).
fn phase_gains(k: &[f32; 16]) -> [f32; 4] {
    std::array::from_fn(|ph| {
        let (py, px) = (ph / 2, ph % 2);
        let mut g = 0.0;
        for a in PHASE_TAPS[py] {
            for b in PHASE_TAPS[px] {
                g += k[a * 4 + b];
            }
        }
        g
    })
}

/// ×2 transposed convolution, stride 2: `out[o] = Σᵢ in[i] · k[o − 2i + 1]` in each direction,
/// with edge pixels repeated.
fn upsample(img: &[Rgb], res: u32, kernel: &[[f32; 16]; 3]) -> Vec<Rgb> {
    let n = res as i64;
    let m = 2 * res as usize;
    let at = |y: i64, x: i64| img[(y.clamp(0, n - 1) * n + x.clamp(0, n - 1)) as usize];
    let mut out = vec![[0.0f32; 3]; m * m];
    for oy in 0..m as i64 {
        for ox in 0..m as i64 {
            let mut acc = [0.0f32; 3];
            // The two inputs that reach output o = 2q + r are q and q − 1 (r = 0) or q + 1 (r = 1).
            for iy in [oy / 2 - 1 + 2 * (oy % 2), oy / 2] {
                let a = oy - 2 * iy + 1;
                if !(0..4).contains(&a) {
                    continue;
                }
                for ix in [ox / 2 - 1 + 2 * (ox % 2), ox / 2] {
                    let b = ox - 2 * ix + 1;
                    if !(0..4).contains(&b) {
                        continue;
                    }
                    let p = at(iy, ix);
                    for c in 0..3 {
                        acc[c] += kernel[c][(a * 4 + b) as usize] * p[c];
                    }
                }
            }
            out[oy as usize * m + ox as usize] = acc;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Shapes.

/// Vertices of a regular polygon or star on the unit circle, from a cos/sin table of 30° steps
/// (no trigonometry at run time). `inner` < 1 alternates with the outer radius for a star.
fn polygon(n: usize, inner: f32) -> Vec<(f32, f32)> {
    // cos and sin of k · 36° (for 5- and 10-gons) and k · 60° / 120° (for 3- and 6-gons).
    const C36: [f32; 10] = [
        1.0, 0.809_017, 0.309_017, -0.309_017, -0.809_017, -1.0, -0.809_017, -0.309_017, 0.309_017,
        0.809_017,
    ];
    const S36: [f32; 10] = [
        0.0,
        0.587_785_3,
        0.951_056_5,
        0.951_056_5,
        0.587_785_3,
        0.0,
        -0.587_785_3,
        -0.951_056_5,
        -0.951_056_5,
        -0.587_785_3,
    ];
    const C60: [f32; 6] = [1.0, 0.5, -0.5, -1.0, -0.5, 0.5];
    const S60: [f32; 6] = [
        0.0,
        0.866_025_4,
        0.866_025_4,
        0.0,
        -0.866_025_4,
        -0.866_025_4,
    ];
    match n {
        3 => (0..3).map(|k| (C60[2 * k], S60[2 * k])).collect(),
        6 => (0..6).map(|k| (C60[k], S60[k])).collect(),
        _ => (0..10)
            .map(|k| {
                let r = if k % 2 == 0 { 1.0 } else { inner };
                (r * C36[k], r * S36[k])
            })
            .collect(),
    }
}

/// Signed distance to a closed polygon (even-odd rule for the inside).
fn polygon_sd(x: f32, y: f32, v: &[(f32, f32)]) -> f32 {
    let mut d2 = f32::MAX;
    let mut inside = false;
    let mut j = v.len() - 1;
    for i in 0..v.len() {
        let (ax, ay) = v[j];
        let (bx, by) = v[i];
        let (ex, ey) = (bx - ax, by - ay);
        let (wx, wy) = (x - ax, y - ay);
        let t = clamp01((wx * ex + wy * ey) / (ex * ex + ey * ey));
        let (qx, qy) = (wx - ex * t, wy - ey * t);
        d2 = d2.min(qx * qx + qy * qy);
        if (ay > y) != (by > y) && x < ax + (y - ay) * ex / ey {
            inside = !inside;
        }
        j = i;
    }
    if inside { -d2.sqrt() } else { d2.sqrt() }
}

/// One shapes image of class `class`, `size × size` RGB bytes.
fn shape_image(rng: &mut ChaCha8Rng, class: usize, size: u32) -> Vec<u8> {
    let rand_colour =
        |rng: &mut ChaCha8Rng| -> Rgb { [rng.uniform(), rng.uniform(), rng.uniform()] };
    let bg0 = rand_colour(rng);
    let bg1 = mix(bg0, rand_colour(rng), rng.range(0.0, 0.6));
    let (gx, gy) = rng.direction();
    // Foreground colours far enough from the background to be seen.
    let mut fg = rand_colour(rng);
    let lum = |c: Rgb| 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
    if (lum(fg) - lum(bg0)).abs() < 0.2 {
        fg = if lum(bg0) > 0.5 {
            scale(fg, 0.35)
        } else {
            mix(fg, [1.0; 3], 0.7)
        };
    }
    let fg2 = rand_colour(rng);
    let (cx, cy) = (rng.range(0.3, 0.7), rng.range(0.3, 0.7));
    let r = rng.range(0.14, 0.32);
    let (rc, rs) = rng.direction();
    let freq = rng.range(3.0, 9.0);
    let star_inner = rng.range(0.35, 0.55);
    let verts = match class {
        1 => vec![(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
        2 => polygon(3, 1.0),
        3 => polygon(5, star_inner),
        10 => polygon(6, 1.0),
        _ => Vec::new(),
    };
    let blobs: Vec<(f32, f32, f32)> = (0..3 + rng.below(4))
        .map(|_| {
            (
                rng.range(0.1, 0.9),
                rng.range(0.1, 0.9),
                rng.range(0.06, 0.18),
            )
        })
        .collect();
    let (ox, oy) = rng.direction();
    let softness = rng.range(0.8, 1.6);
    let sigma = rng.range(0.0, 0.04);

    let res = size as usize;
    let px = 1.0 / size as f32;
    let aa = softness * px;
    let mut img = vec![[0.0f32; 3]; res * res];
    for (k, out) in img.iter_mut().enumerate() {
        let mut acc = [0.0f32; 3];
        for sub in 0..4 {
            let u = ((k % res) as f32 + 0.25 + 0.5 * (sub % 2) as f32) * px;
            let v = ((k / res) as f32 + 0.25 + 0.5 * (sub / 2) as f32) * px;
            let bg = mix(bg0, bg1, clamp01(0.5 + (u - 0.5) * gx + (v - 0.5) * gy));
            // Rotated, scaled shape coordinates.
            let (dx, dy) = (u - cx, v - cy);
            let (x, y) = ((rc * dx + rs * dy) / r, (-rs * dx + rc * dy) / r);
            let edge = aa / r;
            let amount = match class {
                0 => cover((x * x + y * y).sqrt() - 1.0, edge),
                1 | 2 | 3 | 10 => cover(polygon_sd(x, y, &verts), edge),
                4 => {
                    // Stripes over the whole image at a random angle and frequency.
                    let t = (rc * u + rs * v) * freq;
                    cover(tri(t) - 0.25, aa * freq * 2.0)
                }
                5 => {
                    let (a, b) = (
                        (rc * u + rs * v) * freq * 0.5,
                        (-rs * u + rc * v) * freq * 0.5,
                    );
                    let e = aa * freq * 0.5;
                    let sa = clamp01(0.5 + (tri(a) - 0.25) / e) * 2.0 - 1.0;
                    let sb = clamp01(0.5 + (tri(b) - 0.25) / e) * 2.0 - 1.0;
                    0.5 + 0.5 * sa * sb
                }
                6 => {
                    let d = (dx * dx + dy * dy).sqrt() * freq * 1.5;
                    cover(tri(d) - 0.25, aa * freq * 3.0)
                }
                7 => blobs
                    .iter()
                    .map(|&(bx, by, br)| {
                        bump(((u - bx) * (u - bx) + (v - by) * (v - by)) / (br * br))
                    })
                    .fold(0.0, f32::max)
                    .min(1.0),
                8 => {
                    let bar = |a: f32, b: f32| (a.abs() - 1.0).max(b.abs() - 0.3);
                    cover(bar(x, y).min(bar(y, x)), edge)
                }
                9 => {
                    let (a, b) = ((rc * u + rs * v) * freq, (-rs * u + rc * v) * freq);
                    let (qa, qb) = (a - a.floor() - 0.5, b - b.floor() - 0.5);
                    cover((qa * qa + qb * qb).sqrt() - 0.25, aa * freq)
                }
                _ => {
                    // Crescent: a disc minus a disc shifted sideways.
                    let d1 = (x * x + y * y).sqrt() - 1.0;
                    let (sx, sy) = (x - 0.55 * ox, y - 0.55 * oy);
                    let d2 = (sx * sx + sy * sy).sqrt() - 0.85;
                    cover(d1.max(-d2), edge)
                }
            };
            let c = if class == 7 {
                mix(bg, fg, amount)
            } else {
                mix(bg, mix(fg, fg2, 0.2 * v), amount)
            };
            for (a, b) in acc.iter_mut().zip(c) {
                *a += 0.25 * b;
            }
        }
        *out = acc;
    }
    add_noise(rng, &mut img, sigma);
    to_bytes(&img)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::images::{LoadOptions, read_image_folder};

    fn small(seed: u64) -> FacesConfig {
        FacesConfig {
            seed,
            n_train: 6,
            n_val: 3,
            n_test: 2,
            size: 24,
        }
    }

    fn all_bytes(root: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for split in ["train", "val", "test"] {
            for class in FACE_CLASSES {
                let dir = root.join(split).join(class);
                let mut names: Vec<_> = std::fs::read_dir(&dir)
                    .expect("list")
                    .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                for name in names {
                    let bytes = std::fs::read(dir.join(&name)).expect("read");
                    out.push((format!("{split}/{class}/{name}"), bytes));
                }
            }
        }
        out
    }

    #[test]
    fn writes_layout_and_counts_that_the_loader_reads() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_synthetic_faces(dir.path(), &small(1)).expect("write");
        let files = all_bytes(dir.path());
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(files.len(), 11);
        assert!(names.contains(&"train/0_real/00002.png"));
        assert!(names.contains(&"train/1_fake/00002.png"));
        assert!(!names.contains(&"train/1_fake/00003.png"));
        assert!(
            names.contains(&"val/0_real/00001.png") && !names.contains(&"val/1_fake/00001.png")
        );

        let (set, skipped) =
            read_image_folder(&dir.path().join("train"), &LoadOptions::new(24)).expect("load");
        assert_eq!(skipped, 0);
        assert_eq!(set.classes, FACE_CLASSES);
        assert_eq!(set.labels, [0, 0, 0, 1, 1, 1]);
        assert_eq!(set.files[3], "1_fake/00000.png");

        // Writing again into the same place is refused rather than mixing sets.
        let err = write_synthetic_faces(dir.path(), &small(1)).expect_err("non-empty");
        assert!(format!("{err:#}").contains("non-empty"));
    }

    #[test]
    fn same_seed_gives_identical_bytes_and_another_seed_differs() {
        let (a, b, c) = (
            tempfile::tempdir(),
            tempfile::tempdir(),
            tempfile::tempdir(),
        );
        let (a, b, c) = (a.expect("tmp"), b.expect("tmp"), c.expect("tmp"));
        write_synthetic_faces(a.path(), &small(7)).expect("write");
        write_synthetic_faces(b.path(), &small(7)).expect("write");
        write_synthetic_faces(c.path(), &small(8)).expect("write");
        let (fa, fb, fc) = (
            all_bytes(a.path()),
            all_bytes(b.path()),
            all_bytes(c.path()),
        );
        assert_eq!(fa, fb);
        assert_eq!(fa.len(), fc.len());
        assert!(fa.iter().zip(&fc).all(|(x, y)| x.1 != y.1));
    }

    #[test]
    fn odd_sizes_and_tiny_sizes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cfg = FacesConfig {
            seed: 3,
            n_train: 2,
            n_val: 0,
            n_test: 0,
            size: 30,
        };
        write_synthetic_faces(dir.path(), &cfg).expect("write");
        let img = image::open(dir.path().join("train/1_fake/00000.png")).expect("open");
        assert_eq!((img.width(), img.height()), (30, 30));
        let cfg = FacesConfig { size: 8, ..cfg };
        assert!(write_synthetic_faces(&dir.path().join("x"), &cfg).is_err());
    }

    #[test]
    fn upsampling_kernel_without_perturbation_is_balanced() {
        let mut rng = stream_rng(0, 0);
        let k = up_kernel(&mut rng, 0.0);
        for g in phase_gains(&k[0]) {
            assert!((g - 1.0).abs() < 1e-6);
        }
        // A flat image stays flat through a balanced kernel, and gains a ±strength
        // checkerboard through an unbalanced one.
        let flat = vec![[0.5f32; 3]; 16];
        assert!(
            upsample(&flat, 4, &k)
                .iter()
                .all(|p| (p[0] - 0.5).abs() < 1e-6)
        );
        let k = up_kernel(&mut rng, 0.1);
        let up = upsample(&flat, 4, &k);
        let gains = phase_gains(&k[0]);
        assert!((up[2 * 8 + 3][0] - 0.5 * gains[1]).abs() < 1e-6);
        let sd = (gains.iter().map(|g| (g - 1.0) * (g - 1.0)).sum::<f32>() / 4.0).sqrt();
        assert!((sd - 0.1).abs() < 0.01, "{sd}");
    }

    #[test]
    fn shapes_have_the_right_size_labels_and_contrast() {
        let cfg = ShapesConfig {
            seed: 0,
            n: 25,
            size: 16,
            classes: 12,
            resampled: 0.0,
        };
        let set = synthetic_shapes(&cfg);
        assert_eq!(set.labels.len(), 25);
        assert_eq!(set.bytes.len(), 25 * 3 * 16 * 16);
        assert_eq!(set.classes.len(), 12);
        assert!(set.labels.iter().all(|&l| l < 12));
        // Every image shows something: not one flat colour.
        for image in set.bytes.chunks_exact(3 * 16 * 16) {
            assert!(image.iter().max() > image.iter().min());
        }
        assert_eq!(set.files[13], "square/00013.png");
        assert_eq!(set, synthetic_shapes(&cfg));
        let other = synthetic_shapes(&ShapesConfig { seed: 1, ..cfg });
        assert_ne!(set.bytes, other.bytes);
        let three = synthetic_shapes(&ShapesConfig { classes: 3, ..cfg });
        assert_eq!(three.classes, ["circle", "square", "triangle"]);
        assert!(three.labels.iter().all(|&l| l < 3));
    }

    #[test]
    fn resampled_shapes_are_an_extra_seeded_class() {
        let cfg = ShapesConfig {
            seed: 3,
            n: 200,
            size: 32,
            classes: 4,
            resampled: 0.5,
        };
        let set = synthetic_shapes(&cfg);
        assert_eq!(
            set.classes.last().map(String::as_str),
            Some(RESAMPLED_CLASS)
        );
        let resampled: Vec<usize> = (0..200).filter(|&i| set.labels[i] == 4).collect();
        assert!((70..130).contains(&resampled.len()), "{}", resampled.len());
        assert!(set.files[resampled[0]].starts_with("resampled/"));
        assert!(set.labels.iter().all(|&l| l <= 4));
        // Every shape class still occurs, and the same seed gives the same set.
        for class in 0..4 {
            assert!(set.labels.contains(&class));
        }
        assert_eq!(set, synthetic_shapes(&cfg));
        // Without the class, the set is what it was before the option existed.
        let plain = ShapesConfig {
            resampled: 0.0,
            ..cfg
        };
        let plain_set = synthetic_shapes(&plain);
        assert_eq!(plain_set.classes.len(), 4);
        assert!(
            plain_set
                .labels
                .iter()
                .enumerate()
                .all(|(i, &l)| l as usize == i % 4)
        );
    }
}
