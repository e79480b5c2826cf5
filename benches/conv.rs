//! Dense convolution: the GEMM kernel (`fer_lab::kernels::conv2d`) against
//! candle's own `conv2d`, same run, same inputs, on ResNet-18-at-48x48 layer
//! shapes at batch 8 and a 192->192 3x3 layer on 24x24.
//!
//! `cargo bench --bench conv [NAME-FILTER]`; `RAYON_NUM_THREADS` sizes the
//! pool (default 2), `CONV_BENCH_ITERS` the timed iterations (default 10,
//! after 3 warm-ups). Backward is the loss `y * r` seeded with ones, i.e.
//! dY = r (as `y.backward(r)` in bench/conv_torch.py, plus one multiply).
//! The stem's input is an image batch (no gradient), as in training.
//!
//! candle's element-wise ops run on its own spinning "barrier pool"
//! (`CANDLE_NUM_THREADS` threads counting the caller; default
//! `RAYON_NUM_THREADS` or the core count) next to rayon's pool;
//! on 2 cores the two pools compete and inflate the backward times of both
//! implementations (the loss multiply and gradient sums are candle ops).
//! `CANDLE_NUM_THREADS=1` keeps candle's ops on the calling thread.

use candle_core::{Device, Result, Tensor, Var};
use fer_lab::kernels::{conv2d, reference_conv2d};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

struct Case {
    name: &'static str,
    n: usize,
    cin: usize,
    cout: usize,
    hw: usize,
    k: usize,
    stride: usize,
    pad: usize,
    input_grad: bool,
}

/// Batch size of every case.
const BATCH: usize = 8;

/// name, cin, cout, h (= w), k, stride, pad, input needs a gradient.
type Row = (&'static str, usize, usize, usize, usize, usize, usize, bool);

const CASES: [Row; 8] = [
    ("stem 3->64 7x7/2 @48", 3, 64, 48, 7, 2, 3, false),
    ("64->64 3x3 @12", 64, 64, 12, 3, 1, 1, true),
    ("64->128 3x3/2 @12", 64, 128, 12, 3, 2, 1, true),
    ("128->128 3x3 @6", 128, 128, 6, 3, 1, 1, true),
    ("256->256 3x3 @3", 256, 256, 3, 3, 1, 1, true),
    ("512->512 3x3 @2", 512, 512, 2, 3, 1, 1, true),
    ("down 64->128 1x1/2 @12", 64, 128, 12, 1, 2, 0, true),
    ("192->192 3x3 @24", 192, 192, 24, 3, 1, 1, true),
];

type Conv = fn(&Tensor, &Tensor, usize, [usize; 4]) -> Result<Tensor>;

fn candle_conv(x: &Tensor, w: &Tensor, stride: usize, pads: [usize; 4]) -> Result<Tensor> {
    reference_conv2d(x, w, stride, pads, 1)
}

fn random(rng: &mut ChaCha8Rng, shape: &[usize]) -> Result<Tensor> {
    let n = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(data, shape, &Device::Cpu)
}

/// (median, min, max) in milliseconds.
fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (median, v[0], v[v.len() - 1])
}

/// The inputs of one case: x (a variable unless it is the stem's image
/// batch), w (a variable) and the output gradient r.
struct Inputs {
    x: Tensor,
    w: Var,
    r: Tensor,
}

fn inputs(c: &Case) -> Result<Inputs> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = random(&mut rng, &[c.n, c.cin, c.hw, c.hw])?;
    let x = if c.input_grad {
        Var::from_tensor(&x)?.as_tensor().clone()
    } else {
        x
    };
    let w = Var::from_tensor(&random(&mut rng, &[c.cout, c.cin, c.k, c.k])?)?;
    let ho = (c.hw + 2 * c.pad - c.k) / c.stride + 1;
    let r = random(&mut rng, &[c.n, c.cout, ho, ho])?;
    Ok(Inputs { x, w, r })
}

/// One forward and backward of `conv`: (fwd, bwd, fwd+bwd) in ms.
fn once(conv: Conv, c: &Case, i: &Inputs) -> Result<[f64; 3]> {
    let t0 = Instant::now();
    let y = conv(&i.x, i.w.as_tensor(), c.stride, [c.pad; 4])?;
    let t1 = Instant::now();
    let grads = (&y * &i.r)?.backward()?;
    let t2 = Instant::now();
    if grads.get(i.w.as_tensor()).is_none() || (c.input_grad && grads.get(&i.x).is_none()) {
        candle_core::bail!("{}: a gradient is missing", c.name);
    }
    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
    Ok([ms(t0, t1), ms(t1, t2), ms(t0, t2)])
}

fn main() -> Result<()> {
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(candle_core::Error::wrap)?;
    let iters = std::env::var("CONV_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10usize)
        .max(1);
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    println!(
        "rayon threads: {}, CANDLE_NUM_THREADS: {}, iterations: {iters} (+3 warm-up), \
         times in ms: median [min-max]",
        rayon::current_num_threads(),
        std::env::var("CANDLE_NUM_THREADS").unwrap_or_else(|_| "unset".into())
    );
    let cases = CASES.map(|(name, cin, cout, hw, k, stride, pad, input_grad)| Case {
        name,
        n: BATCH,
        cin,
        cout,
        hw,
        k,
        stride,
        pad,
        input_grad,
    });
    let selected = cases
        .iter()
        .filter(|c| filter.is_empty() || filter.iter().any(|f| c.name.contains(f.as_str())));
    for c in selected {
        let ho = (c.hw + 2 * c.pad - c.k) / c.stride + 1;
        let gflop = 2.0 * (c.n * c.cout * ho * ho * c.cin * c.k * c.k) as f64 / 1e9;
        let bwd_gflop = gflop * if c.input_grad { 2.0 } else { 1.0 };
        println!(
            "\n{}: x {}x{}x{}x{}, w {}x{}x{}x{}, stride {}, pad {} -> {}x{}, fwd {:.3} GFLOP, bwd {:.3} GFLOP{}",
            c.name,
            c.n,
            c.cin,
            c.hw,
            c.hw,
            c.cout,
            c.cin,
            c.k,
            c.k,
            c.stride,
            c.pad,
            ho,
            ho,
            gflop,
            bwd_gflop,
            if c.input_grad {
                ""
            } else {
                " (no input gradient)"
            }
        );
        // Ours and candle's alternate, so both see the same machine load.
        let inp = inputs(c)?;
        let (mut ours, mut theirs) = ([vec![], vec![], vec![]], [vec![], vec![], vec![]]);
        for it in 0..3 + iters {
            let a = once(conv2d, c, &inp)?;
            let b = once(candle_conv, c, &inp)?;
            if it >= 3 {
                for j in 0..3 {
                    ours[j].push(a[j]);
                    theirs[j].push(b[j]);
                }
            }
        }
        let [ours, theirs] = [ours, theirs].map(|v| v.map(stats));
        for (i, what) in ["fwd", "bwd", "fwd+bwd"].iter().enumerate() {
            let flop = [gflop, bwd_gflop, gflop + bwd_gflop][i];
            let (o, omin, omax) = ours[i];
            let (t, tmin, tmax) = theirs[i];
            println!(
                "  {what:8} ours {o:8.3} [{omin:.3}-{omax:.3}] {:6.1} GFLOP/s | candle {t:8.3} [{tmin:.3}-{tmax:.3}] {:6.1} GFLOP/s | candle/ours {:5.2}x",
                flop / o * 1e3,
                flop / t * 1e3,
                t / o
            );
        }
    }
    Ok(())
}
