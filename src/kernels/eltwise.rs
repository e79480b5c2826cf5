//! relu(a + b), the end of every ResNet block, as one pass forward and one
//! backward on the CPU (f32). As plain ops it is an add and a ReLU, whose
//! backward in candle builds a zero tensor, a comparison, a cast and a
//! product: six passes over the block's output where one does.
//!
//! The gradient at a + b == 0 is 0, as in PyTorch (candle's own ReLU passes
//! it there).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "fer-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::profile::timed(self.name(), || {
            let a = super::f32_contiguous(s1, l1, "add_relu", "lhs")?;
            let b = super::f32_contiguous(s2, l2, "add_relu", "rhs")?;
            if a.len() != b.len() {
                bail!("add_relu: operands of {} and {} elements", a.len(), b.len());
            }
            let y = zip_map(a, b, |u, v| (u + v).max(0.0));
            Ok((CpuStorage::F32(y), l1.shape().clone()))
        })
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = dy
            .contiguous()?
            .apply_op2_no_bwd(&y.contiguous()?, &ReluMask)?;
        Ok((Some(g.clone()), Some(g)))
    }
}

/// (dy, y) -> dy where y > 0, else 0.
struct ReluMask;

impl CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        "fer-add-relu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::profile::timed(self.name(), || {
            let dy = super::f32_contiguous(s1, l1, "add_relu backward", "output gradient")?;
            let y = super::f32_contiguous(s2, l2, "add_relu backward", "output")?;
            if y.len() != dy.len() {
                bail!(
                    "add_relu backward: {} outputs, {} gradients",
                    y.len(),
                    dy.len()
                );
            }
            let g = zip_map(dy, y, |d, y| if y > 0.0 { d } else { 0.0 });
            Ok((CpuStorage::F32(g), l1.shape().clone()))
        })
    }
}

/// Elements per rayon task.
const CHUNK: usize = 1 << 14;

/// f(a[i], b[i]) for two equally long slices, in parallel chunks.
fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0f32; a.len()];
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| {
            for ((o, &u), &v) in o.iter_mut().zip(a).zip(b) {
                *o = f(u, v);
            }
        });
    out
}

/// relu(a + b) for tensors of one shape: the kernel above for f32 on the
/// CPU, candle's ops (add, then ReLU) otherwise.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let fast = a.device().is_cpu()
        && b.device().is_cpu()
        && a.dtype() == DType::F32
        && b.dtype() == DType::F32
        && a.dims() == b.dims();
    if !fast {
        return (a + b)?.relu();
    }
    a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
}

/// act(x + b[c]) over (N, C, H, W), act the identity or ReLU: a
/// convolution's bias and the ReLU after it (VGG) in one pass; the backward
/// gives dx and db in one pass too. As plain ops: a broadcast add, a ReLU,
/// their backward passes and a reduction for db.
struct BiasAct {
    relu: bool,
    /// (n, c, hw) of x.
    dims: (usize, usize, usize),
}

impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "fer-bias-act"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::profile::timed(self.name(), || {
            let (n, c, hw) = self.dims;
            let x = super::f32_contiguous(s1, l1, "bias_act", "input")?;
            let b = super::f32_contiguous(s2, l2, "bias_act", "bias")?;
            if x.len() != n * c * hw || b.len() != c {
                bail!(
                    "bias_act: input of {} elements, bias of {} for {c} channels",
                    x.len(),
                    b.len()
                );
            }
            let relu = self.relu;
            let mut y = vec![0f32; x.len()];
            y.par_chunks_mut(hw)
                .zip(x.par_chunks(hw))
                .enumerate()
                .with_min_len(super::min_len(hw))
                .for_each(|(plane, (yo, xi))| {
                    let bias = b[plane % c];
                    for (o, &v) in yo.iter_mut().zip(xi) {
                        let z = v + bias;
                        *o = if relu { z.max(0.0) } else { z };
                    }
                });
            Ok((CpuStorage::F32(y), l1.shape().clone()))
        })
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, c, hw) = self.dims;
        let back = BiasActGrad {
            relu: self.relu,
            dims: self.dims,
        };
        let packed = dy.contiguous()?.apply_op2_no_bwd(&y.contiguous()?, &back)?;
        let dx = packed.narrow(0, 0, n * c * hw)?.reshape(y.dims())?;
        // An own copy (C floats), so the store does not keep `packed` alive.
        let db = packed.narrow(0, n * c * hw, c)?.copy()?;
        Ok((Some(dx), Some(db)))
    }
}

/// (dy, y) -> [dx (N C H W), db (C)], one task per group of channels.
struct BiasActGrad {
    relu: bool,
    dims: (usize, usize, usize),
}

impl CustomOp2 for BiasActGrad {
    fn name(&self) -> &'static str {
        "fer-bias-act-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::profile::timed(self.name(), || {
            let (n, c, hw) = self.dims;
            let dy = super::f32_contiguous(s1, l1, "bias_act backward", "output gradient")?;
            let y = super::f32_contiguous(s2, l2, "bias_act backward", "output")?;
            if dy.len() != n * c * hw || y.len() != dy.len() {
                bail!("bias_act backward: operands do not match the forward's shape");
            }
            let mut out = vec![0f32; dy.len() + c];
            let dx = super::SharedMut::new(&mut out[..dy.len()]);
            let relu = self.relu;
            let db: Vec<f64> = (0..c)
                .into_par_iter()
                .with_min_len(super::min_len(n * hw))
                .map(|ch| {
                    let mut sum = 0f64;
                    for i in 0..n {
                        let r = (i * c + ch) * hw;
                        // SAFETY: plane (i, ch) belongs to this channel's task alone.
                        let d = unsafe { dx.slice(r, hw) };
                        let mut part = 0f32;
                        for ((o, &g), &yv) in d.iter_mut().zip(&dy[r..r + hw]).zip(&y[r..r + hw]) {
                            *o = if relu && yv <= 0.0 { 0.0 } else { g };
                            part += *o;
                        }
                        sum += part as f64;
                    }
                    sum
                })
                .collect();
            for (o, v) in out[dy.len()..].iter_mut().zip(db) {
                *o = v as f32;
            }
            Ok((CpuStorage::F32(out), Shape::from(dy.len() + c)))
        })
    }
}

/// act(x + b) for x (N, C, H, W) and a per-channel bias b (C), act ReLU when
/// `relu`: the kernel above for f32 on the CPU, candle's ops otherwise.
pub fn bias_act(x: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let fast = x.device().is_cpu()
        && b.device().is_cpu()
        && x.dtype() == DType::F32
        && b.dtype() == DType::F32
        && b.dims() == [c]
        && h * w > 0;
    if !fast {
        let y = x.broadcast_add(&b.reshape((1, c, 1, 1))?)?;
        return if relu { y.relu() } else { Ok(y) };
    }
    let op = BiasAct {
        relu,
        dims: (n, c, h * w),
    };
    x.contiguous()?.apply_op2(&b.contiguous()?, op)
}
