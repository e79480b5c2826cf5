//! VGG-16, VGG-16-BN and DenseNet-121: architecture against torchvision's
//! parameter counts and names, the weight layouts they load (timm's VGG head,
//! old DenseNet spellings), the 2x2 pools against a direct reference, and a
//! few training steps. (Logit parity with torchvision needs torch and is
//! checked elsewhere.)
//!
//! VGG-16 has 138 M parameters (0.55 GB, and as much again for its
//! gradients), so the tests take turns through one lock.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use fer_lab::models::{self, ModelConfig, densenet, pretrained, vgg};
use fer_lab::spec::OptimizerKind;
use fer_lab::train::optim::{Hyper, Optimizer};
use std::collections::HashMap;
use std::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// A deterministic configuration: no dropout.
fn cfg(classes: usize, channels: usize) -> ModelConfig {
    ModelConfig {
        stochastic: false,
        ..ModelConfig::new(classes, channels)
    }
}

/// Every tensor of a model by name (parameters and buffers), sharing storage.
fn tensors(m: &models::Model) -> HashMap<String, Tensor> {
    m.params
        .named()
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().clone()))
        .collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Seeded input, so the same for every model built in a test.
fn input(n: usize, c: usize, size: usize, seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n * c * size * size)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect();
    Tensor::from_vec(v, (n, c, size, size), &Device::Cpu).unwrap()
}

/// Moves every batch norm's running statistics off their 0/1 start, so a
/// load that dropped them would show in the logits. (A negative mean and a
/// variance below 1 keep the activations alive through the ReLUs.)
fn perturb_running_stats(m: &models::Model) {
    for (name, var) in m.params.named() {
        let t = var.as_tensor();
        let value = if name.ends_with("running_mean") {
            -0.05
        } else if name.ends_with("running_var") {
            0.8
        } else {
            continue;
        };
        var.set(&(t.ones_like().unwrap() * value).unwrap()).unwrap();
    }
}

