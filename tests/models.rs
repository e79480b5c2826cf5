//! Backbones: architecture checked against torchvision's parameter counts
//! and names, batch-norm train/eval behaviour, seeded initialisation, the
//! padded max-pool against a direct reference, and the optimisers' rules.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use fer_lab::models::{self, ModelConfig, layers};
use fer_lab::spec::OptimizerKind;
use fer_lab::train::optim::{Hyper, Optimizer};

const IMAGENET: ModelConfig = ModelConfig::new(1000, 3);

#[test]
fn parameter_counts_match_torchvision() {
    // sum(p.numel() for p in torchvision.models.<name>().parameters())
    for (name, count) in [
        ("resnet18", 11_689_512),
        ("resnet34", 21_797_672),
        ("resnet50", 25_557_032),
        ("resnet101", 44_549_160),
    ] {
        let m = models::build(name, &IMAGENET, 0, &Device::Cpu).unwrap();
        assert_eq!(m.params.count(), count, "{name}");
    }
}

#[test]
fn parameter_names_follow_torchvision() {
    let m = models::build("resnet50", &IMAGENET, 0, &Device::Cpu).unwrap();
    let data = m.params.varmap().data().lock().unwrap();
    for name in [
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.conv3.weight",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.running_var",
        "layer4.2.bn3.bias",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(data.contains_key(name), "missing {name}");
    }
    // torchvision's resnet50 state dict has 320 tensors; 53 of them are the
    // batch norms' num_batches_tracked counters, which fer-lab does not keep.
    assert_eq!(data.len(), 320 - 53);
}

#[test]
fn every_backbone_runs_forward_and_backward_on_small_inputs() {
    let cfg = ModelConfig::new(7, 1);
    for info in models::REGISTRY
        .iter()
        .filter(|b| ["resnet10", "resnet18", "resnet50"].contains(&b.name))
    {
        let m = models::build(info.name, &cfg, 1, &Device::Cpu).unwrap();
        for size in [32, 33, 48] {
            let x = Tensor::randn(0f32, 1.0, (2, 1, size, size), &Device::Cpu).unwrap();
            let y = m.net.forward_t(&x, true).unwrap();
            assert_eq!(y.dims(), [2, 7], "{} at {size}", info.name);
            let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            let (_, w) = &m.params.trainable()[0];
            let g = grads.get(w.as_tensor()).expect("conv1 has a gradient");
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                norm.is_finite() && norm > 0.0,
                "{} at {size}: |grad| = {norm}",
                info.name
            );
        }
    }
}

#[test]
fn batch_norm_updates_running_stats_in_training_only() {
    let cfg = ModelConfig::new(3, 1);
    let m = models::build("resnet10", &cfg, 1, &Device::Cpu).unwrap();
    let mean = || {
        m.params.varmap().data().lock().unwrap()["bn1.running_mean"]
            .as_tensor()
            .to_vec1::<f32>()
            .unwrap()
    };
    let x = (Tensor::randn(0f32, 1.0, (4, 1, 32, 32), &Device::Cpu).unwrap() + 3.0).unwrap();
    let before = mean();
    let e1 = m
        .net
        .forward_t(&x, false)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_eq!(
        before,
        mean(),
        "evaluation must not touch running statistics"
    );
    let e2 = m
        .net
        .forward_t(&x, false)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_eq!(e1, e2);
    m.net.forward_t(&x, true).unwrap();
    let after = mean();
    assert_ne!(before, after, "training must update running statistics");
    // momentum 0.1 from zero: running_mean = 0.1 * batch mean.
    assert!(after.iter().any(|v| v.abs() > 1e-3));
    let e3 = m
        .net
        .forward_t(&x, false)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_ne!(e1, e3, "evaluation uses the updated running statistics");
}

