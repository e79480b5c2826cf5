//! Batch normalisation over (N, H, W) per channel, PyTorch semantics, with
//! an optional ReLU after it.
//!
//! On the CPU one fused pass computes the statistics and the output, and
//! one fused pass the three gradients (input, gamma, beta), instead of the
//! dozen allocating element-wise ops (and their backward) that the same
//! arithmetic takes as plain candle ops. Elsewhere, and for the tests, the
//! plain ops ([`reference_train`], [`reference_eval`]) run.

use super::BnParams;
use candle_core::{CpuStorage, CustomOp3, D, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

fn per_channel(t: &Tensor) -> Result<Tensor> {
    t.reshape((1, t.elem_count(), 1, 1))
}

/// Plain-op batch norm in training mode: normalises with the batch mean and
/// biased variance; running statistics move by `momentum` towards the batch
/// mean and the unbiased variance (as PyTorch does).
pub fn reference_train(x: &Tensor, p: &BnParams, relu: bool) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let xt = x.transpose(0, 1)?.reshape((c, n * h * w))?;
    let mean = xt.mean_keepdim(D::Minus1)?; // (c, 1)
    let centred = xt.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?; // biased
    update_running(
        p,
        &mean.detach().flatten_all()?,
        &var.detach().flatten_all()?,
        n * h * w,
    )?;
    let inv = (var + p.eps)?.sqrt()?.recip()?;
    let mean = per_channel(&mean)?;
    let inv = per_channel(&inv)?;
    let y = x
        .broadcast_sub(&mean)?
        .broadcast_mul(&(inv.broadcast_mul(&per_channel(p.weight)?))?)?
        .broadcast_add(&per_channel(p.bias)?)?;
    if relu { y.relu() } else { Ok(y) }
}

