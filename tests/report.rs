//! The report module's renderings: the classification report against
//! scikit-learn's text (fixtures written by
//! tests/fixtures/make_classification_reports.py from the same arrays), the
//! confusion-matrix text, and the PNG plots (decoded back and checked for
//! size and content).
//!
//! Set `FER_LAB_PLOT_DIR=/some/dir` to keep the PNGs there for a look.

use fer_lab::metrics::Confusion;
use fer_lab::report::classification::{classification_report, confusion_text};
use fer_lab::report::plots::{
    BARS_SIZE, Bar, CONFUSION_SIZE, CURVES_SIZE, bars_png, confusion_png, curves_png,
};
use fer_lab::train::EpochRecord;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

const CKPLUS_NAMES: [&str; 7] = [
    "anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise",
];
const MISSING_NAMES: [&str; 5] = ["neutral", "happy", "sad", "fear", "contempt"];
const DIGITS4_NAMES: [&str; 9] = [
    "neutral",
    "happiness",
    "sadness",
    "surprise",
    "fear",
    "disgust",
    "anger",
    "contempt",
    "none-of-the-above",
];
const TIES_NAMES: [&str; 2] = ["negative", "positive"];

// Copied from tests/fixtures/make_classification_reports.py.
#[rustfmt::skip]
const CKPLUS_TRUE: &[usize] = &[
    0, 4, 1, 0, 1, 6, 6, 0, 6, 5, 0, 6, 3, 1, 3, 6, 6, 0, 4, 6, 4, 2, 6, 6, 2, 5, 1, 6,
    2, 0, 1, 2, 3, 2, 0, 0, 4, 1, 3, 5, 0, 6, 5, 4, 4, 5, 1, 1, 4, 2, 0, 4, 2, 6, 4, 2,
    4, 5, 6, 6, 4, 0, 5, 3, 6, 2, 4, 4, 2, 2, 6, 2, 6, 2, 4, 6, 5, 2, 6, 6, 6, 6, 6, 2,
    3, 6, 4, 2, 4, 6, 2, 6, 0, 1, 2, 4, 0, 3, 6, 6, 6, 3, 4, 2, 6, 2, 0, 5, 5, 6, 2, 4,
    2, 0, 4, 0, 6, 3, 6, 0, 6, 4, 3, 6, 4, 6, 2, 4, 2, 6, 4, 2, 4, 0, 4, 5, 4, 2, 3, 2,
    5, 6, 4, 3, 6, 3, 2, 0, 5, 4, 6, 3, 4, 6, 6, 4, 2, 5, 6, 4, 2, 5, 6, 4, 2, 6, 0, 5,
    6, 0, 0, 6, 3, 0, 6, 2, 2, 4, 0, 6, 4, 4, 0, 4, 0, 2, 4, 6, 4, 4, 4, 1, 2, 0, 5, 1,
];

#[rustfmt::skip]
const CKPLUS_PRED: &[usize] = &[
    0, 4, 1, 0, 1, 6, 6, 0, 6, 5, 2, 6, 3, 5, 3, 6, 6, 0, 4, 6, 4, 2, 6, 6, 2, 5, 0, 6,
    2, 0, 1, 2, 3, 2, 0, 0, 4, 1, 6, 5, 0, 6, 5, 4, 4, 5, 5, 4, 4, 2, 0, 4, 0, 6, 4, 2,
    4, 0, 6, 6, 4, 1, 5, 3, 6, 2, 4, 4, 2, 2, 6, 2, 6, 3, 4, 6, 1, 2, 6, 6, 6, 6, 6, 2,
    2, 6, 4, 2, 4, 6, 2, 3, 0, 1, 2, 4, 0, 3, 6, 6, 6, 3, 4, 0, 6, 2, 0, 5, 0, 6, 2, 4,
    2, 0, 4, 0, 6, 3, 6, 0, 3, 4, 6, 6, 3, 6, 2, 4, 2, 6, 4, 2, 4, 0, 4, 5, 4, 5, 3, 2,
    0, 6, 4, 4, 6, 3, 2, 5, 5, 4, 6, 3, 4, 6, 6, 1, 2, 5, 6, 4, 2, 5, 6, 4, 2, 6, 0, 5,
    6, 0, 0, 6, 3, 5, 6, 2, 2, 4, 0, 6, 4, 4, 0, 4, 2, 2, 4, 6, 4, 4, 4, 1, 2, 0, 6, 1,
];

