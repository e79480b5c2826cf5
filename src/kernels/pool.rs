//! Max pooling on the CPU (f32, NCHW) with PyTorch's semantics: square
//! window `k`, stride `s`, padding `pad` that never wins (-inf), floor-mode
//! output size, and a backward that routes each output's gradient to the
//! first maximum of its window in row-major order (the last NaN, if any, as
//! PyTorch's CPU kernel does).
//!
//! candle 0.11's own `max_pool2d` has no padding and its backward is only
//! right when kernel == stride; the composites the models used instead
//! (maximum over shifted views) cost a dozen element-wise passes per tap in
//! the backward. Here the forward is one pass that also keeps each output's
//! argmax (a u32 per output), and the backward scatters into a zeroed input
//! gradient, one (image, channel) plane per task.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// Input rows (or columns) lo..hi of one output row (or column).
type Span = (usize, usize);

#[derive(Debug, Clone, Copy)]
struct Geom {
    planes: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: usize,
    ho: usize,
    wo: usize,
}

impl Geom {
    fn new(x: &Tensor, k: usize, stride: usize, pad: usize) -> Result<Self> {
        let (n, c, h, w) = x.dims4()?;
        if k == 0 || stride == 0 {
            bail!("max_pool2d: kernel and stride must be >= 1, got {k} and {stride}");
        }
        if 2 * pad > k {
            bail!("max_pool2d: padding {pad} is more than half the kernel {k}");
        }
        if h + 2 * pad < k || w + 2 * pad < k {
            bail!("max_pool2d: kernel {k} does not fit the padded input {h}x{w} (pad {pad})");
        }
        Ok(Self {
            planes: n * c,
            h,
            w,
            k,
            stride,
            pad,
            ho: (h + 2 * pad - k) / stride + 1,
            wo: (w + 2 * pad - k) / stride + 1,
        })
    }

    /// The input rows (or columns) `lo..hi` the window at output `o` covers.
    fn span(&self, o: usize, size: usize) -> (usize, usize) {
        let start = o * self.stride;
        let lo = start.saturating_sub(self.pad);
        let hi = (start + self.k).saturating_sub(self.pad).min(size);
        (lo, hi)
    }

    /// The input spans of every output row and column.
    fn spans(&self) -> (Vec<Span>, Vec<Span>) {
        let rows = (0..self.ho).map(|o| self.span(o, self.h)).collect();
        let cols = (0..self.wo).map(|o| self.span(o, self.w)).collect();
        (rows, cols)
    }
}

/// Writes, for each output of one plane, the index in the plane of its
/// window's maximum: the first in row-major order, or the last NaN (as
/// PyTorch's CPU kernel does). Every window holds an input element
/// (pad <= k/2).
fn plane_argmax(plane: &[f32], w: usize, rows: &[Span], cols: &[Span], idx: &mut [u32]) {
    let wo = cols.len();
    for (oh, &(r0, r1)) in rows.iter().enumerate() {
        let out = &mut idx[oh * wo..(oh + 1) * wo];
        for (o, &(c0, c1)) in out.iter_mut().zip(cols) {
            let mut best = r0 * w + c0;
            let mut max = plane[best];
            for r in r0..r1 {
                let base = r * w;
                for (c, &v) in plane[base + c0..base + c1].iter().enumerate() {
                    // Branch-free (selects): after a ReLU the comparisons
                    // are coin flips a branch predictor cannot learn.
                    let better = (v > max) | v.is_nan();
                    max = if better { v } else { max };
                    best = if better { base + c0 + c } else { best };
                }
            }
            *o = best as u32;
        }
    }
}

