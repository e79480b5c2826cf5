//! Optimisers with PyTorch's update rules: Adam (L2 weight decay), AdamW
//! (decoupled weight decay) and SGD with momentum.
//!
//! On the CPU each parameter is updated by one fused in-place pass over its
//! data (a candle `InplaceOp2`), instead of a dozen allocating tensor ops.
//! Elsewhere (CUDA) the same rule runs as candle tensor ops.

use crate::spec::OptimizerKind;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp2, Layout, Result, Tensor, Var};
use std::cell::RefCell;

#[derive(Debug, Clone, Copy)]
pub struct Hyper {
    pub kind: OptimizerKind,
    pub momentum: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

enum State {
    /// First and second moments (SGD uses only the first), on the host.
    Host(Vec<f32>, Vec<f32>),
    Device(Tensor, Tensor),
}

pub struct Optimizer {
    hyper: Hyper,
    params: Vec<(Var, State)>,
    /// Per-parameter learning-rate factor (1 unless a head rate is set).
    scales: Vec<f32>,
    step: u64,
}

impl Optimizer {
    /// `fused`: use the in-place CPU kernel where the parameters live on the CPU.
    pub fn new(params: Vec<Var>, hyper: Hyper, fused: bool) -> Result<Self> {
        let params: Vec<(Var, State)> = params
            .into_iter()
            .map(|v| {
                let state = if fused && v.device().is_cpu() {
                    State::Host(vec![0.0; v.elem_count()], vec![0.0; v.elem_count()])
                } else {
                    State::Device(v.zeros_like()?, v.zeros_like()?)
                };
                Ok((v, state))
            })
            .collect::<Result<_>>()?;
        let scales = vec![1.0; params.len()];
        Ok(Self {
            hyper,
            params,
            scales,
            step: 0,
        })
    }

    /// Sets each parameter's learning-rate factor, in parameter order.
    pub fn set_lr_scales(&mut self, scales: Vec<f32>) -> Result<()> {
        if scales.len() != self.params.len() {
            candle_core::bail!(
                "{} learning-rate factors for {} parameters",
                scales.len(),
                self.params.len()
            );
        }
        self.scales = scales;
        Ok(())
    }

    /// The moments of every parameter, in parameter order, as CPU tensors.
    pub fn moments(&self) -> Result<Vec<(Tensor, Tensor)>> {
        self.params
            .iter()
            .map(|(var, state)| match state {
                State::Host(m, v) => Ok((
                    Tensor::from_slice(m, var.shape(), &candle_core::Device::Cpu)?,
                    Tensor::from_slice(v, var.shape(), &candle_core::Device::Cpu)?,
                )),
                State::Device(m, v) => Ok((
                    m.to_device(&candle_core::Device::Cpu)?,
                    v.to_device(&candle_core::Device::Cpu)?,
                )),
            })
            .collect()
    }

    /// Restores moments saved by [`Optimizer::moments`] and the step count.
    pub fn restore(&mut self, moments: Vec<(Tensor, Tensor)>, steps: u64) -> Result<()> {
        if moments.len() != self.params.len() {
            candle_core::bail!(
                "checkpoint has {} optimiser states, the model {}",
                moments.len(),
                self.params.len()
            );
        }
        for ((var, state), (m, v)) in self.params.iter_mut().zip(moments) {
            match state {
                State::Host(hm, hv) => {
                    *hm = m.flatten_all()?.to_vec1::<f32>()?;
                    *hv = v.flatten_all()?.to_vec1::<f32>()?;
                }
                State::Device(dm, dv) => {
                    *dm = m.to_device(var.device())?;
                    *dv = v.to_device(var.device())?;
                }
            }
        }
        self.step = steps;
        Ok(())
    }

    pub fn steps(&self) -> u64 {
        self.step
    }

