//! DenseNet-BC as torchvision's `DenseNet` (DenseNet-121: growth 32,
//! blocks 6/12/24/16, 64 initial features; bottleneck width 4 x growth,
//! no dropout), with torchvision's parameter names (`features.conv0`,
//! `features.denseblock1.denselayer1.norm1`, `features.transition1.conv`,
//! `features.norm5`, `classifier`) and initialisation. timm's DenseNet-121
//! uses the same names; [`remap`] also reads the old `norm.1` / `conv.2`
//! spellings of torchvision's first checkpoints.

use super::layers::{
    BatchNorm2d, Conv2d, ConvOpts, Padding, global_avg_pool, kaiming_fan_in, linear_init,
    max_pool_3x3_s2_after_relu,
};
use super::params::{Init, ParamBuilder};
use super::{Backbone, ModelConfig};
use candle_core::{Result, Tensor};
use candle_nn::{Linear, Module};

/// Bottleneck width of a dense layer, in multiples of the growth rate.
const BN_SIZE: usize = 4;

/// A bias-free conv with torchvision's DenseNet init (Kaiming normal,
/// fan-in, ReLU gain).
fn conv(
    pb: &ParamBuilder,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: usize,
) -> Result<Conv2d> {
    let opts = ConvOpts {
        init: kaiming_fan_in(cin, k),
        ..ConvOpts::new(cout, k, stride, Padding::Sym(padding))
    };
    Conv2d::new(pb, cin, cout, k, opts)
}

/// BN-ReLU-conv1x1 (to 4 x growth), BN-ReLU-conv3x3 (to growth).
struct DenseLayer {
    norm1: BatchNorm2d,
    conv1: Conv2d,
    norm2: BatchNorm2d,
    conv2: Conv2d,
}

impl DenseLayer {
    fn new(pb: &ParamBuilder, cin: usize, growth: usize) -> Result<Self> {
        let mid = BN_SIZE * growth;
        Ok(Self {
            norm1: BatchNorm2d::new(&pb.pp("norm1"), cin)?,
            conv1: conv(&pb.pp("conv1"), cin, mid, 1, 1, 0)?,
            norm2: BatchNorm2d::new(&pb.pp("norm2"), mid)?,
            conv2: conv(&pb.pp("conv2"), mid, growth, 3, 1, 1)?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self
            .conv1
            .forward(&self.norm1.forward_act(x, train, true)?)?;
        self.conv2
            .forward(&self.norm2.forward_act(&y, train, true)?)
    }
}

/// BN-ReLU-conv1x1 (halving the channels), then 2x2 average pool.
struct Transition {
    norm: BatchNorm2d,
    conv: Conv2d,
}

impl Transition {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.conv.forward(&self.norm.forward_act(x, train, true)?)?;
        avg_pool_2x2(&y)
    }
}

/// `AvgPool2d(2, 2)`: floor mode, so an odd last row / column is dropped.
/// It is cropped off before pooling because candle's backward of an odd
/// input spreads gradients by a nearest-neighbour upsampling that misplaces
/// them; on an even input that backward is exact.
pub fn avg_pool_2x2(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let x = if h % 2 == 1 || w % 2 == 1 {
        x.narrow(2, 0, h - h % 2)?.narrow(3, 0, w - w % 2)?
    } else {
        x.clone()
    };
    x.avg_pool2d(2)
}

pub struct DenseNet {
    conv0: Conv2d,
    norm0: BatchNorm2d,
    blocks: Vec<Vec<DenseLayer>>,
    /// One fewer than the blocks: between consecutive ones.
    transitions: Vec<Transition>,
    norm5: BatchNorm2d,
    classifier: Linear,
}

impl DenseNet {
    /// `blocks`: dense layers per block; `growth`: channels each layer adds;
    /// `init_features`: channels of the stem.
    pub fn new(
        pb: &ParamBuilder,
        cfg: &ModelConfig,
        blocks: [usize; 4],
        growth: usize,
        init_features: usize,
    ) -> Result<Self> {
        let fp = pb.pp("features");
        let conv0 = conv(&fp.pp("conv0"), cfg.in_channels, init_features, 7, 2, 3)?;
        let norm0 = BatchNorm2d::new(&fp.pp("norm0"), init_features)?;
        let mut c = init_features;
        let mut dense = Vec::new();
        let mut transitions = Vec::new();
        for (i, &layers) in blocks.iter().enumerate() {
            let bp = fp.pp(format!("denseblock{}", i + 1));
            let block = (0..layers)
                .map(|l| {
                    DenseLayer::new(
                        &bp.pp(format!("denselayer{}", l + 1)),
                        c + l * growth,
                        growth,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            dense.push(block);
            c += layers * growth;
            if i + 1 < blocks.len() {
                let tp = fp.pp(format!("transition{}", i + 1));
                transitions.push(Transition {
                    norm: BatchNorm2d::new(&tp.pp("norm"), c)?,
                    conv: conv(&tp.pp("conv"), c, c / 2, 1, 1, 0)?,
                });
                c /= 2;
            }
        }
        let norm5 = BatchNorm2d::new(&fp.pp("norm5"), c)?;
        // torchvision: PyTorch's default Linear weight (uniform, 1/sqrt(fan_in)), bias 0.
        let bound = 1.0 / (c as f32).sqrt();
        let classifier = linear_init(
            &pb.pp("classifier"),
            c,
            cfg.num_classes,
            Init::Uniform(bound),
            Init::Const(0.0),
        )?;
        Ok(Self {
            conv0,
            norm0,
            blocks: dense,
            transitions,
            norm5,
            classifier,
        })
    }
}

impl Backbone for DenseNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self
            .norm0
            .forward_act(&self.conv0.forward(x)?, train, true)?;
        let mut x = max_pool_3x3_s2_after_relu(&x)?;
        for (i, block) in self.blocks.iter().enumerate() {
            // Each layer reads the concatenation of everything before it.
            let mut features = vec![x];
            for layer in block {
                let input = Tensor::cat(&features, 1)?;
                features.push(layer.forward_t(&input, train)?);
            }
            x = Tensor::cat(&features, 1)?;
            if let Some(t) = self.transitions.get(i) {
                x = t.forward_t(&x, train)?;
            }
        }
        let x = self.norm5.forward_act(&x, train, true)?;
        self.classifier.forward(&global_avg_pool(&x)?)
    }
}

/// torchvision's and timm's names pass as they are. Old torchvision
/// checkpoints spell a dense layer's modules `norm.1`, `relu.1`, `conv.1`,
/// `norm.2`, `conv.2`; these are joined (`norm1`, ...) as torchvision's
/// `_load_state_dict` does with the pattern
/// `^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$`.
pub fn remap(name: &str, t: Tensor) -> Result<Option<(String, Tensor)>> {
    let parts: Vec<&str> = name.split('.').collect();
    let n = parts.len();
    let old_spelling = n >= 4 && {
        let layer = parts[n - 4];
        let digits = layer.trim_end_matches(|c: char| c.is_ascii_digit());
        digits.ends_with("denselayer")
            && digits.len() < layer.len()
            && ["norm", "relu", "conv"].contains(&parts[n - 3])
            && ["1", "2"].contains(&parts[n - 2])
            && ["weight", "bias", "running_mean", "running_var"].contains(&parts[n - 1])
    };
    if old_spelling {
        let joined = format!(
            "{}.{}{}.{}",
            parts[..n - 3].join("."),
            parts[n - 3],
            parts[n - 2],
            parts[n - 1]
        );
        return Ok(Some((joined, t)));
    }
    Ok(Some((name.to_string(), t)))
}
