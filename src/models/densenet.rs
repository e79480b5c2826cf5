//! DenseNet-121 (placeholder: being written).

use super::params::ParamBuilder;
use super::{Backbone, ModelConfig};
use candle_core::{Result, Tensor};

pub struct DenseNet;

impl DenseNet {
    pub fn new(
        _pb: &ParamBuilder,
        _cfg: &ModelConfig,
        _blocks: [usize; 4],
        _growth: usize,
        _init_features: usize,
    ) -> Result<Self> {
        candle_core::bail!("densenet is not built yet")
    }
}

impl Backbone for DenseNet {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        Ok(x.clone())
    }
}

pub fn remap(name: &str, t: Tensor) -> Result<Option<(String, Tensor)>> {
    Ok(Some((name.to_string(), t)))
}