#[rustfmt::skip]
const MISSING_TRUE: &[usize] = &[
    2, 2, 0, 2, 0, 0, 1, 0, 1, 0, 1, 1, 2, 2, 0, 2, 0, 0,
];

#[rustfmt::skip]
const MISSING_PRED: &[usize] = &[
    2, 0, 3, 2, 2, 0, 0, 0, 0, 0, 2, 3, 2, 2, 0, 2, 0, 0,
];

#[rustfmt::skip]
const DIGITS4_TRUE: &[usize] = &[
    1, 4, 3, 5, 5, 2, 2, 8, 1, 1, 4, 1, 2, 4, 0, 4, 1, 6, 6, 6, 5, 2, 4, 0, 0, 3, 7, 1,
    1, 0, 0, 2, 8, 6, 0, 1, 2, 1, 0, 0, 1, 2, 7, 5, 0, 1, 1, 3, 3, 5, 1, 1, 0, 3, 3, 1,
    7, 1, 1, 6, 2, 1, 1, 4, 2, 6, 1, 3, 3, 0, 0, 1, 0, 2, 3, 5, 2, 5, 3, 5, 1, 0, 1, 0,
    8, 1, 6, 4, 6, 2, 3, 5, 5, 6, 1, 4, 2, 6, 6, 8, 6, 5, 1, 1, 3, 1, 7, 6, 0, 7, 0, 3,
    4, 2, 3, 1, 0, 3, 3, 1,
];

#[rustfmt::skip]
const DIGITS4_PRED: &[usize] = &[
    1, 4, 3, 5, 5, 2, 2, 7, 1, 1, 4, 1, 5, 4, 0, 5, 1, 6, 6, 6, 5, 2, 4, 0, 0, 3, 7, 1,
    1, 0, 0, 7, 8, 6, 0, 0, 1, 1, 0, 0, 1, 4, 6, 0, 0, 1, 1, 3, 3, 2, 1, 1, 0, 3, 1, 1,
    7, 1, 1, 6, 2, 1, 1, 4, 2, 6, 1, 2, 3, 0, 0, 3, 1, 2, 3, 8, 2, 5, 3, 8, 1, 0, 1, 0,
    8, 1, 6, 4, 6, 2, 3, 5, 5, 6, 1, 4, 2, 6, 6, 8, 6, 5, 1, 1, 3, 1, 7, 6, 0, 7, 0, 3,
    4, 6, 6, 7, 0, 3, 3, 1,
];

#[rustfmt::skip]
const TIES_TRUE: &[usize] = &[
    1, 0, 1, 1, 1, 0, 0, 1, 1, 0, 1, 0, 1, 0, 0, 0,
];

#[rustfmt::skip]
const TIES_PRED: &[usize] = &[
    0, 1, 1, 0, 1, 0, 0, 0, 1, 0, 1, 1, 1, 0, 0, 1,
];

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn confusion(classes: usize, y_true: &[usize], y_pred: &[usize]) -> Confusion {
    assert_eq!(y_true.len(), y_pred.len());
    let mut m = Confusion::new(classes);
    for (&t, &p) in y_true.iter().zip(y_pred) {
        m.add(t, p);
    }
    m
}

fn ckplus() -> Confusion {
    confusion(7, CKPLUS_TRUE, CKPLUS_PRED)
}

fn missing() -> Confusion {
    confusion(5, MISSING_TRUE, MISSING_PRED)
}

/// Compares line by line first, so a failure names the first differing line.
fn assert_same_text(got: &str, want: &str) {
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(
            g,
            w,
            "line {} differs\n--- got:\n{got}\n--- want:\n{want}",
            i + 1
        );
    }
    assert_eq!(got, want, "texts differ (line count or final newline)");
}

