//! Crash safety: a sweep killed with SIGKILL mid-training (a real child
//! process) resumes from its last checkpoint, and the final epochs table
//! equals that of an uninterrupted run of the same spec.

mod common;

use common::{count_epochs, faces, fer_lab_process};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SPEC: &str = "[experiment]\nname = \"crash\"\nseed = 3\n[data]\nroot = \"faces\"\nimage_size = 24\nchannels = 1\nmean = [0.5]\nstd = [0.25]\n\
    protocol = \"subject-kfold\"\nfolds = 3\nrun_folds = [1]\n\
    [train]\nepochs = 8\nbatch_size = 8\naugment = [\"hflip\", \"shift\"]\nlr_schedule = \"cosine\"\n[[backbone]]\nname = \"resnet10\"\n";

fn setup(dir: &Path) {
    faces(dir, 12, 24, 2);
    std::fs::write(dir.join("crash.toml"), SPEC).unwrap();
}

fn sweep(dir: &Path) -> Command {
    let mut cmd = fer_lab_process(dir);
    cmd.args(["sweep", "crash.toml", "--db", "runs/x.sqlite"]);
    cmd
}

/// Epoch rows without the wall-clock columns, plus the trial's test score.
fn table(db: &Path) -> (Vec<Vec<String>>, Option<f64>) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT trial_id, epoch, train_loss, train_acc, train_macro_f1, val_loss, val_acc, val_macro_f1, lr FROM epochs ORDER BY trial_id, epoch")
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            (0..9)
                .map(|i| {
                    r.get::<_, rusqlite::types::Value>(i)
                        .map(|v| format!("{v:?}"))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let test: Option<f64> = conn
        .query_row("SELECT test_acc FROM trials", [], |r| r.get(0))
        .unwrap();
    (rows, test)
}

#[test]
fn killed_sweep_resumes_to_the_same_epochs() {
    let reference = tempfile::tempdir().unwrap();
    setup(reference.path());
    assert!(
        sweep(reference.path())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    let (want, want_test) = table(&reference.path().join("runs/x.sqlite"));
    assert_eq!(want.len(), 8);
    assert!(want_test.is_some());

    let crashed = tempfile::tempdir().unwrap();
    setup(crashed.path());
    let db = crashed.path().join("runs/x.sqlite");
    let mut child = sweep(crashed.path()).stderr(Stdio::null()).spawn().unwrap();
    let started = Instant::now();
    while count_epochs(&db) < 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sweep ended before it could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no epoch written in time"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let left = count_epochs(&db);
    assert!((3..8).contains(&left), "killed after {left} epochs");
    let status: String = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT status FROM trials", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status, "running", "a killed trial is left running");

    let out = sweep(crashed.path()).output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("resuming after epoch"), "{stderr}");
    let (got, got_test) = table(&db);
    assert_eq!(got, want, "resumed epochs equal uninterrupted ones");
    assert_eq!(got_test, want_test);
    assert!(
        !crashed
            .path()
            .join("runs/trials")
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(false),
        "finished trials leave no checkpoint"
    );
}

#[test]
fn fresh_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    std::fs::write(
        dir.path().join("crash.toml"),
        SPEC.replace("epochs = 8", "epochs = 1"),
    )
    .unwrap();
    assert!(
        sweep(dir.path())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    let out = sweep(dir.path()).arg("--fresh").output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--fresh: all 1 trials start over")
            && stderr.contains("1 trained, 0 skipped"),
        "{stderr}"
    );
    assert_eq!(count_epochs(&dir.path().join("runs/x.sqlite")), 1);
}
