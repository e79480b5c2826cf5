//! Image data sets: a folder of class folders, decoded once and held in
//! memory, with seeded stratified splits, batching and augmentation.
//! Knows nothing of models.

pub mod batch;
pub mod split;
pub mod synth;

use image::imageops::FilterType;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(
        "data root {0} does not exist; set data.root (or --set data.root=PATH) to a folder of class folders"
    )]
    MissingRoot(PathBuf),
    #[error("data root {0} is not a folder")]
    NotAFolder(PathBuf),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "data root {root} has {found} class folder(s); at least 2 are needed (one folder per class)"
    )]
    TooFewClasses { root: PathBuf, found: usize },
    #[error("class folder {0} holds no images")]
    EmptyClass(PathBuf),
    #[error("{path} is not an image fer-lab can read (PNG or JPEG): {reason}")]
    NotAnImage { path: PathBuf, reason: String },
    #[error(
        "{file}: the file name does not match the subject pattern {pattern:?} (data.subject_pattern)"
    )]
    NoSubject { file: PathBuf, pattern: String },
    #[error(
        "{root}: a `folders` data set needs train/ and val/ folders of class folders (test/ optional); {problem}"
    )]
    Folders { root: PathBuf, problem: String },
    #[error(
        "class {class:?} has {count} image(s); a train/validation split needs at least 2 per class"
    )]
    ClassTooSmall { class: String, count: usize },
}

/// A decoded data set: `channels` x `size` x `size` u8 pixels per image.
///
/// Pixels stay as bytes on the host: augmentation is per image, and a batch
/// becomes one f32 tensor on the training device (see [`batch`]).
#[derive(Debug, Clone)]
pub struct Dataset {
    pub root: PathBuf,
    pub classes: Vec<String>,
    /// Paths relative to `root`, e.g. `happy/S010_006_00000013.png`.
    pub files: Vec<PathBuf>,
    pub labels: Vec<usize>,
    pub size: usize,
    pub channels: usize,
    pixels: Vec<u8>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image_len(&self) -> usize {
        self.channels * self.size * self.size
    }

    /// Pixels of image `i`, channel-major (C, H, W).
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Images per class, in class order.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &l in &self.labels {
            counts[l] += 1;
        }
        counts
    }

    /// Reads every image under `root/<class>/`, resized to `size` x `size`
    /// with `channels` channels (grey is replicated to 3 when asked).
    pub fn load(root: &Path, size: usize, channels: usize) -> Result<Self, DataError> {
        let entries = list_classes(root)?;
        let classes: Vec<String> = entries.iter().map(|(name, _)| name.clone()).collect();
        let mut items: Vec<(PathBuf, usize)> = Vec::new();
        for (label, (_, files)) in entries.into_iter().enumerate() {
            items.extend(files.into_iter().map(|f| (f, label)));
        }
        let decoded: Vec<Vec<u8>> = items
            .par_iter()
            .map(|(rel, _)| decode(&root.join(rel), size, channels))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            root: root.to_path_buf(),
            classes,
            labels: items.iter().map(|(_, l)| *l).collect(),
            files: items.into_iter().map(|(f, _)| f).collect(),
            size,
            channels,
            pixels: decoded.concat(),
        })
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// Class folders (sorted by name) with their files (sorted, relative to root).
fn list_classes(root: &Path) -> Result<Vec<(String, Vec<PathBuf>)>, DataError> {
    if !root.exists() {
        return Err(DataError::MissingRoot(root.to_path_buf()));
    }
    if !root.is_dir() {
        return Err(DataError::NotAFolder(root.to_path_buf()));
    }
    let mut classes = Vec::new();
    for entry in std::fs::read_dir(root).map_err(io(root))? {
        let entry = entry.map_err(io(root))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && !is_hidden(&name) {
            classes.push(name);
        }
    }
    classes.sort();
    if classes.len() < 2 {
        return Err(DataError::TooFewClasses {
            root: root.to_path_buf(),
            found: classes.len(),
        });
    }
    let mut out = Vec::new();
    for class in classes {
        let dir = root.join(&class);
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_file() && !is_hidden(&name) {
                files.push(PathBuf::from(&class).join(name));
            }
        }
        if files.is_empty() {
            return Err(DataError::EmptyClass(dir));
        }
        files.sort();
        out.push((class, files));
    }
    Ok(out)
}

