//! Range and consistency checks that serde's types cannot express.
//! Each problem carries the dotted key path it is about, so the caller can
//! point at the file position (or the `--set` flag) it came from.

use super::search::Dist;
use super::types::*;
use crate::models;

type Problems = Vec<(Vec<String>, String)>;

fn path(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

pub fn validate(spec: &Spec) -> Problems {
    let mut out = Problems::new();
    let name = &spec.experiment.name;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        out.push((
            path(&["experiment", "name"]),
            format!("experiment.name must be non-empty and use only letters, digits, '-', '_' and '.', got {name:?}"),
        ));
    }
    if let Some(r) = &spec.experiment.reference
        && !(0.0..=1.0).contains(&r.accuracy)
    {
        out.push((
            path(&["experiment", "reference", "accuracy"]),
            format!(
                "experiment.reference.accuracy is a fraction in 0..=1 (0.9949 for 99.49%), got {}",
                r.accuracy
            ),
        ));
    }
    validate_data(&spec.data, &mut out);
    for (field, msg) in train_problems(&spec.train) {
        out.push((path(&["train", field]), msg));
    }
    validate_backbones(spec, &mut out);
    validate_sweep(spec, &mut out);
    validate_scheduler(&spec.scheduler, &mut out);
    out
}

fn validate_data(d: &DataConfig, out: &mut Problems) {
    if d.root.trim().is_empty() {
        out.push((
            path(&["data", "root"]),
            "data.root must name a folder of class folders".into(),
        ));
    }
    if !(16..=1024).contains(&d.image_size) {
        out.push((
            path(&["data", "image_size"]),
            format!("data.image_size must be in 16..=1024, got {}", d.image_size),
        ));
    }
    if d.channels != 1 && d.channels != 3 {
        out.push((
            path(&["data", "channels"]),
            format!("data.channels must be 1 or 3, got {}", d.channels),
        ));
    }
    if !(d.val_fraction > 0.0 && d.val_fraction < 1.0) {
        out.push((
            path(&["data", "val_fraction"]),
            format!(
                "data.val_fraction must be > 0 and < 1, got {}",
                d.val_fraction
            ),
        ));
    }
    for (key, values) in [("mean", &d.mean), ("std", &d.std)] {
        if values.len() != d.channels {
            out.push((
                path(&["data", key]),
                format!(
                    "data.{key} must have one value per channel ({}), got {}",
                    d.channels,
                    values.len()
                ),
            ));
        }
    }
    if !(2..=100).contains(&d.folds) {
        out.push((
            path(&["data", "folds"]),
            format!("data.folds must be in 2..=100, got {}", d.folds),
        ));
    }
    if let Some(f) = d.run_folds.iter().find(|f| **f >= d.folds) {
        out.push((
            path(&["data", "run_folds"]),
            format!(
                "data.run_folds: fold {f} does not exist (folds are 0..{})",
                d.folds
            ),
        ));
    }
    if !(d.inner_val_fraction > 0.0 && d.inner_val_fraction < 1.0) {
        out.push((
            path(&["data", "inner_val_fraction"]),
            format!(
                "data.inner_val_fraction must be > 0 and < 1, got {}",
                d.inner_val_fraction
            ),
        ));
    }
    for (key, pattern) in [
        ("subject_pattern", &d.subject_pattern),
        ("sequence_pattern", &d.sequence_pattern),
    ] {
        match regex::Regex::new(pattern) {
            Ok(re) if re.captures_len() >= 2 => {}
            Ok(_) => out.push((
                path(&["data", key]),
                format!(
                    "data.{key} needs a capture group for the id, e.g. '^S(\\d+)_', got {pattern:?}"
                ),
            )),
            Err(e) => out.push((
                path(&["data", key]),
                format!("data.{key} is not a valid regular expression: {e}"),
            )),
        }
    }
    if let Some(bad) = d.std.iter().find(|s| !(**s > 0.0 && s.is_finite())) {
        out.push((
            path(&["data", "std"]),
            format!("data.std values must be > 0, got {bad}"),
        ));
    }
    if let Some(s) = &d.synth {
        if !(2..=100_000).contains(&s.per_class) {
            out.push((
                path(&["data", "synth", "per_class"]),
                format!(
                    "data.synth.per_class must be in 2..=100000, got {}",
                    s.per_class
                ),
            ));
        }
        if !(16..=1024).contains(&s.size) {
            out.push((
                path(&["data", "synth", "size"]),
                format!("data.synth.size must be in 16..=1024, got {}", s.size),
            ));
        }
    }
}

