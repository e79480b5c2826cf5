//! `predict`, saved models, `weights pull` and the fine-tuning options
//! (`freeze`, `head_lr`).

mod common;

use candle_core::Device;
use common::fer_lab;
use fer_lab::data::{Dataset, split::stratified_holdout, synth};
use fer_lab::models::{self, ModelConfig, pretrained};
use fer_lab::spec::{self, TrialPlan};
use fer_lab::train::{self, Control, EpochRecord, RunOptions, Sink};
use std::path::{Path, PathBuf};

struct Quiet;

impl Sink for Quiet {
    fn epoch(&mut self, _: &EpochRecord) -> anyhow::Result<Control> {
        Ok(Control::Continue)
    }
}

fn plan(backbone_extra: &str, train_extra: &str) -> TrialPlan {
    let text = format!(
        "[experiment]\nname = \"p\"\nseed = 3\n[data]\nroot = \"unused\"\nimage_size = 32\nchannels = 1\nmean = [0.5]\nstd = [0.25]\n\
         [train]\nepochs = 1\nbatch_size = 8\nlr = 0.001\n{train_extra}\n[[backbone]]\nname = \"resnet10\"\n{backbone_extra}\n"
    );
    spec::expand(&spec::parse(&text, "test.toml", &[]).unwrap()).remove(0)
}

/// Trains `plan` for its epochs on a small synthetic set and saves the
/// best weights; returns the data set, the validation indices, the
/// outcome and the model file.
fn trained(dir: &Path, plan: &TrialPlan) -> (Dataset, Vec<usize>, train::Outcome, PathBuf) {
    let data = dir.join("faces");
    synth::write(&data, 6, 32, 5).unwrap();
    let ds = Dataset::load(&data, 32, 1).unwrap();
    let split: fer_lab::data::split::TrialSplit =
        stratified_holdout(&ds.labels, &ds.classes, 0.3, plan.seed)
            .unwrap()
            .into();
    let out = dir.join("model.safetensors");
    let options = RunOptions {
        model_out: Some(out.clone()),
        ..RunOptions::default()
    };
    let outcome = train::run(plan, &ds, &split, &Device::Cpu, &mut Quiet, options).unwrap();
    (ds, split.val.clone(), outcome, out)
}

fn tensor(file: &Path, name: &str) -> Vec<f32> {
    pretrained::read(file).unwrap()[name]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

#[test]
fn predict_on_a_saved_model_reproduces_its_validation_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan("", "");
    let (ds, val, outcome, model) = trained(dir.path(), &plan);
    let meta = pretrained::read_meta(&model).unwrap().unwrap();
    assert_eq!(meta.backbone, "resnet10");
    assert_eq!(meta.classes, ds.classes);
    assert_eq!((meta.in_channels, meta.image_size), (1, 32));
    assert_eq!(meta.epoch, Some(outcome.best.as_ref().unwrap().epoch));

    let images: Vec<String> = val
        .iter()
        .map(|&i| ds.root.join(&ds.files[i]).display().to_string())
        .collect();
    let out = fer_lab(dir.path())
        .args(["predict", "--backbone", "resnet10", "--weights"])
        .arg(&model)
        .args(["--format", "json", "--top", "3", "--logits"])
        .args(&images)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), images.len());
    let mut correct = 0;
    for ((line, image), &i) in lines.iter().zip(&images).zip(&val) {
        assert_eq!(line["image"], image.as_str());
        let top = line["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let probs: Vec<f64> = top.iter().map(|t| t["prob"].as_f64().unwrap()).collect();
        assert!(probs.windows(2).all(|w| w[0] >= w[1]), "{probs:?}");
        assert!(probs.iter().all(|p| *p > 0.0 && *p <= 1.0));
        let class = top[0]["class"].as_u64().unwrap() as usize;
        assert_eq!(top[0]["label"], ds.classes[class].as_str());
        let logits = line["logits"].as_array().unwrap();
        assert_eq!(logits.len(), ds.classes.len());
        correct += usize::from(class == ds.labels[i]);
    }
    // predict's own decoding, resizing and normalisation see what training saw.
    let acc = correct as f64 / val.len() as f64;
    let reported = outcome.best_val.unwrap().acc;
    assert!(
        (acc - reported).abs() < 1e-9,
        "predict {acc}, training {reported}"
    );

    let text = fer_lab(dir.path())
        .args(["predict", "--backbone", "resnet10", "--weights"])
        .arg(&model)
        .args(["--top", "2"])
        .arg(&images[0])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(text).unwrap();
    assert!(text.starts_with(&images[0]) && text.contains("  1. ") && text.contains("  2. "));
}

