//! Leaderboard rows, computed once from stored trials and rendered as a
//! comfy-table, CSV or JSON. Computes no metric anew: every figure comes
//! from the store.

pub mod classification;
pub mod plots;

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

/// One leaderboard line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub rank: usize,
    pub trial: i64,
    pub key: String,
    pub sweep: String,
    pub backbone: String,
    /// Swept hyperparameters at this point, as `name -> value`.
    pub params: serde_json::Map<String, serde_json::Value>,
    pub status: String,
    pub best_epoch: Option<usize>,
    pub val_acc: Option<f64>,
    pub val_macro_f1: Option<f64>,
    pub epochs_run: usize,
    pub epochs_planned: usize,
    pub wall_seconds: f64,
}

/// Rows in the store's order (best validation accuracy first), ranked.
pub fn rows(trials: &[TrialRow]) -> Vec<Row> {
    trials
        .iter()
        .enumerate()
        .map(|(i, t)| Row {
            rank: i + 1,
            trial: t.id.0,
            key: t.key.chars().take(12).collect(),
            sweep: t.sweep.clone(),
            backbone: t.backbone.clone(),
            params: serde_json::from_str(&t.params_json).unwrap_or_default(),
            status: t.status.as_str().to_string(),
            best_epoch: t.best_epoch,
            val_acc: t.best_val_acc,
            val_macro_f1: t.best_val_macro_f1,
            epochs_run: t.epochs_run,
            epochs_planned: t.epochs_planned,
            wall_seconds: t.wall_seconds,
        })
        .collect()
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

/// Header and text cells shared by the table and CSV renderings.
fn cells(rows: &[Row], for_csv: bool) -> (Vec<String>, Vec<Vec<String>>) {
    let params = param_names(rows);
    let mut header: Vec<String> = ["rank", "trial", "sweep", "backbone"]
        .map(String::from)
        .to_vec();
    header.extend(params.iter().cloned());
    header.extend(
        [
            "status",
            "best_epoch",
            if for_csv { "val_acc" } else { "val acc %" },
            "val_macro_f1",
            "epochs",
            "wall",
        ]
        .map(String::from),
    );
    let body = rows
        .iter()
        .map(|r| {
            let mut line = vec![
                r.rank.to_string(),
                r.trial.to_string(),
                r.sweep.clone(),
                r.backbone.clone(),
            ];
            line.extend(params.iter().map(|p| param_text(r, p)));
            line.push(r.status.clone());
            line.push(r.best_epoch.map_or(String::new(), |e| e.to_string()));
            if for_csv {
                line.push(opt(r.val_acc, 1.0, 6));
                line.push(opt(r.val_macro_f1, 1.0, 6));
                line.push(r.epochs_run.to_string());
                line.push(format!("{:.1}", r.wall_seconds));
            } else {
                line.push(opt(r.val_acc, 100.0, 2));
                line.push(opt(r.val_macro_f1, 1.0, 4));
                line.push(format!("{}/{}", r.epochs_run, r.epochs_planned));
                line.push(wall(r.wall_seconds));
            }
            line
        })
        .collect();
    (header, body)
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
                    let numeric = !matches!(header[i].as_str(), "sweep" | "backbone" | "status");
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
