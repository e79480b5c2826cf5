//! Runs a sweep: picks the device, prepares the data once, registers the
//! trials, and trains every trial that is not finished, recording each epoch.
//! A failed trial is recorded with its error and the sweep goes on.
//!
//! This is the simple local executor: one device, one trial at a time.
//! A trial left `running`, `failed` or `interrupted` by an earlier run is
//! started again from its first epoch.

use crate::data::split::{self, TrialSplit};
use crate::data::{Dataset, synth};
use crate::spec::{self, Devices, LoadedSpec, Protocol, TrialPlan};
use crate::store::{Store, TrialId, TrialStatus};
use crate::train::{self, Control, Ending, EpochRecord, RunOptions, Sink, checkpoint};
use anyhow::{Context, bail};
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// What a sweep run did, for the caller to print and to pick an exit code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepSummary {
    pub trials: usize,
    pub skipped: usize,
    pub done: usize,
    pub failed: usize,
    pub diverged: usize,
}

/// The training device named by the spec's `scheduler.devices`.
pub fn resolve_device(devices: &Devices) -> anyhow::Result<(Device, String)> {
    let names: Vec<String> = match devices {
        Devices::Named(n) => vec![n.clone()],
        Devices::List(l) => l.clone(),
    };
    let first = names.first().map(String::as_str).unwrap_or("auto");
    match first {
        "cpu" => Ok((Device::Cpu, "cpu".into())),
        "auto" => {
            if cfg!(feature = "cuda")
                && let Ok(d) = Device::new_cuda(0)
            {
                return Ok((d, "cuda:0".into()));
            }
            Ok((Device::Cpu, "cpu".into()))
        }
        name => {
            let ordinal: usize = name
                .trim_start_matches("cuda:")
                .parse()
                .context("device ordinal")?;
            if !cfg!(feature = "cuda") {
                bail!(
                    "device {name} asked for, but this fer-lab was built without CUDA; rebuild with `cargo build --release --features cuda` or use devices = \"cpu\""
                );
            }
            let d = Device::new_cuda(ordinal).with_context(|| {
                format!(
                    "device {name} is not available (no CUDA GPU with that ordinal, or no driver)"
                )
            })?;
            Ok((d, name.to_string()))
        }
    }
}

/// Makes the synthetic set at `root` when it is absent and the spec asks for it.
fn ensure_data(plan: &TrialPlan) -> anyhow::Result<PathBuf> {
    let root = PathBuf::from(&plan.data.root);
    if root.exists() {
        return Ok(root);
    }
    let Some(s) = &plan.data.synth else {
        return Ok(root);
    };
    eprintln!(
        "data: {} is absent; writing a synthetic set there ({} per class, {}x{})",
        root.display(),
        s.per_class,
        s.size,
        s.size
    );
    // Written beside the target and renamed, so a crash leaves no half set.
    let tmp = root.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    synth::write(&tmp, s.per_class, s.size, s.seed)?;
    if let Some(parent) = root.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(&tmp, &root)
        .with_context(|| format!("cannot move the synthetic set into {}", root.display()))?;
    Ok(root)
}

/// The data set of a spec, with the subject and sequence of every image
/// where the file names tell them.
pub struct PreparedData {
    pub ds: Dataset,
    pub subjects: Option<Vec<String>>,
    pub sequences: Option<Vec<String>>,
    /// The given split of a `folders` data set.
    folders: Option<TrialSplit>,
}