#[test]
fn predict_refuses_weights_that_do_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let (ds, _, _, model) = trained(dir.path(), &plan("", ""));
    let image = ds.root.join(&ds.files[0]);
    let run = |args: &[&str]| {
        let out = fer_lab(dir.path())
            .arg("predict")
            .args(args)
            .arg("--weights")
            .arg(&model)
            .arg(&image)
            .assert()
            .failure()
            .get_output()
            .stderr
            .clone();
        String::from_utf8(out).unwrap()
    };
    let wrong = run(&["--backbone", "resnet18"]);
    assert!(wrong.contains("holds a resnet10 model"), "{wrong}");
    let classes = run(&["--backbone", "resnet10", "--classes", "5"]);
    assert!(classes.contains("has 7 classes, but 5"), "{classes}");
    let labels = run(&["--backbone", "resnet10", "--labels", "a,b"]);
    assert!(labels.contains("has 7 classes, but 2"), "{labels}");

    // A file without a trained head for the asked classes is refused.
    let bare = dir.path().join("bare.safetensors");
    let m = models::build("resnet10", &ModelConfig::new(7, 1), 0, &Device::Cpu).unwrap();
    let tensors: std::collections::HashMap<String, candle_core::Tensor> = m
        .params
        .named()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("fc."))
        .map(|(k, v)| (k, v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&tensors, &bare).unwrap();
    let out = fer_lab(dir.path())
        .args([
            "predict",
            "--backbone",
            "resnet10",
            "--classes",
            "7",
            "--weights",
        ])
        .arg(&bare)
        .arg(&image)
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("no classifier for 7 classes"), "{out}");
}

#[test]
fn real_lite0_weights_see_a_cat() {
    let weights = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/weights/efficientnet-lite0.safetensors");
    if !weights.exists() {
        eprintln!("skipped: {} not found", weights.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = fer_lab(dir.path())
        .args([
            "predict",
            "--backbone",
            "efficientnet_lite0",
            "--classes",
            "1000",
            "--format",
            "json",
            "--weights",
        ])
        .arg(&weights)
        .arg(common::repo("tests/fixtures/chelsea.jpg"))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let top = &line["top"][0];
    // ImageNet's domestic cats: 281 tabby .. 285 Egyptian cat.
    let class = top["class"].as_u64().unwrap();
    assert!((281..=285).contains(&class), "{line}");
    assert!(
        top["label"].as_str().unwrap().contains("cat") || class == 281,
        "{line}"
    );
}

#[test]
fn weights_pull_fails_fast_offline_and_uses_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("hf");
    let fail = |envs: &[(&str, &str)]| {
        let mut cmd = fer_lab(dir.path());
        cmd.args(["weights", "pull", "timm/resnet18.tv_in1k"])
            .env("HF_HOME", &home)
            .env_remove("HF_HUB_OFFLINE");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let started = std::time::Instant::now();
        let out = cmd.assert().failure().get_output().stderr.clone();
        (String::from_utf8(out).unwrap(), started.elapsed())
    };
    let (offline, took) = fail(&[("HF_HUB_OFFLINE", "1")]);
    assert!(offline.contains("HF_HUB_OFFLINE is set"), "{offline}");
    assert!(took.as_secs() < 30);
    // An endpoint that refuses connections: a clear download error.
    let (refused, _) = fail(&[("HF_ENDPOINT", "http://127.0.0.1:9")]);
    assert!(
        refused.contains("download failed") && refused.contains("online"),
        "{refused}"
    );

    // A cached copy is found without the network, offline included.
    let snap = home.join("hub/models--timm--resnet18.tv_in1k/snapshots/abc123");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::write(snap.join("model.safetensors"), b"x").unwrap();
    std::fs::create_dir_all(home.join("hub/models--timm--resnet18.tv_in1k/refs")).unwrap();
    std::fs::write(
        home.join("hub/models--timm--resnet18.tv_in1k/refs/main"),
        "abc123",
    )
    .unwrap();
    let out = fer_lab(dir.path())
        .args(["weights", "pull", "timm/resnet18.tv_in1k"])
        .env("HF_HOME", &home)
        .env("HF_HUB_OFFLINE", "1")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(
        String::from_utf8(out)
            .unwrap()
            .trim()
            .ends_with("abc123/model.safetensors")
    );
}

#[test]
fn freeze_backbone_trains_only_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan("freeze = \"backbone\"", "");
    let (_, _, _, model) = trained(dir.path(), &plan);
    let fresh =
        models::build("resnet10", &ModelConfig::new(7, 1), plan.seed, &Device::Cpu).unwrap();
    let fresh_file = dir.path().join("fresh.safetensors");
    fresh.params.varmap().save(&fresh_file).unwrap();
    for name in [
        "conv1.weight",
        "layer2.0.conv1.weight",
        "layer4.0.bn2.weight",
    ] {
        assert_eq!(
            tensor(&model, name),
            tensor(&fresh_file, name),
            "{name} moved"
        );
    }
    assert_ne!(
        tensor(&model, "fc.weight"),
        tensor(&fresh_file, "fc.weight")
    );
}

