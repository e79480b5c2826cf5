//! The training loop: per epoch a train pass and a validation pass, with
//! loss, accuracy and macro-F1 on both. It reports each epoch to a
//! [`Sink`] and asks it whether to go on; it never talks SQL.
//!
//! Deterministic on the CPU: weights come from the plan's seed, and batch
//! order and augmentation from a second seeded stream.

pub mod checkpoint;
pub mod optim;
pub mod schedule;

use crate::data::Dataset;
use crate::data::batch::{Augmentation, Normalizer, epoch_batches, make_batch, ordered_batches};
use crate::data::split::TrialSplit;
use crate::metrics::Confusion;
use crate::models::{self, ModelConfig};
use crate::spec::{Augment, Freeze, TrainConfig, TrialPlan};
use candle_core::{D, DType, Device, Tensor};
use optim::{Hyper, Optimizer};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// One finished epoch, as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    /// The training objective (with label smoothing), mean over images.
    pub train_loss: f64,
    pub train_acc: f64,
    pub train_macro_f1: f64,
    /// Plain cross-entropy on the validation images.
    pub val_loss: f64,
    pub val_acc: f64,
    pub val_macro_f1: f64,
    pub lr: f64,
    pub seconds: f64,
    pub images_per_sec: f64,
}

/// What the loop asks after each epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

/// Where the loop reports; the store and the progress display live behind it.
pub trait Sink {
    fn epoch(&mut self, record: &EpochRecord) -> anyhow::Result<Control>;
    /// Called after every training batch (for progress display).
    fn batch(&mut self, _done: usize, _total: usize) {}
    /// Something the user should know about the run (weights loaded, ...).
    fn note(&mut self, _text: &str) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Completed,
    /// The sink asked to stop.
    Stopped,
    /// The loss became NaN or infinite.
    Diverged,
}

/// Scores on an evaluation set.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub loss: f64,
    pub acc: f64,
    pub macro_f1: f64,
    pub confusion: Confusion,
}

