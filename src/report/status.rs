//! `fer-lab status`: trials by state per sweep, what runs where, epochs
//! done and an ETA from the mean epoch time of each running trial.

use crate::store::{StatusLine, TrialStatus};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use std::fmt::Write as _;

const ORDER: [TrialStatus; 7] = [
    TrialStatus::Done,
    TrialStatus::Running,
    TrialStatus::Pending,
    TrialStatus::Interrupted,
    TrialStatus::Failed,
    TrialStatus::Diverged,
    TrialStatus::Pruned,
];

fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// The status text of every sweep in `lines`.
pub fn render(lines: &[StatusLine]) -> String {
    let mut out = String::new();
    let mut sweeps: Vec<&str> = lines.iter().map(|l| l.sweep.as_str()).collect();
    sweeps.dedup();
    for sweep in sweeps {
        let trials: Vec<&StatusLine> = lines.iter().filter(|l| l.sweep == sweep).collect();
        let counts: Vec<String> = ORDER
            .iter()
            .filter_map(|s| {
                let n = trials.iter().filter(|t| t.status == *s).count();
                (n > 0).then(|| format!("{n} {}", s.as_str()))
            })
            .collect();
        let done: usize = trials.iter().map(|t| t.epochs_done).sum();
        // A pruned or diverged trial's plan ends where it stopped.
        let planned: usize = trials
            .iter()
            .map(|t| {
                if matches!(
                    t.status,
                    TrialStatus::Pruned | TrialStatus::Diverged | TrialStatus::Failed
                ) {
                    t.epochs_done
                } else {
                    t.epochs_planned
                }
            })
            .sum();
        let timed: Vec<f64> = trials.iter().filter_map(|t| t.mean_epoch_seconds).collect();
        let eta = if timed.is_empty() || planned == done {
            String::new()
        } else {
            let mean = timed.iter().sum::<f64>() / timed.len() as f64;
            format!(
                "; about {} left at {mean:.0}s per epoch on one slot",
                duration(mean * (planned - done) as f64)
            )
        };
        let _ = writeln!(
            out,
            "sweep {sweep}: {} trials: {}; epochs {done} of {planned}{eta}",
            trials.len(),
            counts.join(", ")
        );
        let running: Vec<&&StatusLine> = trials
            .iter()
            .filter(|t| t.status == TrialStatus::Running)
            .collect();
        if running.is_empty() {
            continue;
        }
        let mut table = Table::new();
        table.load_style(UTF8_FULL_CONDENSED).set_header([
            "trial",
            "backbone",
            "params",
            "fold",
            "device",
            "owner",
            "epochs",
            "heartbeat",
            "ETA",
        ]);
        for t in running {
            let eta = t.mean_epoch_seconds.map_or("-".into(), |m| {
                duration(m * t.epochs_planned.saturating_sub(t.epochs_done) as f64)
            });
            table.add_row([
                t.trial.0.to_string(),
                t.backbone.clone(),
                t.params_json.clone(),
                t.fold.map_or("-".into(), |f| f.to_string()),
                t.device.clone().unwrap_or_default(),
                t.owner.clone().unwrap_or_default(),
                format!("{}/{}", t.epochs_done, t.epochs_planned),
                t.heartbeat_age_secs
                    .map_or("-".into(), |a| format!("{}s ago", a)),
                eta,
            ]);
        }
        let _ = writeln!(out, "{table}");
    }
    if out.is_empty() {
        out.push_str("no trials\n");
    }
    out
}
