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
