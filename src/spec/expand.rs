//! Expansion of a validated spec into resolved trial plans: one per
//! backbone x sweep point (x fold). The points are the grid's Cartesian
//! product, or for `strategy = "random"` the distinct points drawn by
//! `search.rs`. Downstream code sees only [`TrialPlan`]s, and a plan's hash is
//! the trial's identity in the store.

use super::search;
use super::types::*;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Bumped when the meaning of a plan changes, so old trials are not reused.
const PLAN_VERSION: u32 = 1;

/// Everything one trial needs, fully resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrialPlan {
    pub plan_version: u32,
    pub experiment: String,
    pub seed: u64,
    pub backbone: BackboneSpec,
    pub data: DataConfig,
    pub train: TrainConfig,
    /// The test fold of a `subject-kfold` trial.
    pub fold: Option<usize>,
    /// The swept fields and their values at this point (grid or drawn).
    pub params: BTreeMap<String, serde_json::Value>,
}

impl TrialPlan {
    /// The plan as canonical JSON (field order is fixed by the types).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plans serialise")
    }

    /// The trial's identity: SHA-256 of the canonical JSON, in hex.
    pub fn key(&self) -> String {
        hex::encode(Sha256::digest(self.to_json().as_bytes()))
    }

    pub fn params_json(&self) -> String {
        serde_json::to_string(&self.params).expect("params serialise")
    }
}

/// The names of `[train]` fields, as the spec spells them.
pub fn train_fields() -> Vec<String> {
    match toml::Value::try_from(TrainConfig::default()) {
        Ok(toml::Value::Table(t)) => t.keys().cloned().collect(),
        _ => unreachable!("TrainConfig serialises to a table"),
    }
}

/// `train` with one field replaced by a TOML value; the error says why the
/// value does not fit the field.
pub fn with_field(
    train: &TrainConfig,
    key: &str,
    value: &toml::Value,
) -> Result<TrainConfig, String> {
    let mut table = match toml::Value::try_from(train) {
        Ok(toml::Value::Table(t)) => t,
        _ => unreachable!("TrainConfig serialises to a table"),
    };
    table.insert(key.to_string(), value.clone());
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| e.message().trim().to_string())
}

/// All trial plans of a validated spec, in a stable order: backbones as
/// listed, then the sweep points (the grid in sorted key order, or random
/// points in draw order), then folds. Every backbone trains the same points;
/// a random sweep may have fewer than `samples` points (duplicates are
/// dropped, see `spec/search.rs`).
pub fn expand(spec: &Spec) -> Vec<TrialPlan> {
    let points = match spec.sweep.strategy {
        Strategy::Grid => grid_points(spec),
        Strategy::Random => search::draw_points(&spec.sweep, spec.experiment.seed),
    };
    let folds: Vec<Option<usize>> = match spec.data.protocol {
        Protocol::SubjectKfold if spec.data.run_folds.is_empty() => {
            (0..spec.data.folds).map(Some).collect()
        }
        Protocol::SubjectKfold => spec.data.run_folds.iter().copied().map(Some).collect(),
        _ => vec![None],
    };
    let mut plans = Vec::new();
    for backbone in &spec.backbones {
        for point in &points {
            for &fold in &folds {
                let mut train = spec.train.clone();
                let mut params = BTreeMap::new();
                for (key, value) in point {
                    train = with_field(&train, key, value).expect("validated: sweep values fit");
                    params.insert(key.clone(), toml_to_json(value));
                }
                plans.push(TrialPlan {
                    plan_version: PLAN_VERSION,
                    experiment: spec.experiment.name.clone(),
                    seed: spec.experiment.seed,
                    backbone: backbone.clone(),
                    // Which folds to run is a choice of this invocation, not part
                    // of a trial's identity.
                    data: DataConfig {
                        run_folds: Vec::new(),
                        ..spec.data.clone()
                    },
                    train: train.clone(),
                    fold,
                    params: params.clone(),
                });
            }
        }
    }
    plans
}

/// The Cartesian product of the grid's lists, in sorted key order.
fn grid_points(spec: &Spec) -> Vec<Vec<(String, toml::Value)>> {
    let mut points: Vec<Vec<(String, toml::Value)>> = vec![Vec::new()];
    for (key, values) in &spec.sweep.space {
        let values = values
            .as_array()
            .expect("validated: sweep values are lists");
        points = points
            .into_iter()
            .flat_map(|p| {
                values.iter().map(move |v| {
                    let mut q = p.clone();
                    q.push((key.clone(), v.clone()));
                    q
                })
            })
            .collect();
    }
    points
}

fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}
