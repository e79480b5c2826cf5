//! EfficientNet-B0 and EfficientNet-Lite0, one module for both.
//!
//! Parameter names follow timm's `efficientnet_b0` / `efficientnet_lite0`:
//! `conv_stem`, `bn1`, `blocks.S.B.*`, `conv_head`, `bn2`, `classifier`.
//! The first stage's block has no expansion (timm's depthwise-separable
//! block: `conv_dw`, `bn1`, `se`, `conv_pw`, `bn2`); every other block is
//! an inverted residual (`conv_pw`, `bn1`, `conv_dw`, `bn2`, `se`,
//! `conv_pwl`, `bn3`). [`remap`] also reads torchvision's and lukemelas'
//! layouts.
//!
//! - B0 computes what torchvision's `efficientnet_b0()` does: squeeze-
//!   excitation, SiLU, symmetric padding k / 2, PyTorch's batch-norm
//!   defaults, torchvision's initialisation.
//! - Lite0 computes what the lukemelas `efficientnet_lite_pytorch` package's
//!   `EfficientNet.from_name('efficientnet-lite0')` does (the layout of the
//!   real ImageNet weights): no squeeze-excitation, ReLU6, batch norm with
//!   eps 1e-3 and momentum 0.01, TensorFlow "same" padding computed from
//!   the input size, and PyTorch's default initialisation (the package sets
//!   none of its own).
//!
//! Both drop residual branches (stochastic depth, 0.2 * block / 16) and
//! drop 20 % of the pooled features before the classifier in training.

use super::layers::{
    BatchNorm2d, Conv2d, ConvOpts, Dropout, Padding, drop_path, global_avg_pool, kaiming_fan_out,
    linear, linear_init,
};
use super::params::{Init, ParamBuilder, ParamStore};
use super::{Backbone, ModelConfig};
use crate::kernels::Act;
use candle_core::{Result, Tensor};
use candle_nn::{Linear, Module};
use std::sync::Arc;

pub const FIRST_CONV: &str = "conv_stem";
pub const CLASSIFIER: &str = "classifier";

/// (expand ratio, kernel, stride of the first block, output channels,
/// blocks) of the seven stages, shared by B0 and Lite0.
const STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
];
const STEM: usize = 32;
const HEAD: usize = 1280;
/// Stochastic depth of the last block (block i of n drops with 0.2 * i / n).
const DROP_PATH: f32 = 0.2;
/// Dropout before the classifier.
const DROPOUT: f32 = 0.2;

/// Which network [`EfficientNet::new`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// torchvision's `efficientnet_b0`.
    B0,
    /// lukemelas' `efficientnet-lite0`.
    Lite0,
}

/// What a convolution is besides its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConvKind {
    /// Dense, bias-free (stem, expand, project, head).
    Plain,
    /// One filter per channel, bias-free.
    Depthwise,
    /// Dense with a bias (squeeze-excitation).
    Biased,
}

impl Variant {
    /// A convolution with this variant's padding and initialisation.
    fn conv(
        self,
        pb: &ParamBuilder,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        kind: ConvKind,
    ) -> Result<Conv2d> {
        let groups = if kind == ConvKind::Depthwise { cin } else { 1 };
        let (padding, init) = match self {
            // torchvision: `kaiming_normal_(mode="fan_out")`, whose fan-out
            // is cout * k * k whatever the groups.
            Variant::B0 => (Padding::Sym(k / 2), kaiming_fan_out(cout, k, 1)),
            // PyTorch's default, kaiming_uniform_(a=sqrt(5)): U(+-1/sqrt(fan_in)).
            Variant::Lite0 => (
                Padding::TfSame,
                Init::Uniform(1.0 / ((cin / groups * k * k) as f32).sqrt()),
            ),
        };
        let opts = ConvOpts {
            stride,
            padding,
            groups,
            bias: kind == ConvKind::Biased,
            init,
        };
        Conv2d::new(pb, cin, cout, k, opts)
    }

    fn bn(self, pb: &ParamBuilder, c: usize) -> Result<BatchNorm2d> {
        match self {
            Variant::B0 => BatchNorm2d::new(pb, c),
            Variant::Lite0 => BatchNorm2d::with(pb, c, 1e-3, 0.01),
        }
    }

