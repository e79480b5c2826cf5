//! Numerical parity with PyTorch, one test per backbone family member: the
//! same weights and the same input must give the reference's logits in eval
//! mode (within 1e-4 relative) and its loss gradient in train mode (within
//! 1e-3). The expected numbers are committed in tests/fixtures/parity/
//! (written by tests/parity/make_parity.py with torch), so no torch is
//! needed here.
//!
//! Weights are not committed: both sides compute them from this formula.
//! For every tensor of the reference's state dict (without
//! `num_batches_tracked`), name k, shape s, n elements:
//!
//! ```text
//! h     = FNV-1a-32 of the UTF-8 bytes of k
//!         (offset basis 0x811c9dc5, prime 0x01000193, arithmetic mod 2^32)
//! z_i   = splitmix64(h + (i + 1) * 0x9E3779B97F4A7C15 mod 2^64), i = 0..n-1
//!         where splitmix64(z): z ^= z >> 30; z *= 0xBF58476D1CE4E5B9;
//!                              z ^= z >> 27; z *= 0x94D049BB133111EB;
//!                              z ^= z >> 31            (all mod 2^64)
//! v_i   = 2 * ((z_i >> 11) * 2^-53) - 1                (float64, in [-1, 1))
//! ```
//!
//! over the row-major flattening; then, "norm" meaning that the tensor's
//! module (k up to its last dot) also has a `running_var`, the first rule
//! that applies (float64, then rounded once to float32):
//!
//! ```text
//! last name part `running_var`    1 + 0.25 v
//! last name part `running_mean`   0.1 v
//! `bias` of a norm (beta)         1 + 0.05 v
//! any other `bias`                0.05 v
//! rank >= 2                       v * sqrt(6 / fan_in), fan_in = prod(s[1:])
//! `weight` of a norm (gamma)      0.5 + 0.1 v
//! ```
//!
//! Every step is exact or correctly rounded, so both sides get the same
//! float32 bits (checked below against numbers the script printed). Gamma
//! 0.5 / beta 1 keep every model's logits O(1 .. 40) and its train-mode
//! pass well conditioned: torch's own float32 answers are within 1e-5 of
//! its float64 ones on every recorded number (each fixture's
//! `torch_f32_vs_f64`), so the tolerances leave a margin of 100 or more.
//! The script's docstring says why the first, sine-based design was dropped.
//!
//! Input: (4, 3, 64, 64), x = v of the stream keyed by `input`. Eval: the
//! model in eval mode, logits. Train: dropout / stochastic depth off, batch
//! statistics, labels [0, 1, 2, 3], mean cross-entropy, backward; for a few
//! parameters (first conv, middle norm weight, last conv, classifier
//! weight and bias) the fixture keeps the gradient's L2 norm, sum, L1 norm
//! and its values at the flat indices floor(j * n / 32), j = 0..31.
//!
//! Tolerances: eval and train logits, max |ours - ref| / max |ref| <= 1e-4;
//! loss, relative 1e-4; each gradient: |norm - ref| / ref <= 1e-3,
//! |sum - ref| <= 1e-3 * L1 norm (a sum's rounding error scales with the sum
//! of magnitudes; the classifier bias's sums to 0), and the sampled values
//! max |ours - ref| <= 1e-3 * max(max |ref values|, norm / sqrt(n)) (the
//! tensor's RMS keeps a sample of near-zero values from demanding more).

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};
use fer_lab::models::{self, ModelConfig, pretrained};
use rayon::prelude::*;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;

/// The formula as the fixtures state it (tests/parity/make_parity.py's
/// `FORMULA`): a fixture written with another formula fails loudly.
const FORMULA: &str = "h = FNV-1a-32(name bytes); z_i = splitmix64(h + (i+1)*0x9E3779B97F4A7C15 mod 2^64); \
v_i = 2*((z_i >> 11)*2^-53) - 1 (f64, row-major i); first rule that applies: \
running_var: 1 + 0.25 v; running_mean: 0.1 v; bias of a norm (its module has a running_var): \
1 + 0.05 v; other bias: 0.05 v; rank >= 2: v*sqrt(6/fan_in), fan_in = prod(shape[1:]); \
weight of a norm: 0.5 + 0.1 v; rounded once to f32 (see tests/parity/make_parity.py)";

const LOGIT_TOL: f64 = 1e-4;
const LOSS_TOL: f64 = 1e-4;
const GRAD_TOL: f64 = 1e-3;

