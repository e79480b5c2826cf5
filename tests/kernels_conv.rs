//! The GEMM convolution kernel against candle's own convolution
//! (`reference_conv2d`): forward, input gradient and weight gradient on
//! seeded random inputs over kernel sizes, strides, paddings (asymmetric
//! included), odd/even sizes, batch sizes and channel counts.
//!
//! candle 0.11.1's conv2d backward takes the width's output padding from the
//! height, so it fails when a stride-2 input's padded height and width
//! differ in parity (e.g. 10x7). Gradients are therefore also checked, on
//! every case, against a second reference built from plain differentiable
//! ops (pad, narrow, index_select, matmul: one matmul per kernel tap).

use candle_core::{Device, Result, Tensor, Var};
use fer_lab::kernels::{conv2d, pad4, reference_conv2d};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

/// Largest |a - b| relative to the largest |b| (the scale of the result).
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    let diff = a
        .iter()
        .zip(&b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

#[derive(Debug, Clone, Copy)]
struct Case {
    n: usize,
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pads: [usize; 4],
}

type Conv = fn(&Tensor, &Tensor, usize, [usize; 4]) -> Result<Tensor>;

fn reference(x: &Tensor, w: &Tensor, stride: usize, pads: [usize; 4]) -> Result<Tensor> {
    reference_conv2d(x, w, stride, pads, 1)
}

/// The convolution as a sum over kernel taps of `W[:, :, ki, kj] x` the
/// input shifted by (ki, kj) and subsampled by the stride.
fn taps(x: &Tensor, w: &Tensor, stride: usize, pads: [usize; 4]) -> Result<Tensor> {
    let (n, cin, _, _) = x.dims4()?;
    let (cout, _, k, _) = w.dims4()?;
    let xp = pad4(x, pads)?;
    let (_, _, hp, wp) = xp.dims4()?;
    let (ho, wo) = ((hp - k) / stride + 1, (wp - k) / stride + 1);
    let picks = |len: usize| {
        let idx: Vec<u32> = (0..len).map(|i| (i * stride) as u32).collect();
        Tensor::from_vec(idx, len, &Device::Cpu)
    };
    let (rows, cols) = (picks(ho)?, picks(wo)?);
    let mut y: Option<Tensor> = None;
    for ki in 0..k {
        for kj in 0..k {
            let patch = xp
                .narrow(2, ki, (ho - 1) * stride + 1)?
                .narrow(3, kj, (wo - 1) * stride + 1)?
                .contiguous()?
                .index_select(&rows, 2)?
                .contiguous()?
                .index_select(&cols, 3)?
                .reshape((n, cin, ho * wo))?;
            let tap = w.narrow(2, ki, 1)?.narrow(3, kj, 1)?.reshape((cout, cin))?;
            let term = tap.broadcast_matmul(&patch)?;
            y = Some(match y {
                Some(acc) => (acc + term)?,
                None => term,
            });
        }
    }
    y.expect("a kernel has taps").reshape((n, cout, ho, wo))
}

/// Whether candle's conv2d backward handles the case (see the header).
fn candle_backward_ok(c: &Case) -> bool {
    let [t, b, l, r] = c.pads;
    (c.h + t + b - c.k) % c.stride == (c.w + l + r - c.k) % c.stride
}

/// Output, grad x and grad w of `conv` under the loss sum(y * r).
fn run(conv: Conv, c: &Case, x: &Tensor, w: &Tensor, r: &Tensor) -> (Tensor, Tensor, Tensor) {
    let xv = Var::from_tensor(x).unwrap();
    let wv = Var::from_tensor(w).unwrap();
    let y = conv(xv.as_tensor(), wv.as_tensor(), c.stride, c.pads).unwrap();
    let loss = (&y * r).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let gx = grads.get(xv.as_tensor()).unwrap().clone();
    let gw = grads.get(wv.as_tensor()).unwrap().clone();
    (y, gx, gw)
}

fn check(c: Case, seed: u64) {
    assert!(
        fer_lab::kernels::fast(),
        "FER_LAB_PLAIN_KERNELS=1 turns the kernel under test into the reference: unset it"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = random(&mut rng, &[c.n, c.cin, c.h, c.w]);
    let w = random(&mut rng, &[c.cout, c.cin, c.k, c.k]);
    let [t, b, l, rt] = c.pads;
    let ho = (c.h + t + b - c.k) / c.stride + 1;
    let wo = (c.w + l + rt - c.k) / c.stride + 1;
    let r = random(&mut rng, &[c.n, c.cout, ho, wo]);
    let (y, gx, gw) = run(conv2d, &c, &x, &w, &r);
    assert_eq!(y.dims(), &[c.n, c.cout, ho, wo], "{c:?}");
    let close = |what: &str, a: &Tensor, b: &Tensor| {
        let e = rel_err(a, b);
        assert!(e < 1e-4, "{what} off by {e} (relative) for {c:?}");
    };
    let y_ref = reference(&x, &w, c.stride, c.pads).unwrap();
    close("y vs candle", &y, &y_ref);
    if candle_backward_ok(&c) {
        let (_, gx_ref, gw_ref) = run(reference, &c, &x, &w, &r);
        close("grad x vs candle", &gx, &gx_ref);
        close("grad w vs candle", &gw, &gw_ref);
    }
    let (y_taps, gx_taps, gw_taps) = run(taps, &c, &x, &w, &r);
    close("y vs taps", &y, &y_taps);
    close("grad x vs taps", &gx, &gx_taps);
    close("grad w vs taps", &gw, &gw_taps);
}

/// (n, cin, cout, h, w, k, stride, pads) of one case.
type Dims = (usize, usize, usize, usize, usize, usize, usize, [usize; 4]);

/// Checks each case, case i with seed `seed0 + i`.
fn check_all(cases: impl IntoIterator<Item = Dims>, seed0: u64) {
    for (i, (n, cin, cout, h, w, k, stride, pads)) in cases.into_iter().enumerate() {
        let c = Case {
            n,
            cin,
            cout,
            h,
            w,
            k,
            stride,
            pads,
        };
        check(c, seed0 + i as u64);
    }
}

#[test]
fn matches_reference_over_shapes() {
    let mut seed = 0;
    for (k, pads) in [
        (1, [0; 4]),
        (1, [1; 4]),
        (3, [1; 4]),
        (3, [0; 4]),
        (3, [0, 1, 0, 1]),
        (7, [3; 4]),
    ] {
        for stride in [1, 2] {
            for (n, cin, cout, h, w) in [(1, 1, 3, 9, 9), (3, 3, 8, 10, 7), (3, 17, 8, 8, 8)] {
                seed += 1;
                check(
                    Case {
                        n,
                        cin,
                        cout,
                        h,
                        w,
                        k,
                        stride,
                        pads,
                    },
                    seed,
                );
            }
        }
    }
}

/// Maps of at least 256 pixels go one image at a time (straight into the
/// output, no im2col for pointwise convs); the others batch images.
#[test]
fn matches_reference_on_large_maps() {
    let cases = [
        (3, 8, 17, 20, 18, 1, 1, [0; 4]),
        (3, 8, 17, 20, 18, 3, 1, [1; 4]),
        (3, 3, 8, 33, 34, 7, 2, [3; 4]),
        (1, 17, 8, 16, 17, 3, 1, [0, 1, 0, 1]),
    ];
    check_all(cases, 100);
}

/// Late-stage shapes: more output channels than batch pixels (the GEMM
/// output stays channel-major), and a pointwise conv on a small map (its
/// images batched through im2col).
#[test]
fn matches_reference_on_small_maps() {
    let cases = [
        (3, 8, 17, 4, 4, 3, 1, [0; 4]),
        (3, 8, 32, 4, 4, 3, 2, [1; 4]),
        (3, 17, 8, 5, 5, 1, 1, [0; 4]),
        (1, 3, 17, 2, 2, 3, 1, [1; 4]),
        // Narrow input gradients made from Wᵀ in blocks of 256 rows of
        // Cin·K·K: one full block and a partial one (360 rows), three (576).
        (4, 40, 24, 2, 2, 3, 1, [1; 4]),
        (2, 64, 16, 3, 3, 3, 2, [1; 4]),
        (3, 64, 33, 2, 2, 3, 1, [0, 1, 0, 1]),
        // Pointwise, Wᵀ in two blocks (300 input channels).
        (2, 300, 16, 3, 3, 1, 1, [0; 4]),
        // 1x1 maps with 1x1 outputs: only one tap sees the input.
        (4, 16, 8, 1, 1, 3, 1, [1; 4]),
        (2, 5, 3, 1, 1, 5, 1, [2; 4]),
        (3, 8, 4, 1, 1, 3, 1, [0, 2, 2, 0]),
    ];
    check_all(cases, 200);
}

/// Stride-1 convolutions whose output is as wide as the input move whole
/// shifted planes; asymmetric and unequal top/left pads exercise the
/// offsets, even kernels the "same" padding split.
#[test]
fn matches_reference_on_same_size_padding() {
    let cases = [
        (3, 3, 8, 6, 5, 2, [0, 1, 0, 1]),
        (3, 3, 8, 5, 6, 2, [1, 0, 1, 0]),
        (2, 8, 3, 7, 6, 3, [2, 0, 1, 1]),
        (2, 3, 4, 5, 9, 5, [0, 4, 2, 2]),
        (1, 3, 4, 3, 3, 7, [3; 4]),
    ];
    check_all(
        cases.map(|(n, cin, cout, h, w, k, pads)| (n, cin, cout, h, w, k, 1, pads)),
        300,
    );
}

/// A batch is split into chunks once its column matrix passes the bound
/// (2^23 floats): 17·9 rows × 200 pixels per image gives chunks of 274
/// images, so 300 images make a full and a partial chunk.
#[test]
fn matches_reference_across_chunks() {
    check(
        Case {
            n: 300,
            cin: 17,
            cout: 3,
            h: 10,
            w: 20,
            k: 3,
            stride: 1,
            pads: [1; 4],
        },
        7,
    );
}

#[test]
fn input_without_graph_gets_no_gradient() {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let x = random(&mut rng, &[2, 3, 6, 6]);
    let w = Var::from_tensor(&random(&mut rng, &[4, 3, 3, 3])).unwrap();
    let y = conv2d(&x, w.as_tensor(), 1, [1; 4]).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none(), "an image batch got a gradient");
    let gw = grads.get(w.as_tensor()).expect("weight gradient");
    assert!(
        gw.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    );

    let xv = Var::from_tensor(&x).unwrap();
    let y = conv2d(xv.as_tensor(), w.as_tensor(), 1, [1; 4]).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    let gx = grads
        .get(xv.as_tensor())
        .expect("a Var input gets a gradient");
    assert_eq!(gx.dims(), x.dims());
    assert!(
        gx.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    );
}

/// A non-contiguous input (a transposed view) is handled like its copy.
#[test]
fn non_contiguous_input() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let x = random(&mut rng, &[2, 3, 7, 5]).transpose(2, 3).unwrap();
    let w = random(&mut rng, &[4, 3, 3, 3]);
    let y = conv2d(&x, &w, 2, [1, 0, 1, 0]).unwrap();
    let y_ref = reference_conv2d(&x.contiguous().unwrap(), &w, 2, [1, 0, 1, 0], 1).unwrap();
    assert!(rel_err(&y, &y_ref) < 1e-4);
}

