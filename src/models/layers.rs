//! Trainable building blocks shared by the backbones. Each layer owns its
//! tensors (created through a [`ParamBuilder`], so names follow the module
//! path) and calls the kernels in [`crate::kernels`], which pick a fast CPU
//! path or candle's plain ops.

use super::params::{Init, ParamBuilder, ParamStore};
use crate::kernels;
use candle_core::{D, Device, Result, Tensor, Var};
use candle_nn::{Linear, Module};
use std::sync::Arc;

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// The same on every side (PyTorch's `padding=p`).
    Sym(usize),
    /// TensorFlow's "same": output = ceil(input / stride), the odd pixel
    /// of padding going to the bottom/right (computed from the input size).
    TfSame,
}

impl Padding {
    /// [top, bottom, left, right] for an input of `h` x `w`.
    pub fn resolve(self, h: usize, w: usize, k: usize, stride: usize) -> [usize; 4] {
        match self {
            Padding::Sym(p) => [p, p, p, p],
            Padding::TfSame => {
                let total = |n: usize| {
                    let out = n.div_ceil(stride);
                    ((out - 1) * stride + k).saturating_sub(n)
                };
                let (ph, pw) = (total(h), total(w));
                [ph / 2, ph - ph / 2, pw / 2, pw - pw / 2]
            }
        }
    }
}

/// Options of a [`Conv2d`] beyond its channel counts and kernel size.
#[derive(Debug, Clone, Copy)]
pub struct ConvOpts {
    pub stride: usize,
    pub padding: Padding,
    pub groups: usize,
    pub bias: bool,
    /// Initialisation of the weight (the bias, if any, starts at 0).
    pub init: Init,
}

impl ConvOpts {
    /// Bias-free, groups 1, Kaiming normal with fan-out and ReLU gain (the
    /// init torchvision's ResNet, VGG and EfficientNet use).
    pub fn new(cout: usize, k: usize, stride: usize, padding: Padding) -> Self {
        Self {
            stride,
            padding,
            groups: 1,
            bias: false,
            init: kaiming_fan_out(cout, k, 1),
        }
    }
}

/// Kaiming normal, fan-out mode, ReLU gain.
pub fn kaiming_fan_out(cout: usize, k: usize, groups: usize) -> Init {
    let fan_out = (cout / groups * k * k) as f32;
    Init::Normal((2.0 / fan_out).sqrt())
}

/// Kaiming normal, fan-in mode, ReLU gain (DenseNet's init).
pub fn kaiming_fan_in(cin_per_group: usize, k: usize) -> Init {
    Init::Normal((2.0 / (cin_per_group * k * k) as f32).sqrt())
}

/// Counts the multiply-add FLOPs of convolutions while enabled (for
/// `fer-lab bench`'s achieved GFLOP/s); costs one relaxed load otherwise.
pub mod flops {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    static ON: AtomicBool = AtomicBool::new(false);
    static COUNT: AtomicU64 = AtomicU64::new(0);

    pub fn counting() -> bool {
        ON.load(Ordering::Relaxed)
    }

    pub fn add(n: usize) {
        COUNT.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Runs `f` with counting on; returns its result and the FLOPs counted.
    pub fn count<T>(f: impl FnOnce() -> T) -> (T, u64) {
        COUNT.store(0, Ordering::Relaxed);
        ON.store(true, Ordering::Relaxed);
        let out = f();
        ON.store(false, Ordering::Relaxed);
        (out, COUNT.swap(0, Ordering::Relaxed))
    }
}

/// A 2-D convolution: weight `[cout, cin / groups, k, k]` (+ bias `[cout]`).
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    k: usize,
    stride: usize,
    padding: Padding,
    groups: usize,
}

