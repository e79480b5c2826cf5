//! EfficientNet-B0 and -Lite0: parameter counts against the references
//! (torchvision's `efficientnet_b0`, lukemelas' `efficientnet-lite0`), the
//! real Lite0 ImageNet weights against the reference logits, loading from
//! torchvision's and lukemelas' layouts, TensorFlow "same" padding, and
//! training behaviour.

use candle_core::{DType, Device, Tensor};
use fer_lab::models::layers::{Conv2d, ConvOpts, Padding};
use fer_lab::models::{self, ModelConfig, ParamStore, pretrained};
use fer_lab::spec::OptimizerKind;
use fer_lab::train::optim::{Hyper, Optimizer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const IMAGENET: ModelConfig = ModelConfig::new(1000, 3);
/// Stage repeats of B0 / Lite0.
const REPEATS: [usize; 7] = [1, 2, 2, 3, 3, 4, 1];

fn deterministic(num_classes: usize, in_channels: usize) -> ModelConfig {
    ModelConfig {
        stochastic: false,
        ..ModelConfig::new(num_classes, in_channels)
    }
}

/// The real Lite0 weights beside the checkout (../shared), or None to skip.
fn lite0_weights() -> Option<(PathBuf, serde_json::Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/weights");
    let weights = dir.join("efficientnet-lite0.safetensors");
    let reference = dir.join("efficientnet-lite0.reference.json");
    if !weights.is_file() || !reference.is_file() {
        eprintln!(
            "skipped: {} (or its reference json) not found",
            weights.display()
        );
        return None;
    }
    let json = serde_json::from_str(&std::fs::read_to_string(reference).unwrap()).unwrap();
    Some((weights, json))
}

/// Seeded standard-normal images (candle's own generator cannot be seeded).
fn images(n: usize, c: usize, size: usize, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0f32, 1.0).unwrap();
    let v: Vec<f32> = (0..n * c * size * size)
        .map(|_| normal.sample(&mut rng))
        .collect();
    Tensor::from_vec(v, (n, c, size, size), &Device::Cpu).unwrap()
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn parameter_counts_and_names_match_the_references() {
    // sum(p.numel() for p in torchvision.models.efficientnet_b0().parameters())
    // and the same for EfficientNet.from_name('efficientnet-lite0').
    for (name, count, tensors) in [
        // timm's state dicts: 360 and 296 tensors, 49 of them the batch
        // norms' num_batches_tracked, which fer-lab does not keep.
        ("efficientnet_b0", 5_288_548, 360 - 49),
        ("efficientnet_lite0", 4_652_008, 296 - 49),
    ] {
        let m = models::build(name, &IMAGENET, 0, &Device::Cpu).unwrap();
        assert_eq!(m.params.count(), count, "{name}");
        let named = m.params.named();
        assert_eq!(named.len(), tensors, "{name}");
        let has = |n: &str| named.iter().any(|(k, _)| k == n);
        for n in [
            "conv_stem.weight",
            "bn1.running_var",
            "blocks.0.0.conv_dw.weight",
            "blocks.0.0.bn1.weight",
            "blocks.0.0.conv_pw.weight",
            "blocks.0.0.bn2.running_mean",
            "blocks.1.0.conv_pw.weight",
            "blocks.5.3.conv_dw.weight",
            "blocks.6.0.conv_pwl.weight",
            "blocks.6.0.bn3.bias",
            "conv_head.weight",
            "bn2.running_mean",
            "classifier.weight",
            "classifier.bias",
        ] {
            assert!(has(n), "{name} lacks {n}");
        }
        let se = has("blocks.1.0.se.conv_reduce.weight");
        assert_eq!(se, name == "efficientnet_b0", "{name}: squeeze-excitation");
    }
    // torchvision's SE reduces to max(1, block input channels / 4).
    let m = models::build("efficientnet_b0", &IMAGENET, 0, &Device::Cpu).unwrap();
    let shape = |n: &str| {
        let named = m.params.named();
        named
            .iter()
            .find(|(k, _)| k == n)
            .unwrap()
            .1
            .dims()
            .to_vec()
    };
    assert_eq!(shape("blocks.0.0.se.conv_reduce.weight"), [8, 32, 1, 1]);
    assert_eq!(shape("blocks.1.0.se.conv_reduce.weight"), [4, 96, 1, 1]);
    assert_eq!(shape("blocks.1.1.se.conv_expand.weight"), [144, 6, 1, 1]);
}

fn stats(m: &models::Model, name: &str) -> (f32, f32, f32) {
    let named = m.params.named();
    let v = to_vec(named.iter().find(|(k, _)| k == name).unwrap().1.as_tensor());
    let n = v.len() as f32;
    let mean = v.iter().sum::<f32>() / n;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n).sqrt();
    (mean, std, v.iter().fold(0f32, |a, x| a.max(x.abs())))
}

