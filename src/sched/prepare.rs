//! Data for a sweep: the synthetic set when asked for, the data set loaded
//! once, every trial's split (holdout, subject k-fold, folders) and its
//! subject/sequence leakage.

use crate::data::split::{self, TrialSplit};
use crate::data::{Dataset, synth};
use crate::spec::{Protocol, TrialPlan};
use anyhow::Context;
use std::path::PathBuf;

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