    fn classifier(self, pb: &ParamBuilder, classes: usize) -> Result<Linear> {
        match self {
            // torchvision: U(+-1/sqrt(out_features)), bias 0.
            Variant::B0 => {
                let bound = 1.0 / (classes as f32).sqrt();
                linear_init(pb, HEAD, classes, Init::Uniform(bound), Init::Const(0.0))
            }
            Variant::Lite0 => linear(pb, HEAD, classes),
        }
    }

    /// Batch norm followed by the variant's activation (SiLU, or ReLU6),
    /// fused where the kernel allows.
    fn bn_act(self, bn: &BatchNorm2d, x: &Tensor, train: bool) -> Result<Tensor> {
        let act = match self {
            Variant::B0 => Act::Silu,
            Variant::Lite0 => Act::Relu6,
        };
        bn.forward_with(x, train, act)
    }
}

/// A convolution and the batch norm after it.
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl ConvBn {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.bn.forward_t(&self.conv.forward(x)?, train)
    }

    fn forward_act(&self, x: &Tensor, variant: Variant, train: bool) -> Result<Tensor> {
        variant.bn_act(&self.bn, &self.conv.forward(x)?, train)
    }
}

/// Squeeze-excitation: global average, 1x1 reduce, SiLU, 1x1 expand,
/// sigmoid, channel-wise scale (torchvision's `SqueezeExcitation`).
struct SqueezeExcite {
    reduce: Conv2d,
    expand: Conv2d,
}

impl SqueezeExcite {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = x.mean_keepdim(3)?.mean_keepdim(2)?;
        let s = self.reduce.forward(&s)?.silu()?;
        let s = candle_nn::ops::sigmoid(&self.expand.forward(&s)?)?;
        x.broadcast_mul(&s)
    }
}

/// One MBConv block (depthwise-separable when `expand` is `None`).
struct Block {
    expand: Option<ConvBn>,
    dw: ConvBn,
    se: Option<SqueezeExcite>,
    project: ConvBn,
    residual: bool,
    drop_path: f32,
}

impl Block {
    fn new(
        pb: &ParamBuilder,
        variant: Variant,
        cin: usize,
        (expand_ratio, k, stride, cout): (usize, usize, usize, usize),
        drop_path: f32,
    ) -> Result<Self> {
        let mid = cin * expand_ratio;
        let conv_bn =
            |conv: &str, bn: &str, ci: usize, co: usize, k: usize, stride: usize, kind| {
                Ok::<_, candle_core::Error>(ConvBn {
                    conv: variant.conv(&pb.pp(conv), ci, co, k, stride, kind)?,
                    bn: variant.bn(&pb.pp(bn), co)?,
                })
            };
        // Created in timm's module order, so names and the seeded
        // initialisation follow it.
        let (expand, dw, project_names) = if expand_ratio == 1 {
            let dw = conv_bn("conv_dw", "bn1", cin, cin, k, stride, ConvKind::Depthwise)?;
            (None, dw, ("conv_pw", "bn2"))
        } else {
            let ex = conv_bn("conv_pw", "bn1", cin, mid, 1, 1, ConvKind::Plain)?;
            let dw = conv_bn("conv_dw", "bn2", mid, mid, k, stride, ConvKind::Depthwise)?;
            (Some(ex), dw, ("conv_pwl", "bn3"))
        };
        let se = match variant {
            Variant::B0 => {
                let p = pb.pp("se");
                let squeeze = (cin / 4).max(1);
                Some(SqueezeExcite {
                    reduce: variant.conv(
                        &p.pp("conv_reduce"),
                        mid,
                        squeeze,
                        1,
                        1,
                        ConvKind::Biased,
                    )?,
                    expand: variant.conv(
                        &p.pp("conv_expand"),
                        squeeze,
                        mid,
                        1,
                        1,
                        ConvKind::Biased,
                    )?,
                })
            }
            Variant::Lite0 => None,
        };
        let project = conv_bn(
            project_names.0,
            project_names.1,
            mid,
            cout,
            1,
            1,
            ConvKind::Plain,
        )?;
        Ok(Self {
            expand,
            dw,
            se,
            project,
            residual: stride == 1 && cin == cout,
            drop_path,
        })
    }