#[test]
fn initialisation_follows_the_references() {
    let near = |got: f32, want: f32, what: &str| {
        assert!((got / want - 1.0).abs() < 0.1, "{what}: {got} vs {want}");
    };
    // torchvision: Kaiming normal with fan-out cout * k * k (groups
    // ignored, so a depthwise 3x3 over 96 channels has std sqrt(2 / 864)),
    // classifier U(+-1/sqrt(classes)) with bias 0.
    let b0 = models::build("efficientnet_b0", &IMAGENET, 0, &Device::Cpu).unwrap();
    near(
        stats(&b0, "blocks.1.0.conv_dw.weight").1,
        (2.0f32 / 864.0).sqrt(),
        "B0 conv_dw",
    );
    near(
        stats(&b0, "conv_head.weight").1,
        (2.0f32 / 1280.0).sqrt(),
        "B0 conv_head",
    );
    let (_, std, max) = stats(&b0, "classifier.weight");
    near(std, (1.0f32 / 1000.0).sqrt() / 3f32.sqrt(), "B0 classifier");
    assert!(max <= (1.0f32 / 1000.0).sqrt());
    assert_eq!(stats(&b0, "classifier.bias").2, 0.0);
    assert_eq!(stats(&b0, "blocks.1.0.se.conv_reduce.bias").2, 0.0);
    // lukemelas sets none: PyTorch's U(+-1/sqrt(fan_in)) for convs and the
    // classifier (bias included).
    let lite = models::build("efficientnet_lite0", &IMAGENET, 0, &Device::Cpu).unwrap();
    let (_, std, max) = stats(&lite, "blocks.1.0.conv_dw.weight");
    near(std, 1.0 / 3.0 / 3f32.sqrt(), "Lite0 conv_dw");
    assert!(max <= 1.0 / 3.0);
    let (_, std, max) = stats(&lite, "classifier.bias");
    near(
        std,
        (1.0f32 / 1280.0).sqrt() / 3f32.sqrt(),
        "Lite0 classifier bias",
    );
    assert!(max <= (1.0f32 / 1280.0).sqrt());
    for m in [&b0, &lite] {
        let (mean, std, _) = stats(m, "bn2.weight");
        assert_eq!((mean, std), (1.0, 0.0));
    }
}

