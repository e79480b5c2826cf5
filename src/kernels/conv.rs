//! Dense 2-D convolution.

use candle_core::{Result, Tensor};

pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, pads: [usize; 4]) -> Result<Tensor> {
    super::reference_conv2d(x, w, stride, pads, 1)
}
