//! Batches: shuffled epoch orders, augmentation on the host bytes, and one
//! normalised f32 tensor per batch on the training device.

use super::Dataset;
use candle_core::{Device, Result, Tensor};
use rand::Rng;
use rand::seq::SliceRandom;

/// Per-channel normalisation after scaling bytes to [0, 1].
#[derive(Debug, Clone)]
pub struct Normalizer {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// Random flips and shifts, drawn per image.
#[derive(Debug, Clone, Copy, Default)]
pub struct Augmentation {
    pub hflip: bool,
    /// Largest shift in pixels along each axis (edges are replicated).
    pub shift: usize,
}

impl Augmentation {
    pub fn is_identity(&self) -> bool {
        !self.hflip && self.shift == 0
    }
}

/// A shuffled epoch split into batches. A final batch of one image is
/// dropped, because batch norm cannot train on a single sample.
pub fn epoch_batches(indices: &[usize], batch_size: usize, rng: &mut impl Rng) -> Vec<Vec<usize>> {
    let mut order = indices.to_vec();
    order.shuffle(rng);
    let mut batches: Vec<Vec<usize>> = order.chunks(batch_size).map(<[usize]>::to_vec).collect();
    if batches.len() > 1 && batches.last().is_some_and(|b| b.len() == 1) {
        batches.pop();
    }
    batches
}

/// Evaluation batches in index order.
pub fn ordered_batches(indices: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    indices.chunks(batch_size).map(<[usize]>::to_vec).collect()
}

/// Images (N, C, S, S) as normalised f32 and labels (N,) as u32.
pub fn make_batch(
    ds: &Dataset,
    indices: &[usize],
    norm: &Normalizer,
    augment: Option<(&Augmentation, &mut dyn rand::RngCore)>,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let (c, s) = (ds.channels, ds.size);
    let plane = s * s;
    let mut xs = Vec::with_capacity(indices.len() * c * plane);
    let mut shifted = vec![0u8; c * plane];
    let mut augment = augment;
    for &i in indices {
        let mut img = ds.image(i);
        if let Some((aug, rng)) = augment.as_mut()
            && !aug.is_identity()
        {
            let flip = aug.hflip && rng.random_bool(0.5);
            let k = aug.shift as i64;
            let (dy, dx) = if k > 0 {
                (rng.random_range(-k..=k), rng.random_range(-k..=k))
            } else {
                (0, 0)
            };
            transform(img, c, s, flip, dy, dx, &mut shifted);
            img = &shifted;
        }
        for ch in 0..c {
            let (m, sd) = (norm.mean[ch], norm.std[ch]);
            xs.extend(
                img[ch * plane..(ch + 1) * plane]
                    .iter()
                    .map(|&p| (p as f32 / 255.0 - m) / sd),
            );
        }
    }
    let ys: Vec<u32> = indices.iter().map(|&i| ds.labels[i] as u32).collect();
    let n = indices.len();
    Ok((
        Tensor::from_vec(xs, (n, c, s, s), device)?,
        Tensor::from_vec(ys, n, device)?,
    ))
}

/// out[y][x] = img[y - dy][x' - dx] with x' = flipped x; edges replicated.
fn transform(img: &[u8], c: usize, s: usize, flip: bool, dy: i64, dx: i64, out: &mut [u8]) {
    let last = s as i64 - 1;
    for ch in 0..c {
        let src = &img[ch * s * s..(ch + 1) * s * s];
        let dst = &mut out[ch * s * s..(ch + 1) * s * s];
        for y in 0..s {
            let sy = (y as i64 - dy).clamp(0, last) as usize;
            for x in 0..s {
                let fx = if flip { s - 1 - x } else { x };
                let sx = (fx as i64 - dx).clamp(0, last) as usize;
                dst[y * s + x] = src[sy * s + sx];
            }
        }
    }
}
