//! EfficientNet-B0 and EfficientNet-Lite0 (placeholder: being written).

use super::params::ParamBuilder;
use super::{Backbone, ModelConfig};
use candle_core::{Result, Tensor};

pub const FIRST_CONV: &str = "conv_stem";
pub const CLASSIFIER: &str = "classifier";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    B0,
    Lite0,
}

pub struct EfficientNet;

impl EfficientNet {
    pub fn new(_pb: &ParamBuilder, _cfg: &ModelConfig, _variant: Variant) -> Result<Self> {
        candle_core::bail!("efficientnet is not built yet")
    }
}

impl Backbone for EfficientNet {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        Ok(x.clone())
    }
}

pub fn remap(name: &str, t: Tensor) -> Result<Option<(String, Tensor)>> {
    Ok(Some((name.to_string(), t)))
}