/// Problems of a train section, by field name.
fn train_problems(t: &TrainConfig) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mut push = |field: &'static str, msg: String| out.push((field, msg));
    if !(1..=100_000).contains(&t.epochs) {
        push(
            "epochs",
            format!("train.epochs must be in 1..=100000, got {}", t.epochs),
        );
    }
    if !(2..=65_536).contains(&t.batch_size) {
        push(
            "batch_size",
            format!(
                "train.batch_size must be in 2..=65536 (batch norm needs 2), got {}",
                t.batch_size
            ),
        );
    }
    if !(1..=65_536).contains(&t.eval_batch_size) {
        push(
            "eval_batch_size",
            format!(
                "train.eval_batch_size must be in 1..=65536, got {}",
                t.eval_batch_size
            ),
        );
    }
    if !(t.lr > 0.0 && t.lr <= 10.0) {
        push(
            "lr",
            format!("train.lr must be > 0 and <= 10, got {}", t.lr),
        );
    }
    if !(0.0..1.0).contains(&t.momentum) {
        push(
            "momentum",
            format!("train.momentum must be >= 0 and < 1, got {}", t.momentum),
        );
    }
    if !(t.weight_decay >= 0.0 && t.weight_decay < 1.0) {
        push(
            "weight_decay",
            format!(
                "train.weight_decay must be >= 0 and < 1, got {}",
                t.weight_decay
            ),
        );
    }
    if t.step_size == 0 {
        push(
            "step_size",
            "train.step_size must be >= 1 epoch, got 0".into(),
        );
    }
    if !(t.gamma > 0.0 && t.gamma <= 1.0) {
        push(
            "gamma",
            format!("train.gamma must be > 0 and <= 1, got {}", t.gamma),
        );
    }
    if !(0.0..1.0).contains(&t.label_smoothing) {
        push(
            "label_smoothing",
            format!(
                "train.label_smoothing must be >= 0 and < 1, got {}",
                t.label_smoothing
            ),
        );
    }
    if t.shift_pixels > 32 {
        push(
            "shift_pixels",
            format!("train.shift_pixels must be <= 32, got {}", t.shift_pixels),
        );
    }
    let mut seen = Vec::new();
    for a in &t.augment {
        if seen.contains(a) {
            push("augment", format!("train.augment lists {a:?} twice"));
        }
        seen.push(*a);
    }
    out
}

fn validate_backbones(spec: &Spec, out: &mut Problems) {
    if spec.backbones.is_empty() {
        out.push((
            path(&["backbone"]),
            "at least one [[backbone]] is required, e.g. [[backbone]] name = \"resnet18\"".into(),
        ));
    }
    let known = models::names();
    for (i, b) in spec.backbones.iter().enumerate() {
        let at = |field: &str| vec!["backbone".to_string(), i.to_string(), field.to_string()];
        if !known.contains(&b.name.as_str()) {
            out.push((
                at("name"),
                format!(
                    "unknown backbone {:?}, expected one of: {}",
                    b.name,
                    known.join(", ")
                ),
            ));
        }
        if spec.backbones[..i]
            .iter()
            .any(|o| o.name == b.name && o.pretrained == b.pretrained)
        {
            out.push((at("name"), format!("backbone {:?} is listed twice", b.name)));
        }
        if b.pretrained.as_deref().is_some_and(|p| p.trim().is_empty()) {
            out.push((
                at("pretrained"),
                "backbone.pretrained must name a weights file (.safetensors or .pth)".into(),
            ));
        }
        if let Some(f) = &b.freeze
            && let Err(msg) = Freeze::parse(f)
        {
            out.push((at("freeze"), msg));
        }
        if let Some(lr) = b.head_lr
            && !(lr.is_finite() && lr > 0.0)
        {
            out.push((
                at("head_lr"),
                format!("backbone.head_lr must be a positive learning rate, got {lr}"),
            ));
        }
    }
}

