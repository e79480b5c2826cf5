//! Per-epoch checkpoints: everything a trial needs to continue exactly where
//! it stopped (weights and batch-norm buffers, optimiser moments and step,
//! the batch-order/augmentation RNG position, the best epoch so far and its
//! weights). Written atomically: the tensors go to a new file, then a small
//! JSON manifest naming it is renamed into place, so a crash at any moment
//! leaves the previous complete checkpoint.

use super::{EpochRecord, Score};
use crate::metrics::Confusion;
use anyhow::{Context, bail};
use candle_core::{Device, Tensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const MANIFEST: &str = "checkpoint.json";

/// The small, human-readable part of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The trial's plan key: a checkpoint never resumes another plan.
    pub plan_key: String,
    /// Epochs completed (1-based count).
    pub epoch: usize,
    pub optimizer_steps: u64,
    pub rng_seed: String,
    pub rng_stream: u64,
    /// ChaCha word position, as a decimal string (u128).
    pub rng_word_pos: String,
    pub best: Option<EpochRecord>,
    pub best_val_loss: Option<f64>,
    pub best_val_confusion: Option<Confusion>,
    /// Whether `best/*` tensors (the best epoch's weights) are stored.
    pub has_best_weights: bool,
    /// The tensor file, relative to the checkpoint folder.
    pub tensors: String,
}

/// A loaded checkpoint.
pub struct Checkpoint {
    pub manifest: Manifest,
    pub tensors: HashMap<String, Tensor>,
}

impl Manifest {
    pub fn rng(&self) -> anyhow::Result<ChaCha8Rng> {
        use rand::SeedableRng;
        let seed: [u8; 32] = hex::decode(&self.rng_seed)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("rng seed must be 32 bytes"))?;
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(self.rng_stream);
        rng.set_word_pos(self.rng_word_pos.parse().context("rng word position")?);
        Ok(rng)
    }

    pub fn best_val(&self) -> Option<Score> {
        match (self.best_val_loss, &self.best_val_confusion) {
            (Some(loss), Some(c)) => Some(Score::new(loss, c.clone())),
            _ => None,
        }
    }
}

/// The epoch count of the checkpoint in `dir` for `plan_key`, if any.
pub fn peek(dir: &Path, plan_key: &str) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join(MANIFEST)).ok()?;
    let m: Manifest = serde_json::from_str(&text).ok()?;
    (m.plan_key == plan_key && dir.join(&m.tensors).exists()).then_some(m.epoch)
}

/// Loads the checkpoint in `dir`, if one exists for `plan_key`.
pub fn load(dir: &Path, plan_key: &str) -> anyhow::Result<Option<Checkpoint>> {
    if peek(dir, plan_key).is_none() {
        return Ok(None);
    }
    let manifest: Manifest = serde_json::from_str(&std::fs::read_to_string(dir.join(MANIFEST))?)?;
    let path = dir.join(&manifest.tensors);
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
        .with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    Ok(Some(Checkpoint { manifest, tensors }))
}

/// Writes a checkpoint atomically and removes the one it replaces.
pub fn save(
    dir: &Path,
    mut manifest: Manifest,
    tensors: &HashMap<String, Tensor>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create checkpoint folder {}", dir.display()))?;
    let previous: Option<PathBuf> = std::fs::read_to_string(dir.join(MANIFEST))
        .ok()
        .and_then(|t| serde_json::from_str::<Manifest>(&t).ok())
        .map(|m| dir.join(m.tensors));
    let name = format!("epoch-{:05}.safetensors", manifest.epoch);
    let tmp = dir.join(format!("{name}.tmp"));
    candle_core::safetensors::save(tensors, &tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(&name))?;
    manifest.tensors = name.clone();
    let json_tmp = dir.join(format!("{MANIFEST}.tmp"));
    std::fs::write(&json_tmp, serde_json::to_vec_pretty(&manifest)?)?;
    std::fs::rename(&json_tmp, dir.join(MANIFEST))?;
    if let Some(old) = previous
        && old != dir.join(&name)
    {
        let _ = std::fs::remove_file(old);
    }
    Ok(())
}

/// Removes a trial's checkpoints (`--fresh`).
pub fn clear(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        if !dir.join(MANIFEST).exists() && std::fs::read_dir(dir)?.next().is_some() {
            bail!(
                "{} does not look like a checkpoint folder; not removing it",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir)?;
    }
    Ok(())
}
