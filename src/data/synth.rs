//! A synthetic, expression-like data set for machines without CK+: seven
//! classes (CK+'s folder names) of procedurally drawn grey faces whose
//! brows, eyes and mouth differ by class. Each "subject" has its own face
//! geometry; each "sequence" has three frames of rising intensity, named like
//! CK+ (`S<subject>_<sequence>_<frame>.png`) so subject-aware protocols work
//! on it too. Noise, tilt, jitter and weak low-intensity frames keep it from
//! being trivial.

use image::{GrayImage, imageops::FilterType};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

pub const CLASSES: [&str; 7] = [
    "anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise",
];

/// Face parts at full expression; a frame blends them with neutral.
#[derive(Debug, Clone, Copy)]
struct Expression {
    brow_inner: f32,
    brow_outer: f32,
    eye_open: f32,
    mouth_width: f32,
    mouth_curve: f32,
    mouth_open: f32,
    mouth_asym: f32,
    wrinkle: f32,
}

const NEUTRAL: Expression = Expression {
    brow_inner: -0.33,
    brow_outer: -0.33,
    eye_open: 0.07,
    mouth_width: 0.28,
    mouth_curve: 0.0,
    mouth_open: 0.0,
    mouth_asym: 0.0,
    wrinkle: 0.0,
};

fn expression(class: usize) -> Expression {
    let n = NEUTRAL;
    match CLASSES[class] {
        "anger" => Expression {
            brow_inner: -0.22,
            brow_outer: -0.40,
            eye_open: 0.05,
            mouth_width: 0.22,
            mouth_curve: -0.05,
            ..n
        },
        "contempt" => Expression {
            mouth_width: 0.26,
            mouth_asym: 0.10,
            eye_open: 0.06,
            ..n
        },
        "disgust" => Expression {
            brow_inner: -0.27,
            eye_open: 0.035,
            mouth_curve: -0.12,
            mouth_open: 0.03,
            wrinkle: 1.0,
            ..n
        },
        "fear" => Expression {
            brow_inner: -0.49,
            brow_outer: -0.43,
            eye_open: 0.11,
            mouth_width: 0.33,
            mouth_curve: -0.04,
            mouth_open: 0.06,
            ..n
        },
        "happy" => Expression {
            mouth_width: 0.34,
            mouth_curve: 0.16,
            mouth_open: 0.03,
            eye_open: 0.055,
            ..n
        },
        "sadness" => Expression {
            brow_inner: -0.43,
            brow_outer: -0.29,
            eye_open: 0.055,
            mouth_curve: -0.12,
            ..n
        },
        _ => Expression {
            brow_inner: -0.50,
            brow_outer: -0.48,
            eye_open: 0.12,
            mouth_width: 0.16,
            mouth_open: 0.15,
            ..n
        },
    }
}

fn blend(e: Expression, t: f32) -> Expression {
    let n = NEUTRAL;
    let l = |a: f32, b: f32| a + (b - a) * t;
    Expression {
        brow_inner: l(n.brow_inner, e.brow_inner),
        brow_outer: l(n.brow_outer, e.brow_outer),
        eye_open: l(n.eye_open, e.eye_open),
        mouth_width: l(n.mouth_width, e.mouth_width),
        mouth_curve: l(n.mouth_curve, e.mouth_curve),
        mouth_open: l(n.mouth_open, e.mouth_open),
        mouth_asym: l(n.mouth_asym, e.mouth_asym),
        wrinkle: l(n.wrinkle, e.wrinkle),
    }
}

/// One person's face geometry and tones.
#[derive(Debug, Clone, Copy)]
struct Subject {
    head_rx: f32,
    head_ry: f32,
    eye_dx: f32,
    eye_y: f32,
    mouth_y: f32,
    skin: f32,
    background: f32,
    brow_shift: f32,
}

