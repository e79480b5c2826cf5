//! The command line end to end, each test in its own temp dir: help and
//! exit codes, bad specs that write nothing, and a sweep -> leaderboard run.

mod common;

use common::{count_epochs, fer_lab, repo};
use predicates::str::contains;

#[test]
fn help_on_every_command() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--help"][..],
        &["sweep", "--help"],
        &["leaderboard", "--help"],
        &["data", "synth", "--help"],
        &["backbones", "--help"],
    ] {
        fer_lab(dir.path())
            .args(args)
            .assert()
            .success()
            .stdout(contains("Usage: fer-lab"));
    }
    fer_lab(dir.path())
        .arg("--help")
        .assert()
        .stdout(contains("sweep"))
        .stdout(contains("leaderboard"));
}

#[test]
fn bad_usage_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    fer_lab(dir.path())
        .args(["sweep", "--bogus"])
        .assert()
        .code(2);
    fer_lab(dir.path()).arg("fly").assert().code(2);
    fer_lab(dir.path())
        .args(["leaderboard", "--db", "none.sqlite"])
        .assert()
        .code(2)
        .stderr(
            "fer-lab: no database at none.sqlite; run `fer-lab sweep SPEC` first or pass --db\n",
        );
    fer_lab(dir.path())
        .args(["data", "synth", "--out", "x", "--size", "4"])
        .assert()
        .code(2);
}

#[test]
fn a_bad_spec_exits_2_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("bad.toml");
    std::fs::write(&spec, "[experiment]\nname = \"b\"\n\n[train]\nlr = 0\nepochz = 3\n\n[[backbone]]\nname = \"resnet18\"\n").unwrap();
    fer_lab(dir.path())
        .args(["sweep", "bad.toml", "--db", "runs/x.sqlite"])
        .assert()
        .code(2)
        .stderr(contains(
            "fer-lab: bad.toml:6:1: unknown field `epochz`, expected one of `epochs`",
        ));
    std::fs::write(
        &spec,
        "[experiment]\nname = \"b\"\n\n[train]\nlr = 0\n\n[[backbone]]\nname = \"resnet18\"\n",
    )
    .unwrap();
    fer_lab(dir.path())
        .args(["sweep", "bad.toml", "--db", "runs/x.sqlite", "--set", "train.epochs=0"])
        .assert()
        .code(2)
        .stderr("fer-lab: --set train.epochs=0: train.epochs must be in 1..=100000, got 0\nbad.toml:5:6: train.lr must be > 0 and <= 10, got 0\n");
    fer_lab(dir.path())
        .args(["sweep", "missing.toml"])
        .assert()
        .code(2)
        .stderr(contains("missing.toml: cannot read spec"));
    assert!(
        !dir.path().join("runs").exists(),
        "nothing may be written for a bad spec"
    );
}

#[test]
fn a_missing_data_root_exits_1_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    fer_lab(dir.path())
        .args([
            "sweep",
            &repo("experiments/backbones.toml"),
            "--db",
            "runs/x.sqlite",
            "--set",
            "data.root=no/such/dir",
        ])
        .assert()
        .code(1)
        .stderr(contains("data root no/such/dir does not exist"));
    assert!(!dir.path().join("runs").exists());
}