/// `[sweep]`: every space key is a train field; under `grid` every entry is
/// a list, under `random` a list or a distribution (see `search.rs`), and
/// every value or range bound is valid for its field.
fn validate_sweep(spec: &Spec, out: &mut Problems) {
    let sweep = &spec.sweep;
    let random = sweep.strategy == Strategy::Random;
    if random && sweep.samples == 0 {
        out.push((
            path(&["sweep", "samples"]),
            "sweep.samples must be >= 1 for strategy = \"random\"".into(),
        ));
    }
    if random && sweep.samples > MAX_SAMPLES {
        out.push((
            path(&["sweep", "samples"]),
            format!(
                "sweep.samples must be <= {MAX_SAMPLES}, got {}",
                sweep.samples
            ),
        ));
    }
    // Written for a random sweep but under `grid`, they would silently run
    // the whole grid instead.
    if !random && sweep.samples != 0 {
        out.push((
            path(&["sweep", "samples"]),
            "sweep.samples is only used by strategy = \"random\" (a grid runs every point); set sweep.strategy = \"random\" or remove it".into(),
        ));
    }
    if !random && sweep.seed.is_some() {
        out.push((
            path(&["sweep", "seed"]),
            "sweep.seed is only used by strategy = \"random\"; set sweep.strategy = \"random\" or remove it".into(),
        ));
    }
    let fields = super::expand::train_fields();
    for (key, values) in &sweep.space {
        let at = vec!["sweep".to_string(), "space".to_string(), key.clone()];
        if !fields.contains(key) {
            out.push((
                at.clone(),
                format!(
                    "sweep.space.{key} is not a train field; expected one of: {}",
                    fields.join(", ")
                ),
            ));
            continue;
        }
        if !random {
            match values {
                toml::Value::Array(items) => {
                    check_values(spec, key, items, &at, &format!("sweep.space.{key}"), out)
                }
                toml::Value::Table(_) => out.push((
                    at.clone(),
                    format!("sweep.space.{key}: a distribution needs strategy = \"random\""),
                )),
                other => out.push((
                    at.clone(),
                    format!(
                        "sweep.space.{key} must be a list of values, e.g. {key} = [..], got a {}",
                        other.type_str()
                    ),
                )),
            }
            continue;
        }
        let dist = match Dist::parse(key, values) {
            Ok(dist) => dist,
            Err(problems) => {
                out.extend(problems.into_iter().map(|(sub, msg)| {
                    let mut p = at.clone();
                    p.extend(sub);
                    (p, msg)
                }));
                continue;
            }
        };
        match (&dist, values) {
            (Dist::Choice(items), toml::Value::Array(_)) => {
                check_values(spec, key, items, &at, &format!("sweep.space.{key}"), out)
            }
            (Dist::Choice(items), _) => {
                let mut at = at.clone();
                at.push("choice".into());
                check_values(
                    spec,
                    key,
                    items,
                    &at,
                    &format!("sweep.space.{key}.choice"),
                    out,
                )
            }
            _ => check_bounds(spec, key, &dist, &at, out),
        }
    }
}

/// The most points a random sweep may draw.
const MAX_SAMPLES: usize = 100_000;

