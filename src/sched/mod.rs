//! Runs a sweep: resolves the device slots, prepares the data once,
//! registers the trials, then keeps every slot busy. Each slot's worker
//! claims the next runnable trial from the store (a lease, so parallel
//! workers and parallel processes never take the same trial), trains it with
//! per-epoch checkpoints, and asks the pruner after every epoch. A failed
//! trial is recorded with its error (and retried up to `max_attempts`); the
//! sweep goes on.

mod devices;
pub mod interrupt;
mod prepare;
mod worker;

pub use devices::{Slot, resolve as resolve_slots};
pub use prepare::{PreparedData, leak_warnings, prepare_data, trial_split};

use crate::data::split::TrialSplit;
use crate::spec::{self, LoadedSpec};
use crate::store::{LeasePolicy, Store, TrialId, TrialStatus, owner_name};
use crate::train::checkpoint;
use indicatif::MultiProgress;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// What a sweep run did, for the caller to print and to pick an exit code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepSummary {
    pub trials: usize,
    pub skipped: usize,
    pub done: usize,
    pub failed: usize,
    pub diverged: usize,
    pub pruned: usize,
    pub interrupted: usize,
}

impl SweepSummary {
    fn count(&mut self, status: TrialStatus) {
        match status {
            TrialStatus::Done => self.done += 1,
            TrialStatus::Failed => self.failed += 1,
            TrialStatus::Diverged => self.diverged += 1,
            TrialStatus::Pruned => self.pruned += 1,
            TrialStatus::Interrupted => self.interrupted += 1,
            TrialStatus::Pending | TrialStatus::Running => {}
        }
    }
}

/// Where a trial's checkpoints live: beside the database, by plan key.
pub fn trial_dir(db: &Path, key: &str) -> PathBuf {
    db.parent()
        .unwrap_or(Path::new("."))
        .join("trials")
        .join(&key[..16])
}

/// Where a finished trial's best weights are kept (`scheduler.save_models`).
pub fn model_path(db: &Path, key: &str) -> PathBuf {
    db.parent()
        .unwrap_or(Path::new("."))
        .join("models")
        .join(format!("{}.safetensors", &key[..16]))
}

/// Options of one `sweep` invocation.
#[derive(Debug, Clone, Copy, Default)]
pub struct SweepOptions {
    /// Start every trial of the spec over: forget stored epochs and checkpoints.
    pub fresh: bool,
    /// Total CPU threads (already resolved from --threads / scheduler.threads).
    pub threads: usize,
}

/// Runs every unfinished trial of the spec, recording into the database at `db`.
pub fn run_sweep(
    loaded: &LoadedSpec,
    db: &Path,
    options: SweepOptions,
) -> anyhow::Result<SweepSummary> {
    let spec = &loaded.spec;
    let plans = spec::expand(spec);
    let slots = devices::resolve(&spec.scheduler, options.threads.max(1))?;
    // Inputs first: a missing weights file or bad data root writes nothing.
    for b in &spec.backbones {
        if let Some(p) = &b.pretrained
            && !Path::new(p).is_file()
        {
            return Err(crate::cli::UsageError(format!(
                "backbone {}: pretrained weights {p} not found (relative paths are from the current folder)",
                b.name
            ))
            .into());
        }
    }
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
    let summary = SweepSummary {
        trials: plans.len(),
        skipped: trials.iter().filter(|(_, s)| s.is_final()).count(),
        ..SweepSummary::default()
    };
    if summary.skipped > 0 {
        eprintln!(
            "sweep {}: {} of {} trials already finished, skipped",
            spec.experiment.name,
            summary.skipped,
            plans.len()
        );
    }
    let slot_names: Vec<String> = slots
        .iter()
        .map(|s| format!("{} ({} threads)", s.name, s.threads))
        .collect();
    eprintln!("devices: {}", slot_names.join(", "));

    let candidates: Vec<TrialId> = trials.iter().map(|(id, _)| *id).collect();
    let todo = candidates.len() - summary.skipped;
    // Name the slot in progress lines only when there is more than one place to run.
    let show_slot = slots.len() > 1 || slots.iter().any(|s| !s.device.is_cpu());
    let index_of: HashMap<TrialId, usize> = candidates
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, i))
        .collect();
    let policy = LeasePolicy {
        max_attempts: spec.scheduler.max_attempts,
        stale_after_secs: spec.scheduler.stale_after_secs,
    };
    let owner = owner_name();
    let store = Mutex::new(store);
    let bars = std::io::stderr().is_terminal().then(MultiProgress::new);
    let shared = worker::Shared {
        store: &store,
        db,
        sweep: &spec.experiment.name,
        scheduler: &spec.scheduler,
        data: &data,
        bars: bars.as_ref(),
    };
    let started = AtomicUsize::new(0);
    let finished = AtomicBool::new(false);
    let tally = Mutex::new(summary);
    interrupt::install();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        // Heartbeats while trials run, so another process can tell a live
        // run from a dead one.
        let beat = (spec.scheduler.stale_after_secs / 4).clamp(1, 30);
        let (beat_store, beat_owner, beat_done) = (&store, &owner, &finished);
        scope.spawn(move || {
            let mut waited = 0;
            while !beat_done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(250));
                waited += 250;
                if waited >= beat * 1000 {
                    waited = 0;
                    if let Err(e) = beat_store
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .heartbeat(beat_owner)
                    {
                        eprintln!("warning: heartbeat failed: {e}");
                    }
                }
            }
        });
        let workers: Vec<_> = slots
            .iter()
            .map(|slot| {
                let (shared, candidates, index_of, owner, started, tally, plans, splits) = (
                    &shared,
                    &candidates,
                    &index_of,
                    &owner,
                    &started,
                    &tally,
                    &plans,
                    &splits,
                );
                let on = if show_slot {
                    format!(" on {}", slot.name)
                } else {
                    String::new()
                };
                scope.spawn(move || -> anyhow::Result<()> {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(slot.threads)
                        .build()?;
                    while !interrupt::requested() {
                        let claim = shared
                            .store
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .claim_next(candidates, owner, &slot.name, policy)?;
                        let Some(claim) = claim else { break };
                        let index = index_of[&claim.id];
                        let (plan, (split, leak)) = (&plans[index], &splits[index]);
                        let n = started.fetch_add(1, Ordering::SeqCst) + 1;
                        let fold = plan.fold.map_or(String::new(), |f| format!(" fold {f}"));
                        let attempt = if claim.attempts > 1 {
                            format!(" (attempt {})", claim.attempts)
                        } else {
                            String::new()
                        };
                        let label = format!(
                            "[{n}/{todo}] {}{fold} {}",
                            plan.backbone.name,
                            worker::describe_params(plan)
                        )
                        .trim_end()
                        .to_string()
                            + &on
                            + &attempt;
                        let status = pool.install(|| {
                            worker::run_trial(
                                shared,
                                &claim,
                                plan,
                                split,
                                leak.as_ref(),
                                slot,
                                &label,
                            )
                        })?;
                        tally
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .count(status);
                    }
                    Ok(())
                })
            })
            .collect();
        let mut result = Ok(());
        for w in workers {
            let r = w
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a worker thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        finished.store(true, Ordering::SeqCst);
        result
    })?;
    Ok(tally.into_inner().unwrap_or_else(|p| p.into_inner()))
}
