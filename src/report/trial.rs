//! `fer-lab report`: one trial, or one sweep point pooled over its folds, as
//! text (classification report, confusion matrix, per-fold table, leakage)
//! and PNG plots (confusion heatmap, accuracy and loss curves). Every figure
//! is read from the store; only the pooled confusion matrix is summed here.

use super::{classification, mean_std, plots};
use crate::data::split::Leak;
use crate::metrics::Confusion;
use crate::store::{Store, StoreError, TrialRow};
use anyhow::{Context, bail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What `report` wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub text: String,
    pub files: Vec<PathBuf>,
}

/// Finds a trial by id (`7`) or key prefix (at least 6 hex digits).
pub fn find_trial<'a>(trials: &'a [TrialRow], ident: &str) -> anyhow::Result<&'a TrialRow> {
    if let Ok(id) = ident.parse::<i64>()
        && let Some(t) = trials.iter().find(|t| t.id.0 == id)
    {
        return Ok(t);
    }
    let matches: Vec<&TrialRow> = if ident.len() >= 6 {
        trials.iter().filter(|t| t.key.starts_with(ident)).collect()
    } else {
        Vec::new()
    };
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(StoreError::NoSuchTrial(ident.to_string()).into()),
        many => bail!(
            "{ident:?} matches {} trials; give more of the key",
            many.len()
        ),
    }
}

fn protocol_of(store: &Store, t: &TrialRow) -> anyhow::Result<String> {
    let plan: serde_json::Value =
        serde_json::from_str(&store.plan_json(t.id)?).context("stored plan")?;
    Ok(plan["data"]["protocol"]
        .as_str()
        .unwrap_or("holdout")
        .to_string())
}

fn leak_line(t: &TrialRow) -> String {
    let Some(json) = &t.leak_json else {
        return "subjects unknown (file names do not match data.subject_pattern)".into();
    };
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let side = if t.test_acc.is_some() {
        "train_vs_test"
    } else {
        "train_vs_val"
    };
    match v
        .get(side)
        .and_then(|l| serde_json::from_value::<Leak>(l.clone()).ok())
    {
        Some(l) if l.is_leaky() => format!(
            "WARNING: the evaluated images share {} of {} subjects and {} of {} sequences with training (a subject-leaky split)",
            l.subjects.shared, l.subjects.of, l.sequences.shared, l.sequences.of
        ),
        Some(l) => format!(
            "none: no subject of the {} evaluated subjects appears in training",
            l.subjects.of
        ),
        None => "unknown".into(),
    }
}

/// The published figure the sweep's spec names, if any.
fn reference(store: &Store, sweep: &str) -> anyhow::Result<Option<crate::spec::Reference>> {
    let Some(text) = store.sweep_spec(sweep)? else {
        return Ok(None);
    };
    let spec: crate::spec::Spec = toml::from_str(&text).context("stored spec")?;
    Ok(spec.experiment.reference)
}

/// The first trial of the best-ranked point of a sweep.
pub fn best_of_sweep(store: &Store, sweep: &str) -> anyhow::Result<String> {
    let rows = super::rows(&store.trials(Some(sweep))?, false);
    match rows.first() {
        Some(r) => Ok(r.trials[0].to_string()),
        None => Err(StoreError::NoSuchTrial(format!("sweep {sweep}")).into()),
    }
}