#[test]
fn remap_reads_torchvision_and_lukemelas_names() {
    let t = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
    let map = |n: &str| {
        models::efficientnet::remap(n, t.clone())
            .unwrap()
            .map(|(k, _)| k)
    };
    for (theirs, ours) in [
        // ours (timm's) as they are
        ("blocks.1.0.bn1.weight", "blocks.1.0.bn1.weight"),
        ("bn2.bias", "bn2.bias"),
        // torchvision
        ("features.0.0.weight", "conv_stem.weight"),
        ("features.0.1.running_mean", "bn1.running_mean"),
        ("features.1.0.block.0.0.weight", "blocks.0.0.conv_dw.weight"),
        ("features.1.0.block.0.1.bias", "blocks.0.0.bn1.bias"),
        (
            "features.1.0.block.1.fc1.weight",
            "blocks.0.0.se.conv_reduce.weight",
        ),
        ("features.1.0.block.2.0.weight", "blocks.0.0.conv_pw.weight"),
        ("features.1.0.block.2.1.weight", "blocks.0.0.bn2.weight"),
        ("features.2.1.block.0.0.weight", "blocks.1.1.conv_pw.weight"),
        (
            "features.2.1.block.1.1.running_var",
            "blocks.1.1.bn2.running_var",
        ),
        (
            "features.2.1.block.2.fc2.bias",
            "blocks.1.1.se.conv_expand.bias",
        ),
        ("features.7.0.block.3.1.weight", "blocks.6.0.bn3.weight"),
        ("features.8.0.weight", "conv_head.weight"),
        ("features.8.1.weight", "bn2.weight"),
        ("classifier.1.weight", "classifier.weight"),
        // lukemelas: `_bn1` is the head's at the top, a block's inside one
        ("_conv_stem.weight", "conv_stem.weight"),
        ("_bn0.weight", "bn1.weight"),
        ("_bn1.weight", "bn2.weight"),
        ("_blocks.0._bn1.weight", "blocks.0.0.bn1.weight"),
        (
            "_blocks.0._project_conv.weight",
            "blocks.0.0.conv_pw.weight",
        ),
        ("_blocks.0._bn2.weight", "blocks.0.0.bn2.weight"),
        ("_blocks.1._expand_conv.weight", "blocks.1.0.conv_pw.weight"),
        ("_blocks.1._bn0.weight", "blocks.1.0.bn1.weight"),
        ("_blocks.2._bn1.weight", "blocks.1.1.bn2.weight"),
        (
            "_blocks.3._se_reduce.bias",
            "blocks.2.0.se.conv_reduce.bias",
        ),
        (
            "_blocks.11._depthwise_conv.weight",
            "blocks.5.0.conv_dw.weight",
        ),
        (
            "_blocks.15._project_conv.weight",
            "blocks.6.0.conv_pwl.weight",
        ),
        ("_blocks.15._bn2.running_var", "blocks.6.0.bn3.running_var"),
        ("_conv_head.weight", "conv_head.weight"),
        ("_fc.bias", "classifier.bias"),
    ] {
        assert_eq!(map(theirs).as_deref(), Some(ours), "{theirs}");
    }
    for skipped in [
        "bn1.num_batches_tracked",
        "features.0.1.num_batches_tracked",
        "_blocks.3._bn0.num_batches_tracked",
    ] {
        assert_eq!(map(skipped), None, "{skipped}");
    }
    // Names of another architecture (B1's 17th block) are refused by name.
    for foreign in ["_blocks.16._bn0.weight", "features.1.0.block.3.0.weight"] {
        let err = models::efficientnet::remap(foreign, t.clone()).unwrap_err();
        assert!(err.to_string().contains(foreign), "{err}");
    }
}

/// x[0, c, h, w] = sin(0.001 * (c*224*224 + h*224 + w)), 1x3x224x224.
fn sin_input() -> Tensor {
    let v: Vec<f32> = (0..3 * 224 * 224)
        .map(|i| (0.001 * i as f64).sin() as f32)
        .collect();
    Tensor::from_vec(v, (1, 3, 224, 224), &Device::Cpu).unwrap()
}

