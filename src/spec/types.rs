//! The spec's TOML types. Field names here *are* the spec reference in the
//! README; defaults live in the `Default` impls.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub experiment: Experiment,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(rename = "backbone", default)]
    pub backbones: Vec<BackboneSpec>,
    #[serde(default)]
    pub sweep: SweepConfig,
    #[serde(default)]
    pub scheduler: SchedulerConfig,
}

impl Spec {
    /// Deserialises a spec from an already-parsed TOML table.
    pub fn deserialize_table(table: toml::Table) -> Result<Self, toml::de::Error> {
        toml::Value::Table(table).try_into()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub name: String,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// A published figure to compare with (`fer-lab report` prints both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
}

/// A published result for the same experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    /// Accuracy as a fraction (0.9949 for 99.49%).
    pub accuracy: f64,
    /// Where it comes from and how it was measured.
    pub source: String,
}

fn default_seed() -> u64 {
    42
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// A folder of class folders; relative paths are taken from the working directory.
    pub root: String,
    /// Images are resized to `image_size` x `image_size`.
    pub image_size: usize,
    /// 1 (grey) or 3 (grey replicated, or colour).
    pub channels: usize,
    pub protocol: Protocol,
    /// `holdout`: share of each class held out for validation.
    pub val_fraction: f64,
    /// `subject-kfold`: number of folds (no subject in two folds).
    pub folds: usize,
    /// `subject-kfold`: run only these folds (0-based); empty = all.
    pub run_folds: Vec<usize>,
    /// `subject-kfold`: share of the training subjects held out for model
    /// selection (best epoch); the test fold is scored once, at that epoch.
    pub inner_val_fraction: f64,
    /// How a file name tells its subject (first capture group); CK+'s default.
    pub subject_pattern: String,
    /// How a file name tells its sequence (first capture group).
    pub sequence_pattern: String,
    /// Per-channel mean and std applied after scaling pixels to [0, 1].
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// When set and `root` does not exist, a synthetic set is written there first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synth: Option<SynthConfig>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            root: "data/CK+48".into(),
            image_size: 48,
            channels: 3,
            protocol: Protocol::Holdout,
            val_fraction: 0.2,
            folds: 10,
            run_folds: Vec::new(),
            inner_val_fraction: 0.1,
            subject_pattern: r"^S(\d+)_".into(),
            sequence_pattern: r"^(S\d+_\d+)_".into(),
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            synth: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Seeded stratified frame-level split (`val_fraction`).
    Holdout,
    /// Subject-independent k-fold: subjects sorted by id, dealt round-robin.
    SubjectKfold,
    /// The data set comes split: `train/`, `val/` and optionally `test/` class folders.
    Folders,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynthConfig {
    pub per_class: usize,
    pub size: usize,
    pub seed: u64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            per_class: 60,
            size: 48,
            seed: 7,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub optimizer: OptimizerKind,
    pub lr: f64,
    /// SGD only.
    pub momentum: f64,
    pub weight_decay: f64,
    pub lr_schedule: LrSchedule,
    /// `step` schedule: multiply the rate by `gamma` every `step_size` epochs.
    pub step_size: usize,
    pub gamma: f64,
    pub label_smoothing: f64,
    pub augment: Vec<Augment>,
    /// Largest random shift in pixels, for `augment = ["shift"]`.
    pub shift_pixels: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 32,
            eval_batch_size: 64,
            optimizer: OptimizerKind::Adam,
            lr: 1e-3,
            momentum: 0.9,
            weight_decay: 0.0,
            lr_schedule: LrSchedule::None,
            step_size: 10,
            gamma: 0.1,
            label_smoothing: 0.0,
            augment: Vec::new(),
            shift_pixels: 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adam,
    Adamw,
    Sgd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    None,
    Step,
    Cosine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Augment {
    Hflip,
    Shift,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackboneSpec {
    pub name: String,
    /// Pretrained weights (safetensors or PyTorch `.pth`, torchvision/timm
    /// names); the classifier is replaced by a fresh head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<String>,
    /// `"none"` (default), `"backbone"` (train only the classifier) or
    /// `"until:<layer>"` (freeze every parameter created before the first
    /// one under `<layer>`, e.g. `"until:layer3"`). Batch-norm running
    /// statistics of frozen layers still adapt in training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze: Option<String>,
    /// Learning rate of the classifier (default: `train.lr`); follows the
    /// same schedule, scaled by `head_lr / lr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_lr: Option<f64>,
}

/// What `backbone.freeze` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freeze {
    None,
    Backbone,
    Until(String),
}

impl Freeze {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Freeze::None),
            "backbone" => Ok(Freeze::Backbone),
            _ => match s.strip_prefix("until:") {
                Some(layer) if !layer.trim().is_empty() => Ok(Freeze::Until(layer.to_string())),
                _ => Err(format!(
                    "backbone.freeze must be \"none\", \"backbone\" or \"until:<layer>\" (e.g. \"until:layer3\"), got {s:?}"
                )),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SweepConfig {
    pub strategy: Strategy,
    /// `random`: how many points to draw.
    pub samples: usize,
    /// `random`: seed of the draw (default: experiment.seed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Train field -> values. `grid`: lists, whose Cartesian product is the
    /// grid. `random`: a list (a choice) or a distribution table such as
    /// `{ loguniform = [1e-4, 1e-2] }`.
    pub space: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    #[default]
    Grid,
    Random,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Keep each finished trial's best-epoch weights as
    /// `models/<key16>.safetensors` beside the database (for `predict`).
    pub save_models: bool,
    /// `"auto"`, `"cpu"` or a list such as `["cuda:0"]`.
    pub devices: Devices,
    /// CPU threads for training, shared by the CPU slots; 0 means all cores.
    pub threads: usize,
    /// Parallel trials on the CPU, each with its own thread pool (threads / slots).
    pub cpu_slots: usize,
    /// A failed trial is retried until it has been started this many times.
    pub max_attempts: usize,
    /// A running trial whose heartbeat is older than this many seconds is
    /// taken to be dead (its process crashed) and is taken back.
    pub stale_after_secs: u64,
    pub pruner: PrunerKind,
    /// `median`: epochs before any trial may be pruned.
    pub warmup_epochs: usize,
    /// `median`: completed trials needed at an epoch before it prunes there.
    pub min_trials: usize,
    /// `asha`: keep the top 1/reduction_factor at each rung.
    pub reduction_factor: usize,
    /// `asha`: epochs of the first rung (rungs at min_epochs * factor^k).
    pub min_epochs: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            devices: Devices::Named("auto".into()),
            threads: 0,
            cpu_slots: 1,
            max_attempts: 2,
            stale_after_secs: 300,
            pruner: PrunerKind::None,
            warmup_epochs: 2,
            min_trials: 3,
            reduction_factor: 3,
            min_epochs: 1,
            save_models: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrunerKind {
    #[default]
    None,
    /// Stop a trial below the median of completed trials at the same epoch.
    Median,
    /// Asynchronous successive halving.
    Asha,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Devices {
    Named(String),
    List(Vec<String>),
}