    fn forward_t(
        &self,
        x: &Tensor,
        variant: Variant,
        train: bool,
        store: &ParamStore,
    ) -> Result<Tensor> {
        let mut y = match &self.expand {
            Some(e) => e.forward_act(x, variant, train)?,
            None => x.clone(),
        };
        y = self.dw.forward_act(&y, variant, train)?;
        if let Some(se) = &self.se {
            y = se.forward(&y)?;
        }
        let y = self.project.forward_t(&y, train)?;
        if self.residual {
            drop_path(&y, self.drop_path, train, store)? + x
        } else {
            Ok(y)
        }
    }
}

/// EfficientNet-B0 or -Lite0 for `cfg.in_channels` inputs and
/// `cfg.num_classes` outputs.
pub struct EfficientNet {
    variant: Variant,
    stem: ConvBn,
    blocks: Vec<Block>,
    head: ConvBn,
    dropout: Dropout,
    classifier: Linear,
    store: Arc<ParamStore>,
}

impl EfficientNet {
    pub fn new(pb: &ParamBuilder, cfg: &ModelConfig, variant: Variant) -> Result<Self> {
        let stem = ConvBn {
            conv: variant.conv(
                &pb.pp("conv_stem"),
                cfg.in_channels,
                STEM,
                3,
                2,
                ConvKind::Plain,
            )?,
            bn: variant.bn(&pb.pp("bn1"), STEM)?,
        };
        let total: usize = STAGES.iter().map(|s| s.4).sum();
        let mut blocks = Vec::with_capacity(total);
        let mut cin = STEM;
        for (si, &(expand, k, stride, cout, repeats)) in STAGES.iter().enumerate() {
            for bi in 0..repeats {
                let stride = if bi == 0 { stride } else { 1 };
                let p = if cfg.stochastic {
                    DROP_PATH * blocks.len() as f32 / total as f32
                } else {
                    0.0
                };
                let pb = pb.pp("blocks").pp(si).pp(bi);
                blocks.push(Block::new(&pb, variant, cin, (expand, k, stride, cout), p)?);
                cin = cout;
            }
        }
        let head = ConvBn {
            conv: variant.conv(&pb.pp("conv_head"), cin, HEAD, 1, 1, ConvKind::Plain)?,
            bn: variant.bn(&pb.pp("bn2"), HEAD)?,
        };
        let dropout = Dropout::new(pb, if cfg.stochastic { DROPOUT } else { 0.0 });
        let classifier = variant.classifier(&pb.pp(CLASSIFIER), cfg.num_classes)?;
        Ok(Self {
            variant,
            stem,
            blocks,
            head,
            dropout,
            classifier,
            store: pb.store(),
        })
    }
}

impl Backbone for EfficientNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = self.stem.forward_act(x, self.variant, train)?;
        for block in &self.blocks {
            x = block.forward_t(&x, self.variant, train, &self.store)?;
        }
        let x = self.head.forward_act(&x, self.variant, train)?;
        let x = self.dropout.forward_t(&global_avg_pool(&x)?, train)?;
        self.classifier.forward(&x)
    }
}

/// (stage, block) of lukemelas' flat block index (stage repeats 1, 2, 2, 3, 3, 4, 1).
fn stage_block(flat: usize) -> Option<(usize, usize)> {
    let mut first = 0;
    for (stage, s) in STAGES.iter().enumerate() {
        if flat < first + s.4 {
            return Some((stage, flat - first));
        }
        first += s.4;
    }
    None
}

/// Our (timm's) name of a block's module. `role` is the layer it plays
/// (expand, dw, se_reduce, se_expand, project) and `bn` says whether it is
/// the batch norm after that conv rather than the conv; stage 0's block
/// has no expansion, so its batch norms are numbered from the depthwise one.
fn block_module(stage: usize, role: &str, bn: bool) -> Option<&'static str> {
    let no_expand = stage == 0;
    Some(match (role, bn, no_expand) {
        ("expand", false, false) => "conv_pw",
        ("expand", true, false) => "bn1",
        ("dw", false, _) => "conv_dw",
        ("dw", true, true) => "bn1",
        ("dw", true, false) => "bn2",
        ("se_reduce", false, _) => "se.conv_reduce",
        ("se_expand", false, _) => "se.conv_expand",
        ("project", false, true) => "conv_pw",
        ("project", true, true) => "bn2",
        ("project", false, false) => "conv_pwl",
        ("project", true, false) => "bn3",
        _ => return None,
    })
}

