//! `fer-lab bench`: the fields its JSON promises, with values that make
//! sense (no timings are asserted), and its usage errors.

mod common;

use fer_lab::bench::Spread;

#[test]
fn bench_json_has_the_promised_fields() {
    let row = bench_json(&["--steps", "2", "--threads", "2"]);
    assert_eq!(row["backbone"], "resnet10");
    assert_eq!(
        (row["size"].as_u64(), row["batch"].as_u64()),
        (Some(32), Some(2))
    );
    assert_eq!(row["threads"].as_u64(), Some(2));
    for key in [
        "train_images_per_sec",
        "eval_images_per_sec",
        "train_ms_median",
        "matmul_gflops",
        "achieved_gflops",
    ] {
        let v = row[key].as_f64().unwrap_or(f64::NAN);
        assert!(v.is_finite() && v > 0.0, "{key} = {v}");
    }
    let (lo, mid, hi) = (
        row["train_ms_min"].as_f64().unwrap(),
        row["train_ms_median"].as_f64().unwrap(),
        row["train_ms_max"].as_f64().unwrap(),
    );
    assert!(lo <= mid && mid <= hi);
    // images/s is the batch over the median step.
    let ips = row["train_images_per_sec"].as_f64().unwrap();
    assert!((ips - 2.0 / (mid / 1e3)).abs() < 1e-6 * ips);
    // FLOPs of ResNet-10 at 32x32, batch 2: counted convolutions + linear, x3.
    let gflop = row["train_gflop_per_step"].as_f64().unwrap();
    assert!(gflop > 0.05 && gflop < 1.0, "{gflop}");
    assert!(row["loss_first"].as_f64().unwrap().is_finite());
}

#[test]
fn bench_refuses_unknown_backbones() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::fer_lab(dir.path())
        .args(["bench", "--backbone", "resnet7"])
        .assert()
        .code(2)
        .get_output()
        .stderr
        .clone();
    assert!(
        String::from_utf8(out)
            .unwrap()
            .contains("unknown backbone \"resnet7\"")
    );
}

#[test]
fn spread_is_median_min_max() {
    let s = Spread::of(&[3.0, 1.0, 2.0]);
    assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
    assert_eq!(Spread::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
}

/// `fer-lab bench --json` on ResNet-10 at 32x32, batch 2, with `extra` flags.
fn bench_json(extra: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let out = common::fer_lab(dir.path())
        .args([
            "bench",
            "--backbone",
            "resnet10",
            "--size",
            "32",
            "--batch",
            "2",
            "--json",
        ])
        .args(extra)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).unwrap()
}

/// `--profile` counts each kernel's calls per training step: a ResNet-10 has
/// 12 convolutions (stem, 8 in its blocks, 3 projections) each with a batch
/// norm, 11 input gradients (none for the image batch), one max-pool, and
/// 38 trained tensors for the fused optimiser.
#[test]
fn bench_profile_counts_kernel_calls_per_step() {
    let row = bench_json(&["--steps", "2", "--threads", "2", "--profile"]);
    let kernels = row["kernels"].as_array().expect("kernels array");
    let calls = |name: &str| {
        let k = kernels
            .iter()
            .find(|k| k["kernel"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {kernels:?}"));
        assert!(k["ms_per_step"].as_f64().unwrap() > 0.0, "{name}");
        k["calls_per_step"].as_f64().unwrap()
    };
    assert_eq!(calls("fer-conv2d"), 12.0);
    assert_eq!(calls("fer-conv2d-grad-weight"), 12.0);
    assert_eq!(calls("fer-conv2d-grad-input"), 11.0);
    assert_eq!(calls("fer-lab-batch-norm"), 12.0);
    assert_eq!(calls("fer-lab-batch-norm-backward"), 12.0);
    assert_eq!(calls("fer-max-pool2d"), 1.0);
    assert_eq!(calls("fer-max-pool2d-grad"), 1.0);
    assert_eq!(calls("fused-optimizer-step"), 38.0);
    // Without --profile the field is absent.
    let row = bench_json(&["--steps", "1", "--threads", "1"]);
    assert!(row.get("kernels").is_none());
}
