//! Leaderboard rows, computed once from stored trials and rendered as a
//! comfy-table, CSV or JSON. Computes no metric anew: every figure comes
//! from the store.

pub mod classification;
pub mod plots;
pub mod status;
pub mod trial;

use crate::store::TrialRow;
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;
use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// One leaderboard line: a sweep point (backbone x hyperparameters),
/// aggregated over its folds where the protocol has folds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub rank: usize,
    /// Trial ids of the point (one per fold).
    pub trials: Vec<i64>,
    pub key: String,
    pub sweep: String,
    pub backbone: String,
    /// Swept hyperparameters at this point, as `name -> value`.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// `done` when every trial is; otherwise counts such as `3 done, 7 pending`.
    pub status: String,
    /// Trials with a score / trials of the point.
    pub folds_scored: usize,
    pub folds: usize,
    /// `val` (best validation epoch) or `test` (held-out folds, scored at the selected epoch).
    pub evaluated_on: String,
    /// The best epoch of a single trial (None for several folds).
    pub best_epoch: Option<usize>,
    /// Mean over scored folds, and sample standard deviation (n - 1) when n > 1.
    pub acc: Option<f64>,
    pub acc_std: Option<f64>,
    pub macro_f1: Option<f64>,
    pub macro_f1_std: Option<f64>,
    pub epochs_run: usize,
    pub epochs_planned: usize,
    pub wall_seconds: f64,
}

/// Mean and sample standard deviation (None for fewer than 2 values).
pub fn mean_std(values: &[f64]) -> (Option<f64>, Option<f64>) {
    if values.is_empty() {
        return (None, None);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.len() > 1)
        .then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    (Some(mean), std)
}