/// Largest |logit|: the comparisons below mean something only if it is not 0.
fn magnitude(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn std_of(t: &Tensor) -> f32 {
    let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt()
}

fn is_zero(t: &Tensor) -> bool {
    magnitude(t) == 0.0
}

/// torchvision's initialisation of each family.
fn check_init(name: &str, t: &HashMap<String, Tensor>) {
    let close = |got: f32, want: f32, tol: f32, what: &str| {
        assert!(
            (got / want - 1.0).abs() < tol,
            "{name} {what}: std {got}, want {want}"
        );
    };
    if name.starts_with("vgg") {
        // Kaiming normal, fan-out (256 x 3 x 3), bias 0; linear N(0, 0.01), bias 0.
        close(
            std_of(&t["features.14.weight"]),
            (2.0f32 / 2304.0).sqrt(),
            0.05,
            "conv",
        );
        assert!(is_zero(&t["features.14.bias"]), "{name}: conv bias");
        close(std_of(&t["classifier.3.weight"]), 0.01, 0.02, "linear");
        assert!(is_zero(&t["classifier.0.bias"]), "{name}: linear bias");
    } else {
        // Kaiming normal, fan-in: denseblock3.denselayer5.conv1 reads 256 + 4 x 32 channels.
        let w = &t["features.denseblock3.denselayer5.conv1.weight"];
        close(std_of(w), (2.0f32 / 384.0).sqrt(), 0.05, "conv");
        // PyTorch's default Linear weight U(-1/32, 1/32) (std 1/sqrt(3 * 1024)), bias 0.
        close(
            std_of(&t["classifier.weight"]),
            1.0 / (3.0f32 * 1024.0).sqrt(),
            0.02,
            "linear",
        );
        assert!(is_zero(&t["classifier.bias"]), "{name}: linear bias");
    }
    let bn = t.keys().find(|k| k.ends_with("running_var"));
    if let Some(k) = bn {
        let prefix = k.trim_end_matches("running_var");
        let w = &t[&format!("{prefix}weight")];
        assert!(
            is_zero(&(w - 1.0).unwrap()) && is_zero(&t[&format!("{prefix}bias")]),
            "{name}: {prefix} 1/0"
        );
    }
}

#[test]
fn architecture_and_initialisation_follow_torchvision() {
    let _turn = turn();
    // sum(p.numel() for p in torchvision.models.<name>().parameters()) and
    // len(state_dict()) less the num_batches_tracked counters (not kept).
    for (name, count, tensors_in_state_dict, shapes) in [
        (
            "vgg16",
            138_357_544,
            32,
            &[
                ("features.0.weight", &[64, 3, 3, 3][..]),
                ("features.28.bias", &[512][..]),
                ("classifier.0.weight", &[4096, 25088][..]),
                ("classifier.3.bias", &[4096][..]),
                ("classifier.6.weight", &[1000, 4096][..]),
            ][..],
        ),
        (
            "vgg16_bn",
            138_365_992,
            97 - 13,
            // Batch norm right after each conv, at torchvision's indices.
            &[
                ("features.1.running_var", &[64][..]),
                ("features.40.weight", &[512, 512, 3, 3][..]),
                ("features.41.running_mean", &[512][..]),
                ("classifier.0.weight", &[4096, 25088][..]),
                ("classifier.6.bias", &[1000][..]),
            ][..],
        ),
        (
            "densenet121",
            7_978_856,
            727 - 121,
            &[
                ("features.conv0.weight", &[64, 3, 7, 7][..]),
                ("features.norm0.running_mean", &[64][..]),
                (
                    "features.denseblock1.denselayer6.conv2.weight",
                    &[32, 128, 3, 3][..],
                ),
                (
                    "features.denseblock3.denselayer24.norm1.running_var",
                    &[992][..],
                ),
                ("features.transition3.conv.weight", &[512, 1024, 1, 1][..]),
                ("features.norm5.bias", &[1024][..]),
                ("classifier.weight", &[1000, 1024][..]),
            ][..],
        ),
    ] {
        let m = models::build(name, &ModelConfig::new(1000, 3), 0, &Device::Cpu).unwrap();
        assert_eq!(m.params.count(), count, "{name}");
        let t = tensors(&m);
        assert_eq!(t.len(), tensors_in_state_dict, "{name}: state-dict tensors");
        for (p, dims) in shapes {
            assert_eq!(t.get(*p).map(|t| t.dims()), Some(*dims), "{name}: {p}");
        }
        check_init(name, &t);
        if name == "vgg16" {
            // Dropout (on by default) draws new masks in training only.
            let x = input(1, 3, 32, 2);
            let run = |train| m.net.forward_t(&x, train).unwrap();
            assert!(
                max_abs_diff(&run(true), &run(true)) > 0.0,
                "dropout inactive"
            );
            assert_eq!(max_abs_diff(&run(false), &run(false)), 0.0);
        }
    }
}

/// timm's VGG spelling of one of our tensors (inverse of `vgg::remap`).
fn to_timm(name: &str, t: Tensor) -> (String, Tensor) {
    if let Some(rest) = name.strip_prefix("classifier.0.") {
        let t = if rest == "weight" {
            t.reshape((4096, 512, 7, 7)).unwrap()
        } else {
            t
        };
        (format!("pre_logits.fc1.{rest}"), t)
    } else if let Some(rest) = name.strip_prefix("classifier.3.") {
        let t = if rest == "weight" {
            t.reshape((4096, 4096, 1, 1)).unwrap()
        } else {
            t
        };
        (format!("pre_logits.fc2.{rest}"), t)
    } else if let Some(rest) = name.strip_prefix("classifier.6.") {
        (format!("head.fc.{rest}"), t)
    } else {
        (name.to_string(), t)
    }
}

#[test]
fn timm_vgg_weights_load_and_give_the_same_logits() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(7, 3);
    let source = models::build("vgg16_bn", &c, 1, &Device::Cpu).unwrap();
    perturb_running_stats(&source);
    let x = input(2, 3, 40, 9);
    let want = source.net.forward_t(&x, false).unwrap();
    assert!(magnitude(&want) > 1e-2, "logits {want}");
    let timm: HashMap<String, Tensor> = tensors(&source)
        .into_iter()
        .map(|(k, t)| to_timm(&k, t))
        .collect();
    assert_eq!(timm["pre_logits.fc1.weight"].dims(), [4096, 512, 7, 7]);
    let path = dir.path().join("vgg16_bn_timm.safetensors");
    candle_core::safetensors::save(&timm, &path).unwrap();
    drop(timm);

    // Wipe the model (every tensor 0), then load the timm file back into it.
    let target = source;
    for (_, var) in target.params.named() {
        var.set(&var.zeros_like().unwrap()).unwrap();
    }
    let wiped = target.net.forward_t(&x, false).unwrap();
    assert!(
        max_abs_diff(&wiped, &want) > 1e-2,
        "wiping must change the logits"
    );
    let report =
        pretrained::load_into(&target.params, &path, models::info("vgg16_bn").unwrap()).unwrap();
    assert_eq!(report.loaded.len(), 84, "{}", report.summary());
    assert!(
        report.initialised.is_empty() && report.skipped.is_empty(),
        "{}",
        report.summary()
    );
    let got = target.net.forward_t(&x, false).unwrap();
    assert!(
        max_abs_diff(&got, &want) < 1e-6,
        "timm layout changed the logits"
    );
}

