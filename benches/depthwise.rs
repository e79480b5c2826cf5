//! Depthwise 3x3 convolution, 8x192x24x24 (EfficientNet's size): the fast
//! kernel against candle's grouped convolution, forward and forward +
//! backward of L = sum(y * r), at stride 1 (pad 1) and stride 2 (TF-same
//! [0, 1, 0, 1] and pad 1). `cargo bench --bench depthwise`;
//! bench/depthwise_torch.py prints the same lines for PyTorch. The `loss`
//! line times the loss and its backward alone (on a leaf y), which is
//! candle's elementwise ops and gradient bookkeeping, not the convolution.
//!
//! Threads: `RAYON_NUM_THREADS` (default 2) sizes rayon's global pool.
//! Iterations: `DW_ITERS` timed (default 10, at least 10) after 3 warm-ups.

use candle_core::{Device, Result, Tensor, Var};
use fer_lab::kernels::{depthwise_conv2d, reference_conv2d};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::time::Instant;

const WARMUP: usize = 3;

fn randn(rng: &mut ChaCha8Rng, dims: &[usize]) -> Result<Tensor> {
    let n = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
    Tensor::from_vec(v, dims, &Device::Cpu)
}

/// (median, min, max) in ms of `iters` timed calls after the warm-ups.
fn time(iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64, f64)> {
    for _ in 0..WARMUP {
        f()?;
    }
    let mut ms = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        f()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms[iters / 2], ms[0], ms[iters - 1]))
}

fn line(case: &str, pass: &str, who: &str, (med, min, max): (f64, f64, f64)) {
    println!("{case:<14} {pass:<8} {who:<7} median {med:9.3} ms  min {min:9.3}  max {max:9.3}");
}

fn main() -> Result<()> {
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| candle_core::Error::Msg(format!("rayon pool of {threads}: {e}")))?;
    let iters = std::env::var("DW_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10usize)
        .max(10);
    let (n, c, h, k) = (8, 192, 24, 3);
    println!(
        "depthwise {k}x{k}, x {n}x{c}x{h}x{h}, w {c}x1x{k}x{k}, threads {}, {WARMUP} warm-ups + {iters} timed",
        rayon::current_num_threads()
    );
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let x = Var::from_tensor(&randn(&mut rng, &[n, c, h, h])?)?;
    let w = Var::from_tensor(&randn(&mut rng, &[c, 1, k, k])?)?;
    let cases: [(&str, usize, [usize; 4]); 3] = [
        ("s1 pad1", 1, [1, 1, 1, 1]),
        ("s2 tf-same", 2, [0, 1, 0, 1]),
        ("s2 pad1", 2, [1, 1, 1, 1]),
    ];
    for (case, stride, pads) in cases {
        let ours = |x: &Tensor, w: &Tensor| depthwise_conv2d(x, w, stride, pads);
        let candle = |x: &Tensor, w: &Tensor| reference_conv2d(x, w, stride, pads, c);
        let r = randn(&mut rng, ours(&x, &w)?.dims())?;
        let mut fwd = Vec::new();
        let mut both = Vec::new();
        for (who, conv) in [
            ("ours", &ours as &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>),
            ("candle", &candle),
        ] {
            let f = time(iters, || conv(x.as_tensor(), w.as_tensor()).map(drop))?;
            line(case, "fwd", who, f);
            let b = time(iters, || {
                let y = conv(x.as_tensor(), w.as_tensor())?;
                let grads = (y * &r)?.sum_all()?.backward()?;
                let (gx, gw) = (grads.get(x.as_tensor()), grads.get(w.as_tensor()));
                if gx.is_none() || gw.is_none() {
                    candle_core::bail!("{who}: missing gradient");
                }
                Ok(())
            })?;
            line(case, "fwd+bwd", who, b);
            fwd.push(f.0);
            both.push(b.0);
        }
        // The loss and its backward alone, on a leaf y: the part of fwd+bwd
        // that is candle's elementwise ops, not the convolution.
        let y = Var::from_tensor(&r.zeros_like()?)?;
        let l = time(iters, || {
            (y.as_tensor() * &r)?.sum_all()?.backward().map(drop)
        })?;
        line(case, "loss", "candle", l);
        println!(
            "{case:<14} candle/ours: fwd {:.1}x, fwd+bwd {:.1}x",
            fwd[1] / fwd[0],
            both[1] / both[0]
        );
    }
    Ok(())
}
