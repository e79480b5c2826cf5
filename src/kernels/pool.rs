//! Max pooling on the CPU (f32, NCHW) with PyTorch's semantics: square
//! window `k`, stride `s`, padding `pad` that never wins (-inf), floor-mode
//! output size, and a backward that routes each output's gradient to the
//! first maximum of its window in row-major order (a NaN wins, as in
//! PyTorch's CPU kernel).
//!
//! candle 0.11's own `max_pool2d` has no padding and its backward is only
//! right when kernel == stride; the composites the models used instead
//! (maximum over shifted views) cost a dozen element-wise passes per tap in
//! the backward. Here the forward is one pass, the backward recomputes the
//! window's argmax and scatters into a zeroed input gradient, one (image,
//! channel) plane per task.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

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

    /// Index in the plane of the first maximum of output (oh, ow)'s window.
    /// Every window holds at least one input element (pad <= k/2).
    #[inline]
    fn argmax(&self, plane: &[f32], oh: usize, ow: usize) -> usize {
        let (r0, r1) = self.span(oh, self.h);
        let (c0, c1) = self.span(ow, self.w);
        let mut best = r0 * self.w + c0;
        let mut max = plane[best];
        for r in r0..r1 {
            for (c, &v) in plane[r * self.w..][c0..c1].iter().enumerate() {
                if v > max || v.is_nan() {
                    max = v;
                    best = r * self.w + c0 + c;
                    if v.is_nan() {
                        return best;
                    }
                }
            }
        }
        best
    }
}

struct MaxPool {
    g: Geom,
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
            let mut y = vec![0f32; g.planes * p];
            y.par_chunks_mut(p)
                .enumerate()
                .with_min_len(super::min_len(p * g.k * g.k))
                .for_each(|(q, out)| {
                    let plane = &x[q * hw..][..hw];
                    for oh in 0..g.ho {
                        for ow in 0..g.wo {
                            out[oh * g.wo + ow] = plane[g.argmax(plane, oh, ow)];
                        }
                    }
                });
            Ok((CpuStorage::F32(y), out_shape(l.dims(), g)))
        })
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dy = dy.contiguous()?;
        Ok(Some(x.apply_op2_no_bwd(&dy, &MaxPoolGrad { g: self.g })?))
    }
}

fn out_shape(dims: &[usize], g: &Geom) -> Shape {
    Shape::from((dims[0], dims[1], g.ho, g.wo))
}

/// (x, dy) -> dx: each output's gradient added at its window's argmax.
struct MaxPoolGrad {
    g: Geom,
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
            let mut dx = vec![0f32; g.planes * hw];
            dx.par_chunks_mut(hw)
                .enumerate()
                .with_min_len(super::min_len(p * g.k * g.k))
                .for_each(|(q, grad)| {
                    let plane = &x[q * hw..][..hw];
                    let d = &dy[q * p..][..p];
                    for oh in 0..g.ho {
                        for ow in 0..g.wo {
                            grad[g.argmax(plane, oh, ow)] += d[oh * g.wo + ow];
                        }
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
    x.contiguous()?.apply_op1(MaxPool { g })
}