/// Decodes one file by its content (not its extension) into C x S x S bytes.
fn decode(path: &Path, size: usize, channels: usize) -> Result<Vec<u8>, DataError> {
    let not_image = |reason: String| DataError::NotAnImage {
        path: path.to_path_buf(),
        reason,
    };
    let reader = image::ImageReader::open(path)
        .map_err(io(path))?
        .with_guessed_format()
        .map_err(io(path))?;
    match reader.format() {
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => {}
        Some(other) => return Err(not_image(format!("{other:?} is not supported"))),
        None => return Err(not_image("unrecognised file format".into())),
    }
    let img = reader.decode().map_err(|e| not_image(e.to_string()))?;
    let (s, f) = (size as u32, FilterType::Triangle);
    let resize = |w: u32, h: u32| w != s || h != s;
    Ok(if channels == 1 {
        let g = img.to_luma8();
        let g = if resize(g.width(), g.height()) {
            image::imageops::resize(&g, s, s, f)
        } else {
            g
        };
        g.into_raw()
    } else {
        let rgb = img.to_rgb8();
        let rgb = if resize(rgb.width(), rgb.height()) {
            image::imageops::resize(&rgb, s, s, f)
        } else {
            rgb
        };
        // Interleaved HWC to planar CHW.
        let raw = rgb.into_raw();
        let plane = size * size;
        let mut chw = vec![0u8; 3 * plane];
        for (i, px) in raw.chunks_exact(3).enumerate() {
            for c in 0..3 {
                chw[c * plane + i] = px[c];
            }
        }
        chw
    })
}

impl Dataset {
    /// A data set that comes split: `root/train/<class>/`, `root/val/<class>/`
    /// and optionally `root/test/<class>/`, with the same classes in each.
    pub fn load_folders(
        root: &Path,
        size: usize,
        channels: usize,
    ) -> Result<(Self, split::TrialSplit), DataError> {
        if !root.exists() {
            return Err(DataError::MissingRoot(root.to_path_buf()));
        }
        let folders_error = |problem: String| DataError::Folders {
            root: root.to_path_buf(),
            problem,
        };
        let mut parts: Vec<(&str, Dataset)> = Vec::new();
        for part in ["train", "val", "test"] {
            let dir = root.join(part);
            if !dir.is_dir() {
                if part == "test" {
                    continue;
                }
                return Err(folders_error(format!("{} is missing", dir.display())));
            }
            parts.push((part, Self::load(&dir, size, channels)?));
        }
        let classes = parts[0].1.classes.clone();
        if let Some((part, other)) = parts.iter().find(|(_, d)| d.classes != classes) {
            return Err(folders_error(format!(
                "{part}/ has classes [{}] but train/ has [{}]",
                other.classes.join(", "),
                classes.join(", ")
            )));
        }
        let mut ds = Self {
            root: root.to_path_buf(),
            classes,
            files: Vec::new(),
            labels: Vec::new(),
            size,
            channels,
            pixels: Vec::new(),
        };
        let mut ranges = Vec::new();
        for (part, d) in parts {
            let start = ds.len();
            ds.files
                .extend(d.files.iter().map(|f| PathBuf::from(part).join(f)));
            ds.labels.extend_from_slice(&d.labels);
            ds.pixels.extend_from_slice(&d.pixels);
            ranges.push((part, (start..ds.len()).collect::<Vec<usize>>()));
        }
        let take = |name: &str| {
            ranges
                .iter()
                .find(|(p, _)| *p == name)
                .map(|(_, r)| r.clone())
        };
        let split = split::TrialSplit {
            train: take("train").expect("train/ is required"),
            val: take("val").expect("val/ is required"),
            test: take("test"),
        };
        Ok((ds, split))
    }
}
