//! One trial on one slot: resume point, training, scores, final state. The
//! sink records every epoch through the shared store and answers the loop's
//! "go on?" with the pruner's decision and the Ctrl-C state.

use super::interrupt;
use super::prepare::PreparedData;
use crate::data::split::TrialSplit;
use crate::prune::{self, Decision};
use crate::spec::{PrunerKind, SchedulerConfig, TrialPlan};
use crate::store::{Claim, Store, TrialId, TrialStatus};
use crate::train::{self, Control, Ending, EpochRecord, RunOptions, Sink, checkpoint};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::path::Path;
use std::sync::Mutex;

/// What every worker shares.
pub(super) struct Shared<'a> {
    pub store: &'a Mutex<Store>,
    pub db: &'a Path,
    pub sweep: &'a str,
    pub scheduler: &'a SchedulerConfig,
    pub data: &'a PreparedData,
    pub bars: Option<&'a MultiProgress>,
}

fn lock<'a>(store: &'a Mutex<Store>) -> std::sync::MutexGuard<'a, Store> {
    // A worker that panicked mid-write left no transaction open: go on.
    store.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn describe_params(plan: &TrialPlan) -> String {
    plan.params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a claimed trial to its end; returns the state it ended in.
pub(super) fn run_trial(
    shared: &Shared,
    claim: &Claim,
    plan: &TrialPlan,
    split: &TrialSplit,
    leak: Option<&serde_json::Value>,
    slot: &super::devices::Slot,
    label: &str,
) -> anyhow::Result<TrialStatus> {
    let id = claim.id;
    let dir = super::trial_dir(shared.db, &plan.key());
    let resume_after = checkpoint::peek(&dir, &plan.key()).unwrap_or(0);
    {
        let mut store = lock(shared.store);
        store.begin_attempt(id, resume_after)?;
        if let Some(leak) = leak {
            store.set_leak(id, &leak.to_string())?;
        }
        if claim.from == TrialStatus::Running {
            store.add_note(
                id,
                "taken back from a process that stopped while running it",
            )?;
        }
    }
    let batches = split.train.len().div_ceil(plan.train.batch_size);
    let mut sink = StoreSink {
        shared,
        trial: id,
        fold: plan.fold,
        progress: Progress::new(shared.bars, label, plan.train.epochs, batches),
        epochs: plan.train.epochs,
        stop: None,
    };
    let options = RunOptions {
        checkpoint_dir: Some(dir.clone()),
        model_out: shared
            .scheduler
            .save_models
            .then(|| super::model_path(shared.db, &plan.key())),
        ..RunOptions::default()
    };
    let result = train::run(
        plan,
        &shared.data.ds,
        split,
        &slot.device,
        &mut sink,
        options,
    );
    sink.progress.finish();
    let stop = sink.stop.take();
    let mut store = lock(shared.store);
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            let text = format!("{e:#}");
            store.finish_trial(id, TrialStatus::Failed, Some(&text))?;
            eprintln!("{label}: failed (attempt {}): {text}", claim.attempts);
            return Ok(TrialStatus::Failed);
        }
    };
    if let (Some(best), Some(val)) = (&outcome.best, &outcome.best_val) {
        let test = outcome.test.as_ref().map(|t| (t.loss, &t.confusion));
        store.record_scores(
            id,
            &shared.data.ds.classes,
            best.epoch,
            &val.confusion,
            test,
        )?;
    }
    let (status, note) = match (outcome.ending, stop) {
        (Ending::Diverged, _) => (
            TrialStatus::Diverged,
            Some("loss became NaN or infinite".to_string()),
        ),
        (Ending::Stopped, Some(Stop::Pruned(reason))) => (TrialStatus::Pruned, Some(reason)),
        (Ending::Stopped, Some(Stop::Interrupted)) => (TrialStatus::Interrupted, None),
        _ => (TrialStatus::Done, None),
    };
    store.finish_trial(id, status, note.as_deref())?;
    drop(store);
    // Only an interrupted trial needs its resume point (checkpoints are large).
    if status != TrialStatus::Interrupted
        && let Err(e) = checkpoint::clear(&dir)
    {
        eprintln!("warning: cannot remove {}: {e}", dir.display());
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
    let why = note.map_or(String::new(), |n| format!(": {n}"));
    eprintln!("{label}: {} ({best}){why}", status.as_str());
    Ok(status)
}

/// Why the sink asked the loop to stop.
enum Stop {
    Pruned(String),
    Interrupted,
}

struct StoreSink<'a> {
    shared: &'a Shared<'a>,
    trial: TrialId,
    fold: Option<usize>,
    progress: Progress,
    epochs: usize,
    stop: Option<Stop>,
}

impl StoreSink<'_> {
    /// The pruner's verdict on this trial after its latest epoch.
    fn prune(&self) -> anyhow::Result<Decision> {
        let cfg = self.shared.scheduler;
        if cfg.pruner == PrunerKind::None {
            return Ok(Decision::Continue);
        }
        let histories = lock(self.shared.store).histories(self.shared.sweep)?;
        let mut current = Vec::new();
        let (mut completed, mut others) = (Vec::new(), Vec::new());
        for h in histories {
            if h.trial == self.trial {
                current = h.val_acc;
            } else if h.fold == self.fold && !h.val_acc.is_empty() {
                if h.status == TrialStatus::Done {
                    completed.push(h.val_acc.clone());
                }
                others.push(h.val_acc);
            }
        }
        Ok(prune::decide(
            cfg.pruner, cfg, &current, &completed, &others,
        ))
    }
}

impl Sink for StoreSink<'_> {
    fn epoch(&mut self, r: &EpochRecord) -> anyhow::Result<Control> {
        lock(self.shared.store).record_epoch(self.trial, r)?;
        self.progress.epoch(r, self.epochs);
        if interrupt::requested() {
            self.stop = Some(Stop::Interrupted);
            return Ok(Control::Stop);
        }
        if r.epoch < self.epochs
            && let Decision::Prune { reason } = self.prune()?
        {
            self.stop = Some(Stop::Pruned(reason));
            return Ok(Control::Stop);
        }
        Ok(Control::Continue)
    }

    fn batch(&mut self, done: usize, total: usize) {
        self.progress.batch(done, total);
    }

    fn note(&mut self, text: &str) {
        if let Err(e) = lock(self.shared.store).add_note(self.trial, text) {
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
    fn new(bars: Option<&MultiProgress>, label: &str, epochs: usize, batches: usize) -> Self {
        let bar = bars.map(|m| {
            let bar = m.add(ProgressBar::new((epochs * batches) as u64));
            bar.set_style(ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} batches  {elapsed_precise} elapsed, ETA {eta_precise}").expect("valid template"));
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

    fn line(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn epoch(&mut self, r: &EpochRecord, epochs: usize) {
        self.line(&format!(
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
        ));
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
