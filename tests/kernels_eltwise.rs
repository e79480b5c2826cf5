//! relu(a + b) against candle's plain ops (add, then ReLU) on seeded random
//! inputs: output and both gradients; then the rule the plain ops differ on:
//! at a + b == 0 PyTorch's gradient is 0 (candle's ReLU passes it).

use candle_core::{Device, Tensor, Var};
use fer_lab::kernels::eltwise::{add_relu, bias_act};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// The output and the ramp-weighted loss's gradients of `a` and `b`.
fn grads(y: &Tensor, a: &Var, b: &Var) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (_, ga) = common::ramp_weighted_grad(y, a);
    let (_, gb) = common::ramp_weighted_grad(y, b);
    (y.flatten_all().unwrap().to_vec1().unwrap(), ga, gb)
}

#[test]
fn matches_plain_ops_on_random_inputs() {
    let shapes: [&[usize]; 4] = [&[2, 3, 5, 5], &[8, 64, 12, 12], &[1, 7], &[3, 40000]];
    for (seed, shape) in shapes.into_iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(seed as u64);
        let a = Var::from_tensor(&random(&mut rng, shape)).unwrap();
        let b = Var::from_tensor(&random(&mut rng, shape)).unwrap();
        let fast = grads(&add_relu(a.as_tensor(), b.as_tensor()).unwrap(), &a, &b);
        let plain = grads(
            &(a.as_tensor() + b.as_tensor()).unwrap().relu().unwrap(),
            &a,
            &b,
        );
        assert_eq!(fast, plain, "shape {shape:?}");
        // Both halves of the ReLU are exercised.
        assert!(fast.0.contains(&0.0) && fast.0.iter().any(|&v| v > 0.0));
    }
}

#[test]
fn gradient_at_zero_is_zero_as_in_pytorch() {
    let a = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0, 0.5], &Device::Cpu).unwrap()).unwrap();
    let b = Var::from_tensor(&Tensor::new(&[-1.0f32, 1.0, 0.5], &Device::Cpu).unwrap()).unwrap();
    let y = add_relu(a.as_tensor(), b.as_tensor()).unwrap();
    let (yv, ga, gb) = grads(&y, &a, &b);
    assert_eq!(yv, vec![0.0, 0.0, 1.0]);
    assert_eq!(ga, vec![0.0, 0.0, 3.0]);
    assert_eq!(gb, ga);
}

/// act(x + b[c]) against broadcast_add (+ relu): output, dx and db, with
/// and without the ReLU, on shapes with one and many pixels per plane.
#[test]
fn bias_act_matches_plain_ops() {
    let shapes: [[usize; 4]; 4] = [[2, 3, 5, 5], [8, 64, 12, 12], [1, 7, 1, 1], [3, 4, 40, 33]];
    for (seed, shape) in shapes.into_iter().enumerate() {
        for relu in [false, true] {
            let mut rng = ChaCha8Rng::seed_from_u64(100 + seed as u64);
            let x = Var::from_tensor(&random(&mut rng, &shape)).unwrap();
            let b = Var::from_tensor(&random(&mut rng, &[shape[1]])).unwrap();
            let fast = bias_act(x.as_tensor(), b.as_tensor(), relu).unwrap();
            let plain = x
                .as_tensor()
                .broadcast_add(&b.as_tensor().reshape((1, shape[1], 1, 1)).unwrap())
                .unwrap();
            let plain = if relu { plain.relu().unwrap() } else { plain };
            let (yf, gxf, gbf) = grads(&fast, &x, &b);
            let (yp, gxp, gbp) = grads(&plain, &x, &b);
            let case = format!("shape {shape:?} relu {relu}");
            assert_eq!(yf, yp, "{case}");
            assert_eq!(gxf, gxp, "{case}");
            for (u, v) in gbf.iter().zip(&gbp) {
                assert!(
                    (u - v).abs() <= 1e-4 * v.abs().max(1.0),
                    "{case}: db {u} vs {v}"
                );
            }
        }
    }
}

mod common;