#[test]
fn vgg_remap_keeps_torchvision_names() {
    let t = Tensor::zeros((4096, 25088), DType::F32, &Device::Cpu).unwrap();
    let (name, out) = vgg::remap("classifier.0.weight", t).unwrap().unwrap();
    assert_eq!(
        (name.as_str(), out.dims()),
        ("classifier.0.weight", &[4096, 25088][..])
    );
    let t = Tensor::zeros(64, DType::F32, &Device::Cpu).unwrap();
    let (name, _) = vgg::remap("features.1.running_mean", t).unwrap().unwrap();
    assert_eq!(name, "features.1.running_mean");
}

/// The spelling of old torchvision DenseNet checkpoints: `norm1` -> `norm.1`.
fn to_old_densenet(name: &str) -> String {
    if !name.contains("denselayer") {
        return name.to_string();
    }
    ["norm1", "conv1", "norm2", "conv2"]
        .iter()
        .fold(name.to_string(), |n, m| {
            n.replace(&format!(".{m}."), &format!(".{}.{}.", &m[..4], &m[4..]))
        })
}

#[test]
fn old_densenet_spellings_load() {
    let _turn = turn();
    assert_eq!(
        to_old_densenet("features.denseblock2.denselayer11.conv2.weight"),
        "features.denseblock2.denselayer11.conv.2.weight"
    );
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(5, 3);
    let source = models::build("densenet121", &c, 1, &Device::Cpu).unwrap();
    perturb_running_stats(&source);
    let x = input(2, 3, 36, 4);
    let want = source.net.forward_t(&x, false).unwrap();
    assert!(magnitude(&want) > 1e-2, "logits {want}");
    let old: HashMap<String, Tensor> = tensors(&source)
        .into_iter()
        .map(|(k, t)| (to_old_densenet(&k), t))
        .collect();
    assert!(old.contains_key("features.denseblock4.denselayer16.norm.2.running_var"));
    let path = dir.path().join("densenet121_old.safetensors");
    candle_core::safetensors::save(&old, &path).unwrap();

    let target = models::build("densenet121", &c, 2, &Device::Cpu).unwrap();
    let before = target.net.forward_t(&x, false).unwrap();
    assert!(
        max_abs_diff(&before, &want) > 1e-2,
        "seeds 1 and 2 must differ"
    );
    let report =
        pretrained::load_into(&target.params, &path, models::info("densenet121").unwrap()).unwrap();
    assert_eq!(report.loaded.len(), 606, "{}", report.summary());
    let got = target.net.forward_t(&x, false).unwrap();
    assert!(
        max_abs_diff(&got, &want) < 1e-6,
        "old spellings changed the logits"
    );

    // Names outside a dense layer, and counters, pass unchanged.
    let t = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
    for name in [
        "features.transition1.norm.weight",
        "features.denseblock1.denselayer1.norm.1.num_batches_tracked",
        "features.norm5.bias",
    ] {
        assert_eq!(densenet::remap(name, t.clone()).unwrap().unwrap().0, name);
    }
}

#[test]
fn a_wrong_shape_is_refused_naming_the_tensor() {
    let _turn = turn();
    let c = cfg(5, 3);
    let source = models::build("densenet121", &c, 1, &Device::Cpu).unwrap();
    let mut file = tensors(&source);
    let bad = "features.denseblock2.denselayer3.conv1.weight";
    file.insert(
        bad.to_string(),
        Tensor::zeros((128, 100, 1, 1), DType::F32, &Device::Cpu).unwrap(),
    );
    let target = models::build("densenet121", &c, 2, &Device::Cpu).unwrap();
    let err = pretrained::load_map(
        &target.params,
        file,
        "test.safetensors",
        models::info("densenet121").unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(bad) && err.contains("[128, 100, 1, 1]"),
        "{err}"
    );
}

/// PyTorch's MaxPool2d(2) / AvgPool2d(2) written out: (output, and for the
/// max the flat index each output came from).
fn reference_pool2(x: &[f32], n: usize, h: usize, w: usize, max: bool) -> (Vec<f32>, Vec<usize>) {
    let (oh, ow) = (h / 2, w / 2);
    let (mut out, mut arg) = (Vec::new(), Vec::new());
    for b in 0..n {
        for i in 0..oh {
            for j in 0..ow {
                let ks: Vec<usize> = [(0, 0), (0, 1), (1, 0), (1, 1)]
                    .iter()
                    .map(|(di, dj)| b * h * w + (2 * i + di) * w + 2 * j + dj)
                    .collect();
                if max {
                    let k = *ks.iter().max_by(|a, b| x[**a].total_cmp(&x[**b])).unwrap();
                    out.push(x[k]);
                    arg.push(k);
                } else {
                    out.push(ks.iter().map(|k| x[*k]).sum::<f32>() / 4.0);
                }
            }
        }
    }
    (out, arg)
}