#[test]
fn report_matches_sklearn_ckplus() {
    let text = classification_report(&ckplus(), &names(&CKPLUS_NAMES), 2);
    assert_same_text(
        &text,
        include_str!("fixtures/classification_report_ckplus.txt"),
    );
}

#[test]
fn report_matches_sklearn_with_unpredicted_and_empty_classes() {
    let text = classification_report(&missing(), &names(&MISSING_NAMES), 2);
    assert_same_text(
        &text,
        include_str!("fixtures/classification_report_missing.txt"),
    );
}

#[test]
fn report_matches_sklearn_with_four_digits_and_a_long_name() {
    let m = confusion(9, DIGITS4_TRUE, DIGITS4_PRED);
    let text = classification_report(&m, &names(&DIGITS4_NAMES), 4);
    assert_same_text(
        &text,
        include_str!("fixtures/classification_report_digits4.txt"),
    );
}

#[test]
fn report_matches_sklearn_on_exact_ties() {
    let m = confusion(2, TIES_TRUE, TIES_PRED);
    let text = classification_report(&m, &names(&TIES_NAMES), 2);
    assert_same_text(
        &text,
        include_str!("fixtures/classification_report_ties.txt"),
    );
}

#[test]
fn report_ends_with_one_newline_like_sklearn() {
    let text = classification_report(&ckplus(), &names(&CKPLUS_NAMES), 2);
    assert!(text.ends_with(" 196\n") && !text.ends_with("\n\n"));
}

#[test]
fn report_names_unnamed_classes_by_index() {
    let text = classification_report(&ckplus(), &names(&CKPLUS_NAMES[..5]), 2);
    let rows: Vec<&str> = text.lines().map(str::trim_start).collect();
    assert!(
        rows[6].starts_with("sadness") || rows[7].starts_with("5 "),
        "{text}"
    );
    assert!(rows.iter().any(|r| r.starts_with("5 ")) && rows.iter().any(|r| r.starts_with("6 ")));
}

#[test]
fn confusion_text_has_counts_then_rows_summing_to_one() {
    let m = missing();
    let text = confusion_text(&m, &names(&MISSING_NAMES));
    let blocks: Vec<&str> = text.split("\n\n").collect();
    assert_eq!(blocks.len(), 2, "{text}");
    let header_and_rows = |block: &str| -> Vec<Vec<String>> {
        block
            .lines()
            .skip(2)
            .map(|l| l.split_whitespace().map(String::from).collect())
            .collect()
    };
    let counts = header_and_rows(blocks[0]);
    let shares = header_and_rows(blocks[1]);
    assert_eq!(counts.len(), 5);
    assert_eq!(shares.len(), 5);
    for (r, (row, share)) in counts.iter().zip(&shares).enumerate() {
        assert_eq!(row[0], MISSING_NAMES[r]);
        assert_eq!(share[0], MISSING_NAMES[r]);
        let got: Vec<u64> = row[1..].iter().map(|c| c.parse().unwrap()).collect();
        assert_eq!(got, m.counts[r]);
        let sum: f64 = share[1..].iter().map(|c| c.parse::<f64>().unwrap()).sum();
        if m.counts[r].iter().sum::<u64>() == 0 {
            assert!(share[1..].iter().all(|c| c == "0.000"), "{text}");
        } else {
            assert!((sum - 1.0).abs() < 0.006, "row {r} sums to {sum}\n{text}");
        }
    }
    // Column labels in the header line of both tables.
    for block in &blocks {
        let header = block.lines().nth(1).unwrap();
        for n in MISSING_NAMES {
            assert!(header.contains(n), "{header}");
        }
    }
    assert!(text.ends_with('\n'));
}

