//! VGG-16 and VGG-16-BN (placeholder: being written).

use super::params::ParamBuilder;
use super::{Backbone, ModelConfig};
use candle_core::{Result, Tensor};

pub struct Vgg;

impl Vgg {
    pub fn new(_pb: &ParamBuilder, _cfg: &ModelConfig, _bn: bool) -> Result<Self> {
        candle_core::bail!("vgg is not built yet")
    }
}

impl Backbone for Vgg {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        Ok(x.clone())
    }
}

pub fn remap(name: &str, t: Tensor) -> Result<Option<(String, Tensor)>> {
    Ok(Some((name.to_string(), t)))
}