/// torchvision's `features.{1..7}.B.block.J.T.param` to ours.
fn torchvision_block(stage: usize, rest: &str) -> Option<String> {
    let (block, rest) = rest.split_once('.')?;
    let block: usize = block.parse().ok()?;
    let rest = rest.strip_prefix("block.")?;
    let (j, rest) = rest.split_once('.')?;
    let j: usize = j.parse().ok()?;
    // torchvision's `block` Sequential: [expand,] depthwise, SE, project.
    let roles: &[&str] = if stage == 0 {
        &["dw", "se", "project"]
    } else {
        &["expand", "dw", "se", "project"]
    };
    let role = *roles.get(j)?;
    let (part, param) = rest.split_once('.')?;
    let module = match (role, part) {
        ("se", "fc1") => block_module(stage, "se_reduce", false)?,
        ("se", "fc2") => block_module(stage, "se_expand", false)?,
        ("se", _) => return None,
        (_, "0") => block_module(stage, role, false)?,
        (_, "1") => block_module(stage, role, true)?,
        _ => return None,
    };
    Some(format!("blocks.{stage}.{block}.{module}.{param}"))
}

/// torchvision's `efficientnet_b0` names (`features.N...`, `classifier.1`) to ours.
fn torchvision(name: &str) -> Option<String> {
    if let Some(param) = name.strip_prefix("classifier.1.") {
        return Some(format!("{CLASSIFIER}.{param}"));
    }
    let rest = name.strip_prefix("features.")?;
    let (i, rest) = rest.split_once('.')?;
    let i: usize = i.parse().ok()?;
    let conv_bn = |conv: &str, bn: &str| -> Option<String> {
        let (part, param) = rest.split_once('.')?;
        match part {
            "0" => Some(format!("{conv}.{param}")),
            "1" => Some(format!("{bn}.{param}")),
            _ => None,
        }
    };
    match i {
        0 => conv_bn("conv_stem", "bn1"),
        8 => conv_bn("conv_head", "bn2"),
        1..=7 => torchvision_block(i - 1, rest),
        _ => None,
    }
}

/// lukemelas' names (`_conv_stem`, `_blocks.N._bn1`, `_bn1`, `_fc`, ...) to ours.
fn lukemelas(name: &str) -> Option<String> {
    if let Some(rest) = name.strip_prefix("_blocks.") {
        let (n, rest) = rest.split_once('.')?;
        let (stage, block) = stage_block(n.parse().ok()?)?;
        let (part, param) = rest.split_once('.')?;
        let (role, bn) = match part {
            "_expand_conv" => ("expand", false),
            "_bn0" => ("expand", true),
            "_depthwise_conv" => ("dw", false),
            "_bn1" => ("dw", true),
            "_se_reduce" => ("se_reduce", false),
            "_se_expand" => ("se_expand", false),
            "_project_conv" => ("project", false),
            "_bn2" => ("project", true),
            _ => return None,
        };
        let module = block_module(stage, role, bn)?;
        return Some(format!("blocks.{stage}.{block}.{module}.{param}"));
    }
    // Top level: `_bn0` is the stem's batch norm and `_bn1` the head's.
    let (part, param) = name.split_once('.')?;
    let ours = match part {
        "_conv_stem" => "conv_stem",
        "_bn0" => "bn1",
        "_conv_head" => "conv_head",
        "_bn1" => "bn2",
        "_fc" => CLASSIFIER,
        _ => return None,
    };
    Some(format!("{ours}.{param}"))
}

/// Reads our (timm's) names as they are, torchvision's `efficientnet_b0`
/// names and lukemelas' names (both variants); skips `num_batches_tracked`.
/// A name in torchvision's or lukemelas' namespace that fits neither
/// layout (e.g. a block index beyond B0's 16 blocks) is an error, since it
/// comes from another architecture.
pub fn remap(name: &str, t: Tensor) -> Result<Option<(String, Tensor)>> {
    if name.ends_with(".num_batches_tracked") {
        return Ok(None);
    }
    let ours = if name.starts_with("features.") || name.starts_with("classifier.1.") {
        torchvision(name).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "tensor {name} is not part of torchvision's efficientnet_b0 layout"
            ))
        })?
    } else if name.starts_with('_') {
        lukemelas(name).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "tensor {name} is not part of the lukemelas EfficientNet-B0/Lite0 layout"
            ))
        })?
    } else {
        name.to_string()
    };
    Ok(Some((ours, t)))
}