impl Score {
    fn new(loss: f64, confusion: Confusion) -> Self {
        Self {
            loss,
            acc: confusion.accuracy(),
            macro_f1: confusion.macro_f1(),
            confusion,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub ending: Ending,
    pub epochs_run: usize,
    /// Best epoch by validation accuracy (earliest on ties).
    pub best: Option<EpochRecord>,
    /// Validation scores at the best epoch.
    pub best_val: Option<Score>,
    /// The test set, scored once with the weights of the best epoch.
    pub test: Option<Score>,
}

/// Copies of every parameter and buffer, to go back to the best epoch.
struct Snapshot(Vec<(String, candle_core::Var, Tensor)>);

impl Snapshot {
    fn take(model: &models::Model) -> candle_core::Result<Self> {
        model
            .params
            .named()
            .into_iter()
            .map(|(k, v)| Ok((k, v.clone(), v.as_tensor().copy()?)))
            .collect::<candle_core::Result<_>>()
            .map(Self)
    }

    fn restore(&self) -> candle_core::Result<()> {
        self.0.iter().try_for_each(|(_, var, t)| var.set(t))
    }
}

/// Every tensor a checkpoint holds: `param/*`, `m/*`, `v/*`, `best/*`.
fn checkpoint_tensors(
    model: &models::Model,
    trained: &[String],
    optimizer: &Optimizer,
    snapshot: Option<&Snapshot>,
) -> candle_core::Result<std::collections::HashMap<String, Tensor>> {
    let cpu = Device::Cpu;
    let mut out = std::collections::HashMap::new();
    for (name, var) in model.params.named() {
        out.insert(format!("param/{name}"), var.as_tensor().to_device(&cpu)?);
    }
    for (name, (m, v)) in trained.iter().zip(optimizer.moments()?) {
        out.insert(format!("m/{name}"), m);
        out.insert(format!("v/{name}"), v);
    }
    if let Some(s) = snapshot {
        for (name, _, t) in &s.0 {
            out.insert(format!("best/{name}"), t.to_device(&cpu)?);
        }
    }
    Ok(out)
}

/// Puts a checkpoint's tensors back into the model and optimiser; returns
/// the best-epoch snapshot if the checkpoint has one.
fn restore_checkpoint(
    model: &models::Model,
    trained: &[String],
    optimizer: &mut Optimizer,
    ck: &checkpoint::Checkpoint,
) -> anyhow::Result<Option<Snapshot>> {
    let get = |key: String| {
        ck.tensors
            .get(&key)
            .ok_or_else(|| anyhow::anyhow!("checkpoint lacks {key}"))
    };
    let vars = model.params.named();
    for (name, var) in &vars {
        var.set(&get(format!("param/{name}"))?.to_device(var.device())?)?;
    }
    let moments = trained
        .iter()
        .map(|name| {
            Ok((
                get(format!("m/{name}"))?.clone(),
                get(format!("v/{name}"))?.clone(),
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    optimizer.restore(moments, ck.manifest.optimizer_steps)?;
    if !ck.manifest.has_best_weights {
        return Ok(None);
    }
    let best = vars
        .iter()
        .map(|(name, var)| {
            Ok((
                name.clone(),
                var.clone(),
                get(format!("best/{name}"))?.to_device(var.device())?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Some(Snapshot(best)))
}

/// Options that are not part of the plan (they must not change results).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Use the fused in-place optimiser step on the CPU.
    pub fused_optimizer: bool,
    /// Where to keep per-epoch checkpoints and resume from (none: no checkpoints).
    pub checkpoint_dir: Option<std::path::PathBuf>,
    /// Where to save the best epoch's weights when the trial ends.
    pub model_out: Option<std::path::PathBuf>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            fused_optimizer: true,
            checkpoint_dir: None,
            model_out: None,
        }
    }
}

/// Trains one plan on `split` of `ds`.
pub fn run(
    plan: &TrialPlan,
    ds: &Dataset,
    split: &TrialSplit,
    device: &Device,
    sink: &mut dyn Sink,
    options: RunOptions,
) -> anyhow::Result<Outcome> {
    let t = &plan.train;
    let cfg = ModelConfig::new(ds.classes.len(), ds.channels);
    let model = models::build(&plan.backbone.name, &cfg, plan.seed, device)?;
    if let Some(path) = &plan.backbone.pretrained {
        let info = models::info(&plan.backbone.name).expect("built above");
        let report =
            models::pretrained::load_into(&model.params, std::path::Path::new(path), info)?;
        sink.note(&format!("pretrained {path}: {}", report.summary()));
    } else {
        sink.note("no pretrained weights: training from scratch");
    }
    let info = models::info(&plan.backbone.name).expect("built above");
    let trained = trained_parameters(&model, info, &plan.backbone)?;
    let frozen = model.params.trainable().len() - trained.len();
    if frozen > 0 {
        sink.note(&format!(
            "freeze {}: {frozen} parameter tensors frozen, {} trained",
            plan.backbone.freeze.as_deref().unwrap_or("none"),
            trained.len()
        ));
    }
    let head = format!("{}.", info.classifier);
    let scales: Vec<f32> = trained
        .iter()
        .map(|(name, _)| match plan.backbone.head_lr {
            Some(h) if name.starts_with(&head) => (h / t.lr) as f32,
            _ => 1.0,
        })
        .collect();
    let trained_names: Vec<String> = trained.iter().map(|(n, _)| n.clone()).collect();
    let mut optimizer = Optimizer::new(
        trained.into_iter().map(|(_, v)| v).collect(),
        hyper(t),
        options.fused_optimizer,
    )?;
    optimizer.set_lr_scales(scales)?;
    let norm = Normalizer {
        mean: plan.data.mean.iter().map(|&x| x as f32).collect(),
        std: plan.data.std.iter().map(|&x| x as f32).collect(),
    };
    let augmentation = Augmentation {
        hflip: t.augment.contains(&Augment::Hflip),
        shift: if t.augment.contains(&Augment::Shift) {
            t.shift_pixels
        } else {
            0
        },
    };
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
    rng.set_stream(1);
    let classes = ds.classes.len();
    let mut best: Option<EpochRecord> = None;
    let mut best_val: Option<Score> = None;
    let mut snapshot: Option<Snapshot> = None;
    let mut start_epoch = 0;
    let key = plan.key();
    if let Some(dir) = &options.checkpoint_dir
        && let Some(ck) = checkpoint::load(dir, &key)?
    {
        snapshot = restore_checkpoint(&model, &trained_names, &mut optimizer, &ck)?;
        rng = ck.manifest.rng()?;
        best = ck.manifest.best.clone();
        best_val = ck.manifest.best_val();
        start_epoch = ck.manifest.epoch;
        sink.note(&format!(
            "resuming after epoch {start_epoch} from the checkpoint in {}",
            dir.display()
        ));
    }
    let finish = |ending: Ending,
                  epochs_run,
                  best: Option<EpochRecord>,
                  best_val,
                  snapshot: Option<Snapshot>|
     -> anyhow::Result<Outcome> {
        if let Some(snap) = &snapshot {
            snap.restore()?;
        }
        let test = match &split.test {
            Some(test) if snapshot.is_some() => {
                let (loss, confusion) =
                    evaluate(&model, ds, test, &norm, t.eval_batch_size, device)?;
                Some(Score::new(loss, confusion))
            }
            _ => None,
        };
        if let (Some(path), Some(b)) = (&options.model_out, &best)
            && ending != Ending::Diverged
        {
            let meta = models::pretrained::ModelMeta {
                backbone: plan.backbone.name.clone(),
                classes: ds.classes.clone(),
                in_channels: ds.channels,
                image_size: plan.data.image_size,
                mean: plan.data.mean.clone(),
                std: plan.data.std.clone(),
                epoch: Some(b.epoch),
                val_acc: Some(b.val_acc),
                trial_key: Some(key.clone()),
            };
            models::pretrained::save_model(&model.params, &meta, path)?;
        }
        Ok(Outcome {
            ending,
            epochs_run,
            best,
            best_val,
            test,
        })
    };
    for epoch in start_epoch..t.epochs {
        model.params.reseed_noise(epoch as u64);
        let started = Instant::now();
        let lr = schedule::lr_at(t, epoch);
        let batches = epoch_batches(&split.train, t.batch_size, &mut rng);
        let mut confusion = Confusion::new(classes);
        let (mut loss_sum, mut seen) = (0.0f64, 0usize);
        for (b, indices) in batches.iter().enumerate() {
            let (xs, ys) = make_batch(ds, indices, &norm, Some((&augmentation, &mut rng)), device)?;
            let logits = model.net.forward_t(&xs, true)?;
            let loss = smoothed_cross_entropy(&logits, &ys, t.label_smoothing)?;
            let loss_value = loss.to_scalar::<f32>()? as f64;
            if !loss_value.is_finite() {
                return finish(Ending::Diverged, epoch, best, best_val, snapshot);
            }
            let grads = loss.backward()?;
            optimizer.step(&grads, lr)?;
            loss_sum += loss_value * indices.len() as f64;
            seen += indices.len();
            tally(&mut confusion, &logits, &ys)?;
            sink.batch(b + 1, batches.len());
        }
        let train_seconds = started.elapsed().as_secs_f64();
        let (val_loss, val) = evaluate(&model, ds, &split.val, &norm, t.eval_batch_size, device)?;
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss_sum / seen.max(1) as f64,
            train_acc: confusion.accuracy(),
            train_macro_f1: confusion.macro_f1(),
            val_loss,
            val_acc: val.accuracy(),
            val_macro_f1: val.macro_f1(),
            lr,
            seconds: started.elapsed().as_secs_f64(),
            images_per_sec: seen as f64 / train_seconds.max(1e-9),
        };
        if !record.val_loss.is_finite() {
            return finish(Ending::Diverged, epoch, best, best_val, snapshot);
        }
        if best.as_ref().is_none_or(|b| record.val_acc > b.val_acc) {
            best = Some(record.clone());
            best_val = Some(Score::new(val_loss, val));
            if split.test.is_some() || options.model_out.is_some() {
                snapshot = Some(Snapshot::take(&model)?);
            }
        }
        let control = sink.epoch(&record)?;
        if let Some(dir) = &options.checkpoint_dir {
            let manifest = checkpoint::Manifest {
                plan_key: key.clone(),
                epoch: epoch + 1,
                optimizer_steps: optimizer.steps(),
                rng_seed: hex::encode(rng.get_seed()),
                rng_stream: rng.get_stream(),
                rng_word_pos: rng.get_word_pos().to_string(),
                best: best.clone(),
                best_val_loss: best_val.as_ref().map(|b| b.loss),
                best_val_confusion: best_val.as_ref().map(|b| b.confusion.clone()),
                has_best_weights: snapshot.is_some(),
                tensors: String::new(),
            };
            checkpoint::save(
                dir,
                manifest,
                &checkpoint_tensors(&model, &trained_names, &optimizer, snapshot.as_ref())?,
            )?;
        }
        if control == Control::Stop {
            return finish(Ending::Stopped, epoch + 1, best, best_val, snapshot);
        }
    }
    finish(Ending::Completed, t.epochs, best, best_val, snapshot)
}

/// The parameters the optimiser updates, in creation order, after
/// `backbone.freeze`; an `until:` layer that names nothing is an error
/// listing the model's top-level modules.
pub fn trained_parameters(
    model: &models::Model,
    info: &models::BackboneInfo,
    spec: &crate::spec::BackboneSpec,
) -> anyhow::Result<Vec<(String, candle_core::Var)>> {
    let all = model.params.trainable();
    let freeze = match &spec.freeze {
        Some(f) => Freeze::parse(f).map_err(|e| anyhow::anyhow!(e))?,
        None => Freeze::None,
    };
    let head = format!("{}.", info.classifier);
    Ok(match freeze {
        Freeze::None => all,
        Freeze::Backbone => all
            .into_iter()
            .filter(|(n, _)| n.starts_with(&head))
            .collect(),
        Freeze::Until(layer) => {
            let prefix = format!("{layer}.");
            let Some(first) = all.iter().position(|(n, _)| n.starts_with(&prefix)) else {
                let mut tops: Vec<String> = Vec::new();
                for (n, _) in &all {
                    let parts: Vec<&str> = n.split('.').collect();
                    let top = parts[..parts.len().saturating_sub(1).clamp(1, 2)].join(".");
                    if !tops.contains(&top) {
                        tops.push(top);
                    }
                }
                anyhow::bail!(
                    "backbone.freeze = \"until:{layer}\": {} has no layer {layer:?}; its layers: {}",
                    info.name,
                    tops.join(", ")
                );
            };
            all.into_iter().skip(first).collect()
        }
    })
}

fn hyper(t: &TrainConfig) -> Hyper {
    Hyper {
        kind: t.optimizer,
        momentum: t.momentum,
        weight_decay: t.weight_decay,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    }
}

/// Mean cross-entropy against targets smoothed by `eps` (PyTorch's
/// `CrossEntropyLoss(label_smoothing=eps)`).
pub fn smoothed_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    eps: f64,
) -> candle_core::Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = log_p
        .gather(&targets.unsqueeze(1)?, 1)?
        .squeeze(1)?
        .neg()?
        .mean_all()?;
    if eps == 0.0 {
        return Ok(nll);
    }
    let uniform = log_p.mean(D::Minus1)?.neg()?.mean_all()?;
    (nll * (1.0 - eps))? + (uniform * eps)?
}

fn tally(confusion: &mut Confusion, logits: &Tensor, ys: &Tensor) -> candle_core::Result<()> {
    let predicted = logits
        .argmax(D::Minus1)?
        .to_dtype(DType::U32)?
        .to_vec1::<u32>()?;
    for (p, y) in predicted.iter().zip(ys.to_vec1::<u32>()?) {
        confusion.add(y as usize, *p as usize);
    }
    Ok(())
}

/// Mean cross-entropy and the confusion matrix of `indices`, in eval mode.
pub fn evaluate(
    model: &models::Model,
    ds: &Dataset,
    indices: &[usize],
    norm: &Normalizer,
    batch_size: usize,
    device: &Device,
) -> anyhow::Result<(f64, Confusion)> {
    let mut confusion = Confusion::new(ds.classes.len());
    let mut loss_sum = 0.0;
    for batch in ordered_batches(indices, batch_size) {
        let (xs, ys) = make_batch(ds, &batch, norm, None, device)?;
        let logits = model.net.forward_t(&xs, false)?.detach();
        loss_sum += smoothed_cross_entropy(&logits, &ys, 0.0)?.to_scalar::<f32>()? as f64
            * batch.len() as f64;
        tally(&mut confusion, &logits, &ys)?;
    }
    Ok((loss_sum / indices.len().max(1) as f64, confusion))
}