/// VGG-16 alone holds ~2 GB (weights, the map, gradients): one model at a
/// time keeps the suite's memory bounded (and 2 cores gain nothing from
/// running two).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------- formula

fn fnv1a32(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// v_i of the stream keyed by `h`: uniform in [-1, 1), exact in f64.
fn v(h: u32, i: usize) -> f64 {
    let z = splitmix64((h as u64).wrapping_add((i as u64 + 1).wrapping_mul(GOLDEN)));
    2.0 * ((z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)) - 1.0
}

/// What the formula does with v for one tensor (the rule chosen once).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// a + b v
    Affine(f64, f64),
    /// v * scale
    Scaled(f64),
}

fn kind(name: &str, shape: &[usize], norms: &HashSet<String>) -> Kind {
    let (module, leaf) = name.rsplit_once('.').unwrap_or(("", name));
    let is_norm = !module.is_empty() && norms.contains(module);
    match leaf {
        "running_var" => Kind::Affine(1.0, 0.25),
        "running_mean" => Kind::Affine(0.0, 0.1),
        "bias" if is_norm => Kind::Affine(1.0, 0.05),
        "bias" => Kind::Affine(0.0, 0.05),
        _ if shape.len() >= 2 => {
            let fan_in: usize = shape[1..].iter().product();
            Kind::Scaled((6.0 / fan_in as f64).sqrt())
        }
        "weight" if is_norm => Kind::Affine(0.5, 0.1),
        _ => panic!("the parity formula has no rule for tensor {name} of shape {shape:?}"),
    }
}

/// Modules (names without the trailing dot) that own a `running_var`.
fn norm_modules<'a>(names: impl IntoIterator<Item = &'a str>) -> HashSet<String> {
    names
        .into_iter()
        .filter_map(|k| k.strip_suffix(".running_var").map(str::to_string))
        .collect()
}

/// The formula's float32 values of tensor `name` (in parallel for the
/// 100 M-element VGG classifier).
fn weight_values(name: &str, shape: &[usize], norms: &HashSet<String>) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let (h, k) = (fnv1a32(name), kind(name, shape, norms));
    let one = |i: usize| -> f32 {
        let v = v(h, i);
        match k {
            Kind::Affine(a, b) => (a + b * v) as f32,
            Kind::Scaled(s) => (v * s) as f32,
        }
    };
    let mut out = vec![0f32; n];
    const CHUNK: usize = 1 << 16;
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            for (j, x) in chunk.iter_mut().enumerate() {
                *x = one(c * CHUNK + j);
            }
        });
    out
}

/// The input batch: v of the stream keyed by `input`, as float32.
fn input_values(n: usize) -> Vec<f32> {
    let h = fnv1a32("input");
    (0..n).map(|i| v(h, i) as f32).collect()
}

#[test]
fn fnv1a32_matches_published_vectors() {
    // The FNV reference test vectors, and the two the script printed.
    assert_eq!(fnv1a32(""), 0x811c_9dc5);
    assert_eq!(fnv1a32("a"), 0xe40c_292c);
    assert_eq!(fnv1a32("foobar"), 0xbf9c_f968);
    assert_eq!(fnv1a32("conv1.weight"), 0xbdce_c494);
}

#[test]
fn splitmix64_matches_the_reference_stream() {
    // SplitMix64 seeded with 0 (Vigna's reference code): the stream keyed by
    // h = 0 is its output sequence.
    let want = [
        0xe220_a839_7b1d_cdafu64,
        0x6e78_9e6a_a1b9_65f4,
        0x06c4_5d18_8009_454f,
    ];
    for (i, w) in want.iter().enumerate() {
        assert_eq!(
            splitmix64((i as u64 + 1).wrapping_mul(GOLDEN)),
            *w,
            "output {i}"
        );
    }
    // v is in [-1, 1) and uses the top 53 bits.
    let vs: Vec<f64> = (0..10_000).map(|i| v(7, i)).collect();
    assert!(vs.iter().all(|x| (-1.0..1.0).contains(x)));
    let mean = vs.iter().sum::<f64>() / vs.len() as f64;
    assert!(mean.abs() < 0.03, "mean of v over 10k draws is {mean}");
}

