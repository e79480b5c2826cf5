//! `fer-lab predict`: runs a trained model (a fer-lab model file, or any
//! weights file whose head fits) on image files, with the backbone's input
//! contract: resize to its input size, grey or RGB as the first conv wants,
//! its mean / std.

use crate::models::{self, ModelConfig, pretrained};
use anyhow::{Context, bail};
use candle_core::{D, Device, Tensor};
use std::path::{Path, PathBuf};

/// ImageNet's class names, in index order (torchvision's `categories`).
const IMAGENET_CLASSES: &str = include_str!("../assets/imagenet_classes.txt");

#[derive(Debug, Clone)]
pub struct PredictOptions {
    pub backbone: String,
    pub weights: PathBuf,
    /// Number of classes of the head (default: the model file's, else the
    /// classifier's rows in the weights).
    pub classes: Option<usize>,
    pub labels: Option<Vec<String>>,
    pub top: usize,
    /// Input size (default: the model file's, else the backbone's).
    pub size: Option<usize>,
}

/// How images are turned into the network's input.
#[derive(Debug, Clone, PartialEq)]
pub struct Contract {
    pub size: usize,
    pub channels: usize,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Ranked {
    pub class: usize,
    pub label: String,
    pub prob: f32,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Prediction {
    pub image: String,
    pub top: Vec<Ranked>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logits: Option<Vec<f32>>,
}

/// A model ready to classify images.
pub struct Predictor {
    model: models::Model,
    pub contract: Contract,
    pub labels: Vec<String>,
    device: Device,
}

impl Predictor {
    pub fn load(opts: &PredictOptions, device: &Device) -> anyhow::Result<Self> {
        let info = models::info(&opts.backbone).ok_or_else(|| {
            anyhow::anyhow!(
                "unknown backbone {:?}, expected one of: {}",
                opts.backbone,
                models::names().join(", ")
            )
        })?;
        let path = &opts.weights;
        let meta = pretrained::read_meta(path)?;
        if let Some(m) = &meta
            && m.backbone != info.name
        {
            bail!(
                "{} holds a {} model, not {}: pass --backbone {}",
                path.display(),
                m.backbone,
                info.name,
                m.backbone
            );
        }
        let tensors = pretrained::read(path)?;
        // Shapes that decide the model: the head's rows, the stem's channels.
        let (mut head_rows, mut stem_channels) = (None, None);
        for (name, t) in &tensors {
            if let Some((ours, t)) = (info.remap)(name, t.clone())? {
                if ours == format!("{}.weight", info.classifier) {
                    head_rows = Some(t.dim(0)?);
                } else if ours == format!("{}.weight", info.first_conv) {
                    stem_channels = Some(t.dim(1)?);
                }
            }
        }
        let from_meta = meta.as_ref().map(|m| m.classes.len());
        let classes = opts
            .labels
            .as_ref()
            .map(Vec::len)
            .or(opts.classes)
            .or(from_meta)
            .or(head_rows)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{} has no {}.weight: pass --classes N",
                    path.display(),
                    info.classifier
                )
            })?;
        if let Some(rows) = head_rows
            && rows != classes
        {
            bail!(
                "{}: its classifier {}.weight has {rows} classes, but {classes} were asked for",
                path.display(),
                info.classifier
            );
        }
        let channels = meta
            .as_ref()
            .map(|m| m.in_channels)
            .or(stem_channels)
            .unwrap_or(3);
        let contract = match &meta {
            Some(m) => Contract {
                size: opts.size.unwrap_or(m.image_size),
                channels,
                mean: m.mean.iter().map(|&x| x as f32).collect(),
                std: m.std.iter().map(|&x| x as f32).collect(),
            },
            None => {
                let c = info.input;
                let (mean, std) = if channels == 1 {
                    // A grey model without a contract: the RGB mean of ImageNet's.
                    (
                        vec![c.mean.iter().sum::<f32>() / 3.0],
                        vec![c.std.iter().sum::<f32>() / 3.0],
                    )
                } else {
                    (c.mean.to_vec(), c.std.to_vec())
                };
                Contract {
                    size: opts.size.unwrap_or(c.size),
                    channels,
                    mean,
                    std,
                }
            }
        };
        if contract.mean.len() != channels || contract.std.len() != channels {
            bail!(
                "{}: {} channel(s) but {} mean / {} std values",
                path.display(),
                channels,
                contract.mean.len(),
                contract.std.len()
            );
        }
        let cfg = ModelConfig::new(classes, channels);
        let model = models::build(info.name, &cfg, 0, device)?;
        let report =
            pretrained::load_map(&model.params, tensors, &path.display().to_string(), info)?;
        if !report.initialised.is_empty() {
            bail!(
                "{} has no classifier for {classes} classes ({} would be untrained): predict needs trained weights, head included",
                path.display(),
                report.initialised.join(", ")
            );
        }
        let labels = match (&opts.labels, &meta) {
            (Some(l), _) => l.clone(),
            (None, Some(m)) if m.classes.len() == classes => m.classes.clone(),
            _ if classes == 1000 => IMAGENET_CLASSES.lines().map(str::to_string).collect(),
            _ => (0..classes).map(|i| i.to_string()).collect(),
        };
        Ok(Self {
            model,
            contract,
            labels,
            device: device.clone(),
        })
    }

    /// The normalised input tensor (1, C, S, S) of one image file.
    pub fn input(&self, path: &Path) -> anyhow::Result<Tensor> {
        let c = &self.contract;
        let img = image::ImageReader::open(path)
            .with_context(|| format!("cannot open image {}", path.display()))?
            .with_guessed_format()
            .with_context(|| format!("cannot read image {}", path.display()))?
            .decode()
            .with_context(|| format!("cannot decode image {}", path.display()))?;
        let s = c.size as u32;
        let img = img.resize_exact(s, s, image::imageops::FilterType::Triangle);
        let pixels: Vec<u8> = if c.channels == 1 {
            img.to_luma8().into_raw()
        } else {
            img.to_rgb8().into_raw()
        };
        let n = c.size * c.size;
        let mut chw = vec![0f32; c.channels * n];
        for (i, px) in pixels.chunks_exact(c.channels).enumerate() {
            for (ch, &v) in px.iter().enumerate() {
                chw[ch * n + i] = (v as f32 / 255.0 - c.mean[ch]) / c.std[ch];
            }
        }
        Ok(Tensor::from_vec(
            chw,
            (1, c.channels, c.size, c.size),
            &self.device,
        )?)
    }

    /// Logits of each image, in order.
    pub fn logits(&self, images: &[PathBuf]) -> anyhow::Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(16) {
            let xs = chunk
                .iter()
                .map(|p| self.input(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let x = Tensor::cat(&xs, 0)?;
            let logits = self.model.net.forward_t(&x, false)?;
            out.extend(logits.to_device(&Device::Cpu)?.to_vec2::<f32>()?);
        }
        Ok(out)
    }

    pub fn predict(
        &self,
        images: &[PathBuf],
        top: usize,
        keep_logits: bool,
    ) -> anyhow::Result<Vec<Prediction>> {
        let all = self.logits(images)?;
        let mut out = Vec::with_capacity(images.len());
        for (path, logits) in images.iter().zip(all) {
            let t = Tensor::new(logits.as_slice(), &Device::Cpu)?;
            let probs = candle_nn::ops::softmax(&t, D::Minus1)?.to_vec1::<f32>()?;
            let mut order: Vec<usize> = (0..probs.len()).collect();
            order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
            let top = order
                .into_iter()
                .take(top.max(1))
                .map(|i| Ranked {
                    class: i,
                    label: self.labels[i].clone(),
                    prob: probs[i],
                })
                .collect();
            out.push(Prediction {
                image: path.display().to_string(),
                top,
                logits: keep_logits.then_some(logits),
            });
        }
        Ok(out)
    }
}

/// Text form: one block per image.
pub fn render_text(preds: &[Prediction]) -> String {
    let mut s = String::new();
    for p in preds {
        s += &format!("{}\n", p.image);
        for (i, r) in p.top.iter().enumerate() {
            s += &format!(
                "  {}. {} (class {}) {:.2}%\n",
                i + 1,
                r.label,
                r.class,
                100.0 * r.prob
            );
        }
        if let Some(l) = &p.logits {
            let shown: Vec<String> = l.iter().map(|v| format!("{v:.4}")).collect();
            s += &format!("  logits: [{}]\n", shown.join(", "));
        }
    }
    s
}
