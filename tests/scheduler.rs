//! The scheduler with real processes: parallel CPU slots sharing one store,
//! diverged and pruned trials beside finishing ones, abandoned trials taken
//! back, Ctrl-C, random search, and `fer-lab status`.

mod common;

use common::{count_epochs, fer_lab_process as fer_lab};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn faces(dir: &Path, per_class: usize, size: usize) {
    common::faces(dir, per_class, size, 7);
}

fn spec(dir: &Path, size: usize, train: &str, rest: &str) {
    let text = format!(
        "[experiment]\nname = \"s\"\n[data]\nroot = \"faces\"\nimage_size = {size}\nchannels = 1\nmean = [0.5]\nstd = [0.25]\n\
         [train]\nbatch_size = 8\n{train}\n[[backbone]]\nname = \"resnet10\"\n{rest}\n"
    );
    std::fs::write(dir.join("s.toml"), text).unwrap();
}

fn query<T: rusqlite::types::FromSql>(db: &Path, sql: &str) -> Vec<T> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn sweep(dir: &Path, extra: &[&str]) -> std::process::Output {
    fer_lab(dir)
        .args(["sweep", "s.toml", "--db", "x.sqlite"])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn four_cpu_slots_write_200_epochs_without_lock_errors() {
    let dir = tempfile::tempdir().unwrap();
    faces(dir.path(), 3, 16);
    spec(
        dir.path(),
        16,
        "epochs = 25",
        "[sweep.space]\nlr = [0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.007, 0.008]\n[scheduler]\ndevices = \"cpu\"\ncpu_slots = 4",
    );
    let out = sweep(dir.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("locked"), "{stderr}");
    assert!(
        stderr.contains(
            "devices: cpu#0 (1 threads), cpu#1 (1 threads), cpu#2 (1 threads), cpu#3 (1 threads)"
        ),
        "{stderr}"
    );
    let db = dir.path().join("x.sqlite");
    assert_eq!(query::<i64>(&db, "SELECT COUNT(*) FROM epochs"), [200]);
    assert_eq!(
        query::<String>(&db, "SELECT DISTINCT status FROM trials"),
        ["done"]
    );
    // Every slot took work.
    assert_eq!(
        query::<i64>(&db, "SELECT COUNT(DISTINCT device) FROM trials"),
        [4]
    );
}

#[test]
fn a_nan_trial_is_diverged_while_its_sibling_finishes() {
    let dir = tempfile::tempdir().unwrap();
    faces(dir.path(), 8, 24);
    // SGD with lr 10 and weight decay 0.9 multiplies the weights by ~-8 a step.
    spec(
        dir.path(),
        24,
        "epochs = 4\noptimizer = \"sgd\"\nweight_decay = 0.9",
        "[sweep.space]\nlr = [0.001, 10.0]\n[scheduler]\ndevices = \"cpu\"\ncpu_slots = 2",
    );
    let out = sweep(dir.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = dir.path().join("x.sqlite");
    assert_eq!(
        query::<String>(&db, "SELECT status FROM trials ORDER BY id"),
        ["done", "diverged"]
    );
    assert_eq!(
        query::<i64>(&db, "SELECT COUNT(*) FROM epochs WHERE trial_id = 1"),
        [4]
    );
    let status = fer_lab(dir.path())
        .args(["status", "--db", "x.sqlite"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&status.stdout)
            .starts_with("sweep s: 2 trials: 1 done, 1 diverged; epochs")
    );
}

#[test]
fn abandoned_running_trials_are_taken_back_and_live_ones_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    faces(dir.path(), 4, 16);
    spec(
        dir.path(),
        16,
        "epochs = 1",
        "[sweep.space]\nlr = [0.001, 0.002]",
    );
    assert!(sweep(dir.path(), &[]).status.success());
    let db = dir.path().join("x.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    // Trial 1: "running" on another machine, heartbeat long gone: abandoned.
    // Trial 2: "running" on another machine with a fresh heartbeat: alive.
    let now = chrono::Utc::now().to_rfc3339();
    conn.execute("UPDATE trials SET status = 'running', lease_owner = 'elsewhere:1', heartbeat_at = '2000-01-01T00:00:00Z' WHERE id = 1", []).unwrap();
    conn.execute("UPDATE trials SET status = 'running', lease_owner = 'elsewhere:2', heartbeat_at = ?1 WHERE id = 2", [now]).unwrap();
    drop(conn);
    let out = sweep(dir.path(), &[]);
    assert!(out.status.success());
    assert_eq!(
        query::<String>(&db, "SELECT status FROM trials ORDER BY id"),
        ["done", "running"]
    );
    assert_eq!(
        query::<i64>(&db, "SELECT attempts FROM trials ORDER BY id"),
        [2, 1]
    );
    assert_eq!(
        query::<String>(&db, "SELECT notes FROM trials WHERE id = 1")[0]
            .lines()
            .next()
            .unwrap(),
        "taken back from a process that stopped while running it"
    );
    let status = fer_lab(dir.path())
        .args(["status", "--db", "x.sqlite"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("1 done, 1 running") && text.contains("elsewhere:2"),
        "{text}"
    );
}

#[test]
fn ctrl_c_checkpoints_marks_interrupted_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    faces(dir.path(), 8, 24);
    spec(dir.path(), 24, "epochs = 10", "");
    let db = dir.path().join("x.sqlite");
    let child = fer_lab(dir.path())
        .args(["sweep", "s.toml", "--db", "x.sqlite"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while count_epochs(&db) < 1 {
        assert!(started.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("interrupt: finishing the current epoch"),
        "{stderr}"
    );
    assert_eq!(
        query::<String>(&db, "SELECT status FROM trials"),
        ["interrupted"]
    );
    let kept = count_epochs(&db);
    assert!((1..10).contains(&kept));
    let again = sweep(dir.path(), &[]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        again.status.success() && stderr.contains(&format!("resuming after epoch {kept}")),
        "{stderr}"
    );
    assert_eq!(count_epochs(&db), 10);
}

#[test]
fn the_median_pruner_stops_a_hopeless_trial() {
    let dir = tempfile::tempdir().unwrap();
    faces(dir.path(), 10, 24);
    // One slot, so the good trial completes first; lr 1e-7 barely moves.
    spec(
        dir.path(),
        24,
        "epochs = 4",
        "[sweep.space]\nlr = [0.002, 1e-7]\n[scheduler]\ndevices = \"cpu\"\npruner = \"median\"\nwarmup_epochs = 1\nmin_trials = 1",
    );
    let out = sweep(dir.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let db = dir.path().join("x.sqlite");
    assert_eq!(
        query::<String>(&db, "SELECT status FROM trials ORDER BY id"),
        ["done", "pruned"],
        "{stderr}"
    );
    let reason = &query::<String>(&db, "SELECT error FROM trials WHERE id = 2")[0];
    assert!(reason.contains("below the median"), "{reason}");
    assert!(query::<i64>(&db, "SELECT COUNT(*) FROM epochs WHERE trial_id = 2")[0] < 4);
}

#[test]
fn random_search_is_reproducible_and_resumable() {
    let dir = tempfile::tempdir().unwrap();
    faces(dir.path(), 3, 16);
    spec(
        dir.path(),
        16,
        "epochs = 1",
        "[sweep]\nstrategy = \"random\"\nsamples = 3\nseed = 5\n[sweep.space]\nlr = { loguniform = [1e-4, 1e-2] }\nbatch_size = [4, 8]",
    );
    assert!(sweep(dir.path(), &[]).status.success());
    let db = dir.path().join("x.sqlite");
    let params = query::<String>(&db, "SELECT params_json FROM trials ORDER BY id");
    assert_eq!(params.len(), 3);
    let again = sweep(dir.path(), &[]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("3 of 3 trials already finished"));
    let other = tempfile::tempdir().unwrap();
    faces(other.path(), 3, 16);
    std::fs::copy(dir.path().join("s.toml"), other.path().join("s.toml")).unwrap();
    assert!(sweep(other.path(), &[]).status.success());
    assert_eq!(
        query::<String>(
            &other.path().join("x.sqlite"),
            "SELECT params_json FROM trials ORDER BY id"
        ),
        params
    );
}