#[test]
fn two_by_two_pools_match_pytorch_forward_and_backward() {
    for (h, w) in [(8, 8), (7, 9), (3, 3), (5, 4)] {
        let n = 2;
        // Distinct values (no ties), both signs.
        let values: Vec<f32> = (0..n * h * w)
            .map(|i| ((i * 7919) % (n * h * w)) as f32 * 0.01 - 0.3)
            .collect();
        let x = Var::from_tensor(
            &Tensor::from_vec(values.clone(), (n, 1, h, w), &Device::Cpu).unwrap(),
        )
        .unwrap();
        for max in [true, false] {
            let y = if max {
                vgg::max_pool_2x2(x.as_tensor()).unwrap()
            } else {
                densenet::avg_pool_2x2(x.as_tensor()).unwrap()
            };
            let (want, arg) = reference_pool2(&values, n, h, w, max);
            assert_eq!(y.dims(), [n, 1, h / 2, w / 2], "{h}x{w}");
            let got = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (g, e) in got.iter().zip(&want) {
                assert!(
                    (g - e).abs() < 1e-6,
                    "{h}x{w} max={max}: {got:?} vs {want:?}"
                );
            }
            // d(sum(y * r))/dx: r to the arg-max (max) or r/4 to each of the window (avg).
            let (r, got) = common::ramp_weighted_grad(&y, &x);
            let mut expected = vec![0f32; values.len()];
            if max {
                for (k, &src) in arg.iter().enumerate() {
                    expected[src] += r[k];
                }
            } else {
                let (oh, ow) = (h / 2, w / 2);
                for b in 0..n {
                    for i in 0..oh {
                        for j in 0..ow {
                            let k = (b * oh + i) * ow + j;
                            for (di, dj) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                                expected[b * h * w + (2 * i + di) * w + 2 * j + dj] += r[k] / 4.0;
                            }
                        }
                    }
                }
            }
            for (g, e) in got.iter().zip(&expected) {
                assert!(
                    (g - e).abs() < 1e-5,
                    "{h}x{w} max={max}: grad {got:?} vs {expected:?}"
                );
            }
        }
    }
}

#[test]
fn forward_gives_logits_and_a_few_steps_reduce_the_loss() {
    let _turn = turn();
    // Grey 32 x 32 images, 4 classes: one fixed batch of 4 to fit. Adam's
    // first steps move every weight by about lr, so VGG (138 M weights, and
    // batch statistics of 4 samples at 2 x 2 in VGG-BN's last block) needs
    // a small one.
    let c = cfg(4, 1);
    let x = input(4, 1, 32, 11);
    let labels = Tensor::new(&[0u32, 1, 2, 3], &Device::Cpu).unwrap();
    for (name, lr) in [("vgg16", 1e-4), ("vgg16_bn", 5e-5), ("densenet121", 1e-3)] {
        let m = models::build(name, &c, 5, &Device::Cpu).unwrap();
        for train in [false, true] {
            let y = m.net.forward_t(&input(2, 1, 33, 1), train).unwrap();
            assert_eq!(y.dims(), [2, 4], "{name} train={train}");
            let v = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(
                v.iter().all(|v| v.is_finite()),
                "{name} train={train}: {v:?}"
            );
        }
        let hyper = Hyper {
            kind: OptimizerKind::Adam,
            momentum: 0.9,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        };
        let vars = m.params.trainable().into_iter().map(|(_, v)| v).collect();
        let mut opt = Optimizer::new(vars, hyper, true).unwrap();
        let mut losses = Vec::new();
        for step in 0..3 {
            let logits = m.net.forward_t(&x, true).unwrap();
            let loss = candle_nn::loss::cross_entropy(&logits, &labels).unwrap();
            losses.push(loss.to_scalar::<f32>().unwrap());
            if step < 2 {
                opt.step(&loss.backward().unwrap(), lr).unwrap();
            }
        }
        // Deterministic (no dropout, fixed batch): any fall is real.
        assert!(
            losses.windows(2).all(|w| w[1] < w[0]) && losses[2] < 0.985 * losses[0],
            "{name}: losses {losses:?}, expected each below the one before"
        );
    }
}
