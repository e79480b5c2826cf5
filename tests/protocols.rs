//! Evaluation protocols (holdout, subject k-fold, folders), leakage counts,
//! pretrained loading, reports and the store's migration.

mod common;

use candle_core::Device;
use common::{ckplus, faces, fer_lab};
use fer_lab::data::split::{Overlap, ids_from_names, leak, subject_folds, subject_kfold};
use fer_lab::data::{Dataset, synth};
use fer_lab::models::{self, ModelConfig, pretrained};
use predicates::str::contains;
use std::collections::HashSet;
use std::path::Path;

fn ids(ds: &Dataset, pattern: &str) -> Vec<String> {
    ids_from_names(&ds.files, &regex::Regex::new(pattern).unwrap()).unwrap()
}

/// Every image is tested exactly once, no subject is in two folds, and the
/// inner validation subjects are apart from both training and test.
fn check_kfold(subjects: &[String], folds: usize) {
    let mut tested = vec![0usize; subjects.len()];
    let mut fold_subjects: Vec<HashSet<&String>> = Vec::new();
    for fold in 0..folds {
        let s = subject_kfold(subjects, folds, fold, 0.1, 42);
        let test = s.test.as_ref().unwrap();
        for &i in test {
            tested[i] += 1;
        }
        let of = |idx: &[usize]| idx.iter().map(|&i| &subjects[i]).collect::<HashSet<_>>();
        let (tr, va, te) = (of(&s.train), of(&s.val), of(test));
        assert!(
            tr.is_disjoint(&te) && va.is_disjoint(&te) && tr.is_disjoint(&va),
            "fold {fold}"
        );
        assert!(!va.is_empty() && !tr.is_empty());
        assert_eq!(s.train.len() + s.val.len() + test.len(), subjects.len());
        fold_subjects.push(te);
    }
    assert!(
        tested.iter().all(|&n| n == 1),
        "every image is tested exactly once"
    );
    for a in 0..folds {
        for b in a + 1..folds {
            assert!(
                fold_subjects[a].is_disjoint(&fold_subjects[b]),
                "folds {a} and {b} share a subject"
            );
        }
    }
}

#[test]
fn subject_kfold_on_ckplus_matches_the_published_fold_sizes() {
    let Some(root) = ckplus() else { return };
    let ds = Dataset::load(&root, 48, 1).unwrap();
    let subjects = ids(&ds, r"^S(\d+)_");
    let sequences = ids(&ds, r"^(S\d+_\d+)_");
    assert_eq!(subjects.iter().collect::<HashSet<_>>().len(), 118);
    check_kfold(&subjects, 10);
    let assignment = subject_folds(&subjects, 10);
    let mut per_fold = vec![HashSet::new(); 10];
    for (s, q) in subjects.iter().zip(&sequences) {
        per_fold[assignment[s]].insert(q);
    }
    let sizes: Vec<usize> = per_fold.iter().map(HashSet::len).collect();
    assert_eq!(sizes, [33, 39, 40, 35, 30, 37, 29, 29, 33, 22]);
    // The holdout frame split leaks every validation subject into training.
    let h = fer_lab::data::split::stratified_holdout(&ds.labels, &ds.classes, 0.2, 42).unwrap();
    let l = leak(&subjects, &sequences, &h.train, &h.val);
    assert!(l.is_leaky());
    assert_eq!(l.subjects.shared, l.subjects.of);
}

#[test]
fn subject_kfold_on_synthetic_faces() {
    let dir = tempfile::tempdir().unwrap();
    synth::write(dir.path(), 12, 16, 5).unwrap();
    let ds = Dataset::load(dir.path(), 16, 1).unwrap();
    check_kfold(&ids(&ds, r"^S(\d+)_"), 4);
}

#[test]
fn leak_counts_on_a_hand_made_split() {
    // Subjects a, b, c; sequences a1, a2, b1, c1.
    let subjects: Vec<String> = ["a", "a", "a", "b", "b", "c"].map(String::from).to_vec();
    let sequences: Vec<String> = ["a1", "a1", "a2", "b1", "b1", "c1"]
        .map(String::from)
        .to_vec();
    // Train: a1, b1; eval: a1 (other frame), a2, c1.
    let l = leak(&subjects, &sequences, &[0, 3, 4], &[1, 2, 5]);
    assert_eq!(l.subjects, Overlap { shared: 1, of: 2 });
    assert_eq!(l.sequences, Overlap { shared: 1, of: 3 });
    let clean = leak(&subjects, &sequences, &[0, 1, 2], &[3, 4, 5]);
    assert!(!clean.is_leaky());
    // Numeric ids sort as numbers: 2 before 10, dealt round-robin.
    let f = subject_folds(&["10".into(), "2".into(), "3".into()], 2);
    assert_eq!((f["2"], f["3"], f["10"]), (0, 1, 0));
}