#[test]
fn real_lite0_weights_reproduce_the_reference_logits() {
    let Some((weights, json)) = lite0_weights() else {
        return;
    };
    let m = models::build("efficientnet_lite0", &IMAGENET, 0, &Device::Cpu).unwrap();
    let info = models::info("efficientnet_lite0").unwrap();
    let report = pretrained::load_into(&m.params, &weights, info).unwrap();
    assert!(
        report.initialised.is_empty() && report.adapted.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.loaded.len(), 296 - 49);
    assert_eq!(
        report.skipped.len(),
        49,
        "only num_batches_tracked: {:?}",
        report.skipped
    );

    // The json: eval mode, the sin input fed as is; logits rounded to 5
    // decimals. "A faithful implementation matches these to about 1e-4":
    // relative to each value, plus the rounding of the printed ones.
    let logits = to_vec(&m.net.forward_t(&sin_input(), false).unwrap());
    assert_eq!(logits.len(), 1000);
    let close = |got: f32, want: f32, what: &str| {
        let tol = 1e-4 * want.abs() + 1e-5;
        assert!(
            (got - want).abs() <= tol,
            "{what}: {got} vs reference {want} (tolerance {tol:e})"
        );
    };
    for (i, &want) in floats(&json["logits_first10"]).iter().enumerate() {
        close(logits[i], want, &format!("logit {i}"));
    }
    let top: Vec<u64> = json["logits_top5_indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let mut order: Vec<usize> = (0..1000).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    assert_eq!(
        order[..5].iter().map(|&i| i as u64).collect::<Vec<_>>(),
        top
    );
    for (&i, &want) in top.iter().zip(&floats(&json["logits_top5_values"])) {
        close(logits[i as usize], want, &format!("logit {i}"));
    }
    let sum: f64 = logits.iter().map(|&v| v as f64).sum();
    let l2: f64 = logits
        .iter()
        .map(|&v| (v as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let l2_ref = json["logits_l2"].as_f64().unwrap();
    // The sum cancels: compare it against the logits' scale.
    let sum_ref = json["logits_sum"].as_f64().unwrap();
    assert!(
        (sum - sum_ref).abs() <= 1e-4 * l2_ref + 1e-4,
        "sum {sum} vs {sum_ref}"
    );
    assert!(
        (l2 - l2_ref).abs() <= 1e-4 * l2_ref + 1e-4,
        "l2 {l2} vs {l2_ref}"
    );
}

#[test]
fn real_lite0_weights_into_a_grey_seven_class_model() {
    let Some((weights, _)) = lite0_weights() else {
        return;
    };
    let m = models::build(
        "efficientnet_lite0",
        &ModelConfig::new(7, 1),
        0,
        &Device::Cpu,
    )
    .unwrap();
    let info = models::info("efficientnet_lite0").unwrap();
    let report = pretrained::load_into(&m.params, &weights, info).unwrap();
    assert_eq!(report.adapted, ["conv_stem.weight"]);
    let mut fresh = report.initialised.clone();
    fresh.sort();
    assert_eq!(fresh, ["classifier.bias", "classifier.weight"]);
    assert_eq!(report.loaded.len(), 296 - 49 - 2);
    // The grey stem is the RGB one summed over its input channels.
    let file = pretrained::read(&weights).unwrap();
    let rgb = file["_conv_stem.weight"].sum_keepdim(1).unwrap();
    let named = m.params.named();
    let stem = &named
        .iter()
        .find(|(k, _)| k == "conv_stem.weight")
        .unwrap()
        .1;
    assert_eq!(stem.dims(), [32, 1, 3, 3]);
    assert_eq!(to_vec(stem.as_tensor()), to_vec(&rgb));
    let x = images(2, 1, 48, 0);
    let y = m.net.forward_t(&x, false).unwrap();
    assert_eq!(y.dims(), [2, 7]);
    assert!(to_vec(&y).iter().all(|v| v.is_finite()));
}

/// torchvision's `efficientnet_b0` name of one of our tensors (written out
/// independently of the crate's `remap`, which reads the other way).
fn torchvision_name(ours: &str) -> String {
    let parts: Vec<&str> = ours.split('.').collect();
    let param = parts[parts.len() - 1];
    match parts[0] {
        "conv_stem" => format!("features.0.0.{param}"),
        "bn1" => format!("features.0.1.{param}"),
        "conv_head" => format!("features.8.0.{param}"),
        "bn2" => format!("features.8.1.{param}"),
        "classifier" => format!("classifier.1.{param}"),
        "blocks" => {
            let (s, b) = (parts[1].parse::<usize>().unwrap(), parts[2]);
            let module = parts[3..parts.len() - 1].join(".");
            let tail = match (s == 0, module.as_str()) {
                (true, "conv_dw") => "0.0",
                (true, "bn1") => "0.1",
                (true, "se.conv_reduce") => "1.fc1",
                (true, "se.conv_expand") => "1.fc2",
                (true, "conv_pw") => "2.0",
                (true, "bn2") => "2.1",
                (false, "conv_pw") => "0.0",
                (false, "bn1") => "0.1",
                (false, "conv_dw") => "1.0",
                (false, "bn2") => "1.1",
                (false, "se.conv_reduce") => "2.fc1",
                (false, "se.conv_expand") => "2.fc2",
                (false, "conv_pwl") => "3.0",
                (false, "bn3") => "3.1",
                other => panic!("unexpected module {other:?}"),
            };
            format!("features.{}.{b}.block.{tail}.{param}", s + 1)
        }
        other => panic!("unexpected tensor {other}"),
    }
}

/// lukemelas' name of one of our tensors (blocks numbered flat).
fn lukemelas_name(ours: &str) -> String {
    let parts: Vec<&str> = ours.split('.').collect();
    let param = parts[parts.len() - 1];
    match parts[0] {
        "conv_stem" => format!("_conv_stem.{param}"),
        "bn1" => format!("_bn0.{param}"),
        "conv_head" => format!("_conv_head.{param}"),
        "bn2" => format!("_bn1.{param}"),
        "classifier" => format!("_fc.{param}"),
        "blocks" => {
            let (s, b): (usize, usize) = (parts[1].parse().unwrap(), parts[2].parse().unwrap());
            let flat = REPEATS[..s].iter().sum::<usize>() + b;
            let module = parts[3..parts.len() - 1].join(".");
            let part = match (s == 0, module.as_str()) {
                (true, "conv_pw") | (false, "conv_pwl") => "_project_conv",
                (true, "bn1") | (false, "bn2") => "_bn1",
                (true, "bn2") | (false, "bn3") => "_bn2",
                (false, "conv_pw") => "_expand_conv",
                (false, "bn1") => "_bn0",
                (_, "conv_dw") => "_depthwise_conv",
                (_, "se.conv_reduce") => "_se_reduce",
                (_, "se.conv_expand") => "_se_expand",
                other => panic!("unexpected module {other:?}"),
            };
            format!("_blocks.{flat}.{part}.{param}")
        }
        other => panic!("unexpected tensor {other}"),
    }
}

/// A model whose every tensor (running statistics included) is random, so
/// a tensor loaded into the wrong place changes the logits.
fn randomised(name: &str, seed: u64) -> models::Model {
    let m = models::build(name, &deterministic(5, 3), seed, &Device::Cpu).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (k, var) in m.params.named() {
        let n = var.elem_count();
        let batch_norm = k.starts_with("bn") || k.contains(".bn");
        let t = if batch_norm {
            // weight, bias and running statistics in [0.5, 1.5)
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(0.5..1.5)).collect();
            Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap()
        } else {
            let normal = Normal::new(0f32, 0.05).unwrap();
            let v: Vec<f32> = (0..n).map(|_| normal.sample(&mut rng)).collect();
            (var.as_tensor() + Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap()).unwrap()
        };
        var.set(&t).unwrap();
    }
    m
}

/// Loads `src`'s tensors, renamed by `rename` (plus a `num_batches_tracked`
/// per batch norm, as PyTorch saves them), into a fresh `name` model and
/// checks it computes exactly what `src` does.
fn check_renamed_load(name: &str, rename: fn(&str) -> String) {
    let src = randomised(name, 1);
    let mut file: HashMap<String, Tensor> = HashMap::new();
    for (k, var) in src.params.named() {
        if let Some(bn) = k.strip_suffix(".running_mean") {
            let counter = rename(&format!("{bn}.num_batches_tracked"));
            file.insert(counter, Tensor::new(&[7i64], &Device::Cpu).unwrap());
        }
        file.insert(rename(&k), var.as_tensor().copy().unwrap());
    }
    let dst = models::build(name, &deterministic(5, 3), 2, &Device::Cpu).unwrap();
    let info = models::info(name).unwrap();
    let report = pretrained::load_map(&dst.params, file, "renamed", info).unwrap();
    assert_eq!(report.loaded.len(), src.params.named().len(), "{name}");
    assert!(
        report.initialised.is_empty() && report.adapted.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.skipped.len(), 49, "{name}: the counters");
    let x = images(2, 3, 32, 1);
    let (a, b) = (
        src.net.forward_t(&x, false).unwrap(),
        dst.net.forward_t(&x, false).unwrap(),
    );
    assert_eq!(to_vec(&a), to_vec(&b), "{name}");
    // The randomised model is not the fresh one (the check has teeth).
    let fresh = models::build(name, &deterministic(5, 3), 2, &Device::Cpu).unwrap();
    assert_ne!(to_vec(&fresh.net.forward_t(&x, false).unwrap()), to_vec(&a));
}

#[test]
fn torchvision_named_b0_tensors_load_and_give_identical_logits() {
    check_renamed_load("efficientnet_b0", torchvision_name);
}

#[test]
fn lukemelas_named_tensors_load_for_both_variants() {
    check_renamed_load("efficientnet_b0", lukemelas_name);
    check_renamed_load("efficientnet_lite0", lukemelas_name);
}

#[test]
fn tf_same_padding_gives_ceil_of_input_over_stride() {
    let pb = ParamStore::new(0, &Device::Cpu);
    for k in [1, 3, 5] {
        let opts = ConvOpts::new(4, k, 2, Padding::TfSame);
        let conv = Conv2d::new(&pb.root().pp(format!("k{k}")), 2, 4, k, opts).unwrap();
        for size in [7, 8, 15, 16, 33] {
            let x = Tensor::zeros((1, 2, size, size + 1), DType::F32, &Device::Cpu).unwrap();
            let y = conv.forward(&x).unwrap();
            assert_eq!(
                y.dims(),
                [1, 4, size.div_ceil(2), (size + 1).div_ceil(2)],
                "k {k}, {size}x{}",
                size + 1
            );
        }
    }
    // The odd pixel of padding goes to the bottom / right.
    assert_eq!(Padding::TfSame.resolve(8, 7, 3, 2), [0, 1, 1, 1]);
    assert_eq!(Padding::TfSame.resolve(16, 16, 5, 2), [1, 2, 1, 2]);
    assert_eq!(Padding::TfSame.resolve(15, 15, 5, 1), [2, 2, 2, 2]);
}

#[test]
fn a_few_optimizer_steps_lower_the_loss() {
    let hyper = Hyper {
        kind: OptimizerKind::Adam,
        momentum: 0.9,
        weight_decay: 0.0,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    // Eight images: with fewer, the last stages' batch norm (over N values
    // at 1x1) makes single steps erratic, in PyTorch as here.
    let x = images(8, 1, 32, 2);
    let y = Tensor::new(&[0u32, 1, 2, 0, 1, 2, 0, 1], &Device::Cpu).unwrap();
    for name in ["efficientnet_b0", "efficientnet_lite0"] {
        let m = models::build(name, &deterministic(3, 1), 3, &Device::Cpu).unwrap();
        let vars = m.params.trainable().into_iter().map(|(_, v)| v).collect();
        let mut opt = Optimizer::new(vars, hyper, true).unwrap();
        let mut losses = Vec::new();
        for _ in 0..4 {
            let logits = m.net.forward_t(&x, true).unwrap();
            let loss = candle_nn::loss::cross_entropy(&logits, &y).unwrap();
            losses.push(loss.to_scalar::<f32>().unwrap());
            opt.step(&loss.backward().unwrap(), 1e-3).unwrap();
        }
        assert!(losses.iter().all(|l| l.is_finite()), "{name}: {losses:?}");
        assert!(losses[3] < losses[0], "{name}: {losses:?}");
    }
}

#[test]
fn training_forward_is_deterministic_without_stochastic_layers() {
    let x = images(2, 3, 32, 4);
    for name in ["efficientnet_b0", "efficientnet_lite0"] {
        let m = models::build(name, &deterministic(4, 3), 5, &Device::Cpu).unwrap();
        let a = to_vec(&m.net.forward_t(&x, true).unwrap());
        let b = to_vec(&m.net.forward_t(&x, true).unwrap());
        assert_eq!(a, b, "{name}");
        // With dropout and stochastic depth on, two training passes differ
        // while evaluation stays fixed.
        let s = models::build(name, &ModelConfig::new(4, 3), 5, &Device::Cpu).unwrap();
        let a = to_vec(&s.net.forward_t(&x, true).unwrap());
        let b = to_vec(&s.net.forward_t(&x, true).unwrap());
        assert_ne!(a, b, "{name}");
        let e = to_vec(&s.net.forward_t(&x, false).unwrap());
        assert_eq!(e, to_vec(&s.net.forward_t(&x, false).unwrap()), "{name}");
    }
}
