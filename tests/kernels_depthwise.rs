//! The fast depthwise convolution against candle's grouped convolution
//! (`reference_conv2d` with groups = C) on seeded random inputs: output,
//! gradient wrt the input and gradient wrt the weight.

use candle_core::{DType, Device, Tensor, Var};
use fer_lab::kernels::{depthwise_conv2d, reference_conv2d};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A tensor of standard-normal values from a ChaCha stream.
fn randn(rng: &mut ChaCha8Rng, dims: &[usize]) -> Tensor {
    let n = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

/// max |a - b| / max |b| (b the reference), after checking the shapes agree.
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

/// y, dL/dx and dL/dw for L = sum(y * r), by `conv`.
fn run(
    conv: impl Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
    x: &Tensor,
    w: &Tensor,
    r: &Tensor,
) -> (Tensor, Tensor, Tensor) {
    let xv = Var::from_tensor(x).unwrap();
    let wv = Var::from_tensor(w).unwrap();
    let y = conv(xv.as_tensor(), wv.as_tensor()).unwrap();
    let grads = (&y * r).unwrap().sum_all().unwrap().backward().unwrap();
    let gx = grads
        .get(xv.as_tensor())
        .expect("no gradient for x")
        .clone();
    let gw = grads
        .get(wv.as_tensor())
        .expect("no gradient for w")
        .clone();
    (y, gx, gw)
}

const TOL: f32 = 1e-4;

/// `reference_conv2d` (groups = C) on the part of x the output reads.
///
/// candle 0.11's conv2d backward takes the transposed convolution's
/// output padding from the height alone, so when a stride > 1 drops a
/// different number of trailing rows than columns (e.g. 8x9, stride 2) the
/// input gradient comes out the wrong width and the backward fails. Cutting
/// those dropped rows and columns (and the bottom/right padding past them)
/// leaves the output unchanged and the gradient of the cut cells zero,
/// which is what the fast kernel must produce for them.
fn reference(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    pads: [usize; 4],
) -> candle_core::Result<Tensor> {
    let (_, c, h, wd) = x.dims4()?;
    let k = w.dim(2)?;
    let [top, bottom, left, right] = pads;
    // (input kept, padding kept after it) along one axis.
    let fit = |n: usize, before: usize, after: usize| {
        let used = (n + before + after - k) / stride * stride + k - before;
        let keep = n.min(used);
        (keep, used - keep)
    };
    let (hk, bottom) = fit(h, top, bottom);
    let (wk, right) = fit(wd, left, right);
    let x = x.narrow(2, 0, hk)?.narrow(3, 0, wk)?;
    reference_conv2d(&x, w, stride, [top, bottom, left, right], c)
}

/// One case: the fast kernel and the reference agree on y, dx and dw.
fn check(rng: &mut ChaCha8Rng, dims: [usize; 4], k: usize, stride: usize, pads: [usize; 4]) {
    let [n, c, h, w] = dims;
    let x = randn(rng, &[n, c, h, w]);
    let wt = randn(rng, &[c, 1, k, k]);
    let y_full = reference_conv2d(&x, &wt, stride, pads, c).unwrap();
    let r = randn(rng, y_full.dims());
    let (y_ref, gx_ref, gw_ref) = run(|x, w| reference(x, w, stride, pads), &x, &wt, &r);
    let e = rel_err(&y_ref, &y_full);
    assert!(e < TOL, "reference on the cut input differs by {e}");
    let (y, gx, gw) = run(|x, w| depthwise_conv2d(x, w, stride, pads), &x, &wt, &r);
    let case = format!("x {dims:?} k {k} stride {stride} pads {pads:?}");
    let e = rel_err(&y, &y_ref);
    assert!(e < TOL, "{case}: output differs by {e}");
    let e = rel_err(&gx, &gx_ref);
    assert!(e < TOL, "{case}: grad x differs by {e}");
    let e = rel_err(&gw, &gw_ref);
    assert!(e < TOL, "{case}: grad w differs by {e}");
}

/// Every kernel size, stride and padding, each over several shapes: odd
/// and even, non-square, batch 1 and 3, 1 / 5 / 32 channels.
#[test]
fn matches_grouped_conv_forward_and_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let shapes = [
        [1, 1, 7, 7],
        [3, 5, 8, 9],
        [1, 32, 10, 10],
        [3, 32, 9, 12],
        [3, 1, 11, 8],
    ];
    let pads = [
        [0, 0, 0, 0],
        [1, 1, 1, 1],
        [2, 2, 2, 2],
        [0, 1, 0, 1],
        [1, 2, 1, 2],
    ];
    let mut cases = 0;
    for k in [3, 5] {
        for stride in [1, 2] {
            for p in pads {
                for dims in shapes {
                    check(&mut rng, dims, k, stride, p);
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 100);
}

/// Paddings wider than the kernel reach, a stride that drops the last
/// rows and columns, a stride wider than the kernel, a 1-wide input, a
/// kernel as big as the input and kernel sizes other than 3 and 5.
#[test]
fn matches_grouped_conv_at_the_edges() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    check(&mut rng, [2, 3, 6, 6], 3, 1, [3, 0, 0, 3]);
    check(&mut rng, [2, 3, 8, 8], 3, 3, [0, 0, 0, 0]);
    check(&mut rng, [1, 4, 9, 1], 3, 2, [1, 1, 1, 1]);
    check(&mut rng, [2, 2, 5, 5], 5, 1, [0, 0, 0, 0]);
    check(&mut rng, [2, 2, 7, 10], 3, 2, [0, 1, 2, 0]);
    check(&mut rng, [2, 3, 9, 9], 2, 3, [0, 1, 0, 1]);
    check(&mut rng, [2, 3, 9, 9], 2, 1, [0, 1, 0, 1]);
    check(&mut rng, [1, 2, 12, 11], 7, 2, [3, 3, 3, 3]);
    check(&mut rng, [3, 2, 6, 5], 1, 2, [0, 0, 0, 0]);
}

/// The EfficientNet sizes the kernel exists for (stride 1 and TF-same stride 2).
#[test]
fn matches_grouped_conv_on_efficientnet_sizes() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    check(&mut rng, [2, 48, 24, 24], 3, 1, [1, 1, 1, 1]);
    check(&mut rng, [2, 48, 24, 24], 3, 2, [0, 1, 0, 1]);
    check(&mut rng, [2, 48, 24, 24], 5, 2, [1, 2, 1, 2]);
}

/// A non-contiguous input (a transposed view) gives the same output as its
/// contiguous copy.
#[test]
fn non_contiguous_input() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let xt = randn(&mut rng, &[2, 4, 9, 8]).transpose(2, 3).unwrap();
    assert!(!xt.is_contiguous());
    let w = randn(&mut rng, &[4, 1, 3, 3]);
    let y = depthwise_conv2d(&xt, &w, 2, [1, 1, 1, 1]).unwrap();
    let y_ref = reference_conv2d(&xt.contiguous().unwrap(), &w, 2, [1, 1, 1, 1], 4).unwrap();
    let e = rel_err(&y, &y_ref);
    assert!(e < TOL, "non-contiguous input: output differs by {e}");
}

