//! Pruners: pure policies that answer "should this trial go on?" after an
//! epoch, from validation-accuracy histories. No I/O; the scheduler gathers
//! the histories and records the outcome.
//!
//! Accuracies are fractions (0.632 for 63.2%), as [`crate::train`] reports
//! them. Higher is better. A `NaN` in another trial's history is ignored (that
//! trial does not count at that epoch); a `NaN` in the current trial's value,
//! where a rule applies, prunes it.

use crate::spec::{PrunerKind, SchedulerConfig};

/// Validation accuracy after each epoch (index 0 = epoch 1).
pub type History = [f64];

/// The answer to "go on?" after an epoch.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Continue,
    /// Stop the trial; `reason` is a sentence for logs and the store.
    Prune {
        reason: String,
    },
}

impl Decision {
    pub fn is_prune(&self) -> bool {
        matches!(self, Decision::Prune { .. })
    }
}

/// The median rule (optuna's `MedianPruner`), asked after epoch
/// `e = current.len()` (1-based):
///
/// - `e == 0` or `e <= warmup_epochs`: continue (warm-up);
/// - the reference values are `h[e - 1]` of every history `h` in `completed`
///   that has an entry at `e` and whose entry is not `NaN`;
/// - if `current[e - 1]` is `NaN`: prune (whatever the reference count);
/// - fewer than `max(min_trials, 1)` reference values: continue;
/// - `current[e - 1]` strictly below their median: prune; at or above it:
///   continue (a tie is spared).
///
/// The median of an even count is the mean of the two middle values.
/// `completed` should hold the histories of the finished (not pruned, not
/// failed) trials that are comparable with this one.
pub fn median(
    current: &History,
    completed: &[Vec<f64>],
    warmup_epochs: usize,
    min_trials: usize,
) -> Decision {
    let e = current.len();
    if e == 0 || e <= warmup_epochs {
        return Decision::Continue;
    }
    let value = current[e - 1];
    if value.is_nan() {
        return Decision::Prune {
            reason: format!("val acc is NaN after epoch {e}"),
        };
    }
    let mut values: Vec<f64> = completed
        .iter()
        .filter_map(|h| h.get(e - 1).copied())
        .filter(|v| !v.is_nan())
        .collect();
    if values.len() < min_trials.max(1) {
        return Decision::Continue;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let med = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    if value < med {
        Decision::Prune {
            reason: format!(
                "val acc {} after epoch {e} is below the median {} of {n} completed {}",
                percent(value),
                percent(med),
                if n == 1 { "trial" } else { "trials" }
            ),
        }
    } else {
        Decision::Continue
    }
}

/// Whether `epoch` is an ASHA rung: `min_epochs * reduction_factor^k` for
/// some `k >= 0` (with `min_epochs = 1`, factor 3: epochs 1, 3, 9, 27, ...).
/// Never a rung when `min_epochs == 0` or `reduction_factor < 2`.
pub fn is_rung(epoch: usize, reduction_factor: usize, min_epochs: usize) -> bool {
    if min_epochs == 0
        || reduction_factor < 2
        || epoch < min_epochs
        || !epoch.is_multiple_of(min_epochs)
    {
        return false;
    }
    let mut q = epoch / min_epochs;
    while q.is_multiple_of(reduction_factor) {
        q /= reduction_factor;
    }
    q == 1
}

/// ASHA (asynchronous successive halving), asked after epoch
/// `e = current.len()`:
///
/// - `e` not a rung ([`is_rung`]): continue;
/// - at a rung, `current[e - 1]` being `NaN`: prune;
/// - otherwise the `n` values at epoch `e` are the current trial's and every
///   `h[e - 1]` of `others` that exists and is not `NaN`; the trial is kept
///   when it ranks among the top `max(1, n / reduction_factor)` (integer
///   division), its rank being 1 + the number of values strictly greater
///   than its own (ties rank alike, in its favour). Else it is pruned.
///
/// So the first trial to reach a rung is always promoted (n = 1), as in
/// asynchronous SHA: it is compared only with what has been recorded so far.
/// `others` must not contain the current trial itself; it should hold every
/// comparable trial that recorded epoch `e`, finished, pruned or running.
/// Degenerate settings (`min_epochs == 0`, `reduction_factor < 2`, which
/// validation rejects) never prune.
pub fn asha(
    current: &History,
    others: &[Vec<f64>],
    reduction_factor: usize,
    min_epochs: usize,
) -> Decision {
    let e = current.len();
    if !is_rung(e, reduction_factor, min_epochs) {
        return Decision::Continue;
    }
    let value = current[e - 1];
    if value.is_nan() {
        return Decision::Prune {
            reason: format!("val acc is NaN at rung epoch {e}"),
        };
    }
    let peers: Vec<f64> = others
        .iter()
        .filter_map(|h| h.get(e - 1).copied())
        .filter(|v| !v.is_nan())
        .collect();
    let n = peers.len() + 1;
    let keep = (n / reduction_factor).max(1);
    let rank = 1 + peers.iter().filter(|v| **v > value).count();
    if rank <= keep {
        Decision::Continue
    } else {
        Decision::Prune {
            reason: format!(
                "val acc {} at rung epoch {e} ranks {rank} of {n}; only the top {keep} go on",
                percent(value)
            ),
        }
    }
}

/// Dispatches on the spec's pruner: `none` always continues, `median` reads
/// `completed` ([`median`] with `warmup_epochs`, `min_trials`), `asha` reads
/// `others` ([`asha`] with `reduction_factor`, `min_epochs`).
pub fn decide(
    kind: PrunerKind,
    cfg: &SchedulerConfig,
    current: &History,
    completed: &[Vec<f64>],
    others: &[Vec<f64>],
) -> Decision {
    match kind {
        PrunerKind::None => Decision::Continue,
        PrunerKind::Median => median(current, completed, cfg.warmup_epochs, cfg.min_trials),
        PrunerKind::Asha => asha(current, others, cfg.reduction_factor, cfg.min_epochs),
    }
}

fn percent(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}