fn status_summary(trials: &[&TrialRow]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for t in trials {
        let s = t.status.as_str();
        match counts.iter_mut().find(|(k, _)| *k == s) {
            Some((_, n)) => *n += 1,
            None => counts.push((s, 1)),
        }
    }
    if counts.len() == 1 && trials.len() == 1 {
        return counts[0].0.to_string();
    }
    if counts.len() == 1 {
        return format!("{} {}", counts[0].1, counts[0].0);
    }
    counts
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Groups trials into sweep points and ranks them by mean score.
/// `per_trial` keeps every trial (every fold) on a line of its own.
pub fn rows(trials: &[TrialRow], per_trial: bool) -> Vec<Row> {
    let mut groups: Vec<Vec<&TrialRow>> = Vec::new();
    for t in trials {
        let same = |g: &Vec<&TrialRow>| {
            !per_trial
                && g[0].sweep == t.sweep
                && g[0].backbone == t.backbone
                && g[0].params_json == t.params_json
                && g[0].fold.is_some()
                && t.fold.is_some()
        };
        match groups.iter_mut().find(|g| same(g)) {
            Some(g) => g.push(t),
            None => groups.push(vec![t]),
        }
    }
    let mut rows: Vec<Row> = groups
        .into_iter()
        .map(|g| {
            let scores: Vec<(f64, Option<f64>)> = g.iter().filter_map(|t| t.score()).collect();
            let (acc, acc_std) = mean_std(&scores.iter().map(|s| s.0).collect::<Vec<_>>());
            let (macro_f1, macro_f1_std) =
                mean_std(&scores.iter().filter_map(|s| s.1).collect::<Vec<_>>());
            let first = g[0];
            Row {
                rank: 0,
                trials: g.iter().map(|t| t.id.0).collect(),
                key: first.key.chars().take(12).collect(),
                sweep: first.sweep.clone(),
                backbone: first.backbone.clone(),
                params: serde_json::from_str(&first.params_json).unwrap_or_default(),
                status: status_summary(&g),
                folds_scored: scores.len(),
                folds: g.len(),
                evaluated_on: if g.iter().any(|t| t.test_acc.is_some()) {
                    "test"
                } else {
                    "val"
                }
                .to_string(),
                best_epoch: if g.len() == 1 { first.best_epoch } else { None },
                acc,
                acc_std,
                macro_f1,
                macro_f1_std,
                epochs_run: g.iter().map(|t| t.epochs_run).sum(),
                epochs_planned: g.iter().map(|t| t.epochs_planned).sum(),
                wall_seconds: g.iter().map(|t| t.wall_seconds).sum(),
            }
        })
        .collect();
    rows.sort_by(|a, b| match (a.acc, b.acc) {
        (Some(x), Some(y)) => y.total_cmp(&x).then(
            b.macro_f1
                .unwrap_or(0.0)
                .total_cmp(&a.macro_f1.unwrap_or(0.0)),
        ),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    for (i, r) in rows.iter_mut().enumerate() {
        r.rank = i + 1;
    }
    rows
}

/// Names of every swept parameter among the rows, sorted.
fn param_names(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .flat_map(|r| r.params.keys().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn param_text(row: &Row, name: &str) -> String {
    match row.params.get(name) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

fn opt(v: Option<f64>, scale: f64, digits: usize) -> String {
    v.map_or(String::new(), |x| format!("{:.*}", digits, x * scale))
}

fn wall(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

fn pm(mean: Option<f64>, std: Option<f64>, scale: f64, digits: usize) -> String {
    match (mean, std) {
        (Some(m), Some(s)) => format!("{:.*} ± {:.*}", digits, m * scale, digits, s * scale),
        (Some(m), None) => format!("{:.*}", digits, m * scale),
        _ => String::new(),
    }
}

/// Header and text cells shared by the table and CSV renderings.
fn cells(rows: &[Row], for_csv: bool) -> (Vec<String>, Vec<Vec<String>>) {
    let params = param_names(rows);
    let mut header: Vec<String> = ["rank", "trial", "sweep", "backbone"]
        .map(String::from)
        .to_vec();
    header.extend(params.iter().cloned());
    if for_csv {
        header.extend(
            [
                "status",
                "folds",
                "evaluated_on",
                "best_epoch",
                "acc",
                "acc_std",
                "macro_f1",
                "macro_f1_std",
                "epochs",
                "wall_seconds",
            ]
            .map(String::from),
        );
    } else {
        header.extend(
            [
                "status",
                "folds",
                "on",
                "best epoch",
                "acc %",
                "macro-F1",
                "epochs",
                "wall",
            ]
            .map(String::from),
        );
    }
    let body = rows
        .iter()
        .map(|r| {
            let trials = if r.trials.len() == 1 {
                r.trials[0].to_string()
            } else {
                format!(
                    "{}..{}",
                    r.trials.iter().min().expect("non-empty"),
                    r.trials.iter().max().expect("non-empty")
                )
            };
            let mut line = vec![
                r.rank.to_string(),
                trials,
                r.sweep.clone(),
                r.backbone.clone(),
            ];
            line.extend(params.iter().map(|p| param_text(r, p)));
            line.push(r.status.clone());
            line.push(if for_csv {
                r.folds_scored.to_string()
            } else {
                format!("{}/{}", r.folds_scored, r.folds)
            });
            line.push(r.evaluated_on.clone());
            line.push(r.best_epoch.map_or(String::new(), |e| e.to_string()));
            if for_csv {
                line.extend([
                    opt(r.acc, 1.0, 6),
                    opt(r.acc_std, 1.0, 6),
                    opt(r.macro_f1, 1.0, 6),
                    opt(r.macro_f1_std, 1.0, 6),
                ]);
                line.push(r.epochs_run.to_string());
                line.push(format!("{:.1}", r.wall_seconds));
            } else {
                line.push(pm(r.acc, r.acc_std, 100.0, 2));
                line.push(pm(r.macro_f1, r.macro_f1_std, 1.0, 4));
                line.push(format!("{}/{}", r.epochs_run, r.epochs_planned));
                line.push(wall(r.wall_seconds));
            }
            line
        })
        .collect();
    (header, body)
}

/// Bars for `leaderboard --plot`: the top `n` points, mean with fold std.
pub fn bars(rows: &[Row], n: usize) -> Vec<plots::Bar> {
    rows.iter()
        .filter(|r| r.acc.is_some())
        .take(n)
        .map(|r| {
            let params: Vec<String> = r
                .params
                .keys()
                .map(|k| format!("{k}={}", param_text(r, k)))
                .collect();
            plots::Bar {
                label: format!("{} {}", r.backbone, params.join(" "))
                    .trim_end()
                    .to_string(),
                mean: 100.0 * r.acc.unwrap_or(0.0),
                std: r.acc_std.map(|s| 100.0 * s),
                n: r.folds_scored,
            }
        })
        .collect()
}

pub fn render(rows: &[Row], format: Format) -> String {
    match format {
        Format::Table => {
            let (header, body) = cells(rows, false);
            let mut table = Table::new();
            table
                .load_style(UTF8_FULL_CONDENSED)
                .set_header(header.clone());
            for line in body {
                table.add_row(line.into_iter().enumerate().map(|(i, c)| {
                    let numeric =
                        !matches!(header[i].as_str(), "sweep" | "backbone" | "status" | "on");
                    Cell::new(c).set_alignment(if numeric {
                        CellAlignment::Right
                    } else {
                        CellAlignment::Left
                    })
                }));
            }
            format!("{table}\n")
        }
        Format::Csv => {
            let (header, body) = cells(rows, true);
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(&header).expect("write to memory");
            for line in body {
                w.write_record(&line).expect("write to memory");
            }
            String::from_utf8(w.into_inner().expect("flush to memory")).expect("csv is utf-8")
        }
        Format::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(rows).expect("rows serialise")
        ),
    }
}