impl Conv2d {
    pub fn new(
        pb: &ParamBuilder,
        cin: usize,
        cout: usize,
        k: usize,
        opts: ConvOpts,
    ) -> Result<Self> {
        if !cin.is_multiple_of(opts.groups) || !cout.is_multiple_of(opts.groups) {
            candle_core::bail!(
                "conv {cin}->{cout} cannot be split into {} groups",
                opts.groups
            );
        }
        let weight = pb.param(&[cout, cin / opts.groups, k, k], "weight", opts.init)?;
        let bias = if opts.bias {
            Some(pb.param(&[cout], "bias", Init::Const(0.0))?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            k,
            stride: opts.stride,
            padding: opts.padding,
            groups: opts.groups,
        })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, false)
    }

    /// The convolution, its bias, then ReLU when `relu` (bias and ReLU fused
    /// where the kernel allows).
    pub fn forward_act(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let (n, cin, h, w) = x.dims4()?;
        let pads = self.padding.resolve(h, w, self.k, self.stride);
        let cout = self.weight.dim(0)?;
        if flops::counting() {
            let ho = (h + pads[0] + pads[1] - self.k) / self.stride + 1;
            let wo = (w + pads[2] + pads[3] - self.k) / self.stride + 1;
            flops::add(2 * n * cout * (cin / self.groups) * self.k * self.k * ho * wo);
        }
        let y = if self.groups == 1 {
            kernels::conv2d(x, &self.weight, self.stride, pads)?
        } else if self.groups == cin && cout == cin {
            kernels::depthwise_conv2d(x, &self.weight, self.stride, pads)?
        } else {
            kernels::grouped_conv2d(x, &self.weight, self.stride, pads, self.groups)?
        };
        match &self.bias {
            Some(b) => kernels::bias_act(&y, b, relu),
            None if relu => y.relu(),
            None => Ok(y),
        }
    }
}

/// BatchNorm2d as in PyTorch: weight 1, bias 0, running mean 0 / var 1. In
/// training it normalises with batch statistics (biased variance) and moves
/// the running ones by `momentum` (unbiased variance); in evaluation it uses
/// the running ones.
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
}

impl BatchNorm2d {
    /// PyTorch's defaults: eps 1e-5, momentum 0.1.
    pub fn new(pb: &ParamBuilder, c: usize) -> Result<Self> {
        Self::with(pb, c, 1e-5, 0.1)
    }

    pub fn with(pb: &ParamBuilder, c: usize, eps: f64, momentum: f64) -> Result<Self> {
        let weight = pb.param(&[c], "weight", Init::Const(1.0))?;
        let bias = pb.param(&[c], "bias", Init::Const(0.0))?;
        let mean = pb.buffer(&[c], "running_mean", Init::Const(0.0))?;
        let var = pb.buffer(&[c], "running_var", Init::Const(1.0))?;
        Ok(Self {
            weight,
            bias,
            running_mean: Var::from_tensor(&mean)?,
            running_var: Var::from_tensor(&var)?,
            eps,
            momentum,
        })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act(x, train, false)
    }

    /// Batch norm, then ReLU when `relu` (fused where the kernel allows).
    pub fn forward_act(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let act = if relu {
            kernels::Act::Relu
        } else {
            kernels::Act::Identity
        };
        self.forward_with(x, train, act)
    }

    /// Batch norm, then `act` (fused where the kernel allows).
    pub fn forward_with(&self, x: &Tensor, train: bool, act: kernels::Act) -> Result<Tensor> {
        let p = kernels::BnParams {
            weight: &self.weight,
            bias: &self.bias,
            running_mean: &self.running_mean,
            running_var: &self.running_var,
            eps: self.eps,
            momentum: self.momentum,
        };
        if train {
            kernels::batch_norm_train(x, &p, act)
        } else {
            kernels::batch_norm_eval(x, &p, act)
        }
    }
}

/// A linear layer with PyTorch's default initialisation (uniform, 1/sqrt(fan_in)).
pub fn linear(pb: &ParamBuilder, fan_in: usize, fan_out: usize) -> Result<Linear> {
    let bound = 1.0 / (fan_in as f32).sqrt();
    linear_init(
        pb,
        fan_in,
        fan_out,
        Init::Uniform(bound),
        Init::Uniform(bound),
    )
}

/// A linear layer with the given weight and bias initialisation.
pub fn linear_init(
    pb: &ParamBuilder,
    fan_in: usize,
    fan_out: usize,
    weight: Init,
    bias: Init,
) -> Result<Linear> {
    let w = pb.param(&[fan_out, fan_in], "weight", weight)?;
    let b = pb.param(&[fan_out], "bias", bias)?;
    Ok(Linear::new(w, Some(b)))
}