    /// One update of every parameter that has a gradient.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let h = self.hyper;
        let t = self.step as i32;
        let coef = Coefficients {
            kind: h.kind,
            lr: lr as f32,
            momentum: h.momentum as f32,
            weight_decay: h.weight_decay as f32,
            beta1: h.beta1 as f32,
            beta2: h.beta2 as f32,
            eps: h.eps as f32,
            bias1: (1.0 - h.beta1.powi(t)) as f32,
            bias2: (1.0 - h.beta2.powi(t)) as f32,
        };
        for ((var, state), &scale) in self.params.iter_mut().zip(&self.scales) {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let coef = Coefficients {
                lr: coef.lr * scale,
                ..coef
            };
            match state {
                State::Host(m, v) => {
                    let grad = grad.contiguous()?;
                    let op = FusedStep {
                        coef,
                        m: RefCell::new(m),
                        v: RefCell::new(v),
                    };
                    var.as_tensor().inplace_op2(&grad, &op)?;
                }
                State::Device(m, v) => tensor_step(var, grad, m, v, &coef)?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Coefficients {
    kind: OptimizerKind,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    /// 1 - beta^t, the bias corrections.
    bias1: f32,
    bias2: f32,
}

impl Coefficients {
    /// The update of one scalar; `m` and `v` are its moments.
    #[inline(always)]
    fn apply(&self, p: &mut f32, g: f32, m: &mut f32, v: &mut f32) {
        match self.kind {
            OptimizerKind::Sgd => {
                let g = g + self.weight_decay * *p;
                *m = self.momentum * *m + g;
                *p -= self.lr * *m;
            }
            OptimizerKind::Adam | OptimizerKind::Adamw => {
                let g = if self.kind == OptimizerKind::Adam {
                    g + self.weight_decay * *p
                } else {
                    g
                };
                if self.kind == OptimizerKind::Adamw {
                    *p *= 1.0 - self.lr * self.weight_decay;
                }
                *m = self.beta1 * *m + (1.0 - self.beta1) * g;
                *v = self.beta2 * *v + (1.0 - self.beta2) * g * g;
                let denom = (*v / self.bias2).sqrt() + self.eps;
                *p -= self.lr / self.bias1 * *m / denom;
            }
        }
    }
}

struct FusedStep<'a> {
    coef: Coefficients,
    m: RefCell<&'a mut Vec<f32>>,
    v: RefCell<&'a mut Vec<f32>>,
}

impl InplaceOp2 for FusedStep<'_> {
    fn name(&self) -> &'static str {
        "fused-optimizer-step"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        crate::kernels::profile::timed(self.name(), || {
            let (CpuStorage::F32(p), CpuStorage::F32(g)) = (s1, s2) else {
                candle_core::bail!("fused optimizer step expects f32 parameters and gradients");
            };
            let (Some((p0, p1)), Some((g0, g1))) =
                (l1.contiguous_offsets(), l2.contiguous_offsets())
            else {
                candle_core::bail!("fused optimizer step expects contiguous tensors");
            };
            let (p, g) = (&mut p[p0..p1], &g[g0..g1]);
            let mut m = self.m.borrow_mut();
            let mut v = self.v.borrow_mut();
            let c = self.coef;
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                c.apply(p, g, m, v);
            }
            Ok(())
        })
    }
}

/// The same rule as [`Coefficients::apply`], as tensor ops (any device).
fn tensor_step(
    var: &Var,
    grad: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    c: &Coefficients,
) -> Result<()> {
    let p = var.as_tensor();
    let (lr, wd) = (c.lr as f64, c.weight_decay as f64);
    match c.kind {
        OptimizerKind::Sgd => {
            let g = (grad + (p * wd)?)?;
            *m = ((&*m * c.momentum as f64)? + g)?;
            var.set(&(p - (&*m * lr)?)?)
        }
        OptimizerKind::Adam | OptimizerKind::Adamw => {
            let g = if c.kind == OptimizerKind::Adam {
                (grad + (p * wd)?)?
            } else {
                grad.clone()
            };
            let p = if c.kind == OptimizerKind::Adamw {
                (p * (1.0 - lr * wd))?
            } else {
                p.clone()
            };
            let (b1, b2) = (c.beta1 as f64, c.beta2 as f64);
            *m = ((&*m * b1)? + (&g * (1.0 - b1))?)?;
            *v = ((&*v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let denom = ((&*v / c.bias2 as f64)?.sqrt()? + c.eps as f64)?;
            let update = ((&*m * (lr / c.bias1 as f64))? / denom)?;
            var.set(&(p - update)?)
        }
    }
}
