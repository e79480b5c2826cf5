//! Backbones and the registry that names them. One table drives `fer-lab
//! backbones`, spec validation and the model tests.
//!
//! Knows nothing of training or storage: a model is built from a
//! [`ParamBuilder`] and runs `forward_t(x, train)`.

pub mod densenet;
pub mod efficientnet;
pub mod layers;
pub mod params;
pub mod pretrained;
pub mod resnet;
pub mod vgg;

pub use params::{Init, ParamBuilder, ParamStore};

use candle_core::{Device, Result, Tensor};
use resnet::{BlockKind, ResNet};
use std::sync::Arc;

/// What every backbone constructor receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelConfig {
    pub num_classes: usize,
    pub in_channels: usize,
    /// Dropout and stochastic depth in training (off for parity checks).
    pub stochastic: bool,
}

impl ModelConfig {
    pub const fn new(num_classes: usize, in_channels: usize) -> Self {
        Self {
            num_classes,
            in_channels,
            stochastic: true,
        }
    }
}

/// What a backbone expects of its input by default (the pretrained
/// weights' contract): square size and per-channel mean / std on [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputContract {
    pub size: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// ImageNet at 224 x 224 (torchvision's and timm's weights).
pub const IMAGENET: InputContract = InputContract {
    size: 224,
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
};

/// Maps one tensor of a weights file to this backbone's name for it (and
/// shape, e.g. timm's conv-shaped VGG classifier to a linear weight), or
/// `None` to skip it. Lets one loader read torchvision, timm and other
/// layouts.
pub type Remap = fn(&str, Tensor) -> Result<Option<(String, Tensor)>>;

/// Names unchanged (torchvision's layout is ours).
pub fn identity_remap(name: &str, t: Tensor) -> Result<Option<(String, Tensor)>> {
    Ok(Some((name.to_string(), t)))
}

/// A trainable network: images (N, C, H, W) to logits (N, classes).
pub trait Backbone: Send + Sync {
    /// `train` selects batch statistics (and running-stat updates) in batch norm.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor>;
}

type Builder = fn(&ParamBuilder, &ModelConfig) -> Result<Box<dyn Backbone>>;

/// One registered backbone.
pub struct BackboneInfo {
    pub name: &'static str,
    pub family: &'static str,
    /// Name of the first convolution and of the classifier, as in torchvision.
    pub first_conv: &'static str,
    pub classifier: &'static str,
    pub input: InputContract,
    /// Other layouts' tensor names to ours.
    pub remap: Remap,
    build: Builder,
}

macro_rules! resnet {
    ($kind:expr, $depths:expr) => {
        |pb: &ParamBuilder, cfg: &ModelConfig| -> Result<Box<dyn Backbone>> {
            Ok(Box::new(ResNet::new(pb, $kind, $depths, cfg)?))
        }
    };
}

const fn resnet_info(name: &'static str, build: Builder) -> BackboneInfo {
    BackboneInfo {
        name,
        family: "resnet",
        first_conv: "conv1",
        classifier: "fc",
        input: IMAGENET,
        remap: identity_remap,
        build,
    }
}

const fn efficientnet_info(name: &'static str, build: Builder) -> BackboneInfo {
    BackboneInfo {
        name,
        family: "efficientnet",
        first_conv: efficientnet::FIRST_CONV,
        classifier: efficientnet::CLASSIFIER,
        input: IMAGENET,
        remap: efficientnet::remap,
        build,
    }
}

pub static REGISTRY: &[BackboneInfo] = &[
    resnet_info("resnet10", resnet!(BlockKind::Basic, [1, 1, 1, 1])),
    resnet_info("resnet18", resnet!(BlockKind::Basic, [2, 2, 2, 2])),
    resnet_info("resnet34", resnet!(BlockKind::Basic, [3, 4, 6, 3])),
    resnet_info("resnet50", resnet!(BlockKind::Bottleneck, [3, 4, 6, 3])),
    resnet_info("resnet101", resnet!(BlockKind::Bottleneck, [3, 4, 23, 3])),
    resnet_info("resnet152", resnet!(BlockKind::Bottleneck, [3, 8, 36, 3])),
    BackboneInfo {
        name: "vgg16",
        family: "vgg",
        first_conv: "features.0",
        classifier: "classifier.6",
        input: IMAGENET,
        remap: vgg::remap,
        build: |pb, cfg| Ok(Box::new(vgg::Vgg::new(pb, cfg, false)?)),
    },
    BackboneInfo {
        name: "vgg16_bn",
        family: "vgg",
        first_conv: "features.0",
        classifier: "classifier.6",
        input: IMAGENET,
        remap: vgg::remap,
        build: |pb, cfg| Ok(Box::new(vgg::Vgg::new(pb, cfg, true)?)),
    },
    efficientnet_info("efficientnet_b0", |pb, cfg| {
        Ok(Box::new(efficientnet::EfficientNet::new(
            pb,
            cfg,
            efficientnet::Variant::B0,
        )?))
    }),
    efficientnet_info("efficientnet_lite0", |pb, cfg| {
        Ok(Box::new(efficientnet::EfficientNet::new(
            pb,
            cfg,
            efficientnet::Variant::Lite0,
        )?))
    }),
    BackboneInfo {
        name: "densenet121",
        family: "densenet",
        first_conv: "features.conv0",
        classifier: "classifier",
        input: IMAGENET,
        remap: densenet::remap,
        build: |pb, cfg| {
            Ok(Box::new(densenet::DenseNet::new(
                pb,
                cfg,
                [6, 12, 24, 16],
                32,
                64,
            )?))
        },
    },
];

/// Names of every registered backbone, in registry order.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|b| b.name).collect()
}

pub fn info(name: &str) -> Option<&'static BackboneInfo> {
    REGISTRY.iter().find(|b| b.name == name)
}

/// A built network with the parameters it owns.
pub struct Model {
    pub name: &'static str,
    pub net: Box<dyn Backbone>,
    pub params: Arc<ParamStore>,
}

/// Builds a registered backbone with fresh, seeded parameters.
pub fn build(name: &str, cfg: &ModelConfig, seed: u64, device: &Device) -> Result<Model> {
    let info = info(name).ok_or_else(|| {
        candle_core::Error::Msg(format!(
            "unknown backbone {name:?}, expected one of: {}",
            names().join(", ")
        ))
    })?;
    let params = ParamStore::new(seed, device);
    let net = (info.build)(&params.root(), cfg)?;
    Ok(Model {
        name: info.name,
        net,
        params,
    })
}
