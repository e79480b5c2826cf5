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