/// running <- (1 - m) running + m batch, with the unbiased variance.
fn update_running(p: &BnParams, mean: &Tensor, biased_var: &Tensor, count: usize) -> Result<()> {
    let m = p.momentum;
    let count = count as f64;
    let unbiased = if count > 1.0 {
        (biased_var * (count / (count - 1.0)))?
    } else {
        biased_var.clone()
    };
    p.running_mean
        .set(&((p.running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?)?;
    p.running_var
        .set(&((p.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?)
}

/// Plain-op batch norm with the running statistics.
pub fn reference_eval(x: &Tensor, p: &BnParams, relu: bool) -> Result<Tensor> {
    let inv = (p.running_var.as_tensor() + p.eps)?.sqrt()?.recip()?;
    let scale = (inv * p.weight)?;
    let shift = (p.bias - (p.running_mean.as_tensor() * &scale)?)?;
    let y = x
        .broadcast_mul(&per_channel(&scale)?)?
        .broadcast_add(&per_channel(&shift)?)?;
    if relu { y.relu() } else { Ok(y) }
}

/// True when the fused CPU kernel can take these tensors.
fn fused_ok(x: &Tensor, p: &BnParams) -> bool {
    x.device().is_cpu()
        && x.dtype() == candle_core::DType::F32
        && p.weight.dtype() == candle_core::DType::F32
        && x.rank() == 4
}

pub fn batch_norm_train(x: &Tensor, p: &BnParams, relu: bool) -> Result<Tensor> {
    if !fused_ok(x, p) {
        return reference_train(x, p, relu);
    }
    let x = x.contiguous()?;
    let (n, c, h, w) = x.dims4()?;
    let stats = Arc::new(Mutex::new(Vec::new()));
    let op = BnOp {
        mode: Mode::Train,
        eps: p.eps as f32,
        relu,
        stats: Arc::clone(&stats),
    };
    let y = x.apply_op3_arc(p.weight, p.bias, Arc::new(Box::new(op)))?;
    let (mean, var): (Vec<f32>, Vec<f32>) = stats
        .lock()
        .map_err(|_| candle_core::Error::Msg("batch-norm statistics lock poisoned".into()))?
        .iter()
        .map(|s| (s.mean, s.var))
        .unzip();
    let device = x.device();
    update_running(
        p,
        &Tensor::from_vec(mean, c, device)?,
        &Tensor::from_vec(var, c, device)?,
        n * h * w,
    )?;
    Ok(y)
}

pub fn batch_norm_eval(x: &Tensor, p: &BnParams, relu: bool) -> Result<Tensor> {
    if !fused_ok(x, p) {
        return reference_eval(x, p, relu);
    }
    let mean = p.running_mean.as_tensor().to_vec1::<f32>()?;
    let var = p.running_var.as_tensor().to_vec1::<f32>()?;
    let stats = mean
        .into_iter()
        .zip(var)
        .map(|(mean, var)| Stat {
            mean,
            var,
            inv: 1.0 / (var + p.eps as f32).sqrt(),
        })
        .collect();
    let op = BnOp {
        mode: Mode::Eval,
        eps: p.eps as f32,
        relu,
        stats: Arc::new(Mutex::new(stats)),
    };
    x.contiguous()?
        .apply_op3_arc(p.weight, p.bias, Arc::new(Box::new(op)))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Statistics of the batch (computed by the forward).
    Train,
    /// Fixed statistics (the running ones), given.
    Eval,
}

/// Per-channel statistics: mean, biased variance, 1 / sqrt(var + eps).
#[derive(Debug, Clone, Copy)]
struct Stat {
    mean: f32,
    var: f32,
    inv: f32,
}

/// y = (x - mean) * inv * gamma + beta (then ReLU): args (x, gamma, beta).
struct BnOp {
    mode: Mode,
    eps: f32,
    relu: bool,
    /// Train: written by the forward; Eval: given. Read by the backward.
    stats: Arc<Mutex<Vec<Stat>>>,
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    super::f32_contiguous(s, l, "batch norm", what)
}

impl BnOp {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Vec<Stat>>> {
        self.stats
            .lock()
            .map_err(|_| candle_core::Error::Msg("batch-norm statistics lock poisoned".into()))
    }
}

impl CustomOp3 for BnOp {
    fn name(&self) -> &'static str {
        "fer-lab-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::profile::timed(self.name(), || {
            let x = f32_slice(s1, l1, "input")?;
            let gamma = f32_slice(s2, l2, "weight")?;
            let beta = f32_slice(s3, l3, "bias")?;
            let (n, c, h, w) = l1.shape().dims4()?;
            let hw = h * w;
            if gamma.len() != c || beta.len() != c {
                candle_core::bail!("batch norm: {c} channels but {} weights", gamma.len());
            }
            if self.mode == Mode::Train {
                let count = (n * hw) as f64;
                let stats: Vec<Stat> = (0..c)
                    .into_par_iter()
                    .map(|ch| {
                        let planes = (0..n).map(|i| &x[(i * c + ch) * hw..(i * c + ch + 1) * hw]);
                        let sum: f64 = planes
                            .clone()
                            .map(|p| p.iter().map(|&v| v as f64).sum::<f64>())
                            .sum();
                        let mean = sum / count;
                        let sq: f64 = planes
                            .map(|p| {
                                p.iter()
                                    .map(|&v| {
                                        let d = v as f64 - mean;
                                        d * d
                                    })
                                    .sum::<f64>()
                            })
                            .sum();
                        let var = (sq / count) as f32;
                        Stat {
                            mean: mean as f32,
                            var,
                            inv: 1.0 / (var + self.eps).sqrt(),
                        }
                    })
                    .collect();
                *self.lock()? = stats;
            }
            let stats = self.lock()?.clone();
            let mut y = vec![0f32; x.len()];
            let relu = self.relu;
            y.par_chunks_mut(hw)
                .zip(x.par_chunks(hw))
                .enumerate()
                .for_each(|(plane, (yo, xi))| {
                    let ch = plane % c;
                    let s = stats[ch];
                    let scale = s.inv * gamma[ch];
                    let shift = beta[ch] - s.mean * scale;
                    if relu {
                        for (o, &v) in yo.iter_mut().zip(xi) {
                            *o = (v * scale + shift).max(0.0);
                        }
                    } else {
                        for (o, &v) in yo.iter_mut().zip(xi) {
                            *o = v * scale + shift;
                        }
                    }
                });
            Ok((CpuStorage::F32(y), l1.shape().clone()))
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = x.dims4()?;
        let numel = n * c * h * w;
        let back = BnBackward {
            mode: self.mode,
            relu: self.relu,
            stats: self.lock()?.clone(),
            gamma: gamma.to_vec1::<f32>()?,
        };
        let packed = x.apply_op3_no_bwd(&res.contiguous()?, &grad.contiguous()?, &back)?;
        let dx = packed.narrow(0, 0, numel)?.reshape((n, c, h, w))?;
        let dgamma = packed.narrow(0, numel, c)?;
        let dbeta = packed.narrow(0, numel + c, c)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// The three gradients of [`BnOp`] in one pass: args (x, y, dy), output
/// packed as [dx (N C H W), dgamma (C), dbeta (C)].
struct BnBackward {
    mode: Mode,
    relu: bool,
    stats: Vec<Stat>,
    gamma: Vec<f32>,
}

impl CustomOp3 for BnBackward {
    fn name(&self) -> &'static str {
        "fer-lab-batch-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::profile::timed(self.name(), || {
            let x = f32_slice(s1, l1, "input")?;
            let y = f32_slice(s2, l2, "output")?;
            let dy = f32_slice(s3, l3, "output gradient")?;
            let (n, c, h, w) = l1.shape().dims4()?;
            let hw = h * w;
            let relu = self.relu;
            let masked = |yv: f32, g: f32| if relu && yv <= 0.0 { 0.0 } else { g };
            // Per channel: sum of dy' and of dy' * xhat.
            let sums: Vec<(f64, f64)> = (0..c)
                .into_par_iter()
                .map(|ch| {
                    let s = self.stats[ch];
                    let (mut a, mut b) = (0f64, 0f64);
                    for i in 0..n {
                        let r = (i * c + ch) * hw..(i * c + ch + 1) * hw;
                        let (mut pa, mut pb) = (0f32, 0f32);
                        for ((&xv, &yv), &g) in x[r.clone()].iter().zip(&y[r.clone()]).zip(&dy[r]) {
                            let g = masked(yv, g);
                            pa += g;
                            pb += g * (xv - s.mean) * s.inv;
                        }
                        a += pa as f64;
                        b += pb as f64;
                    }
                    (a, b)
                })
                .collect();
            let count = (n * hw) as f32;
            let mut out = vec![0f32; x.len() + 2 * c];
            let (dx, rest) = out.split_at_mut(x.len());
            dx.par_chunks_mut(hw).enumerate().for_each(|(plane, dxo)| {
                let ch = plane % c;
                let s = self.stats[ch];
                let k = self.gamma[ch] * s.inv;
                let r = plane * hw..(plane + 1) * hw;
                match self.mode {
                    Mode::Train => {
                        let mean_g = sums[ch].0 as f32 / count;
                        let mean_gx = sums[ch].1 as f32 / count;
                        for (((o, &xv), &yv), &g) in dxo
                            .iter_mut()
                            .zip(&x[r.clone()])
                            .zip(&y[r.clone()])
                            .zip(&dy[r])
                        {
                            let xhat = (xv - s.mean) * s.inv;
                            *o = k * (masked(yv, g) - mean_g - xhat * mean_gx);
                        }
                    }
                    Mode::Eval => {
                        for ((o, &yv), &g) in dxo.iter_mut().zip(&y[r.clone()]).zip(&dy[r]) {
                            *o = k * masked(yv, g);
                        }
                    }
                }
            });
            for (ch, (a, b)) in sums.iter().enumerate() {
                rest[ch] = *b as f32;
                rest[c + ch] = *a as f32;
            }
            Ok((CpuStorage::F32(out), Shape::from(x.len() + 2 * c)))
        })
    }
}