/// Convolution followed by batch norm, optionally ReLU.
pub fn conv_bn(
    x: &Tensor,
    conv: &Conv2d,
    bn: &BatchNorm2d,
    relu: bool,
    train: bool,
) -> Result<Tensor> {
    bn.forward_act(&conv.forward(x)?, train, relu)
}

/// Dropout with masks from the model's seeded noise stream (candle's own
/// CPU generator cannot be seeded). Identity in evaluation or when disabled.
pub struct Dropout {
    store: Arc<ParamStore>,
    p: f32,
}

impl Dropout {
    pub fn new(pb: &ParamBuilder, p: f32) -> Self {
        Self {
            store: pb.store(),
            p,
        }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.p <= 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - self.p;
        let mask: Vec<f32> = self
            .store
            .noise_uniform(x.elem_count())
            .into_iter()
            .map(|u| if u < keep { 1.0 / keep } else { 0.0 })
            .collect();
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?;
        x * mask
    }
}

/// Stochastic depth ("row" mode, as torchvision's `StochasticDepth`): in
/// training each sample's residual branch is dropped with probability `p`
/// and the kept ones scaled by 1 / (1 - p).
pub fn drop_path(x: &Tensor, p: f32, train: bool, store: &ParamStore) -> Result<Tensor> {
    if !train || p <= 0.0 {
        return Ok(x.clone());
    }
    let n = x.dim(0)?;
    let keep = 1.0 - p;
    let mask: Vec<f32> = store
        .noise_uniform(n)
        .into_iter()
        .map(|u| if u < keep { 1.0 / keep } else { 0.0 })
        .collect();
    let mut shape = vec![1usize; x.rank()];
    shape[0] = n;
    let mask = Tensor::from_vec(mask, shape, x.device())?;
    x.broadcast_mul(&mask)
}

/// 3x3 max-pool, stride 2, padding 1 (torchvision's ResNet and DenseNet
/// stem), for inputs >= 0.
///
/// On the CPU (f32) this is [`kernels::pool::max_pool2d`]. Elsewhere (and
/// with `FER_LAB_PLAIN_KERNELS=1`), since candle's `max_pool2d` has no
/// padding and its backward needs kernel == stride, it is composed from ops
/// that all have gradients: a separable stride-1 max over shifted views,
/// then every second row and column. Zero padding equals PyTorch's -inf
/// padding here because the input follows a ReLU.
pub fn max_pool_3x3_s2_after_relu(x: &Tensor) -> Result<Tensor> {
    if kernels::fast() && kernels::pool::supported(x) {
        return kernels::pool::max_pool2d(x, 3, 2, 1);
    }
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

/// PyTorch's `AdaptiveAvgPool2d((oh, ow))`: bin i of n over an input of
/// size s spans [floor(i*s/n), ceil((i+1)*s/n)). Computed as two small
/// matrix products, so it is exact and differentiable for any size.
pub fn adaptive_avg_pool2d(x: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if h == oh && w == ow {
        return Ok(x.clone());
    }
    if h == 1 && w == 1 {
        return x.broadcast_as((n, c, oh, ow))?.contiguous();
    }
    let pool = |s: usize, o: usize, device: &Device| -> Result<Tensor> {
        // (o, s): row i averages its bin.
        let mut m = vec![0f32; o * s];
        for i in 0..o {
            let (a, b) = ((i * s) / o, ((i + 1) * s).div_ceil(o));
            for j in a..b {
                m[i * s + j] = 1.0 / (b - a) as f32;
            }
        }
        Tensor::from_vec(m, (o, s), device)
    };
    let ph = pool(h, oh, x.device())?; // (oh, h)
    let pw = pool(w, ow, x.device())?.t()?; // (w, ow)
    let y = x.reshape((n * c * h, w))?.matmul(&pw)?; // (n c h, ow)
    let y = y.reshape((n * c, h, ow))?;
    let y = ph.broadcast_left(n * c)?.matmul(&y)?; // (n c, oh, ow)
    y.reshape((n, c, oh, ow))
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Conv2d::forward(self, x)
    }
}
