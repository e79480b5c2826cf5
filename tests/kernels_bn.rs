//! The fused batch-norm (+ReLU) kernel against candle's plain ops: output,
//! the three gradients and the running statistics, in training and
//! evaluation, on seeded random inputs of several shapes.

use candle_core::{Device, Tensor, Var};
use fer_lab::kernels::{Act, BnParams, batchnorm};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(rng: &mut ChaCha8Rng, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
        / scale
}

struct Case {
    x: Var,
    gamma: Var,
    beta: Var,
    mean: Var,
    var: Var,
    r: Tensor,
}

impl Case {
    fn new(seed: u64, shape: [usize; 4]) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let c = shape[1];
        Self {
            x: Var::from_tensor(&random(&mut rng, &shape, -2.0, 3.0)).unwrap(),
            // Up to 4, so ReLU6's cap is reached.
            gamma: Var::from_tensor(&random(&mut rng, &[c], 0.5, 4.0)).unwrap(),
            beta: Var::from_tensor(&random(&mut rng, &[c], -0.5, 0.5)).unwrap(),
            mean: Var::from_tensor(&random(&mut rng, &[c], -0.2, 0.2)).unwrap(),
            var: Var::from_tensor(&random(&mut rng, &[c], 0.5, 1.5)).unwrap(),
            r: random(&mut rng, &shape, -1.0, 1.0),
        }
    }

    fn params(&self) -> BnParams<'_> {
        BnParams {
            weight: self.gamma.as_tensor(),
            bias: self.beta.as_tensor(),
            running_mean: &self.mean,
            running_var: &self.var,
            eps: 1e-5,
            momentum: 0.1,
        }
    }

    /// Output, grads of (x, gamma, beta), running mean and var after one call.
    fn run(
        &self,
        f: fn(&Tensor, &BnParams, Act) -> candle_core::Result<Tensor>,
        act: Act,
    ) -> Vec<Tensor> {
        let (m0, v0) = (
            self.mean.as_tensor().copy().unwrap(),
            self.var.as_tensor().copy().unwrap(),
        );
        let y = f(self.x.as_tensor(), &self.params(), act).unwrap();
        let loss = (&y * &self.r).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        let out = vec![
            y,
            g.get(self.x.as_tensor()).unwrap().clone(),
            g.get(self.gamma.as_tensor()).unwrap().clone(),
            g.get(self.beta.as_tensor()).unwrap().clone(),
            self.mean.as_tensor().copy().unwrap(),
            self.var.as_tensor().copy().unwrap(),
        ];
        self.mean.set(&m0).unwrap();
        self.var.set(&v0).unwrap();
        out
    }
}

#[test]
fn fused_batch_norm_matches_plain_ops() {
    let names = [
        "output",
        "grad x",
        "grad gamma",
        "grad beta",
        "running mean",
        "running var",
    ];
    let mut capped = 0;
    for (seed, shape) in [
        [2, 3, 5, 5],
        [1, 8, 4, 6],
        [4, 16, 3, 3],
        [3, 5, 1, 1],
        [8, 32, 12, 12],
    ]
    .into_iter()
    .enumerate()
    {
        let case = Case::new(seed as u64, shape);
        for act in [Act::Identity, Act::Relu, Act::Relu6, Act::Silu] {
            for train in [true, false] {
                let (a, b) = if train {
                    (
                        case.run(batchnorm::batch_norm_train, act),
                        case.run(batchnorm::reference_train, act),
                    )
                } else {
                    (
                        case.run(batchnorm::batch_norm_eval, act),
                        case.run(batchnorm::reference_eval, act),
                    )
                };
                if act == Act::Relu6 {
                    capped += a[0]
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                        .iter()
                        .filter(|&&v| v == 6.0)
                        .count();
                }
                for ((name, x), y) in names.iter().zip(&a).zip(&b) {
                    let e = max_rel(x, y);
                    assert!(
                        e < 1e-4,
                        "{name}, shape {shape:?}, {act:?}, train {train}: relative error {e}"
                    );
                }
            }
        }
    }
    assert!(
        capped > 0,
        "no output reached ReLU6's cap: the test misses it"
    );
}

#[test]
fn training_moves_running_stats_and_evaluation_does_not() {
    let case = Case::new(9, [4, 3, 4, 4]);
    let before = case.mean.as_tensor().to_vec1::<f32>().unwrap();
    batchnorm::batch_norm_eval(case.x.as_tensor(), &case.params(), Act::Identity).unwrap();
    assert_eq!(case.mean.as_tensor().to_vec1::<f32>().unwrap(), before);
    batchnorm::batch_norm_train(case.x.as_tensor(), &case.params(), Act::Identity).unwrap();
    assert_ne!(case.mean.as_tensor().to_vec1::<f32>().unwrap(), before);
}
