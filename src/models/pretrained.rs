//! Loading pretrained weights into a built model: safetensors or PyTorch
//! `.pth` files whose names follow torchvision's (or timm's, which agree
//! for ResNets) layout. The classifier is kept only when its shape fits the
//! data set; otherwise it stays freshly initialised. A grey model (1 input
//! channel) takes an RGB first conv summed over its input channels, as timm
//! adapts it. Every other tensor must be present with the right shape.

use super::{BackboneInfo, ParamStore};
use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// What a load did, for the user to check.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    pub loaded: Vec<String>,
    /// In the file but not used (e.g. `num_batches_tracked`, an old head).
    pub skipped: Vec<String>,
    /// In the model, left freshly initialised (the new head).
    pub initialised: Vec<String>,
    /// Loaded after adapting the shape (RGB first conv summed to grey).
    pub adapted: Vec<String>,
}

impl LoadReport {
    pub fn summary(&self) -> String {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        // BatchNorm's step counters are never used; count them apart.
        let (counters, unused): (Vec<&String>, Vec<&String>) = self
            .skipped
            .iter()
            .partition(|k| k.ends_with("num_batches_tracked"));
        let shown: Vec<String> = unused.iter().take(6).map(|s| s.to_string()).collect();
        format!(
            "{} tensors loaded, {} adapted ({}), {} newly initialised ({}), {} in the file unused ({}{}{})",
            self.loaded.len(),
            self.adapted.len(),
            list(&self.adapted),
            self.initialised.len(),
            list(&self.initialised),
            self.skipped.len(),
            list(&shown),
            if unused.len() > 6 { ", ..." } else { "" },
            if counters.is_empty() {
                String::new()
            } else {
                format!("; {} num_batches_tracked counters", counters.len())
            }
        )
    }
}

