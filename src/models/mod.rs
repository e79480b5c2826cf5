//! Backbones and the registry that names them. One table drives `fer-lab
//! backbones`, spec validation and the model tests.
//!
//! Knows nothing of training or storage: a model is built from a
//! [`ParamBuilder`] and runs `forward_t(x, train)`.

pub mod layers;
pub mod params;
pub mod pretrained;
pub mod resnet;

pub use params::{Init, ParamBuilder, ParamStore};

use candle_core::{Device, Result, Tensor};
use resnet::{BlockKind, ResNet};
use std::sync::Arc;

/// What every backbone constructor receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelConfig {
    pub num_classes: usize,
    pub in_channels: usize,
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