#[test]
fn weight_formula_gives_the_scripts_bits() {
    // `make_parity.py --values` (float32 bit patterns of the first values).
    let norms = norm_modules(["bn1.running_var"]);
    let cases: [(&str, &[usize], [u32; 3]); 5] = [
        (
            "conv1.weight",
            &[64, 3, 7, 7],
            [0x3e0105a8, 0x3e30a474, 0xbdab3839],
        ),
        (
            "bn1.running_var",
            &[64],
            [0x3f93b477, 0x3f89d507, 0x3f5ebff5],
        ),
        (
            "bn1.running_mean",
            &[64],
            [0xbd7fddc4, 0x3dc6a0ce, 0x3d9afad8],
        ),
        ("bn1.weight", &[64], [0x3f173f28, 0x3f150e92, 0x3f0e53ff]),
        ("fc.bias", &[10], [0xbc27ec56, 0xbcaf214e, 0xbca46ce0]),
    ];
    for (name, shape, want) in cases {
        let got: Vec<u32> = weight_values(name, shape, &norms)[..3]
            .iter()
            .map(|x| x.to_bits())
            .collect();
        assert_eq!(
            got, want,
            "{name}: first values {got:#010x?}, the script's {want:#010x?}"
        );
    }
    let got: Vec<u32> = input_values(3).iter().map(|x| x.to_bits()).collect();
    assert_eq!(
        got,
        [0xbf732001, 0x3f55d3a7, 0xbf3248d4],
        "input: {got:#010x?}"
    );
    // The rule for a rank-1 tensor depends on its module owning a running_var.
    assert_eq!(kind("bn1.weight", &[64], &norms), Kind::Affine(0.5, 0.1));
    assert_eq!(kind("fc.bias", &[10], &norms), Kind::Affine(0.0, 0.05));
    assert_eq!(kind("bn1.bias", &[64], &norms), Kind::Affine(1.0, 0.05));
}

// --------------------------------------------------------------- fixtures

#[derive(Deserialize)]
struct FormulaCheck {
    name: String,
    first_values: Vec<f64>,
}

#[derive(Deserialize)]
struct Input {
    shape: Vec<usize>,
}

#[derive(Deserialize)]
struct GradRecord {
    name: String,
    shape: Vec<usize>,
    norm: f64,
    sum: f64,
    abs_sum: f64,
    indices: Vec<usize>,
    values: Vec<f64>,
}

#[derive(Deserialize)]
struct Fixture {
    backbone: String,
    reference: String,
    formula: String,
    formula_check: FormulaCheck,
    input: Input,
    labels: Vec<u32>,
    eval_logits: Vec<Vec<f64>>,
    train_logits: Vec<Vec<f64>>,
    train_loss: f64,
    grads: Vec<GradRecord>,
    tensors: Vec<(String, Vec<usize>)>,
}

fn fixture(backbone: &str) -> Fixture {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", "parity"]
        .iter()
        .collect::<PathBuf>()
        .join(format!("{backbone}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{backbone}: cannot read {} ({e}); regenerate with tests/parity/make_parity.py",
            path.display()
        )
    });
    let f: Fixture = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{backbone}: {} is not a parity fixture: {e}",
            path.display()
        )
    });
    assert_eq!(
        f.backbone,
        backbone,
        "{}: fixture of another backbone",
        path.display()
    );
    assert_eq!(
        f.formula, FORMULA,
        "{backbone}: the fixture was written with another weight formula; update tests/parity.rs with the script"
    );
    f
}

// ------------------------------------------------------------- comparison

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec1::<f64>())
        .expect("tensor to vec")
}

/// max |ours - ref| / max |ref| over logits (N, classes), or a shape mismatch.
fn logits_error(ours: &Tensor, want: &[Vec<f64>]) -> Result<f64, String> {
    let dims = ours.dims().to_vec();
    let classes = want.first().map_or(0, Vec::len);
    if dims != [want.len(), classes] {
        return Err(format!(
            "shape {dims:?}, the reference's [{}, {classes}]",
            want.len()
        ));
    }
    let ours = flat(ours);
    let want: Vec<f64> = want.iter().flatten().copied().collect();
    let scale = want.iter().fold(0f64, |m, x| m.max(x.abs()));
    let diff = ours
        .iter()
        .zip(&want)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    Ok(diff / scale)
}