/// Other dtypes take candle's own convolution (the f32 kernel is CPU-only
/// and f32-only): an f64 input gives the f32 result to f32 precision.
#[test]
fn other_dtypes_fall_back() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let x = random(&mut rng, &[2, 3, 6, 5]);
    let w = random(&mut rng, &[4, 3, 3, 3]);
    let y = conv2d(&x, &w, 1, [1, 0, 1, 0]).unwrap();
    let x64 = x.to_dtype(candle_core::DType::F64).unwrap();
    let w64 = w.to_dtype(candle_core::DType::F64).unwrap();
    let y64 = conv2d(&x64, &w64, 1, [1, 0, 1, 0]).unwrap();
    assert_eq!(y64.dtype(), candle_core::DType::F64);
    let y64 = y64.to_dtype(candle_core::DType::F32).unwrap();
    assert!(rel_err(&y, &y64) < 1e-5);
}

#[test]
fn rejects_mismatched_shapes() {
    let x = Tensor::zeros((1, 3, 5, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::zeros((2, 4, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(conv2d(&x, &w, 1, [1; 4]).is_err());
    let w = Tensor::zeros((2, 3, 7, 7), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(conv2d(&x, &w, 1, [0; 4]).is_err());
    let w = Tensor::zeros((2, 3, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(conv2d(&x, &w, 0, [1; 4]).is_err());
    assert!(conv2d(&x, &w, 1, [1; 4]).is_ok());
}
