//! The max-pool kernel against a max-pool built from candle's plain ops
//! (padding of -1e30 by concatenation, each window tap picked with
//! `index_select`, reduced with `maximum`): output and input gradient, on
//! seeded random inputs (distinct values, so the plain ops' tie-splitting
//! never applies) of several shapes, kernels, strides and paddings. Then
//! PyTorch's rules the plain ops cannot show: ties go to the first maximum
//! in row-major order, and padding never wins.

use candle_core::{Device, Tensor, Var};
use fer_lab::kernels::pool::max_pool2d;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// A (n, c, h, w) tensor holding a random permutation of distinct values.
fn distinct(seed: u64, shape: [usize; 4]) -> Tensor {
    let len: usize = shape.iter().product();
    let mut v: Vec<f32> = (0..len).map(|i| i as f32 * 0.37 - 11.0).collect();
    v.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    Tensor::from_vec(v, &shape, &Device::Cpu).unwrap()
}

fn plain_max_pool(x: &Tensor, k: usize, s: usize, pad: usize) -> Tensor {
    let (n, c, h, w) = x.dims4().unwrap();
    let x = if pad > 0 {
        let rows = Tensor::full(-1e30f32, (n, c, pad, w), x.device()).unwrap();
        let x = Tensor::cat(&[&rows, x, &rows], 2).unwrap();
        let cols = Tensor::full(-1e30f32, (n, c, h + 2 * pad, pad), x.device()).unwrap();
        Tensor::cat(&[&cols, &x, &cols], 3).unwrap()
    } else {
        x.clone()
    };
    let (ho, wo) = ((h + 2 * pad - k) / s + 1, (w + 2 * pad - k) / s + 1);
    let mut out: Option<Tensor> = None;
    for ki in 0..k {
        for kj in 0..k {
            let r: Vec<u32> = (0..ho).map(|o| (o * s + ki) as u32).collect();
            let q: Vec<u32> = (0..wo).map(|o| (o * s + kj) as u32).collect();
            let r = Tensor::new(r.as_slice(), x.device()).unwrap();
            let q = Tensor::new(q.as_slice(), x.device()).unwrap();
            let tap = x.index_select(&r, 2).unwrap().index_select(&q, 3).unwrap();
            out = Some(match out {
                None => tap,
                Some(m) => m.maximum(&tap).unwrap(),
            });
        }
    }
    out.unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn matches_plain_ops_forward_and_backward() {
    let shapes = [
        [1, 1, 5, 5],
        [3, 4, 12, 12],
        [2, 3, 7, 9],
        [2, 5, 24, 24],
        [1, 2, 2, 3],
    ];
    let configs = [
        (3, 2, 1),
        (2, 2, 0),
        (3, 1, 1),
        (3, 2, 0),
        (2, 1, 0),
        (2, 2, 1),
    ];
    let mut checked = 0;
    for (si, shape) in shapes.iter().enumerate() {
        for &(k, s, pad) in &configs {
            if shape[2] + 2 * pad < k || shape[3] + 2 * pad < k {
                continue;
            }
            let x = Var::from_tensor(&distinct(si as u64, *shape)).unwrap();
            let y = max_pool2d(x.as_tensor(), k, s, pad).unwrap();
            let yr = plain_max_pool(x.as_tensor(), k, s, pad);
            let case = format!("shape {shape:?} k{k} s{s} p{pad}");
            assert_eq!(y.dims(), yr.dims(), "{case}");
            assert_eq!(values(&y), values(&yr), "forward, {case}");
            let (_, g) = common::ramp_weighted_grad(&y, &x);
            let (_, gr) = common::ramp_weighted_grad(&yr, &x);
            assert_eq!(g, gr, "input gradient, {case}");
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} cases ran");
}

#[test]
fn ties_route_to_the_first_maximum_and_padding_never_wins() {
    // All-zero input: every window ties; PyTorch sends each output's
    // gradient to the window's first element in row-major order. With
    // padding 1 the first element inside the image, not the padding.
    let x = Var::from_tensor(
        &Tensor::zeros((1, 1, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap(),
    )
    .unwrap();
    let y = max_pool2d(x.as_tensor(), 2, 2, 0).unwrap();
    assert_eq!(values(&y), vec![0.0; 4]);
    let (_, g) = common::ramp_weighted_grad(&y, &x);
    #[rustfmt::skip]
    let want = vec![
        1.0, 0.0, 2.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
        3.0, 0.0, 4.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
    ];
    assert_eq!(g, want);

    // Negative inputs with padding 1: the -inf padding never wins, so the
    // corner output is the corner input, not 0.
    let neg = (Tensor::ones((1, 1, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap() * -5.0)
        .unwrap();
    let x = Var::from_tensor(&neg).unwrap();
    let y = max_pool2d(x.as_tensor(), 3, 2, 1).unwrap();
    assert_eq!(values(&y), vec![-5.0; 4]);
    let (_, g) = common::ramp_weighted_grad(&y, &x);
    // Windows start at input (0,0), (0,1), (1,0), (1,1): each is the first
    // inside element of its window.
    assert_eq!(g, vec![1.0, 2.0, 0.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn bad_geometry_is_an_error_naming_it() {
    let x = Tensor::zeros((1, 1, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    let e = max_pool2d(&x, 2, 2, 2).unwrap_err().to_string();
    assert!(
        e.contains("padding 2 is more than half the kernel 2"),
        "{e}"
    );
    let e = max_pool2d(&x, 7, 1, 1).unwrap_err().to_string();
    assert!(e.contains("does not fit"), "{e}");
    let e = max_pool2d(&x, 2, 0, 0).unwrap_err().to_string();
    assert!(e.contains("stride must be >= 1"), "{e}");
}

mod common;
