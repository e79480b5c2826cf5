//! Trainable building blocks shared by the backbones, initialised the way
//! torchvision initialises them.

use super::params::{Init, ParamBuilder};
use candle_core::{D, Result, Tensor};
use candle_nn::{BatchNorm, Conv2d, Conv2dConfig, Linear, ModuleT};

/// A bias-free convolution with torchvision's ResNet initialisation
/// (Kaiming normal, fan-out, ReLU gain).
pub fn conv2d(
    pb: &ParamBuilder,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: usize,
) -> Result<Conv2d> {
    let fan_out = (cout * k * k) as f32;
    let w = pb.param(
        &[cout, cin, k, k],
        "weight",
        Init::Normal((2.0 / fan_out).sqrt()),
    )?;
    let cfg = Conv2dConfig {
        padding,
        stride,
        dilation: 1,
        groups: 1,
        cudnn_fwd_algo: None,
    };
    Ok(Conv2d::new(w, None, cfg))
}

/// BatchNorm2d as in PyTorch: eps 1e-5, momentum 0.1, weight 1, bias 0.
/// In training it normalises with batch statistics and updates the running
/// ones; in evaluation it uses the running ones.
pub fn batch_norm(pb: &ParamBuilder, c: usize) -> Result<BatchNorm> {
    let weight = pb.param(&[c], "weight", Init::Const(1.0))?;
    let bias = pb.param(&[c], "bias", Init::Const(0.0))?;
    let mean = pb.buffer(&[c], "running_mean", Init::Const(0.0))?;
    let var = pb.buffer(&[c], "running_var", Init::Const(1.0))?;
    BatchNorm::new_with_momentum(c, mean, var, weight, bias, 1e-5, 0.1)
}

/// A linear layer with PyTorch's default initialisation (uniform, 1/sqrt(fan_in)).
pub fn linear(pb: &ParamBuilder, fan_in: usize, fan_out: usize) -> Result<Linear> {
    let bound = 1.0 / (fan_in as f32).sqrt();
    let w = pb.param(&[fan_out, fan_in], "weight", Init::Uniform(bound))?;
    let b = pb.param(&[fan_out], "bias", Init::Uniform(bound))?;
    Ok(Linear::new(w, Some(b)))
}

/// Convolution followed by batch norm, optionally ReLU.
pub fn conv_bn(
    x: &Tensor,
    conv: &Conv2d,
    bn: &BatchNorm,
    relu: bool,
    train: bool,
) -> Result<Tensor> {
    let y = bn.forward_t(&x.apply(conv)?, train)?;
    if relu { y.relu() } else { Ok(y) }
}

/// 3x3 max-pool, stride 2, padding 1 (torchvision's stem), for inputs >= 0.
///
/// candle's `max_pool2d` has no padding and its backward needs kernel ==
/// stride, so this is composed from ops that all have gradients: a separable
/// stride-1 max over shifted views, then every second row and column. Zero
/// padding equals PyTorch's -inf padding here because the input follows a
/// ReLU.
pub fn max_pool_3x3_s2_after_relu(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let p = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
    let rows = p
        .narrow(2, 0, h)?
        .maximum(&p.narrow(2, 1, h)?)?
        .maximum(&p.narrow(2, 2, h)?)?;
    let m = rows
        .narrow(3, 0, w)?
        .maximum(&rows.narrow(3, 1, w)?)?
        .maximum(&rows.narrow(3, 2, w)?)?;
    // Keep even positions: pad to even size, fold pairs, take the first.
    let m = m.pad_with_zeros(2, 0, h % 2)?.pad_with_zeros(3, 0, w % 2)?;
    let (n, c, he, we) = m.dims4()?;
    m.reshape((n, c, he / 2, 2, we / 2, 2))?
        .narrow(3, 0, 1)?
        .narrow(5, 0, 1)?
        .reshape((n, c, he / 2, we / 2))
}

/// Global average pool: (N, C, H, W) -> (N, C).
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.mean(D::Minus1)?.mean(D::Minus1)
}