#[test]
fn freeze_until_and_head_lr() {
    let m = models::build("resnet10", &ModelConfig::new(7, 1), 0, &Device::Cpu).unwrap();
    let info = models::info("resnet10").unwrap();
    let names = |freeze: &str| -> anyhow::Result<Vec<String>> {
        let p = plan(&format!("freeze = \"{freeze}\""), "");
        Ok(train::trained_parameters(&m, info, &p.backbone)?
            .into_iter()
            .map(|(n, _)| n)
            .collect())
    };
    let until = names("until:layer3").unwrap();
    assert_eq!(until[0], "layer3.0.conv1.weight");
    assert!(
        until
            .iter()
            .all(|n| !n.starts_with("layer2.") && !n.starts_with("conv1"))
    );
    assert!(until.contains(&"fc.weight".to_string()));
    assert_eq!(names("backbone").unwrap(), ["fc.weight", "fc.bias"]);
    assert_eq!(names("none").unwrap().len(), m.params.trainable().len());
    let err = names("until:layer9").unwrap_err().to_string();
    assert!(
        err.contains("no layer \"layer9\"") && err.contains("layer3"),
        "{err}"
    );

    // A spec with a bad freeze or head_lr is refused before anything runs.
    let bad = "[experiment]\nname = \"p\"\n[data]\nroot = \"x\"\n[[backbone]]\nname = \"resnet10\"\nfreeze = \"layer3\"\nhead_lr = -1.0\n";
    let err = spec::parse(bad, "bad.toml", &[]).unwrap_err().to_string();
    assert!(
        err.contains("bad.toml:7") && err.contains("until:<layer>"),
        "{err}"
    );
    assert!(
        err.contains("bad.toml:8") && err.contains("head_lr"),
        "{err}"
    );

    // head_lr: the head learns at its own rate while the body barely moves.
    let dir = tempfile::tempdir().unwrap();
    let plan = plan("head_lr = 0.01", "");
    let plan = TrialPlan {
        train: spec::TrainConfig {
            lr: 1e-12,
            ..plan.train
        },
        ..plan
    };
    let (_, _, _, model) = trained(dir.path(), &plan);
    let fresh =
        models::build("resnet10", &ModelConfig::new(7, 1), plan.seed, &Device::Cpu).unwrap();
    let fresh_file = dir.path().join("fresh.safetensors");
    fresh.params.varmap().save(&fresh_file).unwrap();
    let diff = |name: &str| {
        tensor(&model, name)
            .iter()
            .zip(tensor(&fresh_file, name))
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
    };
    assert!(diff("layer1.0.conv1.weight") < 1e-6);
    assert!(diff("fc.weight") > 1e-3, "{}", diff("fc.weight"));
}

#[test]
fn a_missing_pretrained_file_stops_the_sweep_before_the_database() {
    let dir = tempfile::tempdir().unwrap();
    common::faces(dir.path(), 3, 32, 1);
    std::fs::write(
        dir.path().join("s.toml"),
        "[experiment]\nname = \"s\"\n[data]\nroot = \"faces\"\nimage_size = 32\n\
         [[backbone]]\nname = \"resnet10\"\npretrained = \"nowhere.safetensors\"\n",
    )
    .unwrap();
    let out = fer_lab(dir.path())
        .args(["sweep", "s.toml", "--db", "runs/s.sqlite"])
        .assert()
        .code(2)
        .get_output()
        .stderr
        .clone();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("pretrained weights nowhere.safetensors not found"),
        "{out}"
    );
    assert!(!dir.path().join("runs/s.sqlite").exists());
}