/// Writes the report of trial `ident` (and its sibling folds) into `out`.
pub fn write(store: &Store, ident: &str, out: &Path) -> anyhow::Result<Written> {
    let all = store.trials(None)?;
    let trial = find_trial(&all, ident)?;
    let mut group: Vec<&TrialRow> = all
        .iter()
        .filter(|t| {
            t.id == trial.id
                || (trial.fold.is_some()
                    && t.fold.is_some()
                    && t.sweep == trial.sweep
                    && t.backbone == trial.backbone
                    && t.params_json == trial.params_json)
        })
        .collect();
    group.sort_by_key(|t| (t.fold, t.id));
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let protocol = protocol_of(store, trial)?;
    let on_test = group.iter().any(|t| t.test_acc.is_some());
    let split = if on_test { "test" } else { "val" };

    // Pool the evaluated confusion matrices over the group.
    let mut classes: Vec<String> = Vec::new();
    let mut pooled: Option<Confusion> = None;
    for t in &group {
        for c in store.confusions(t.id)? {
            if c.split != split {
                continue;
            }
            let m = pooled.get_or_insert_with(|| Confusion::new(c.classes.len()));
            if m.counts.len() != c.counts.len() {
                bail!(
                    "trial {} has {} classes, its siblings {}",
                    t.id.0,
                    c.counts.len(),
                    m.counts.len()
                );
            }
            for (row, add) in m.counts.iter_mut().zip(&c.counts) {
                for (x, y) in row.iter_mut().zip(add) {
                    *x += y;
                }
            }
            classes = c.classes;
        }
    }

    let mut text = String::new();
    let params: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&trial.params_json).unwrap_or_default();
    let params: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let ids: Vec<String> = group.iter().map(|t| t.id.0.to_string()).collect();
    let point = format!("{} {}", trial.backbone, params.join(" "))
        .trim_end()
        .to_string();
    writeln!(text, "fer-lab report: sweep {}, {point}", trial.sweep)?;
    writeln!(
        text,
        "trials: {} ({} in all); protocol: {protocol}",
        ids.join(", "),
        group.len()
    )?;
    let scores: Vec<(f64, Option<f64>)> = group.iter().filter_map(|t| t.score()).collect();
    let (acc, acc_std) = mean_std(&scores.iter().map(|s| s.0).collect::<Vec<_>>());
    let (f1, f1_std) = mean_std(&scores.iter().filter_map(|s| s.1).collect::<Vec<_>>());
    let what = if on_test {
        "test fold(s), each scored once at its best validation epoch"
    } else {
        "validation split, at the best epoch"
    };
    match (acc, f1) {
        (Some(a), Some(f)) if group.len() > 1 => writeln!(
            text,
            "accuracy {:.2} ± {:.2} %, macro-F1 {:.4} ± {:.4} (mean ± sample std over {} scored of {} trials) on the {what}",
            100.0 * a,
            100.0 * acc_std.unwrap_or(0.0),
            f,
            f1_std.unwrap_or(0.0),
            scores.len(),
            group.len()
        )?,
        (Some(a), Some(f)) => writeln!(
            text,
            "accuracy {:.2} %, macro-F1 {:.4} on the {what}",
            100.0 * a,
            f
        )?,
        _ => writeln!(text, "no scores yet")?,
    }
    if let Some(r) = reference(store, &trial.sweep)? {
        let ours = acc.map_or("no score yet".to_string(), |a| format!("{:.2}%", 100.0 * a));
        writeln!(
            text,
            "published: {:.2}% ({}); fer-lab: {ours} ({what})",
            100.0 * r.accuracy,
            r.source
        )?;
    }
    writeln!(text, "leakage: {}", leak_line(trial))?;
    for t in &group {
        if let Some(notes) = store.notes(t.id)? {
            for n in notes.lines() {
                writeln!(text, "note (trial {}): {n}", t.id.0)?;
            }
        }
    }
    if group.len() > 1 {
        writeln!(
            text,
            "\n fold  trial  status  best epoch  val acc  {split} acc  {split} macro-F1"
        )?;
        for t in &group {
            let (a, f) = t.score().map_or((String::new(), String::new()), |(a, f)| {
                (
                    format!("{:.2}", 100.0 * a),
                    f.map_or(String::new(), |f| format!("{f:.4}")),
                )
            });
            writeln!(
                text,
                " {:>4}  {:>5}  {:<6}  {:>10}  {:>7}  {:>8}  {:>13}",
                t.fold.map_or("-".into(), |f| f.to_string()),
                t.id.0,
                t.status.as_str(),
                t.best_epoch.map_or(String::new(), |e| e.to_string()),
                t.best_val_acc
                    .map_or(String::new(), |v| format!("{:.2}", 100.0 * v)),
                a,
                f
            )?;
        }
    }
    let mut files = Vec::new();
    if let Some(m) = &pooled {
        let pooled_what = if group.len() > 1 {
            format!(
                "pooled over {} {split} folds, {} images",
                group.len(),
                m.total()
            )
        } else {
            format!("{split} split, {} images", m.total())
        };
        writeln!(text, "\nclassification report ({pooled_what}):\n")?;
        text.push_str(&classification::classification_report(m, &classes, 4));
        text.push('\n');
        text.push_str(&classification::confusion_text(m, &classes));
        let path = out.join("confusion.png");
        plots::confusion_png(&path, m, &classes, &format!("{point} - {pooled_what}"))?;
        files.push(path);
    }
    for t in &group {
        let epochs = store.epochs(t.id)?;
        if epochs.is_empty() {
            continue;
        }
        let name = match t.fold {
            Some(f) if group.len() > 1 => format!("curves-fold-{f}.png"),
            _ => "curves.png".to_string(),
        };
        let path = out.join(name);
        let fold = t.fold.map_or(String::new(), |f| format!(" fold {f}"));
        plots::curves_png(&path, &epochs, &format!("trial {} - {point}{fold}", t.id.0))?;
        files.push(path);
    }
    let report_path = out.join("report.txt");
    std::fs::write(&report_path, &text)
        .with_context(|| format!("cannot write {}", report_path.display()))?;
    files.insert(0, report_path);
    Ok(Written { text, files })
}