/// Where plots go: `FER_LAB_PLOT_DIR` if set (to look at them), else a temp dir.
fn plot_dir() -> (Option<tempfile::TempDir>, PathBuf) {
    match std::env::var_os("FER_LAB_PLOT_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir).unwrap();
            (None, dir)
        }
        None => {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().to_path_buf();
            (Some(tmp), dir)
        }
    }
}

/// Decodes `path` as PNG, checks its size and that it is not blank.
fn assert_png(path: &Path, size: (u32, u32)) {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is no PNG",
        path.display()
    );
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .unwrap()
        .to_rgb8();
    assert_eq!(img.dimensions(), size, "{}", path.display());
    let colours: HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(
        colours.len() > 20,
        "{} has {} colours",
        path.display(),
        colours.len()
    );
    // Mostly a white background, but with a fair amount drawn on it.
    let white = img.pixels().filter(|p| p.0 == [255, 255, 255]).count();
    let total = (size.0 * size.1) as usize;
    assert!(
        white > total / 10 && white < total * 99 / 100,
        "{}: {white} white pixels",
        path.display()
    );
}

fn epoch(n: usize) -> EpochRecord {
    let t = n as f64;
    EpochRecord {
        epoch: n,
        train_loss: 1.9 * (-0.25 * t).exp() + 0.1,
        train_acc: 1.0 - 0.85 * (-0.3 * t).exp(),
        train_macro_f1: 1.0 - 0.9 * (-0.3 * t).exp(),
        val_loss: 1.8 * (-0.2 * t).exp() + 0.3 + 0.02 * (t * 1.3).sin(),
        val_acc: 0.93 - 0.75 * (-0.25 * t).exp() + 0.01 * (t * 0.7).sin(),
        val_macro_f1: 0.9 - 0.8 * (-0.25 * t).exp(),
        lr: 1e-3,
        seconds: 12.0,
        images_per_sec: 65.0,
    }
}

#[test]
fn confusion_png_renders_ckplus() {
    let (_keep, dir) = plot_dir();
    let path = dir.join("confusion_ckplus.png");
    confusion_png(
        &path,
        &ckplus(),
        &names(&CKPLUS_NAMES),
        "resnet18 on CK+ (holdout), validation",
    )
    .unwrap();
    assert_png(&path, CONFUSION_SIZE);
}

#[test]
fn confusion_png_survives_an_all_zero_row() {
    let (_keep, dir) = plot_dir();
    let path = dir.join("confusion_missing.png");
    confusion_png(
        &path,
        &missing(),
        &names(&MISSING_NAMES),
        "classes with no samples",
    )
    .unwrap();
    assert_png(&path, CONFUSION_SIZE);
}

#[test]
fn confusion_png_rotates_long_names() {
    let (_keep, dir) = plot_dir();
    let path = dir.join("confusion_digits4.png");
    let m = confusion(9, DIGITS4_TRUE, DIGITS4_PRED);
    confusion_png(
        &path,
        &m,
        &names(&DIGITS4_NAMES),
        "nine classes, one long name",
    )
    .unwrap();
    assert_png(&path, CONFUSION_SIZE);
}

#[test]
fn confusion_png_rejects_mismatched_names_and_bad_paths() {
    let (_keep, dir) = plot_dir();
    let err =
        confusion_png(&dir.join("x.png"), &ckplus(), &names(&MISSING_NAMES), "t").unwrap_err();
    assert!(
        format!("{err:#}").contains("5 class names for a 7-class"),
        "{err:#}"
    );
    let bad = dir.join("no-such-dir").join("x.png");
    let err = confusion_png(&bad, &ckplus(), &names(&CKPLUS_NAMES), "t").unwrap_err();
    assert!(format!("{err:#}").contains("no-such-dir"), "{err:#}");
}

#[test]
fn curves_png_renders_many_epochs() {
    let (_keep, dir) = plot_dir();
    let path = dir.join("curves.png");
    let epochs: Vec<EpochRecord> = (1..=30).map(epoch).collect();
    curves_png(&path, &epochs, "resnet18 lr=0.001 batch=32 seed=1").unwrap();
    assert_png(&path, CURVES_SIZE);
}

