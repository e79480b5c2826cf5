//! VGG-16 and VGG-16-BN as torchvision's `vgg16()` / `vgg16_bn()`: the same
//! layers, parameter names (`features.N`, where N counts every conv, batch
//! norm, ReLU and pool as torchvision's `nn.Sequential` does, and
//! `classifier.0/3/6`) and initialisation, so torchvision's state dicts load
//! as they are. [`remap`] also reads timm's layout, whose classifier is two
//! convolutions (`pre_logits.fc1/fc2`) and `head.fc`.

use super::layers::{
    BatchNorm2d, Conv2d, ConvOpts, Dropout, Padding, adaptive_avg_pool2d, linear_init,
};
use super::params::{Init, ParamBuilder};
use super::{Backbone, ModelConfig};
use candle_core::{Result, Tensor};
use candle_nn::Linear;

/// Configuration "D" (VGG-16): output channels of each 3x3 conv, `None` for
/// a 2x2 max-pool.
const VGG16: [Option<usize>; 18] = [
    Some(64),
    Some(64),
    None,
    Some(128),
    Some(128),
    None,
    Some(256),
    Some(256),
    Some(256),
    None,
    Some(512),
    Some(512),
    Some(512),
    None,
    Some(512),
    Some(512),
    Some(512),
    None,
];

/// Side of the feature map the classifier reads (torchvision's
/// `AdaptiveAvgPool2d((7, 7))`).
const POOLED: usize = 7;
const HIDDEN: usize = 4096;

/// One entry of `features`: a conv (with its batch norm in VGG-BN) and
/// ReLU, or a max-pool.
enum Stage {
    Conv(Conv2d, Option<BatchNorm2d>),
    Pool,
}

pub struct Vgg {
    features: Vec<Stage>,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
    dropout: Dropout,
}

impl Vgg {
    /// VGG-16, with batch norm after every conv when `bn`.
    pub fn new(pb: &ParamBuilder, cfg: &ModelConfig, bn: bool) -> Result<Self> {
        let fp = pb.pp("features");
        let mut features = Vec::new();
        let mut index = 0;
        let mut cin = cfg.in_channels;
        for stage in VGG16 {
            match stage {
                Some(cout) => {
                    // ConvOpts::new's init is torchvision's here: Kaiming
                    // normal (fan-out, ReLU); the bias starts at 0.
                    let opts = ConvOpts {
                        bias: true,
                        ..ConvOpts::new(cout, 3, 1, Padding::Sym(1))
                    };
                    let conv = Conv2d::new(&fp.pp(index), cin, cout, 3, opts)?;
                    let norm = if bn {
                        Some(BatchNorm2d::new(&fp.pp(index + 1), cout)?)
                    } else {
                        None
                    };
                    // conv, [bn,] relu
                    index += if bn { 3 } else { 2 };
                    features.push(Stage::Conv(conv, norm));
                    cin = cout;
                }
                None => {
                    index += 1;
                    features.push(Stage::Pool);
                }
            }
        }
        let cp = pb.pp("classifier");
        // torchvision: N(0, 0.01) weights, zero biases.
        let fc = |i: usize, fan_in, fan_out| {
            linear_init(
                &cp.pp(i),
                fan_in,
                fan_out,
                Init::Normal(0.01),
                Init::Const(0.0),
            )
        };
        let fc1 = fc(0, cin * POOLED * POOLED, HIDDEN)?;
        let fc2 = fc(3, HIDDEN, HIDDEN)?;
        let fc3 = fc(6, HIDDEN, cfg.num_classes)?;
        let p = if cfg.stochastic { 0.5 } else { 0.0 };
        Ok(Self {
            features,
            fc1,
            fc2,
            fc3,
            dropout: Dropout::new(pb, p),
        })
    }
}

/// `MaxPool2d(2, 2)` (floor mode: an odd last row / column is dropped).
///
/// On the CPU (f32) this is [`crate::kernels::pool::max_pool2d`]. Elsewhere
/// it is composed from ops whose gradients are right: candle's own `max_pool2d`
/// backward scales each gradient by the window's share of maxima (1/4 for
/// a unique maximum) instead of routing it whole to the maximum. The input
/// is folded into 2 x 2 windows and reduced with `maximum`, which sends a
/// gradient to the larger element (half to each of a tie).
pub fn max_pool_2x2(x: &Tensor) -> Result<Tensor> {
    if crate::kernels::fast() && crate::kernels::pool::supported(x) {
        return crate::kernels::pool::max_pool2d(x, 2, 2, 0);
    }
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = (h / 2, w / 2);
    let x = if h % 2 == 1 || w % 2 == 1 {
        x.narrow(2, 0, 2 * oh)?.narrow(3, 0, 2 * ow)?.contiguous()?
    } else {
        x.clone()
    };
    let windows = x.reshape((n, c, oh, 2, ow, 2))?;
    let cols = windows
        .narrow(5, 0, 1)?
        .maximum(&windows.narrow(5, 1, 1)?)?;
    let m = cols.narrow(3, 0, 1)?.maximum(&cols.narrow(3, 1, 1)?)?;
    m.reshape((n, c, oh, ow))
}

/// `x W^T + b`, computed as `(W x^T)^T` so that the backward pass yields
/// W's gradient as one contiguous product. candle's `Linear` multiplies by
/// the transposed view of W, whose gradient comes back transposed and is
/// then added element by element through strides: for the 4096 x 25088
/// first layer (batch 4, a busy 2-core CPU) its backward took 8.8 s, this
/// one 2.1 s.
fn fc(layer: &Linear, x: &Tensor) -> Result<Tensor> {
    let y = layer.weight().matmul(&x.t()?)?.t()?;
    match layer.bias() {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

impl Backbone for Vgg {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for stage in &self.features {
            x = match stage {
                Stage::Conv(conv, Some(bn)) => bn.forward_act(&conv.forward(&x)?, train, true)?,
                Stage::Conv(conv, None) => conv.forward_act(&x, true)?,
                Stage::Pool => max_pool_2x2(&x)?,
            };
        }
        let x = adaptive_avg_pool2d(&x, POOLED, POOLED)?.flatten_from(1)?;
        let x = fc(&self.fc1, &x)?.relu()?;
        let x = self.dropout.forward_t(&x, train)?;
        let x = fc(&self.fc2, &x)?.relu()?;
        let x = self.dropout.forward_t(&x, train)?;
        fc(&self.fc3, &x)
    }
}

/// torchvision's names pass as they are; timm's VGG head is renamed and
/// reshaped as timm's own `_filter_fn` does in reverse: `pre_logits.fc1`
/// (a 4096 x 512 x 7 x 7 conv) becomes `classifier.0` (4096 x 25088, the
/// same (c, h, w) flattening order), `pre_logits.fc2` (4096 x 4096 x 1 x 1)
/// `classifier.3` and `head.fc` `classifier.6`.
pub fn remap(name: &str, t: Tensor) -> Result<Option<(String, Tensor)>> {
    let renamed = [
        ("pre_logits.fc1.", "classifier.0."),
        ("pre_logits.fc2.", "classifier.3."),
        ("head.fc.", "classifier.6."),
    ]
    .iter()
    .find_map(|(timm, ours)| name.strip_prefix(timm).map(|rest| format!("{ours}{rest}")));
    match renamed {
        Some(new) if new.ends_with(".weight") && t.rank() > 2 => {
            let t = t.flatten_from(1)?;
            Ok(Some((new, t)))
        }
        Some(new) => Ok(Some((new, t))),
        None => Ok(Some((name.to_string(), t))),
    }
}
