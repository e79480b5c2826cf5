//! Helpers shared by the integration tests (each test binary uses a part).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The fer-lab binary, run in `dir` with 2 threads.
pub fn fer_lab(dir: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("fer-lab").unwrap();
    cmd.current_dir(dir).env("RAYON_NUM_THREADS", "2");
    cmd
}

/// The same as a std command, for tests that spawn and signal it.
pub fn fer_lab_process(dir: &Path) -> std::process::Command {
    use assert_cmd::cargo::CommandCargoExt;
    let mut cmd = std::process::Command::cargo_bin("fer-lab").unwrap();
    cmd.current_dir(dir).env("RAYON_NUM_THREADS", "2");
    cmd
}

/// A path inside the repository, as a string.
pub fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

/// The real CK+48 beside the checkout (../shared), or None to skip.
pub fn ckplus() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/ckplus/CK+48");
    if root.is_dir() {
        Some(root)
    } else {
        eprintln!("skipped: CK+48 not found at {}", root.display());
        None
    }
}

/// Writes the synthetic faces to `dir/faces` (what `fer-lab data synth --out faces` does).
pub fn faces(dir: &Path, per_class: usize, size: usize, seed: u64) {
    fer_lab::data::synth::write(&dir.join("faces"), per_class, size, seed).unwrap();
}

/// Rows in the `epochs` table (0 while the database does not exist yet).
pub fn count_epochs(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .and_then(|c| c.query_row("SELECT COUNT(*) FROM epochs", [], |r| r.get(0)))
        .unwrap_or(0)
}

/// Weights r = 1, 2, 3, ... over `y` (as many as it has elements) and the
/// gradient d(sum(y * r))/dx, flattened: what a pooling test routes by hand.
pub fn ramp_weighted_grad(y: &candle_core::Tensor, x: &candle_core::Var) -> (Vec<f32>, Vec<f32>) {
    let r: Vec<f32> = (0..y.elem_count()).map(|i| 1.0 + i as f32).collect();
    let rt = candle_core::Tensor::from_vec(r.clone(), y.dims(), y.device()).unwrap();
    let grads = (y * rt).unwrap().sum_all().unwrap().backward().unwrap();
    let got = grads
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    (r, got)
}