/// The relative errors of one gradient against its record, or why it
/// cannot be compared. Returns (norm, sum, values) errors, each already
/// divided by its scale.
fn grad_errors(g: &Tensor, rec: &GradRecord) -> Result<(f64, f64, f64), String> {
    let n: usize = rec.shape.iter().product();
    if g.elem_count() != n {
        return Err(format!(
            "gradient has shape {:?}, the reference's {:?}",
            g.dims(),
            rec.shape
        ));
    }
    let g = flat(g);
    if !g.iter().all(|x| x.is_finite()) {
        return Err("gradient is not finite".to_string());
    }
    let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
    let sum: f64 = g.iter().sum();
    let norm_err = (norm - rec.norm).abs() / rec.norm;
    let sum_err = (sum - rec.sum).abs() / rec.abs_sum;
    let rms = rec.norm / (n as f64).sqrt();
    let scale = rec.values.iter().fold(rms, |m, x| m.max(x.abs()));
    let mut value_err = 0f64;
    for (&i, &want) in rec.indices.iter().zip(&rec.values) {
        value_err = value_err.max((g[i] - want).abs() / scale);
    }
    Ok((norm_err, sum_err, value_err))
}

/// An error's first line: candle appends a backtrace when RUST_BACKTRACE is set.
fn short(e: impl std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

fn grad_of(grads: &GradStore, var: &candle_core::Var) -> Option<Tensor> {
    grads.get(var.as_tensor()).cloned()
}

// ------------------------------------------------------------------- check

/// Builds `backbone`, loads the formula's weights through the family's
/// remap, runs the fixture's eval and train passes and compares. Panics
/// with every mismatch, each naming the backbone, tensor and error.
fn check(backbone: &str) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let start = std::time::Instant::now();
    let f = fixture(backbone);
    let info = models::info(backbone)
        .unwrap_or_else(|| panic!("{backbone}: not in fer-lab's registry ({})", f.reference));
    let cfg = ModelConfig {
        num_classes: 10,
        in_channels: 3,
        stochastic: false,
    };
    let model = models::build(backbone, &cfg, 0, &Device::Cpu).unwrap_or_else(|e| {
        panic!(
            "{backbone}: fer-lab cannot build the model ({}); parity with {} needs it implemented",
            short(e),
            f.reference
        )
    });

    // The formula's weights, in the reference's names.
    let norms = norm_modules(f.tensors.iter().map(|(k, _)| k.as_str()));
    let first = &f.formula_check;
    let (_, first_shape) = f
        .tensors
        .iter()
        .find(|(k, _)| *k == first.name)
        .unwrap_or_else(|| {
            panic!(
                "{backbone}: formula_check names {} not in the tensors",
                first.name
            )
        });
    let got = weight_values(&first.name, first_shape, &norms);
    for (j, &want) in first.first_values.iter().enumerate() {
        assert_eq!(
            got[j].to_bits(),
            (want as f32).to_bits(),
            "{backbone}: formula drift: {}[{j}] is {} here, {want} in the script",
            first.name,
            got[j]
        );
    }
    let mut map: HashMap<String, Tensor> = HashMap::new();
    let recorded: HashSet<&str> = f.grads.iter().map(|g| g.name.as_str()).collect();
    let mut kept: HashMap<String, Tensor> = HashMap::new();
    for (k, shape) in &f.tensors {
        let t = Tensor::from_vec(
            weight_values(k, shape, &norms),
            shape.as_slice(),
            &Device::Cpu,
        )
        .expect("weight tensor");
        if recorded.contains(k.as_str()) {
            kept.insert(k.clone(), t.clone());
        }
        map.insert(k.clone(), t);
    }
    let report = pretrained::load_map(&model.params, map, "parity", info)
        .unwrap_or_else(|e| panic!("{backbone}: loading the reference's tensors failed: {e:#}"));
    let named = model.params.named();
    assert!(
        report.skipped.is_empty() && report.initialised.is_empty() && report.adapted.is_empty(),
        "{backbone}: the reference's tensors do not map one to one onto the model: {}",
        report.summary()
    );
    assert_eq!(
        report.loaded.len(),
        named.len(),
        "{backbone}: {} tensors loaded, the model has {}",
        report.loaded.len(),
        named.len()
    );

    let shape = f.input.shape.clone();
    let x = Tensor::from_vec(
        input_values(shape.iter().product()),
        shape.as_slice(),
        &Device::Cpu,
    )
    .expect("input tensor");
    let mut failures: Vec<String> = Vec::new();
    // The worst error of each check, printed (cargo test -- --nocapture).
    let mut worst = [0f64; 3];

    // Eval first: the train pass moves the running statistics.
    let eval = model
        .net
        .forward_t(&x, false)
        .unwrap_or_else(|e| panic!("{backbone}: eval forward failed: {}", short(e)));
    match logits_error(&eval, &f.eval_logits) {
        Ok(e) if e <= LOGIT_TOL => worst[0] = worst[0].max(e),
        Ok(e) => failures.push(format!(
            "eval logits: relative error {e:.3e} > {LOGIT_TOL:e}"
        )),
        Err(e) => failures.push(format!("eval logits: {e}")),
    }

    let train = model
        .net
        .forward_t(&x, true)
        .unwrap_or_else(|e| panic!("{backbone}: train forward failed: {}", short(e)));
    match logits_error(&train, &f.train_logits) {
        Ok(e) if e <= LOGIT_TOL => worst[1] = worst[1].max(e),
        Ok(e) => failures.push(format!(
            "train logits: relative error {e:.3e} > {LOGIT_TOL:e}"
        )),
        Err(e) => failures.push(format!("train logits: {e}")),
    }
    let labels = Tensor::new(f.labels.as_slice(), &Device::Cpu).expect("labels");
    let loss = candle_nn::loss::cross_entropy(&train, &labels)
        .unwrap_or_else(|e| panic!("{backbone}: cross-entropy failed: {}", short(e)));
    let loss_value = loss.to_scalar::<f32>().expect("loss") as f64;
    let loss_err = (loss_value - f.train_loss).abs() / f.train_loss.abs();
    worst[1] = worst[1].max(loss_err);
    if loss_err > LOSS_TOL || loss_err.is_nan() {
        failures.push(format!(
            "train loss {loss_value} vs {}: relative error {loss_err:.3e} > {LOSS_TOL:e}",
            f.train_loss
        ));
    }
    let grads = loss
        .backward()
        .unwrap_or_else(|e| panic!("{backbone}: backward failed: {}", short(e)));
    let vars: HashMap<String, candle_core::Var> = named.into_iter().collect();
    for rec in &f.grads {
        let Some(t) = kept.get(&rec.name).cloned() else {
            failures.push(format!(
                "{}: recorded but not among the fixture's tensors",
                rec.name
            ));
            continue;
        };
        let ours = match (info.remap)(&rec.name, t) {
            Ok(Some((ours, _))) => ours,
            Ok(None) => {
                failures.push(format!("{}: the family's remap drops it", rec.name));
                continue;
            }
            Err(e) => {
                failures.push(format!("{}: remap failed: {}", rec.name, short(e)));
                continue;
            }
        };
        let label = if ours == rec.name {
            rec.name.clone()
        } else {
            format!("{} (ours {ours})", rec.name)
        };
        let Some(var) = vars.get(&ours) else {
            failures.push(format!("{label}: no such tensor in the model"));
            continue;
        };
        let Some(g) = grad_of(&grads, var) else {
            failures.push(format!("{label}: no gradient"));
            continue;
        };
        match grad_errors(&g, rec) {
            Ok((norm, sum, values)) => {
                worst[2] = worst[2].max(norm).max(sum).max(values);
                for (what, err) in [("norm", norm), ("sum", sum), ("sampled values", values)] {
                    if err > GRAD_TOL || err.is_nan() {
                        failures.push(format!(
                            "{label}: gradient {what}: relative error {err:.3e} > {GRAD_TOL:e}"
                        ));
                    }
                }
            }
            Err(e) => failures.push(format!("{label}: {e}")),
        }
    }
    println!(
        "{backbone}: worst relative error: eval logits {:.2e}, train logits / loss {:.2e}, gradients {:.2e} ({:.1} s)",
        worst[0],
        worst[1],
        worst[2],
        start.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{backbone}: {} mismatch(es) with {}:\n  {}",
        failures.len(),
        f.reference,
        failures.join("\n  ")
    );
}

#[test]
fn resnet18_matches_torchvision() {
    check("resnet18");
}

#[test]
fn resnet101_matches_torchvision() {
    check("resnet101");
}

#[test]
fn vgg16_matches_torchvision() {
    check("vgg16");
}

#[test]
fn vgg16_bn_matches_torchvision() {
    check("vgg16_bn");
}

#[test]
fn densenet121_matches_torchvision() {
    check("densenet121");
}

#[test]
fn efficientnet_b0_matches_torchvision() {
    check("efficientnet_b0");
}

#[test]
fn efficientnet_lite0_matches_lukemelas() {
    check("efficientnet_lite0");
}
