//! Training on a tiny synthetic set: it learns, it is deterministic, and
//! the store keeps exactly what the loop reported.

use candle_core::Device;
use fer_lab::data::{Dataset, split::stratified_holdout, synth};
use fer_lab::spec::{self, TrialPlan};
use fer_lab::store::{Store, TrialStatus};
use fer_lab::train::{self, Control, Ending, EpochRecord, RunOptions, Sink};
use std::sync::OnceLock;

#[derive(Default)]
struct Memory(Vec<EpochRecord>);

impl Sink for Memory {
    fn epoch(&mut self, r: &EpochRecord) -> anyhow::Result<Control> {
        self.0.push(r.clone());
        Ok(Control::Continue)
    }
}

type Cached = OnceLock<(tempfile::TempDir, Dataset)>;

/// A synthetic set of `per_class` images per class at 32x32, made once per test binary.
fn dataset(per_class: usize) -> &'static Dataset {
    static SMALL: Cached = OnceLock::new();
    static LARGER: Cached = OnceLock::new();
    let cell = if per_class <= 10 { &SMALL } else { &LARGER };
    &cell
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            synth::write(dir.path(), per_class, 32, 11).unwrap();
            let ds = Dataset::load(dir.path(), 32, 1).unwrap();
            (dir, ds)
        })
        .1
}

fn plan(extra: &str) -> TrialPlan {
    let text = format!(
        "[experiment]\nname = \"t\"\nseed = 1\n[data]\nroot = \"unused\"\nimage_size = 32\nchannels = 1\nmean = [0.5]\nstd = [0.25]\n\
         [train]\nepochs = 2\nbatch_size = 8\nlr = 0.001\n{extra}\n[[backbone]]\nname = \"resnet10\"\n"
    );
    spec::expand(&spec::parse(&text, "test.toml", &[]).unwrap()).remove(0)
}

fn train(plan: &TrialPlan, per_class: usize) -> Vec<EpochRecord> {
    let ds = dataset(per_class);
    let split = stratified_holdout(&ds.labels, &ds.classes, 0.2, plan.seed)
        .unwrap()
        .into();
    let mut sink = Memory::default();
    let outcome = train::run(
        plan,
        ds,
        &split,
        &Device::Cpu,
        &mut sink,
        RunOptions::default(),
    )
    .unwrap();
    assert_eq!(outcome.ending, Ending::Completed);
    assert_eq!(outcome.epochs_run, sink.0.len());
    let best = outcome.best.unwrap();
    assert!(sink.0.iter().all(|r| r.val_acc <= best.val_acc));
    sink.0
}

/// Records without the wall-clock fields, which differ run to run.
fn numbers(records: &[EpochRecord]) -> Vec<[f64; 7]> {
    records
        .iter()
        .map(|r| {
            [
                r.train_loss,
                r.train_acc,
                r.train_macro_f1,
                r.val_loss,
                r.val_acc,
                r.val_macro_f1,
                r.lr,
            ]
        })
        .collect()
}

#[test]
fn two_epochs_learn() {
    let records = train(&plan(""), 40);
    assert_eq!(records.len(), 2);
    assert!(records[1].train_loss < records[0].train_loss, "{records:?}");
    let chance = 1.0 / 7.0;
    assert!(records[1].train_acc > 2.0 * chance, "{records:?}");
    assert!(
        records.iter().any(|r| r.val_acc > 1.5 * chance),
        "{records:?}"
    );
    assert!(
        records
            .iter()
            .all(|r| r.seconds > 0.0 && r.images_per_sec > 0.0)
    );
}

#[test]
fn same_plan_same_numbers() {
    let p =
        plan("augment = [\"hflip\", \"shift\"]\nlabel_smoothing = 0.1\nlr_schedule = \"cosine\"");
    let (a, b) = (train(&p, 10), train(&p, 10));
    assert_eq!(numbers(&a), numbers(&b));
    // A different seed is a different run.
    let mut q = p.clone();
    q.seed = 2;
    assert_ne!(numbers(&a), numbers(&train(&q, 10)));
}

#[test]
fn sgd_and_adamw_train_too() {
    // Both must run and keep finite losses; whether they learn is two_epochs_learn's job.
    for extra in [
        "optimizer = \"sgd\"\nmomentum = 0.9\nweight_decay = 0.0005",
        "optimizer = \"adamw\"\nweight_decay = 0.01",
    ] {
        let records = train(&plan(extra), 10);
        assert!(
            records.iter().all(|r| r.train_loss.is_finite()),
            "{extra}: {records:?}"
        );
    }
}

#[test]
fn store_round_trips_trials_and_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nested/x.sqlite");
    let text = "[experiment]\nname = \"rt\"\n[train]\nepochs = 3\n[[backbone]]\nname = \"resnet10\"\n[sweep.space]\nlr = [0.1, 0.2]\n";
    let plans = spec::expand(&spec::parse(text, "rt.toml", &[]).unwrap());
    let mut store = Store::open(&db).unwrap();
    let (_, trials) = store.register("rt", "rt.toml", text, &plans).unwrap();
    assert_eq!(trials.len(), 2);
    assert!(trials.iter().all(|(_, s)| *s == TrialStatus::Pending));
    let id = trials[1].0;
    store.start_trial(id, "cpu", 0).unwrap();
    let record = |epoch: usize, val_acc: f64| EpochRecord {
        epoch,
        train_loss: 1.0 / epoch as f64,
        train_acc: 0.5,
        train_macro_f1: 0.4,
        val_loss: 0.9,
        val_acc,
        val_macro_f1: val_acc - 0.1,
        lr: 0.2,
        seconds: 1.5,
        images_per_sec: 100.0,
    };
    let written = vec![record(1, 0.6), record(2, 0.8), record(3, 0.8)];
    for r in &written {
        store.record_epoch(id, r).unwrap();
    }
    store.finish_trial(id, TrialStatus::Done, None).unwrap();
    assert_eq!(store.epochs(id).unwrap(), written);
    drop(store);

    // Reopening finds the same sweep and trials; finished ones stay finished.
    let mut store = Store::open(&db).unwrap();
    let (_, again) = store.register("rt", "rt.toml", text, &plans).unwrap();
    assert_eq!(again[1], (id, TrialStatus::Done));
    assert_eq!(again[0], (trials[0].0, TrialStatus::Pending));
    let rows = store.trials(Some("rt")).unwrap();
    assert_eq!(rows[0].id, id, "the trial with results ranks first");
    assert_eq!(
        (rows[0].best_epoch, rows[0].best_val_acc, rows[0].epochs_run),
        (Some(2), Some(0.8), 3)
    );
    assert!((rows[0].wall_seconds - 4.5).abs() < 1e-9);
    assert_eq!(rows[0].params_json, r#"{"lr":0.2}"#);
    assert_eq!(rows[1].status, TrialStatus::Pending);
    assert!(store.trials(Some("other")).unwrap().is_empty());
    // A restarted trial starts from a clean slate.
    store.start_trial(id, "cpu", 0).unwrap();
    assert!(store.epochs(id).unwrap().is_empty());
    assert_eq!(
        store
            .trials(None)
            .unwrap()
            .iter()
            .find(|r| r.id == id)
            .unwrap()
            .status,
        TrialStatus::Running
    );
}