/// The values of a grid list or a choice: at least one, no repeats, each a
/// valid value of the train field `key`. `label` names the list in messages.
fn check_values(
    spec: &Spec,
    key: &str,
    items: &[toml::Value],
    at: &[String],
    label: &str,
    out: &mut Problems,
) {
    if items.is_empty() {
        out.push((at.to_vec(), format!("{label} must list at least one value")));
    }
    for (i, item) in items.iter().enumerate() {
        let mut at_item = at.to_vec();
        at_item.push(i.to_string());
        if items[..i].contains(item) {
            out.push((at_item, format!("{label} lists {item} twice")));
            continue;
        }
        match super::expand::with_field(&spec.train, key, item) {
            // Only the swept field: the rest of [train] is reported once, above.
            Ok(train) => out.extend(
                train_problems(&train)
                    .into_iter()
                    .filter(|(field, _)| *field == key)
                    .map(|(_, msg)| (at_item.clone(), msg)),
            ),
            Err(msg) => out.push((at_item, format!("{label}[{i}]: {msg}"))),
        }
    }
}

/// Both bounds of a range, as the values it draws (floats, or integers for
/// `int`), must be valid values of the train field `key`. The train fields'
/// valid values are intervals, so every value drawn between them is valid too.
fn check_bounds(spec: &Spec, key: &str, dist: &Dist, at: &[String], out: &mut Problems) {
    let Some(bounds) = dist.bounds() else { return };
    let name = dist.name();
    let label = format!("sweep.space.{key}.{name}");
    for (i, (bound, which)) in bounds.iter().zip(["lower", "upper"]).enumerate() {
        let mut at_bound = at.to_vec();
        at_bound.extend([name.to_string(), i.to_string()]);
        match super::expand::with_field(&spec.train, key, bound) {
            Ok(train) => out.extend(
                train_problems(&train)
                    .into_iter()
                    .filter(|(field, _)| *field == key)
                    .map(|(_, msg)| {
                        (
                            at_bound.clone(),
                            format!("{msg} (the {which} bound of {label})"),
                        )
                    }),
            ),
            // A type mismatch (floats for an integer field): once is enough.
            Err(msg) => {
                out.push((at_bound, format!("{label}[{i}]: {msg}")));
                return;
            }
        }
    }
}

fn validate_scheduler(s: &SchedulerConfig, out: &mut Problems) {
    let at = path(&["scheduler", "devices"]);
    match &s.devices {
        Devices::Named(n) if n == "auto" || n == "cpu" => {}
        Devices::Named(n) => out.push((
            at,
            format!(
                "scheduler.devices must be \"auto\", \"cpu\" or a list like [\"cuda:0\"], got {n:?}"
            ),
        )),
        Devices::List(list) => {
            if list.is_empty() {
                out.push((
                    at.clone(),
                    "scheduler.devices must not be an empty list".into(),
                ));
            }
            for d in list {
                let ok = d == "cpu"
                    || d.strip_prefix("cuda:")
                        .is_some_and(|n| n.parse::<usize>().is_ok());
                if !ok {
                    out.push((
                        at.clone(),
                        format!(
                            "scheduler.devices entries must be \"cpu\" or \"cuda:N\", got {d:?}"
                        ),
                    ));
                }
            }
        }
    }
    if s.threads > 1024 {
        out.push((
            path(&["scheduler", "threads"]),
            format!(
                "scheduler.threads must be <= 1024 (0 = all cores), got {}",
                s.threads
            ),
        ));
    }
    // Pruner settings are checked whichever pruner is chosen, so switching
    // pruners with --set never meets a bad value late.
    if s.min_trials == 0 {
        out.push((
            path(&["scheduler", "min_trials"]),
            "scheduler.min_trials must be >= 1 (completed trials needed for a median), got 0"
                .into(),
        ));
    }
    if s.reduction_factor < 2 {
        out.push((
            path(&["scheduler", "reduction_factor"]),
            format!(
                "scheduler.reduction_factor must be >= 2, got {}",
                s.reduction_factor
            ),
        ));
    }
    if s.min_epochs == 0 {
        out.push((
            path(&["scheduler", "min_epochs"]),
            "scheduler.min_epochs must be >= 1 (the first rung's epoch), got 0".into(),
        ));
    }
}
