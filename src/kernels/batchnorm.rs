//! Batch normalisation over (N, H, W) per channel, PyTorch semantics.

use super::BnParams;
use candle_core::{D, Result, Tensor};

fn per_channel(t: &Tensor) -> Result<Tensor> {
    t.reshape((1, t.elem_count(), 1, 1))
}

/// Plain-op batch norm in training mode: normalises with the batch mean and
/// biased variance; running statistics move by `momentum` towards the batch
/// mean and the unbiased variance (as PyTorch does).
pub fn reference_train(x: &Tensor, p: &BnParams, relu: bool) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let count = (n * h * w) as f64;
    let xt = x.transpose(0, 1)?.reshape((c, n * h * w))?;
    let mean = xt.mean_keepdim(D::Minus1)?; // (c, 1)
    let centred = xt.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?; // biased
    {
        let m = p.momentum;
        let mean_d = mean.detach().flatten_all()?;
        let var_d = var.detach().flatten_all()?;
        let unbiased = if count > 1.0 {
            (var_d * (count / (count - 1.0)))?
        } else {
            var_d
        };
        p.running_mean
            .set(&((p.running_mean.as_tensor() * (1.0 - m))? + (mean_d * m)?)?)?;
        p.running_var
            .set(&((p.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?)?;
    }
    let inv = (var + p.eps)?.sqrt()?.recip()?;
    let mean = per_channel(&mean)?;
    let inv = per_channel(&inv)?;
    let y = x
        .broadcast_sub(&mean)?
        .broadcast_mul(&(inv.broadcast_mul(&per_channel(p.weight)?))?)?
        .broadcast_add(&per_channel(p.bias)?)?;
    if relu { y.relu() } else { Ok(y) }
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

pub fn batch_norm_train(x: &Tensor, p: &BnParams, relu: bool) -> Result<Tensor> {
    reference_train(x, p, relu)
}

pub fn batch_norm_eval(x: &Tensor, p: &BnParams, relu: bool) -> Result<Tensor> {
    reference_eval(x, p, relu)
}