#[test]
fn folders_protocol_uses_the_given_split() {
    let dir = tempfile::tempdir().unwrap();
    for (part, n) in [("train", 6), ("val", 3), ("test", 2)] {
        synth::write(&dir.path().join(part), n, 16, n as u64).unwrap();
    }
    let (ds, split) = Dataset::load_folders(dir.path(), 16, 1).unwrap();
    assert_eq!(ds.classes, synth::CLASSES);
    assert_eq!(
        (
            split.train.len(),
            split.val.len(),
            split.test.as_ref().map(Vec::len)
        ),
        (42, 21, Some(14))
    );
    assert!(ds.files[split.val[0]].starts_with("val"));
    std::fs::remove_dir_all(dir.path().join("test/happy")).unwrap();
    let err = Dataset::load_folders(dir.path(), 16, 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "test/ has classes [anger, contempt, disgust, fear, sadness, surprise] but train/ has"
        ),
        "{err}"
    );
    std::fs::remove_dir_all(dir.path().join("val")).unwrap();
    let err = Dataset::load_folders(dir.path(), 16, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("val is missing"), "{err}");
}

#[test]
fn pretrained_weights_load_with_a_fresh_head_and_grey_first_conv() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("resnet10.safetensors");
    let rgb = ModelConfig::new(1000, 3);
    let source = models::build("resnet10", &rgb, 1, &Device::Cpu).unwrap();
    source.params.varmap().save(&file).unwrap();
    let grey = ModelConfig::new(7, 1);
    let target = models::build("resnet10", &grey, 2, &Device::Cpu).unwrap();
    let report =
        pretrained::load_into(&target.params, &file, models::info("resnet10").unwrap()).unwrap();
    assert_eq!(report.initialised, ["fc.bias", "fc.weight"]);
    assert_eq!(report.adapted, ["conv1.weight"]);
    assert!(report.skipped.contains(&"fc.weight".to_string()));
    let get = |m: &models::Model, name: &str| {
        m.params.varmap().data().lock().unwrap()[name]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(
        get(&source, "layer3.0.conv2.weight"),
        get(&target, "layer3.0.conv2.weight")
    );
    assert_eq!(
        get(&source, "layer4.0.bn1.running_var"),
        get(&target, "layer4.0.bn1.running_var")
    );
    // The grey filter is the sum of the RGB ones.
    let (s, t) = (get(&source, "conv1.weight"), get(&target, "conv1.weight"));
    assert!((t[0] - (s[0] + s[49] + s[98])).abs() < 1e-6);

    let wrong = models::build("resnet18", &grey, 2, &Device::Cpu).unwrap();
    let err = pretrained::load_into(&wrong.params, &file, models::info("resnet18").unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("lack") && err.contains("layer1.1."), "{err}");
    let missing = pretrained::load_into(
        &target.params,
        &dir.path().join("none.safetensors"),
        models::info("resnet10").unwrap(),
    )
    .unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("none.safetensors do not exist")
    );
}

#[test]
fn kfold_sweep_leaderboard_and_report_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    faces(dir.path(), 9, 24, 7);
    std::fs::write(
        dir.path().join("kf.toml"),
        "[experiment]\nname = \"kf\"\n[data]\nroot = \"faces\"\nimage_size = 24\nchannels = 1\nmean = [0.5]\nstd = [0.25]\n\
         protocol = \"subject-kfold\"\nfolds = 3\ninner_val_fraction = 0.2\n\
         [train]\nepochs = 1\nbatch_size = 8\n[[backbone]]\nname = \"resnet10\"\n",
    )
    .unwrap();
    fer_lab(dir.path())
        .args(["sweep", "kf.toml", "--db", "kf.sqlite"])
        .assert()
        .success()
        .stderr(contains("fold 2: done"))
        .stderr(contains("test acc"));
    let out = fer_lab(dir.path())
        .args([
            "leaderboard",
            "--db",
            "kf.sqlite",
            "--format",
            "json",
            "--plot",
            "lb.png",
        ])
        .output()
        .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        rows.as_array().unwrap().len(),
        1,
        "three folds make one point"
    );
    assert_eq!(
        (rows[0]["folds"].as_u64(), rows[0]["evaluated_on"].as_str()),
        (Some(3), Some("test"))
    );
    assert!(rows[0]["acc_std"].is_number());
    assert!(dir.path().join("lb.png").exists());
    fer_lab(dir.path())
        .args(["report", "2", "--db", "kf.sqlite", "--out", "rep"])
        .assert()
        .success()
        .stdout(contains(
            "classification report (pooled over 3 test folds, 63 images)",
        ))
        .stdout(contains("leakage: none"))
        .stdout(contains("weighted avg"));
    for f in [
        "report.txt",
        "confusion.png",
        "curves-fold-0.png",
        "curves-fold-2.png",
    ] {
        assert!(dir.path().join("rep").join(f).exists(), "{f}");
    }
    fer_lab(dir.path())
        .args(["report", "99", "--db", "kf.sqlite"])
        .assert()
        .code(2)
        .stderr(contains("no trial matches \"99\""));
    // The synthetic faces have subjects too: a holdout split of them leaks.
    fer_lab(dir.path())
        .args([
            "sweep",
            "kf.toml",
            "--db",
            "kf.sqlite",
            "--set",
            "data.protocol=holdout",
            "--set",
            "experiment.name=ho",
        ])
        .assert()
        .success()
        .stderr(contains(
            "warning: subject leak: the validation images share",
        ));
}