/// Loads the spec's data (writing the synthetic set first if asked).
pub fn prepare_data(plan: &TrialPlan) -> anyhow::Result<PreparedData> {
    let d = &plan.data;
    let root = ensure_data(plan)?;
    let (ds, folders) = match d.protocol {
        Protocol::Folders => {
            let (ds, s) = Dataset::load_folders(&root, d.image_size, d.channels)?;
            (ds, Some(s))
        }
        _ => (Dataset::load(&root, d.image_size, d.channels)?, None),
    };
    let ids = |pattern: &str| -> anyhow::Result<Result<Vec<String>, crate::data::DataError>> {
        let re = regex::Regex::new(pattern).context("validated pattern")?;
        Ok(split::ids_from_names(&ds.files, &re))
    };
    let subjects = ids(&d.subject_pattern)?;
    let sequences = ids(&d.sequence_pattern)?;
    if d.protocol == Protocol::SubjectKfold {
        // Subjects are required here: name the first file without one.
        subjects.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(PreparedData {
        subjects: subjects.ok(),
        sequences: sequences.ok(),
        ds,
        folders,
    })
}

/// The split of one trial, and its leakage where subjects are known.
pub fn trial_split(
    plan: &TrialPlan,
    data: &PreparedData,
) -> anyhow::Result<(TrialSplit, Option<serde_json::Value>)> {
    let d = &plan.data;
    let split: TrialSplit = match d.protocol {
        Protocol::Holdout => {
            split::stratified_holdout(&data.ds.labels, &data.ds.classes, d.val_fraction, plan.seed)?
                .into()
        }
        Protocol::SubjectKfold => {
            let subjects = data.subjects.as_ref().expect("checked in prepare_data");
            split::subject_kfold(
                subjects,
                d.folds,
                plan.fold.expect("k-fold plans have a fold"),
                d.inner_val_fraction,
                plan.seed,
            )
        }
        Protocol::Folders => data.folders.clone().expect("folders data set"),
    };
    let leak = match (&data.subjects, &data.sequences) {
        (Some(subjects), Some(sequences)) => {
            let mut sides = serde_json::Map::new();
            sides.insert(
                "train_vs_val".into(),
                serde_json::to_value(split::leak(subjects, sequences, &split.train, &split.val))?,
            );
            if let Some(test) = &split.test {
                let seen: Vec<usize> = split.train.iter().chain(&split.val).copied().collect();
                sides.insert(
                    "train_vs_test".into(),
                    serde_json::to_value(split::leak(subjects, sequences, &seen, test))?,
                );
            }
            Some(serde_json::Value::Object(sides))
        }
        _ => None,
    };
    Ok((split, leak))
}

/// A warning line for each leaky side of a split, e.g. "validation shares
/// 117 of 117 subjects and 327 of 327 sequences with training".
pub fn leak_warnings(leak: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for (side, name) in [("train_vs_val", "validation"), ("train_vs_test", "test")] {
        let Some(l) = leak
            .get(side)
            .and_then(|v| serde_json::from_value::<split::Leak>(v.clone()).ok())
        else {
            continue;
        };
        if l.is_leaky() {
            out.push(format!(
                "subject leak: the {name} images share {} of {} subjects and {} of {} sequences with training",
                l.subjects.shared, l.subjects.of, l.sequences.shared, l.sequences.of
            ));
        }
    }
    out
}

/// Runs every unfinished trial of the spec, recording into the database at `db`.
/// Where a trial's checkpoints live: beside the database, by plan key.
pub fn trial_dir(db: &Path, key: &str) -> PathBuf {
    db.parent()
        .unwrap_or(Path::new("."))
        .join("trials")
        .join(&key[..16])
}

/// Options of one `sweep` invocation.
#[derive(Debug, Clone, Copy, Default)]
pub struct SweepOptions {
    /// Start every trial of the spec over: forget stored epochs and checkpoints.
    pub fresh: bool,
}

pub fn run_sweep(
    loaded: &LoadedSpec,
    db: &Path,
    options: SweepOptions,
) -> anyhow::Result<SweepSummary> {
    let spec = &loaded.spec;
    let plans = spec::expand(spec);
    let (device, device_name) = resolve_device(&spec.scheduler.devices)?;
    // Data and splits first: a bad data root writes nothing to the database.
    let data = prepare_data(&plans[0])?;
    let splits: Vec<(TrialSplit, Option<serde_json::Value>)> = plans
        .iter()
        .map(|p| trial_split(p, &data))
        .collect::<anyhow::Result<_>>()?;
    let first = &splits[0].0;
    eprintln!(
        "data: {} images in {} classes from {} ({} protocol; first trial: {} train / {} validation{})",
        data.ds.len(),
        data.ds.classes.len(),
        data.ds.root.display(),
        toml::Value::try_from(spec.data.protocol).map_or(String::new(), |v| v
            .as_str()
            .unwrap_or_default()
            .to_string()),
        first.train.len(),
        first.val.len(),
        first
            .test
            .as_ref()
            .map_or(String::new(), |t| format!(" / {} test", t.len()))
    );
    if let Some(leak) = &splits[0].1 {
        for w in leak_warnings(leak) {
            eprintln!("warning: {w}");
        }
    }
    let mut store = Store::open(db)?;
    let (_, trials) = store.register(
        &spec.experiment.name,
        &loaded.path.display().to_string(),
        &loaded.resolved_toml(),
        &plans,
    )?;
    let trials = if options.fresh {
        let ids: Vec<TrialId> = trials.iter().map(|(id, _)| *id).collect();
        store.reset_trials(&ids)?;
        for p in &plans {
            checkpoint::clear(&trial_dir(db, &p.key()))?;
        }
        eprintln!(
            "sweep {}: --fresh: all {} trials start over",
            spec.experiment.name,
            ids.len()
        );
        ids.into_iter()
            .map(|id| (id, TrialStatus::Pending))
            .collect()
    } else {
        trials
    };
    let mut summary = SweepSummary {
        trials: plans.len(),
        ..SweepSummary::default()
    };
    let todo: Vec<(usize, TrialId)> = trials
        .iter()
        .enumerate()
        .filter(|(_, (_, status))| !status.is_final())
        .map(|(i, (id, _))| (i, *id))
        .collect();
    summary.skipped = plans.len() - todo.len();
    if summary.skipped > 0 {
        eprintln!(
            "sweep {}: {} of {} trials already finished, skipped",
            spec.experiment.name,
            summary.skipped,
            plans.len()
        );
    }
    for (n, (index, id)) in todo.iter().enumerate() {
        let plan = &plans[*index];
        let (split, leak) = &splits[*index];
        let fold = plan.fold.map_or(String::new(), |f| format!(" fold {f}"));
        let label = format!(
            "[{}/{}] {}{fold} {}",
            n + 1,
            todo.len(),
            plan.backbone.name,
            describe_params(plan)
        )
        .trim_end()
        .to_string();
        let dir = trial_dir(db, &plan.key());
        let resume_after = checkpoint::peek(&dir, &plan.key()).unwrap_or(0);
        store.start_trial(*id, &device_name, resume_after)?;
        if let Some(leak) = leak {
            store.set_leak(*id, &leak.to_string())?;
        }
        let batches = split.train.len().div_ceil(plan.train.batch_size);
        let mut sink = StoreSink {
            store: &mut store,
            trial: *id,
            progress: Progress::new(&label, plan.train.epochs, batches),
            epochs: plan.train.epochs,
        };
        let options = RunOptions {
            checkpoint_dir: Some(dir.clone()),
            ..RunOptions::default()
        };
        let result = train::run(plan, &data.ds, split, &device, &mut sink, options);
        sink.progress.finish();
        let result = result.and_then(|outcome| {
            if let (Some(best), Some(val)) = (&outcome.best, &outcome.best_val) {
                let test = outcome.test.as_ref().map(|t| (t.loss, &t.confusion));
                store.record_scores(*id, &data.ds.classes, best.epoch, &val.confusion, test)?;
            }
            Ok(outcome)
        });
        match result {
            Ok(outcome) => {
                let status = match outcome.ending {
                    Ending::Completed | Ending::Stopped => TrialStatus::Done,
                    Ending::Diverged => TrialStatus::Diverged,
                };
                let note =
                    (status == TrialStatus::Diverged).then_some("loss became NaN or infinite");
                store.finish_trial(*id, status, note)?;
                // A finished trial needs no resume point (they are large).
                if let Err(e) = checkpoint::clear(&dir) {
                    eprintln!("warning: cannot remove {}: {e}", dir.display());
                }
                match status {
                    TrialStatus::Diverged => summary.diverged += 1,
                    _ => summary.done += 1,
                }
                let mut best = outcome.best.map_or("no epoch".to_string(), |b| {
                    format!(
                        "best val acc {:.2}% at epoch {}",
                        100.0 * b.val_acc,
                        b.epoch
                    )
                });
                if let Some(t) = &outcome.test {
                    best += &format!(
                        "; test acc {:.2}%, macro-F1 {:.4} at that epoch",
                        100.0 * t.acc,
                        t.macro_f1
                    );
                }
                eprintln!("{label}: {} ({best})", status.as_str());
            }
            Err(e) => {
                let text = format!("{e:#}");
                store.finish_trial(*id, TrialStatus::Failed, Some(&text))?;
                summary.failed += 1;
                eprintln!("{label}: failed: {text}");
            }
        }
    }
    Ok(summary)
}

fn describe_params(plan: &TrialPlan) -> String {
    plan.params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

struct StoreSink<'a> {
    store: &'a mut Store,
    trial: TrialId,
    progress: Progress,
    epochs: usize,
}

impl Sink for StoreSink<'_> {
    fn epoch(&mut self, r: &EpochRecord) -> anyhow::Result<Control> {
        self.store.record_epoch(self.trial, r)?;
        self.progress.epoch(r, self.epochs);
        Ok(Control::Continue)
    }

    fn batch(&mut self, done: usize, total: usize) {
        self.progress.batch(done, total);
    }

    fn note(&mut self, text: &str) {
        if let Err(e) = self.store.add_note(self.trial, text) {
            eprintln!("warning: cannot store a note: {e}");
        }
        self.progress
            .line(&format!("{}: {text}", self.progress.label));
    }
}

/// A progress bar with ETA on a terminal; one plain line per epoch otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    label: String,
}

impl Progress {
    fn new(label: &str, epochs: usize, batches: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new((epochs * batches) as u64);
            bar.set_style(
                ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} batches  {elapsed_precise} elapsed, ETA {eta_precise}  {msg}")
                    .expect("valid template"),
            );
            bar.set_prefix(label.to_string());
            bar
        });
        Self {
            bar,
            label: label.to_string(),
        }
    }

    fn batch(&mut self, _done: usize, _total: usize) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    fn epoch(&mut self, r: &EpochRecord, epochs: usize) {
        let line = format!(
            "{} epoch {}/{}: train loss {:.4} acc {:.2}% | val loss {:.4} acc {:.2}% macro-F1 {:.4} | {:.1}s, {:.1} img/s",
            self.label,
            r.epoch,
            epochs,
            r.train_loss,
            100.0 * r.train_acc,
            r.val_loss,
            100.0 * r.val_acc,
            r.val_macro_f1,
            r.seconds,
            r.images_per_sec
        );
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn line(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
