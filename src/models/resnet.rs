//! ResNet-10/18/34/50/101/152 in torchvision's layout (v1.5: the bottleneck
//! strides in its 3x3 conv), trainable, with torchvision's parameter names:
//! `conv1`, `bn1`, `layer1.0.conv1`, `layer1.0.downsample.0/1`, `fc`.
//! ResNet-10 ([1, 1, 1, 1] basic blocks) is a small member for quick runs.

use super::layers::{
    BatchNorm2d, Conv2d, ConvOpts, Padding, conv_bn, global_avg_pool, linear,
    max_pool_3x3_s2_after_relu,
};
use super::params::ParamBuilder;
use super::{Backbone, ModelConfig};
use candle_core::{Result, Tensor};
use candle_nn::{Linear, Module};

/// A bias-free convolution with torchvision's ResNet initialisation.
fn conv2d(
    pb: &ParamBuilder,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: usize,
) -> Result<Conv2d> {
    Conv2d::new(
        pb,
        cin,
        cout,
        k,
        ConvOpts::new(cout, k, stride, Padding::Sym(padding)),
    )
}

fn batch_norm(pb: &ParamBuilder, c: usize) -> Result<BatchNorm2d> {
    BatchNorm2d::new(pb, c)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    Basic,
    Bottleneck,
}

impl BlockKind {
    fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

struct Downsample {
    conv: Conv2d,
    bn: BatchNorm2d,
}

struct Block {
    convs: Vec<(Conv2d, BatchNorm2d)>,
    downsample: Option<Downsample>,
}

impl Block {
    fn new(
        pb: &ParamBuilder,
        kind: BlockKind,
        cin: usize,
        planes: usize,
        stride: usize,
    ) -> Result<Self> {
        let cout = planes * kind.expansion();
        // (in, out, kernel, stride, padding) of each conv, torchvision order.
        let shapes: Vec<(usize, usize, usize, usize, usize)> = match kind {
            BlockKind::Basic => vec![(cin, planes, 3, stride, 1), (planes, planes, 3, 1, 1)],
            BlockKind::Bottleneck => vec![
                (cin, planes, 1, 1, 0),
                (planes, planes, 3, stride, 1),
                (planes, cout, 1, 1, 0),
            ],
        };
        let mut convs = Vec::new();
        for (i, (ci, co, k, s, p)) in shapes.into_iter().enumerate() {
            let conv = conv2d(&pb.pp(format!("conv{}", i + 1)), ci, co, k, s, p)?;
            let bn = batch_norm(&pb.pp(format!("bn{}", i + 1)), co)?;
            convs.push((conv, bn));
        }
        let downsample = if stride != 1 || cin != cout {
            let d = pb.pp("downsample");
            Some(Downsample {
                conv: conv2d(&d.pp(0), cin, cout, 1, stride, 0)?,
                bn: batch_norm(&d.pp(1), cout)?,
            })
        } else {
            None
        };
        Ok(Self { convs, downsample })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let last = self.convs.len() - 1;
        let mut y = x.clone();
        for (i, (conv, bn)) in self.convs.iter().enumerate() {
            y = conv_bn(&y, conv, bn, i != last, train)?;
        }
        let identity = match &self.downsample {
            Some(d) => conv_bn(x, &d.conv, &d.bn, false, train)?,
            None => x.clone(),
        };
        crate::kernels::add_relu(&y, &identity)
    }
}

pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    layers: Vec<Vec<Block>>,
    fc: Linear,
}

impl ResNet {
    pub fn new(
        pb: &ParamBuilder,
        kind: BlockKind,
        depths: [usize; 4],
        cfg: &ModelConfig,
    ) -> Result<Self> {
        let conv1 = conv2d(&pb.pp("conv1"), cfg.in_channels, 64, 7, 2, 3)?;
        let bn1 = batch_norm(&pb.pp("bn1"), 64)?;
        let mut cin = 64;
        let mut layers = Vec::new();
        for (li, (&depth, planes)) in depths.iter().zip([64, 128, 256, 512]).enumerate() {
            let lp = pb.pp(format!("layer{}", li + 1));
            let mut blocks = Vec::new();
            for bi in 0..depth {
                let stride = if li > 0 && bi == 0 { 2 } else { 1 };
                blocks.push(Block::new(&lp.pp(bi), kind, cin, planes, stride)?);
                cin = planes * kind.expansion();
            }
            layers.push(blocks);
        }
        let fc = linear(&pb.pp("fc"), cin, cfg.num_classes)?;
        Ok(Self {
            conv1,
            bn1,
            layers,
            fc,
        })
    }
}

impl Backbone for ResNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = conv_bn(x, &self.conv1, &self.bn1, true, train)?;
        let mut x = max_pool_3x3_s2_after_relu(&x)?;
        for blocks in &self.layers {
            for block in blocks {
                x = block.forward_t(&x, train)?;
            }
        }
        self.fc.forward(&global_avg_pool(&x)?)
    }
}