struct MaxPool {
    g: Geom,
    /// Written by the forward: each output's argmax within its plane, read
    /// by the backward (so it only scatters).
    argmax: Arc<Mutex<Vec<u32>>>,
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "fer-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        super::profile::timed(self.name(), || {
            let g = &self.g;
            let x = super::f32_contiguous(s, l, "max_pool2d", "input")?;
            let (hw, p) = (g.h * g.w, g.ho * g.wo);
            if x.len() != g.planes * hw {
                bail!("max_pool2d: input does not match its shape");
            }
            if g.planes * p > u32::MAX as usize || hw > u32::MAX as usize {
                bail!("max_pool2d: input too large for 32-bit indices");
            }
            let (rows, cols) = g.spans();
            let mut idx = vec![0u32; g.planes * p];
            let mut y = vec![0f32; g.planes * p];
            y.par_chunks_mut(p)
                .zip(idx.par_chunks_mut(p))
                .enumerate()
                .with_min_len(super::min_len(p * g.k * g.k))
                .for_each(|(q, (out, ix))| {
                    let plane = &x[q * hw..][..hw];
                    plane_argmax(plane, g.w, &rows, &cols, ix);
                    for (o, &i) in out.iter_mut().zip(ix.iter()) {
                        *o = plane[i as usize];
                    }
                });
            *self
                .argmax
                .lock()
                .map_err(|_| candle_core::Error::Msg("max_pool2d: lock poisoned".into()))? = idx;
            Ok((CpuStorage::F32(y), out_shape(l.dims(), g)))
        })
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dy = dy.contiguous()?;
        let grad = MaxPoolGrad {
            g: self.g,
            argmax: Arc::clone(&self.argmax),
        };
        Ok(Some(x.apply_op2_no_bwd(&dy, &grad)?))
    }
}

fn out_shape(dims: &[usize], g: &Geom) -> Shape {
    Shape::from((dims[0], dims[1], g.ho, g.wo))
}

/// (x, dy) -> dx: each output's gradient added at its window's argmax
/// (the forward's indices).
struct MaxPoolGrad {
    g: Geom,
    argmax: Arc<Mutex<Vec<u32>>>,
}

impl CustomOp2 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "fer-max-pool2d-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::profile::timed(self.name(), || {
            let g = &self.g;
            let x = super::f32_contiguous(s1, l1, "max_pool2d backward", "input")?;
            let dy = super::f32_contiguous(s2, l2, "max_pool2d backward", "output gradient")?;
            let (hw, p) = (g.h * g.w, g.ho * g.wo);
            if x.len() != g.planes * hw || dy.len() != g.planes * p {
                bail!("max_pool2d backward: operands do not match the forward's shapes");
            }
            let idx = self
                .argmax
                .lock()
                .map_err(|_| candle_core::Error::Msg("max_pool2d: lock poisoned".into()))?;
            if idx.len() != g.planes * p {
                bail!("max_pool2d backward: the forward's indices are missing");
            }
            let mut dx = vec![0f32; g.planes * hw];
            dx.par_chunks_mut(hw)
                .enumerate()
                .with_min_len(super::min_len(p * 2))
                .for_each(|(q, grad)| {
                    let d = &dy[q * p..][..p];
                    for (&i, &g) in idx[q * p..][..p].iter().zip(d) {
                        grad[i as usize] += g;
                    }
                });
            Ok((CpuStorage::F32(dx), Shape::from(l1.dims())))
        })
    }
}

/// Whether `x` takes the kernel above (f32 on the CPU).
pub fn supported(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// Max pool of `x` (N, C, H, W): window `k`, stride `stride`, `pad` of
/// -inf on every side, PyTorch's floor-mode size. f32 CPU tensors only
/// (see [`supported`]).
pub fn max_pool2d(x: &Tensor, k: usize, stride: usize, pad: usize) -> Result<Tensor> {
    if !supported(x) {
        bail!(
            "max_pool2d kernel: f32 CPU tensors only, got {:?} on {:?}",
            x.dtype(),
            x.device()
        );
    }
    let g = Geom::new(x, k, stride, pad)?;
    x.contiguous()?.apply_op1(MaxPool {
        g,
        argmax: Arc::new(Mutex::new(Vec::new())),
    })
}