#[test]
fn version_1_databases_are_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(include_str!("fixtures/schema_v1.sql"))
        .unwrap();
    drop(conn);
    let store = fer_lab::store::Store::open(&db).unwrap();
    let rows = store.trials(None).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].best_val_acc, rows[0].test_acc, rows[0].epochs_run),
        (Some(0.5), None, 1)
    );
    drop(store);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, fer_lab::store::SCHEMA_VERSION);
}

#[test]
fn reproduce_recipe_spec_runs_and_prints_the_published_figure() {
    let dir = tempfile::tempdir().unwrap();
    faces(dir.path(), 6, 32, 7);
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/reproduce-resnet101.toml");
    fer_lab(dir.path())
        .args([
            "sweep",
            spec.to_str().unwrap(),
            "--db",
            "r.sqlite",
            "--set",
            "data.root=faces",
            "--set",
            "train.epochs=1",
            "--set",
            "data.image_size=32",
        ])
        .assert()
        .success()
        .stderr(contains(
            "resnet101: no pretrained weights: training from scratch",
        ))
        .stderr(contains("warning: subject leak"));
    fer_lab(dir.path())
        .args([
            "report",
            "--sweep",
            "reproduce-resnet101",
            "--db",
            "r.sqlite",
            "--out",
            "rep",
        ])
        .assert()
        .success()
        .stdout(contains("published: 99.49% (Keras ResNet101 notebook"))
        .stdout(contains("; fer-lab: "))
        .stdout(contains("leakage: WARNING"))
        .stdout(contains("wrote rep/curves.png"));
}

#[test]
fn folders_protocol_on_a_split_copy_of_ckplus() {
    let Some(root) = ckplus() else { return };
    let ds = Dataset::load(&root, 48, 1).unwrap();
    let split = fer_lab::data::split::stratified_holdout(&ds.labels, &ds.classes, 0.2, 42).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (part, indices) in [("train", &split.train), ("val", &split.val)] {
        for &i in indices.iter() {
            let to = dir.path().join(part).join(&ds.files[i]);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(root.join(&ds.files[i]), to).unwrap();
        }
    }
    let (copy, given) = Dataset::load_folders(dir.path(), 48, 1).unwrap();
    assert_eq!(
        (given.train.len(), given.val.len(), given.test),
        (785, 196, None)
    );
    assert_eq!(copy.classes, ds.classes);
}

#[test]
fn an_unfinished_fold_does_not_mix_validation_into_the_test_mean() {
    use fer_lab::store::{TrialId, TrialRow, TrialStatus};
    let row = |id: i64, fold: usize, test: Option<f64>, status: TrialStatus| TrialRow {
        id: TrialId(id),
        key: format!("k{id}"),
        sweep: "kf".into(),
        backbone: "resnet18".into(),
        params_json: "{}".into(),
        status,
        epochs_planned: 3,
        epochs_run: 3,
        best_epoch: Some(2),
        best_val_acc: Some(0.99),
        best_val_macro_f1: Some(0.99),
        wall_seconds: 1.0,
        error: None,
        fold: Some(fold),
        test_acc: test,
        test_macro_f1: test.map(|t| t - 0.1),
        leak_json: None,
    };
    let trials = [
        row(1, 0, Some(0.8), TrialStatus::Done),
        row(2, 1, Some(0.9), TrialStatus::Done),
        row(3, 2, None, TrialStatus::Running),
    ];
    let rows = fer_lab::report::rows(&trials, false);
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].folds_scored, rows[0].folds), (2, 3));
    assert!((rows[0].acc.unwrap() - 0.85).abs() < 1e-12);
    assert!((rows[0].acc_std.unwrap() - (0.005f64).sqrt()).abs() < 1e-12);
    assert_eq!(rows[0].status, "2 done, 1 running");
}
