//! `fer-lab bench`: times the real training step (forward + cross-entropy,
//! backward, AdamW) and the evaluation forward of registered backbones on
//! a fixed random batch, the way ../bench/vs_pytorch.py times PyTorch:
//! grey noise replicated to 3 channels, 7 classes, AdamW lr 1e-4, median of
//! the timed steps after warm-up. Also measures a plain matmul in the same
//! run, the machine's practical ceiling, to put the achieved GFLOP/s in
//! context.

use crate::kernels::profile;
use crate::models::{self, ModelConfig, layers::flops};
use crate::spec::OptimizerKind;
use crate::train::optim::{Hyper, Optimizer};
use candle_core::{D, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub size: usize,
    pub batch: usize,
    pub warmup: usize,
    pub steps: usize,
    pub eval_batch: usize,
    pub eval_iters: usize,
    /// Record the time spent in each kernel during the timed steps.
    pub profile: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            size: 48,
            batch: 8,
            warmup: 3,
            steps: 10,
            eval_batch: 64,
            eval_iters: 5,
            profile: false,
        }
    }
}

/// Median, min and max of a set of timings in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(xs: &[f64]) -> Self {
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Self {
            median,
            min: v.first().copied().unwrap_or(f64::NAN),
            max: v.last().copied().unwrap_or(f64::NAN),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchRow {
    pub backbone: String,
    pub size: usize,
    pub batch: usize,
    pub threads: usize,
    pub steps: usize,
    pub train_ms_median: f64,
    pub train_ms_min: f64,
    pub train_ms_max: f64,
    pub train_ms_mean: f64,
    pub train_images_per_sec: f64,
    pub fwd_ms: f64,
    pub bwd_ms: f64,
    pub opt_ms: f64,
    pub eval_batch: usize,
    pub eval_ms_median: f64,
    pub eval_images_per_sec: f64,
    /// Forward FLOPs of convolutions and linear layers x 3 (forward, input
    /// and weight gradients), per step.
    pub train_gflop_per_step: f64,
    pub achieved_gflops: f64,
    pub loss_first: f64,
    pub loss_last: f64,
    /// With `profile`: per kernel, milliseconds per training step and calls
    /// per step, over the timed steps.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kernels: Vec<KernelTime>,
}

/// Time in one kernel, per training step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelTime {
    pub kernel: String,
    pub ms_per_step: f64,
    pub calls_per_step: f64,
}