#[test]
fn sweep_then_leaderboard_then_resume() {
    let dir = tempfile::tempdir().unwrap();
    fer_lab(dir.path())
        .args([
            "data",
            "synth",
            "--out",
            "faces",
            "--per-class",
            "8",
            "--size",
            "24",
            "--seed",
            "1",
        ])
        .assert()
        .success()
        .stdout("wrote 56 images in 7 classes to faces\n");
    std::fs::write(
        dir.path().join("tiny.toml"),
        "[experiment]\nname = \"tiny\"\n[data]\nroot = \"faces\"\nimage_size = 24\nchannels = 1\nmean = [0.5]\nstd = [0.25]\n\
         [train]\nepochs = 2\nbatch_size = 8\n[[backbone]]\nname = \"resnet10\"\n[sweep.space]\nlr = [0.001, 0.01]\n",
    )
    .unwrap();
    fer_lab(dir.path())
        .args(["sweep", "tiny.toml", "--db", "out/t.sqlite"])
        .assert()
        .success()
        .stderr(contains(
            "(holdout protocol; first trial: 42 train / 14 validation)",
        ))
        .stderr(contains("[2/2] resnet10 lr=0.01 epoch 2/2: train loss"))
        .stderr(contains("sweep tiny: 2 trials: 2 trained, 0 skipped"));
    let db = dir.path().join("out/t.sqlite");
    assert_eq!(count_epochs(&db), 4);

    let csv = fer_lab(dir.path())
        .args(["leaderboard", "--db", "out/t.sqlite", "--format", "csv"])
        .output()
        .unwrap();
    assert!(csv.status.success());
    let text = String::from_utf8(csv.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "rank,trial,sweep,backbone,lr,status,folds,evaluated_on,best_epoch,acc,acc_std,macro_f1,macro_f1_std,epochs,wall_seconds"
    );
    assert_eq!(lines.len(), 3, "{text}");
    let epochs_run: i64 = lines[1..]
        .iter()
        .map(|l| l.split(',').nth(13).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(epochs_run, count_epochs(&db));
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.contains(",tiny,resnet10,") && l.contains(",done,1,val,"))
    );

    let json = fer_lab(dir.path())
        .args([
            "leaderboard",
            "--db",
            "out/t.sqlite",
            "--format",
            "json",
            "--sweep",
            "tiny",
        ])
        .output()
        .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2);
    assert_eq!(rows[0]["epochs_run"], 2);
    assert_eq!(rows[0]["folds"], 1);
    assert_eq!(rows[0]["folds"], 1);
    let table = fer_lab(dir.path())
        .args(["leaderboard", "--db", "out/t.sqlite"])
        .output()
        .unwrap();
    assert!(String::from_utf8(table.stdout).unwrap().contains("acc %"));
    fer_lab(dir.path())
        .args(["leaderboard", "--db", "out/t.sqlite", "--sweep", "nope"])
        .assert()
        .code(2)
        .stderr(contains("stored sweeps: tiny"));

    // Running the same spec again trains nothing and writes no epoch.
    fer_lab(dir.path())
        .args(["sweep", "tiny.toml", "--db", "out/t.sqlite"])
        .assert()
        .success()
        .stderr(contains("2 of 2 trials already finished, skipped"));
    assert_eq!(count_epochs(&db), 4);
    // A new grid point is added beside the finished ones.
    fer_lab(dir.path())
        .args([
            "sweep",
            "tiny.toml",
            "--db",
            "out/t.sqlite",
            "--set",
            "sweep.space.lr=[0.001, 0.003]",
            "--set",
            "train.epochs=2",
        ])
        .assert()
        .success()
        .stderr(contains("1 of 2 trials already finished, skipped"));
    assert_eq!(count_epochs(&db), 6);
}

#[test]
fn smoke_spec_makes_its_own_data() {
    let dir = tempfile::tempdir().unwrap();
    fer_lab(dir.path())
        .args(["sweep", &repo("experiments/smoke.toml"), "--db", "s.sqlite"])
        .args([
            "--set",
            "data.root=synth",
            "--set",
            "data.synth.per_class=6",
            "--set",
            "train.epochs=1",
            "--set",
            "sweep.space.lr=[0.001]",
        ])
        .assert()
        .success()
        .stderr(contains(
            "data: synth is absent; writing a synthetic set there (6 per class, 48x48)",
        ))
        .stderr(contains("sweep smoke: 2 trials: 2 trained"));
    assert_eq!(
        std::fs::read_dir(dir.path().join("synth")).unwrap().count(),
        7
    );
    assert_eq!(count_epochs(&dir.path().join("s.sqlite")), 2);
}

#[test]
fn every_shipped_spec_is_valid() {
    for entry in std::fs::read_dir(repo("experiments")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let loaded = fer_lab::spec::load(&path, &[])
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!fer_lab::spec::expand(&loaded.spec).is_empty());
        }
    }
}

/// Built without the `cuda` feature (CI's build), a GPU request fails at start.
#[cfg(not(feature = "cuda"))]
#[test]
fn asking_for_a_gpu_without_cuda_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let assert = fer_lab(dir.path())
        .args([
            "sweep",
            &repo("experiments/smoke.toml"),
            "--db",
            "g.sqlite",
            "--set",
            "scheduler.devices=[\"cuda:0\"]",
        ])
        .assert()
        .code(1);
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(
        stderr.contains("device cuda:0 asked for, but this fer-lab was built without CUDA"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("g.sqlite").exists(),
        "a device error writes nothing"
    );
}
