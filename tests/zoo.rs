//! Every backbone family trains in a real sweep, is evaluated and reaches
//! the leaderboard; models of each family save and predict.

mod common;

use common::{faces, fer_lab};

/// One member of each family (plain VGG-16 differs from VGG-16-BN only by
/// its batch norms; tests/parity.rs covers it, and 138 M parameters are
/// slow to train and save twice).
const FAMILIES: [&str; 5] = [
    "resnet18",
    "vgg16_bn",
    "densenet121",
    "efficientnet_b0",
    "efficientnet_lite0",
];

#[test]
fn every_family_trains_in_a_sweep_and_reaches_the_leaderboard() {
    let dir = tempfile::tempdir().unwrap();
    faces(dir.path(), 4, 32, 3);
    let backbones: String = FAMILIES
        .iter()
        .map(|b| format!("[[backbone]]\nname = \"{b}\"\n"))
        .collect();
    std::fs::write(
        dir.path().join("zoo.toml"),
        format!(
            "[experiment]\nname = \"zoo\"\n[data]\nroot = \"faces\"\nimage_size = 32\nchannels = 3\n\
             mean = [0.5, 0.5, 0.5]\nstd = [0.25, 0.25, 0.25]\nval_fraction = 0.25\n\
             [train]\nepochs = 2\nbatch_size = 7\nlr = 1e-3\n{backbones}[scheduler]\ndevices = \"cpu\"\n"
        ),
    )
    .unwrap();
    fer_lab(dir.path())
        .args(["sweep", "zoo.toml", "--db", "runs/zoo.sqlite"])
        .assert()
        .success();
    let out = fer_lab(dir.path())
        .args(["leaderboard", "--format", "json", "--db", "runs/zoo.sqlite"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out).unwrap();
    for b in FAMILIES {
        let row = rows
            .iter()
            .find(|r| r["backbone"] == b)
            .unwrap_or_else(|| panic!("{b} missing from {rows:?}"));
        assert_eq!(row["status"], "done", "{row}");
        let acc = row["acc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{row}");
    }
    // The training loss is finite for every family and every epoch.
    let db = rusqlite::Connection::open(dir.path().join("runs/zoo.sqlite")).unwrap();
    let losses: Vec<(String, f64)> = db
        .prepare("SELECT t.backbone, e.train_loss FROM epochs e JOIN trials t ON t.id = e.trial_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(losses.len(), 2 * FAMILIES.len());
    assert!(losses.iter().all(|(_, l)| l.is_finite()), "{losses:?}");
    // Each trial's best weights were saved and predict runs them.
    let models: Vec<_> = std::fs::read_dir(dir.path().join("runs/models"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(models.len(), FAMILIES.len());
    for m in &models {
        let meta = fer_lab::models::pretrained::read_meta(m).unwrap().unwrap();
        let image = dir
            .path()
            .join("faces/happy")
            .read_dir()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let out = fer_lab(dir.path())
            .args([
                "predict",
                "--backbone",
                &meta.backbone,
                "--format",
                "json",
                "--weights",
            ])
            .arg(m)
            .arg(&image)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            line["top"].as_array().unwrap().len(),
            5,
            "{}",
            meta.backbone
        );
    }
}
