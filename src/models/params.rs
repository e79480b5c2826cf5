//! A seeded, path-prefixed parameter builder: the trainable counterpart of
//! candle's `VarBuilder`. Names are the module path (`layer1.0.conv1.weight`),
//! as torchvision spells them, so state dicts line up.
//!
//! candle's CPU random generator cannot be seeded, so initial values are
//! drawn here from a ChaCha stream: the same seed gives the same network.

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::sync::{Arc, Mutex};

/// How a fresh parameter is filled.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    Const(f32),
    /// Gaussian with mean 0 and this standard deviation.
    Normal(f32),
    /// Uniform in [-bound, bound].
    Uniform(f32),
}

/// Every parameter and buffer of one model, in creation order.
pub struct ParamStore {
    varmap: VarMap,
    device: Device,
    rng: Mutex<ChaCha8Rng>,
    seed: u64,
    /// Dropout / stochastic-depth masks: a separate stream, reseeded from
    /// (seed, epoch) at every epoch so a resumed run draws the same masks.
    noise: Mutex<ChaCha8Rng>,
    /// (name, variable) of trainable parameters, in creation order.
    trainable: Mutex<Vec<(String, Var)>>,
}

impl ParamStore {
    pub fn new(seed: u64, device: &Device) -> Arc<Self> {
        Arc::new(Self {
            varmap: VarMap::new(),
            device: device.clone(),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            seed,
            noise: Mutex::new(ChaCha8Rng::seed_from_u64(seed ^ 0x6e6f_6973_6500)),
            trainable: Mutex::new(Vec::new()),
        })
    }

    pub fn root(self: &Arc<Self>) -> ParamBuilder {
        ParamBuilder {
            store: Arc::clone(self),
            prefix: String::new(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Restarts the noise stream for `epoch` (called by the training loop
    /// at the start of every epoch).
    pub fn reseed_noise(&self, epoch: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x6e6f_6973_6500);
        rng.set_stream(epoch + 1);
        *self.noise.lock().expect("noise lock") = rng;
    }

    /// `n` uniform draws in [0, 1) from the noise stream.
    pub fn noise_uniform(&self, n: usize) -> Vec<f32> {
        let mut rng = self.noise.lock().expect("noise lock");
        (0..n).map(|_| rng.random::<f32>()).collect()
    }

    /// Trainable parameters in creation order (a stable order for optimisers).
    pub fn trainable(&self) -> Vec<(String, Var)> {
        self.trainable.lock().expect("param lock").clone()
    }

    /// Number of trainable scalars.
    pub fn count(&self) -> usize {
        self.trainable().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Every parameter and buffer by name, sorted by name.
    pub fn named(&self) -> Vec<(String, Var)> {
        let mut all: Vec<(String, Var)> = self
            .varmap
            .data()
            .lock()
            .expect("varmap lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Every parameter and buffer, for checkpoints and parity tests.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn create(&self, name: String, shape: &[usize], init: Init, trainable: bool) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = {
            let mut rng = self.rng.lock().expect("rng lock");
            match init {
                Init::Const(c) => vec![c; n],
                Init::Normal(std) => {
                    let dist = Normal::new(0.0f32, std)
                        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                    (0..n).map(|_| dist.sample(&mut *rng)).collect()
                }
                Init::Uniform(b) => (0..n).map(|_| rng.random_range(-b..=b)).collect(),
            }
        };
        let var = Var::from_tensor(
            &Tensor::from_vec(values, shape, &self.device)?.to_dtype(DType::F32)?,
        )?;
        let mut map = self.varmap.data().lock().expect("varmap lock");
        if map.contains_key(&name) {
            candle_core::bail!("parameter {name} is created twice");
        }
        map.insert(name.clone(), var.clone());
        if trainable {
            self.trainable
                .lock()
                .expect("param lock")
                .push((name, var.clone()));
        }
        Ok(var.as_tensor().clone())
    }
}

/// A view of a [`ParamStore`] under a name prefix.
#[derive(Clone)]
pub struct ParamBuilder {
    store: Arc<ParamStore>,
    prefix: String,
}

impl ParamBuilder {
    /// The builder one level down: `pp("layer1").pp(0)` names `layer1.0.*`.
    pub fn pp(&self, name: impl ToString) -> Self {
        let name = name.to_string();
        let prefix = if self.prefix.is_empty() {
            name
        } else {
            format!("{}.{name}", self.prefix)
        };
        Self {
            store: Arc::clone(&self.store),
            prefix,
        }
    }

    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// A trainable parameter.
    pub fn param(&self, shape: &[usize], name: &str, init: Init) -> Result<Tensor> {
        self.store.create(self.full(name), shape, init, true)
    }

    /// A buffer: saved with the model, never given to an optimiser.
    pub fn buffer(&self, shape: &[usize], name: &str, init: Init) -> Result<Tensor> {
        self.store.create(self.full(name), shape, init, false)
    }

    pub fn device(&self) -> &Device {
        self.store.device()
    }

    /// The store behind this builder (for layers that draw noise).
    pub fn store(&self) -> Arc<ParamStore> {
        Arc::clone(&self.store)
    }
}