#[test]
fn initialisation_is_seeded() {
    let cfg = ModelConfig::new(7, 1);
    let weights = |seed| {
        let m = models::build("resnet10", &cfg, seed, &Device::Cpu).unwrap();
        m.params.varmap().data().lock().unwrap()["layer2.0.conv1.weight"]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(weights(5), weights(5));
    assert_ne!(weights(5), weights(6));
    // Kaiming normal, fan-out: std = sqrt(2 / (128 * 3 * 3)).
    let w = weights(5);
    let std = (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt();
    assert!(
        (std / (2.0f32 / 1152.0).sqrt() - 1.0).abs() < 0.05,
        "std {std}"
    );
}

/// PyTorch's MaxPool2d(3, stride 2, padding 1) written out directly.
fn reference_pool(x: &[f32], n: usize, h: usize, w: usize) -> (Vec<f32>, Vec<usize>, usize, usize) {
    let (oh, ow) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
    let mut out = Vec::new();
    let mut argmax = Vec::new();
    for b in 0..n {
        for i in 0..oh {
            for j in 0..ow {
                let mut best = (f32::NEG_INFINITY, 0);
                for di in 0..3 {
                    for dj in 0..3 {
                        let (y, x_) = ((2 * i + di) as i64 - 1, (2 * j + dj) as i64 - 1);
                        if y >= 0 && x_ >= 0 && (y as usize) < h && (x_ as usize) < w {
                            let k = b * h * w + y as usize * w + x_ as usize;
                            if x[k] > best.0 {
                                best = (x[k], k);
                            }
                        }
                    }
                }
                out.push(best.0);
                argmax.push(best.1);
            }
        }
    }
    (out, argmax, oh, ow)
}

#[test]
fn padded_max_pool_matches_reference_forward_and_backward() {
    for (h, w) in [(24, 24), (7, 9), (2, 3), (13, 12)] {
        let n = 3;
        // Distinct non-negative values (post-ReLU inputs, no ties).
        let values: Vec<f32> = (0..n * h * w)
            .map(|i| ((i * 7919) % (n * h * w)) as f32 * 0.01)
            .collect();
        let x = Var::from_tensor(
            &Tensor::from_vec(values.clone(), (n, 1, h, w), &Device::Cpu).unwrap(),
        )
        .unwrap();
        let y = layers::max_pool_3x3_s2_after_relu(x.as_tensor()).unwrap();
        let (want, argmax, oh, ow) = reference_pool(&values, n, h, w);
        assert_eq!(y.dims(), [n, 1, oh, ow]);
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want,
            "{h}x{w}"
        );
        // d(sum(y * r))/dx routes each r to its window's arg-max.
        let (r, got) = common::ramp_weighted_grad(&y, &x);
        let mut expected = vec![0f32; values.len()];
        for (k, &src) in argmax.iter().enumerate() {
            expected[src] += r[k];
        }
        assert_eq!(got, expected, "{h}x{w}");
    }
}

fn run_optimizer(kind: OptimizerKind, fused: bool, steps: usize) -> Vec<f32> {
    let p = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0, 0.5], &Device::Cpu).unwrap()).unwrap();
    let hyper = Hyper {
        kind,
        momentum: 0.9,
        weight_decay: 0.1,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    let mut opt = Optimizer::new(vec![p.clone()], hyper, fused).unwrap();
    for _ in 0..steps {
        // loss = sum(p^3) / 3, so grad = p^2.
        let loss = (p.as_tensor().powf(3.0).unwrap().sum_all().unwrap() / 3.0).unwrap();
        opt.step(&loss.backward().unwrap(), 0.1).unwrap();
    }
    p.as_tensor()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

#[test]
fn optimisers_follow_pytorch_rules() {
    // torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1), two steps on sum(p^3)/3.
    // step 1: g = p^2 + 0.1p = [1.1, 3.8, 0.3]; buf = g; p = [0.89, -2.38, 0.47]
    // step 2: g = [0.8811, 5.4264, 0.2679]; buf = 0.9*buf + g = [1.8711, 8.8464, 0.5379]
    //         p = [0.70289, -3.26464, 0.41621]
    let sgd = run_optimizer(OptimizerKind::Sgd, true, 2);
    for (g, w) in sgd.iter().zip([0.70289f32, -3.26464, 0.41621]) {
        assert!((g - w).abs() < 1e-5, "{sgd:?}");
    }
    // Adam's first step moves each weight by lr against the sign of its gradient.
    let adam = run_optimizer(OptimizerKind::Adam, true, 1);
    for (g, w) in adam.iter().zip([0.9f32, -2.1, 0.4]) {
        assert!((g - w).abs() < 1e-5, "{adam:?}");
    }
    // AdamW first decays (p *= 1 - lr*wd = 0.99), then steps by lr against sign(p^2) = -1.
    let adamw = run_optimizer(OptimizerKind::Adamw, true, 1);
    for (g, w) in adamw.iter().zip([0.89f32, -2.08, 0.395]) {
        assert!((g - w).abs() < 1e-5, "{adamw:?}");
    }
}

#[test]
fn fused_and_tensor_optimisers_agree() {
    for kind in [
        OptimizerKind::Sgd,
        OptimizerKind::Adam,
        OptimizerKind::Adamw,
    ] {
        let (a, b) = (run_optimizer(kind, true, 5), run_optimizer(kind, false, 5));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{kind:?}: {a:?} vs {b:?}");
        }
    }
}