/// Fixed grey noise replicated to 3 channels, and labels in 0..7.
fn batch(
    n: usize,
    size: usize,
    seed: u64,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let grey: Vec<f32> = (0..n * size * size)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let x = Tensor::from_vec(grey, (n, 1, size, size), device)?.repeat((1, 3, 1, 1))?;
    let y: Vec<u32> = (0..n).map(|_| rng.random_range(0..7)).collect();
    Ok((x, Tensor::from_vec(y, n, device)?))
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Times one backbone.
pub fn bench_backbone(
    name: &str,
    opts: &BenchOptions,
    device: &Device,
) -> anyhow::Result<BenchRow> {
    let model = models::build(name, &ModelConfig::new(7, 3), 0, device)?;
    let hyper = Hyper {
        kind: OptimizerKind::Adamw,
        momentum: 0.0,
        weight_decay: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    let vars = model
        .params
        .trainable()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let mut optimizer = Optimizer::new(vars, hyper, true)?;
    let (x, y) = batch(opts.batch, opts.size, 0, device)?;
    let loss_of = |logits: &Tensor| -> candle_core::Result<Tensor> {
        crate::train::smoothed_cross_entropy(logits, &y, 0.0)
    };
    // FLOPs: convolutions counted as they run, linear layers from their weights.
    let (logits, conv_flops) = flops::count(|| model.net.forward_t(&x, true));
    let logits = logits?;
    drop(logits);
    let linear_flops: usize = model
        .params
        .trainable()
        .iter()
        .filter(|(_, v)| v.rank() == 2)
        .map(|(_, v)| 2 * opts.batch * v.elem_count())
        .sum();
    let train_flops = 3.0 * (conv_flops as f64 + linear_flops as f64);

    let (mut total, mut fwd, mut bwd, mut opt) = (vec![], vec![], vec![], vec![]);
    let (mut loss_first, mut loss_last) = (f64::NAN, f64::NAN);
    for i in 0..opts.warmup + opts.steps {
        if opts.profile && i == opts.warmup {
            profile::enable(true);
        }
        let t0 = Instant::now();
        let loss = loss_of(&model.net.forward_t(&x, true)?)?;
        let loss_value = loss.to_scalar::<f32>()? as f64;
        let f = ms(t0);
        let t1 = Instant::now();
        let grads = loss.backward()?;
        device.synchronize()?;
        let b = ms(t1);
        let t2 = Instant::now();
        optimizer.step(&grads, 1e-4)?;
        device.synchronize()?;
        let o = ms(t2);
        drop(grads);
        if i == 0 {
            loss_first = loss_value;
        }
        loss_last = loss_value;
        if i >= opts.warmup {
            total.push(ms(t0));
            fwd.push(f);
            bwd.push(b);
            opt.push(o);
        }
    }
    let kernels = if opts.profile {
        let recorded = profile::take();
        profile::enable(false);
        let steps = opts.steps as f64;
        recorded
            .into_iter()
            .map(|(k, d, c)| KernelTime {
                kernel: k.to_string(),
                ms_per_step: d.as_secs_f64() * 1e3 / steps,
                calls_per_step: c as f64 / steps,
            })
            .collect()
    } else {
        Vec::new()
    };
    let (xe, _) = batch(opts.eval_batch, opts.size, 1, device)?;
    let mut eval = vec![];
    for i in 0..2 + opts.eval_iters {
        let t0 = Instant::now();
        let logits = model.net.forward_t(&xe, false)?;
        let _ = logits.max(D::Minus1)?.sum_all()?.to_scalar::<f32>()?;
        if i >= 2 {
            eval.push(ms(t0));
        }
    }
    let t = Spread::of(&total);
    let e = Spread::of(&eval);
    Ok(BenchRow {
        backbone: name.to_string(),
        size: opts.size,
        batch: opts.batch,
        threads: rayon::current_num_threads(),
        steps: opts.steps,
        train_ms_median: t.median,
        train_ms_min: t.min,
        train_ms_max: t.max,
        train_ms_mean: total.iter().sum::<f64>() / total.len().max(1) as f64,
        train_images_per_sec: opts.batch as f64 / (t.median / 1e3),
        fwd_ms: Spread::of(&fwd).median,
        bwd_ms: Spread::of(&bwd).median,
        opt_ms: Spread::of(&opt).median,
        eval_batch: opts.eval_batch,
        eval_ms_median: e.median,
        eval_images_per_sec: opts.eval_batch as f64 / (e.median / 1e3),
        train_gflop_per_step: train_flops / 1e9,
        achieved_gflops: train_flops / 1e9 / (t.median / 1e3),
        loss_first,
        loss_last,
        kernels,
    })
}

/// GFLOP/s of an n x n x n f32 matmul (median of 5 after 2 warm-ups).
pub fn matmul_gflops(n: usize, device: &Device) -> anyhow::Result<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let v: Vec<f32> = (0..n * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let a = Tensor::from_vec(v, (n, n), device)?;
    let b = a.t()?.contiguous()?;
    let mut times = vec![];
    for i in 0..7 {
        let t0 = Instant::now();
        let c = a.matmul(&b)?;
        device.synchronize()?;
        drop(c);
        if i >= 2 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let s = Spread::of(&times);
    Ok(2.0 * (n as f64).powi(3) / s.median / 1e9)
}

/// The table `fer-lab bench` prints.
pub fn render(rows: &[BenchRow], matmul: f64) -> String {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "backbone",
        "input",
        "train ms/step (min-max)",
        "train img/s",
        "fwd / bwd / opt ms",
        "eval img/s",
        "GFLOP/step",
        "GFLOP/s",
        "of matmul",
    ]);
    for r in rows {
        table.add_row([
            r.backbone.clone(),
            format!("{}x{}x{} x{}", 3, r.size, r.size, r.batch),
            format!(
                "{:.0} ({:.0}-{:.0})",
                r.train_ms_median, r.train_ms_min, r.train_ms_max
            ),
            format!("{:.1}", r.train_images_per_sec),
            format!("{:.0} / {:.0} / {:.0}", r.fwd_ms, r.bwd_ms, r.opt_ms),
            format!("{:.0}", r.eval_images_per_sec),
            format!("{:.2}", r.train_gflop_per_step),
            format!("{:.1}", r.achieved_gflops),
            format!("{:.0}%", 100.0 * r.achieved_gflops / matmul),
        ]);
    }
    format!("{table}\nmatmul 1024^3 in this run: {matmul:.1} GFLOP/s")
}

/// The per-kernel table of a profiled row, largest first, with the share of
/// the mean training step.
pub fn render_kernels(row: &BenchRow) -> String {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(["kernel", "ms/step", "calls/step", "of step"]);
    let mut ks = row.kernels.clone();
    ks.sort_by(|a, b| b.ms_per_step.total_cmp(&a.ms_per_step));
    let mut sum = 0.0;
    for k in &ks {
        // "kernel/part" entries are parts of a kernel already counted.
        let part = k.kernel.contains('/');
        if !part {
            sum += k.ms_per_step;
        }
        table.add_row([
            if part {
                format!("  {}", k.kernel)
            } else {
                k.kernel.clone()
            },
            format!("{:.2}", k.ms_per_step),
            format!("{:.0}", k.calls_per_step),
            format!("{:.1}%", 100.0 * k.ms_per_step / row.train_ms_mean),
        ]);
    }
    table.add_row([
        "everything else (candle's ops, autograd)".to_string(),
        format!("{:.2}", row.train_ms_mean - sum),
        String::new(),
        format!(
            "{:.1}%",
            100.0 * (row.train_ms_mean - sum) / row.train_ms_mean
        ),
    ]);
    format!(
        "{}: mean step {:.1} ms\n{table}",
        row.backbone, row.train_ms_mean
    )
}

/// The backbones `--backbone all` times (those the product ships).
pub const DEFAULT_SET: &[&str] = &[
    "resnet18",
    "resnet50",
    "resnet101",
    "vgg16",
    "efficientnet_b0",
    "densenet121",
];