/// Only the weight is trained (a frozen input): its gradient is still right
/// and the input gets none.
#[test]
fn gradient_for_weight_only() {
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    let x = randn(&mut rng, &[3, 6, 10, 10]);
    let w = randn(&mut rng, &[6, 1, 3, 3]);
    let r = randn(&mut rng, &[3, 6, 5, 5]);
    let wv = Var::from_tensor(&w).unwrap();
    let y = depthwise_conv2d(&x, wv.as_tensor(), 2, [0, 1, 0, 1]).unwrap();
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none());
    let (_, _, gw_ref) = run(|x, w| reference(x, w, 2, [0, 1, 0, 1]), &x, &w, &r);
    let e = rel_err(grads.get(wv.as_tensor()).unwrap(), &gw_ref);
    assert!(e < TOL, "weight-only: grad w differs by {e}");
}

/// f64 takes candle's path and still computes the depthwise convolution.
#[test]
fn other_dtypes_fall_back() {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let x = randn(&mut rng, &[2, 3, 7, 7]);
    let w = randn(&mut rng, &[3, 1, 3, 3]);
    let y = depthwise_conv2d(&x, &w, 1, [1, 1, 1, 1]).unwrap();
    let y64 = depthwise_conv2d(
        &x.to_dtype(DType::F64).unwrap(),
        &w.to_dtype(DType::F64).unwrap(),
        1,
        [1, 1, 1, 1],
    )
    .unwrap();
    assert_eq!(y64.dtype(), DType::F64);
    let e = rel_err(&y, &y64.to_dtype(DType::F32).unwrap());
    assert!(e < TOL, "f64 fallback differs by {e}");
}

/// Wrong shapes are errors that name the weight, the stride or the sizes.
#[test]
fn bad_shapes_are_errors() {
    let x = Tensor::zeros((1, 4, 6, 6), DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::zeros((3, 1, 3, 3), DType::F32, &Device::Cpu).unwrap();
    let e = depthwise_conv2d(&x, &w, 1, [1; 4]).unwrap_err().to_string();
    assert!(e.contains("weight"), "{e}");
    let w = Tensor::zeros((4, 1, 3, 3), DType::F32, &Device::Cpu).unwrap();
    let e = depthwise_conv2d(&x, &w, 0, [1; 4]).unwrap_err().to_string();
    assert!(e.contains("stride"), "{e}");
    let w = Tensor::zeros((4, 1, 7, 7), DType::F32, &Device::Cpu).unwrap();
    let e = depthwise_conv2d(&x, &w, 1, [0; 4]).unwrap_err().to_string();
    assert!(e.contains("smaller than the 7x7 kernel"), "{e}");
}
