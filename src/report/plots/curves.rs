//! The training-curves figure: accuracy and loss panels against epoch.

use super::axes::{Corner, Frame, legend, nice_ticks};
use super::canvas::{Area, line, plot_error, render};
use super::text::{Label, title_band, write};
use super::{CURVES_SIZE, TITLE_BAND, TRAIN_COLOUR, VAL_COLOUR};
use crate::train::EpochRecord;
use anyhow::{Context, Result};
use plotters::prelude::*;
use std::path::Path;

/// Two panels side by side ([`CURVES_SIZE`]): accuracy and loss against
/// epoch, each with a training and a validation line, a legend and axis
/// labels; `title` above both, and the best validation accuracy above the
/// accuracy panel. Non-finite values (a diverged run) are left out; a
/// single epoch is drawn as points, no epochs as empty axes.
pub fn curves_png(path: &Path, epochs: &[EpochRecord], title: &str) -> Result<()> {
    render(path, CURVES_SIZE, |root| draw_curves(root, epochs, title))
        .with_context(|| format!("plotting the training curves to {}", path.display()))
}

/// One panel of the curves figure.
struct Panel<'a> {
    left: i32,
    caption: &'a str,
    y_desc: &'a str,
    y_max: f64,
    y_ticks: Vec<(f64, String)>,
    train: fn(&EpochRecord) -> f64,
    val: fn(&EpochRecord) -> f64,
    corner: Corner,
}

fn draw_curves(root: &Area<'_>, epochs: &[EpochRecord], title: &str) -> Result<()> {
    title_band(root, title)?;
    let best = epochs
        .iter()
        .filter(|e| e.val_acc.is_finite())
        .max_by(|a, b| a.val_acc.total_cmp(&b.val_acc).then(b.epoch.cmp(&a.epoch)));
    let acc_caption = match best {
        Some(b) => format!(
            "accuracy (best validation {:.1}% at epoch {})",
            100.0 * b.val_acc,
            b.epoch
        ),
        None => "accuracy".to_string(),
    };
    let acc_ticks = (0..=5)
        .map(|i| (i as f64 / 5.0, format!("{}%", i * 20)))
        .collect();
    let loss_top = epochs
        .iter()
        .flat_map(|e| [e.train_loss, e.val_loss])
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let loss_max = if loss_top > 0.0 { loss_top * 1.08 } else { 1.0 };
    let (ticks, decimals) = nice_ticks(0.0, loss_max, 6);
    let loss_ticks = ticks
        .into_iter()
        .map(|t| (t, format!("{t:.decimals$}")))
        .collect();
    let half = CURVES_SIZE.0 as i32 / 2;
    let panels = [
        Panel {
            left: 0,
            caption: &acc_caption,
            y_desc: "accuracy",
            y_max: 1.02,
            y_ticks: acc_ticks,
            train: |e| e.train_acc,
            val: |e| e.val_acc,
            corner: Corner::LowerRight,
        },
        Panel {
            left: half,
            caption: "loss",
            y_desc: "loss",
            y_max: loss_max,
            y_ticks: loss_ticks,
            train: |e| e.train_loss,
            val: |e| e.val_loss,
            corner: Corner::UpperRight,
        },
    ];
    for panel in &panels {
        draw_panel(root, epochs, panel, half)?;
    }
    Ok(())
}

fn draw_panel(
    root: &Area<'_>,
    epochs: &[EpochRecord],
    panel: &Panel<'_>,
    width: i32,
) -> Result<()> {
    let last = epochs.iter().map(|e| e.epoch).max().unwrap_or(1).max(1) as f64;
    let first = epochs
        .iter()
        .map(|e| e.epoch)
        .min()
        .unwrap_or(1)
        .min(last as usize) as f64;
    let pad = ((last - first) * 0.03).max(0.5);
    let frame = Frame {
        x0: panel.left + 80,
        y0: TITLE_BAND + 34,
        x1: panel.left + width - 24,
        y1: CURVES_SIZE.1 as i32 - 64,
        xs: (first - pad, last + pad),
        ys: (0.0, panel.y_max),
    };
    let caption = Label::new(15.0);
    write(
        root,
        panel.caption,
        caption,
        ((frame.x0 + frame.x1) / 2, TITLE_BAND + 12),
    )?;

    let (ticks, _) = nice_ticks(first, last, 10);
    let mut x_ticks: Vec<(f64, String)> = Vec::new();
    for t in ticks {
        let t = t.round();
        if t >= 1.0 && x_ticks.last().is_none_or(|&(p, _)| p < t) {
            x_ticks.push((t, format!("{}", t as i64)));
        }
    }
    frame.axes(root, &x_ticks, &panel.y_ticks, true)?;
    frame.axis_titles(root, "epoch", panel.y_desc, panel.left + 18)?;

    let dots = epochs.len() <= 40;
    for (value, colour) in [(panel.train, TRAIN_COLOUR), (panel.val, VAL_COLOUR)] {
        // One line per run of finite values.
        let mut runs: Vec<Vec<(i32, i32)>> = vec![Vec::new()];
        for e in epochs {
            let v = value(e);
            if v.is_finite() {
                if let Some(run) = runs.last_mut() {
                    run.push(frame.px(e.epoch as f64, v));
                }
            } else if runs.last().is_some_and(|r| !r.is_empty()) {
                runs.push(Vec::new());
            }
        }
        for run in runs.iter().filter(|r| !r.is_empty()) {
            if run.len() > 1 {
                line(root, run.clone(), colour.stroke_width(2))?;
            }
            if dots || run.len() == 1 {
                for &p in run {
                    root.draw(&Circle::new(p, 3, colour.filled()))
                        .map_err(plot_error)?;
                }
            }
        }
    }
    if epochs.is_empty() {
        let centre = ((frame.x0 + frame.x1) / 2, (frame.y0 + frame.y1) / 2);
        write(root, "no epochs recorded", Label::new(16.0), centre)?;
    } else {
        let entries = [("training", TRAIN_COLOUR), ("validation", VAL_COLOUR)];
        legend(root, &frame, &entries, panel.corner)?;
    }
    Ok(())
}