impl Subject {
    fn new(seed: u64, id: usize) -> Self {
        let mut r = ChaCha8Rng::seed_from_u64(
            seed ^ (0x5eed_0000 + id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        Self {
            head_rx: r.random_range(0.60..0.75),
            head_ry: r.random_range(0.78..0.92),
            eye_dx: r.random_range(0.25..0.34),
            eye_y: r.random_range(-0.14..-0.05),
            mouth_y: r.random_range(0.36..0.48),
            skin: r.random_range(140.0..215.0),
            background: r.random_range(20.0..90.0),
            brow_shift: r.random_range(-0.04..0.04),
        }
    }
}

fn segment_distance(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (vx, vy) = (b.0 - a.0, b.1 - a.1);
    let t = (((p.0 - a.0) * vx + (p.1 - a.1) * vy) / (vx * vx + vy * vy)).clamp(0.0, 1.0);
    let (dx, dy) = (p.0 - a.0 - t * vx, p.1 - a.1 - t * vy);
    (dx * dx + dy * dy).sqrt()
}

/// Grey level of the face at (x, y) in face coordinates ([-1, 1], y down).
fn shade(s: &Subject, e: &Expression, x: f32, y: f32) -> f32 {
    let head = (x / s.head_rx).powi(2) + (y / s.head_ry).powi(2);
    if head > 1.0 {
        return s.background + 25.0 * y;
    }
    let mut v = s.skin - 30.0 * head;
    let ax = x.abs();
    // Eyes: dark ellipses with a pupil.
    let eye = ((ax - s.eye_dx) / 0.11).powi(2) + ((y - s.eye_y) / e.eye_open.max(0.01)).powi(2);
    if eye <= 1.0 {
        v = if eye < 0.3 { 15.0 } else { 60.0 };
    }
    // Brows: thick segments, inner end near the nose.
    let brow_y = s.eye_y + 0.1 + s.brow_shift;
    let inner = (0.10, e.brow_inner + brow_y);
    let outer = (0.44, e.brow_outer + brow_y);
    if segment_distance((ax, y), inner, outer) < 0.035 {
        v = 45.0;
    }
    // Nose, and disgust's wrinkles across it.
    if segment_distance((x, y), (0.0, s.eye_y + 0.08), (0.0, s.mouth_y - 0.18)) < 0.018 {
        v -= 35.0;
    }
    if e.wrinkle > 0.3 {
        for k in 0..2 {
            let wy = s.eye_y + 0.10 + 0.06 * k as f32;
            if segment_distance((x, y), (-0.08, wy), (0.08, wy)) < 0.012 * e.wrinkle {
                v -= 50.0;
            }
        }
    }
    // Mouth: a curved line, opening into a dark gap.
    let w = e.mouth_width;
    if ax <= w {
        let u = x / w;
        let centre = s.mouth_y - e.mouth_curve * u * u - e.mouth_asym * (u.max(0.0)).powi(2);
        let gap = e.mouth_open * (1.0 - u * u);
        let d = (y - centre).abs();
        if d <= gap {
            v = 10.0;
        } else if d <= gap + 0.025 {
            v = 55.0;
        }
    }
    v
}

/// What one synthetic image is.
struct Frame {
    class: usize,
    subject: usize,
    sequence: usize,
    frame: usize,
}

/// Writes `per_class` images per class under `out/<class>/`, `size` x `size`
/// grey PNGs; returns the files written. The same seed gives the same bytes.
pub fn write(out: &Path, per_class: usize, size: usize, seed: u64) -> anyhow::Result<Vec<PathBuf>> {
    let sequences_per_class = per_class.div_ceil(3);
    let subjects = (sequences_per_class * CLASSES.len() / 3).max(4);
    let mut assign = ChaCha8Rng::seed_from_u64(seed);
    let mut next_sequence = vec![1usize; subjects];
    let mut frames = Vec::new();
    for class in 0..CLASSES.len() {
        for q in 0..sequences_per_class {
            let subject = assign.random_range(0..subjects);
            let sequence = next_sequence[subject];
            next_sequence[subject] += 1;
            for frame in 0..3 {
                if q * 3 + frame < per_class {
                    frames.push(Frame {
                        class,
                        subject,
                        sequence,
                        frame,
                    });
                }
            }
        }
    }
    for class in CLASSES {
        std::fs::create_dir_all(out.join(class))?;
    }
    frames
        .par_iter()
        .enumerate()
        .map(|(i, f)| {
            let img = render(f, size, seed, i as u64);
            let path = out.join(CLASSES[f.class]).join(format!(
                "S{:03}_{:03}_{:08}.png",
                f.subject + 1,
                f.sequence,
                f.frame + 1
            ));
            img.save(&path)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            Ok(path)
        })
        .collect()
}

fn render(f: &Frame, size: usize, seed: u64, index: u64) -> GrayImage {
    let subject = Subject::new(seed, f.subject);
    let mut r =
        ChaCha8Rng::seed_from_u64(seed.wrapping_add(index.wrapping_mul(0x2545_f491_4f6c_dd1d)));
    // Frames 1..3 of a sequence rise in intensity, as CK+'s last frames do;
    // the first is often subtle.
    let t = (0.3 + 0.25 * f.frame as f32 + r.random_range(-0.1..0.1)).clamp(0.2, 1.0);
    let e = blend(expression(f.class), t);
    let angle: f32 = r.random_range(-0.2..0.2);
    let scale: f32 = r.random_range(0.85..1.08);
    let (cx, cy): (f32, f32) = (r.random_range(-0.1..0.1), r.random_range(-0.1..0.1));
    let contrast: f32 = r.random_range(0.6..1.2);
    let noise = Normal::new(0.0f32, r.random_range(8.0..22.0)).expect("valid sigma");
    // Sometimes a hand, hair or a shadow hides part of the face.
    let occluder = r.random_bool(0.3).then(|| {
        let (x0, y0) = (r.random_range(-1.0f32..0.6), r.random_range(-1.0f32..0.6));
        (
            x0,
            y0,
            x0 + r.random_range(0.2f32..0.5),
            y0 + r.random_range(0.2f32..0.5),
            r.random_range(0.0f32..255.0),
        )
    });
    let big = size * 2;
    let (sin, cos) = angle.sin_cos();
    let mut img = GrayImage::new(big as u32, big as u32);
    for py in 0..big {
        for px in 0..big {
            let u = (px as f32 + 0.5) / big as f32 * 2.0 - 1.0 - cx;
            let v = (py as f32 + 0.5) / big as f32 * 2.0 - 1.0 - cy;
            let (x, y) = ((cos * u + sin * v) / scale, (-sin * u + cos * v) / scale);
            let mut g = shade(&subject, &e, x, y);
            if let Some((x0, y0, x1, y1, level)) = occluder
                && (x0..x1).contains(&u)
                && (y0..y1).contains(&v)
            {
                g = level;
            }
            let g = 128.0 + (g - 128.0) * contrast + noise.sample(&mut r);
            img.put_pixel(
                px as u32,
                py as u32,
                image::Luma([g.clamp(0.0, 255.0) as u8]),
            );
        }
    }
    image::imageops::resize(&img, size as u32, size as u32, FilterType::Triangle)
}
