//! Train/validation splits. `holdout` is the seeded stratified frame split:
//! each class keeps its share in validation, rounded to the nearest image.

use super::DataError;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Indices into a [`super::Dataset`], each sorted ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
}

/// Stratified holdout: in every class, `round(n * val_fraction)` images
/// (at least one, and at least one left for training) go to validation.
pub fn stratified_holdout(
    labels: &[usize],
    classes: &[String],
    val_fraction: f64,
    seed: u64,
) -> Result<Split, DataError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut split = Split {
        train: Vec::new(),
        val: Vec::new(),
    };
    for (label, class) in classes.iter().enumerate() {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == label).collect();
        if members.len() < 2 {
            return Err(DataError::ClassTooSmall {
                class: class.clone(),
                count: members.len(),
            });
        }
        members.shuffle(&mut rng);
        let n_val =
            ((members.len() as f64 * val_fraction).round() as usize).clamp(1, members.len() - 1);
        split.val.extend_from_slice(&members[..n_val]);
        split.train.extend_from_slice(&members[n_val..]);
    }
    split.train.sort_unstable();
    split.val.sort_unstable();
    Ok(split)
}

/// Train, model-selection and (optionally) test indices of one trial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialSplit {
    pub train: Vec<usize>,
    /// Used to pick the best epoch.
    pub val: Vec<usize>,
    /// Scored once, at the selected epoch (`subject-kfold`, `folders` with `test/`).
    pub test: Option<Vec<usize>>,
}

impl From<Split> for TrialSplit {
    fn from(s: Split) -> Self {
        Self {
            train: s.train,
            val: s.val,
            test: None,
        }
    }
}

/// The id captured by `pattern`'s first group in each file name.
pub fn ids_from_names(
    files: &[std::path::PathBuf],
    pattern: &regex::Regex,
) -> Result<Vec<String>, DataError> {
    files
        .iter()
        .map(|f| {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            pattern
                .captures(&name)
                .and_then(|c| c.get(1))
                .map(|m| m.as_str().to_string())
                .ok_or_else(|| DataError::NoSubject {
                    file: f.clone(),
                    pattern: pattern.as_str().to_string(),
                })
        })
        .collect()
}

/// Subject ids sorted as numbers where they are numbers (`2` before `10`).
fn sorted_ids(ids: &[String]) -> Vec<String> {
    let mut unique: Vec<String> = ids.to_vec();
    unique.sort_by(|a, b| match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    });
    unique.dedup();
    unique
}

/// Fold of every subject: sorted by id and dealt round-robin (subject i
/// goes to fold i mod k), as the published subject-independent CK+ list does.
pub fn subject_folds(
    subjects: &[String],
    folds: usize,
) -> std::collections::HashMap<String, usize> {
    sorted_ids(subjects)
        .into_iter()
        .enumerate()
        .map(|(i, s)| (s, i % folds))
        .collect()
}

/// Test fold `fold` of a subject-independent k-fold; the other folds' subjects
/// are split again, by subject, into training and model-selection sets.
pub fn subject_kfold(
    subjects: &[String],
    folds: usize,
    fold: usize,
    inner_val_fraction: f64,
    seed: u64,
) -> TrialSplit {
    let assignment = subject_folds(subjects, folds);
    let mut train_subjects: Vec<String> = sorted_ids(subjects)
        .into_iter()
        .filter(|s| assignment[s] != fold)
        .collect();
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (fold as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    train_subjects.shuffle(&mut rng);
    let n_val = ((train_subjects.len() as f64 * inner_val_fraction).round() as usize)
        .clamp(1, train_subjects.len().saturating_sub(1).max(1));
    let val_subjects: std::collections::HashSet<&String> = train_subjects[..n_val].iter().collect();
    let mut split = TrialSplit {
        train: Vec::new(),
        val: Vec::new(),
        test: Some(Vec::new()),
    };
    for (i, s) in subjects.iter().enumerate() {
        if assignment[s] == fold {
            split.test.as_mut().expect("set above").push(i);
        } else if val_subjects.contains(s) {
            split.val.push(i);
        } else {
            split.train.push(i);
        }
    }
    split
}

/// How many subjects (or sequences) two sides of a split share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Overlap {
    pub shared: usize,
    /// Distinct ids on the evaluation side.
    pub of: usize,
}

/// Leakage between the training images and an evaluation side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Leak {
    pub subjects: Overlap,
    pub sequences: Overlap,
}

impl Leak {
    pub fn is_leaky(&self) -> bool {
        self.subjects.shared > 0 || self.sequences.shared > 0
    }
}

fn overlap(ids: &[String], a: &[usize], b: &[usize]) -> Overlap {
    let left: std::collections::HashSet<&String> = a.iter().map(|&i| &ids[i]).collect();
    let right: std::collections::HashSet<&String> = b.iter().map(|&i| &ids[i]).collect();
    Overlap {
        shared: right.iter().filter(|s| left.contains(*s)).count(),
        of: right.len(),
    }
}

/// Subjects and sequences found both in `train` and in `eval`.
pub fn leak(subjects: &[String], sequences: &[String], train: &[usize], eval: &[usize]) -> Leak {
    Leak {
        subjects: overlap(subjects, train, eval),
        sequences: overlap(sequences, train, eval),
    }
}