#[test]
fn curves_png_survives_one_epoch() {
    let (_keep, dir) = plot_dir();
    let path = dir.join("curves_one_epoch.png");
    curves_png(&path, &[epoch(1)], "a single epoch").unwrap();
    assert_png(&path, CURVES_SIZE);
}

#[test]
fn curves_png_survives_a_diverged_run_and_no_epochs() {
    let (_keep, dir) = plot_dir();
    let path = dir.join("curves_diverged.png");
    let mut epochs: Vec<EpochRecord> = (1..=6).map(epoch).collect();
    epochs[5].train_loss = f64::NAN;
    epochs[5].val_loss = f64::INFINITY;
    curves_png(&path, &epochs, "diverged at epoch 6").unwrap();
    assert_png(&path, CURVES_SIZE);
    let path = dir.join("curves_empty.png");
    curves_png(&path, &[], "no epochs").unwrap();
    let img = image::open(&path).unwrap();
    assert_eq!((img.width(), img.height()), CURVES_SIZE);
}

#[test]
fn bars_png_renders_means_with_error_bars() {
    let (_keep, dir) = plot_dir();
    let path = dir.join("bars.png");
    // As the leaderboard plots them: accuracy in percent, mean ± std over folds.
    let bar = |label: &str, mean: f64, std: Option<f64>, n: usize| Bar {
        label: label.into(),
        mean,
        std,
        n,
    };
    let bars = vec![
        bar("resnet10", 91.2, Some(2.1), 5),
        bar("resnet18", 94.8, Some(1.2), 5),
        bar("resnet34", 93.1, Some(3.0), 5),
        bar("resnet50", 88.7, None, 1),
    ];
    let title = "validation accuracy by backbone (5-fold)";
    bars_png(&path, &bars, title, "accuracy % (mean ± std over folds)").unwrap();
    assert_png(&path, BARS_SIZE);
}

#[test]
fn bars_png_rotates_long_labels() {
    let (_keep, dir) = plot_dir();
    let path = dir.join("bars_long_labels.png");
    let bars: Vec<Bar> = (0..12)
        .map(|i| Bar {
            label: format!(
                "resnet18 lr={} batch={}",
                [1e-3, 3e-4, 1e-4][i % 3],
                16 << (i % 4)
            ),
            mean: 0.7 + 0.02 * i as f64,
            std: (i % 2 == 0).then_some(0.01 * (i % 5) as f64),
            n: 5,
        })
        .collect();
    bars_png(&path, &bars, "macro-F1 by trial", "val macro-F1").unwrap();
    assert_png(&path, BARS_SIZE);
    assert!(bars_png(&dir.join("none.png"), &[], "t", "y").is_err());
}

#[test]
fn confusion_png_fits_twenty_classes() {
    let (_keep, dir) = plot_dir();
    let path = dir.join("confusion_20.png");
    let mut m = Confusion::new(20);
    for t in 0..20 {
        for p in 0..20 {
            for _ in 0..((t * 7 + p * 3) % 5 + if t == p { 40 } else { 0 }) {
                m.add(t, p);
            }
        }
    }
    let names: Vec<String> = (0..20).map(|i| format!("class-{i:02}")).collect();
    confusion_png(&path, &m, &names, "twenty classes").unwrap();
    assert_png(&path, CONFUSION_SIZE);
}

#[test]
fn bars_png_survives_a_missing_mean_and_negative_values() {
    let (_keep, dir) = plot_dir();
    let path = dir.join("bars_odd.png");
    let bars = vec![
        Bar {
            label: "gain".into(),
            mean: 0.05,
            std: Some(0.02),
            n: 5,
        },
        Bar {
            label: "loss".into(),
            mean: -0.03,
            std: Some(0.01),
            n: 5,
        },
        Bar {
            label: "failed".into(),
            mean: f64::NAN,
            std: None,
            n: 0,
        },
    ];
    bars_png(&path, &bars, "change in accuracy", "delta").unwrap();
    assert_png(&path, BARS_SIZE);
}