/// Reads every tensor of a weights file, with `module.`/`model.` prefixes removed.
pub fn read(path: &Path) -> anyhow::Result<HashMap<String, Tensor>> {
    if !path.exists() {
        bail!("pretrained weights {} do not exist", path.display());
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let tensors: Vec<(String, Tensor)> = match ext {
        "safetensors" => candle_core::safetensors::load(path, &Device::Cpu)
            .with_context(|| format!("cannot read safetensors file {}", path.display()))?
            .into_iter()
            .collect(),
        "pth" | "pt" | "bin" | "ckpt" => candle_core::pickle::read_all(path)
            .with_context(|| format!("cannot read PyTorch checkpoint {}", path.display()))?,
        _ => bail!(
            "pretrained weights {}: expected a .safetensors or .pth file",
            path.display()
        ),
    };
    Ok(tensors
        .into_iter()
        .map(|(k, v)| {
            let k = k
                .strip_prefix("module.")
                .or_else(|| k.strip_prefix("model."))
                .map(str::to_string)
                .unwrap_or(k);
            (k, v)
        })
        .collect())
}

/// Copies the file's tensors into `params` of a model built as `info`
/// (whose `remap` translates other layouts' names, whose `classifier` is
/// the head's name prefix and `first_conv` the first convolution's).
pub fn load_into(
    params: &ParamStore,
    path: &Path,
    info: &BackboneInfo,
) -> anyhow::Result<LoadReport> {
    let file = read(path)?;
    load_map(params, file, &path.display().to_string(), info)
}

/// As [`load_into`], from tensors already read; `source` names them in errors.
pub fn load_map(
    params: &ParamStore,
    tensors: HashMap<String, Tensor>,
    source: &str,
    info: &BackboneInfo,
) -> anyhow::Result<LoadReport> {
    let (first_conv, classifier) = (info.first_conv, info.classifier);
    let mut file: HashMap<String, Tensor> = HashMap::new();
    let mut report = LoadReport::default();
    let mut keys: Vec<String> = tensors.keys().cloned().collect();
    keys.sort();
    let mut tensors = tensors;
    for key in keys {
        let t = tensors.remove(&key).expect("key listed");
        match (info.remap)(&key, t)
            .with_context(|| format!("pretrained weights {source}: tensor {key}"))?
        {
            Some((name, t)) => {
                if file.insert(name.clone(), t).is_some() {
                    bail!("pretrained weights {source}: two tensors map to {name} (one is {key})");
                }
            }
            None => report.skipped.push(key),
        }
    }
    let names = params.named();
    let head = format!("{classifier}.");
    let mut missing = Vec::new();
    for (name, var) in &names {
        let Some(t) = file.remove(name) else {
            if name.starts_with(&head) {
                report.initialised.push(name.clone());
            } else {
                missing.push(name.clone());
            }
            continue;
        };
        let want = var.dims().to_vec();
        let t = t.to_dtype(DType::F32)?;
        let t = if t.dims() == want.as_slice() {
            t
        } else if name.starts_with(&head) {
            // A head for other classes: keep ours, fresh.
            report.initialised.push(name.clone());
            report.skipped.push(name.clone());
            continue;
        } else if *name == format!("{first_conv}.weight")
            && t.rank() == 4
            && want.len() == 4
            && want[1] == 1
            && t.dims()[1] == 3
            && t.dims()[0] == want[0]
            && t.dims()[2..] == want[2..]
        {
            report.adapted.push(name.clone());
            t.sum_keepdim(1)?
        } else {
            bail!(
                "pretrained weights {source}: tensor {name} has shape {:?}, the model needs {:?}",
                t.dims(),
                want
            );
        };
        var.set(&t.to_device(var.device())?)?;
        report.loaded.push(name.clone());
    }
    if !missing.is_empty() {
        let shown: Vec<&String> = missing.iter().take(5).collect();
        bail!(
            "pretrained weights {source} lack {} tensor(s) the model needs, e.g. {:?}; is it the same architecture (torchvision/timm names)?",
            missing.len(),
            shown
        );
    }
    let mut rest: Vec<String> = file.into_keys().collect();
    rest.sort();
    report.skipped.extend(rest);
    Ok(report)
}

/// What a saved fer-lab model needs to be used again (stored as JSON under
/// the safetensors header's `fer_lab` metadata key).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelMeta {
    pub backbone: String,
    /// Class names in label order.
    pub classes: Vec<String>,
    pub in_channels: usize,
    pub image_size: usize,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// Epoch whose weights these are, and its validation accuracy.
    pub epoch: Option<usize>,
    pub val_acc: Option<f64>,
    /// The trial's plan key.
    pub trial_key: Option<String>,
}

const META_KEY: &str = "fer_lab";

/// Writes every parameter and buffer of `params` to `path` (safetensors,
/// written to a temporary file and renamed, so a crash leaves no half file).
pub fn save_model(params: &ParamStore, meta: &ModelMeta, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tensors: Vec<(String, Tensor)> = params
        .named()
        .into_iter()
        .map(|(k, v)| Ok((k, v.as_tensor().to_device(&Device::Cpu)?)))
        .collect::<candle_core::Result<_>>()?;
    let info = HashMap::from([(META_KEY.to_string(), serde_json::to_string(meta)?)]);
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(tensors, Some(info), &tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The fer-lab metadata of a safetensors file, if it has any.
pub fn read_meta(path: &Path) -> anyhow::Result<Option<ModelMeta>> {
    use std::io::Read;
    if path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        return Ok(None);
    }
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let len = u64::from_le_bytes(len);
    if len > 100_000_000 {
        bail!(
            "{} is not a safetensors file (header of {len} bytes)",
            path.display()
        );
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let header: serde_json::Value = serde_json::from_slice(&header)
        .with_context(|| format!("{}: unreadable safetensors header", path.display()))?;
    match header["__metadata__"][META_KEY].as_str() {
        Some(text) => Ok(Some(serde_json::from_str(text).with_context(|| {
            format!("{}: unreadable fer_lab metadata", path.display())
        })?)),
        None => Ok(None),
    }
}
