//! The bar chart of means with error bars.

use super::axes::{Frame, nice_ticks};
use super::canvas::{Area, line, rect, render};
use super::text::{Label, shorten, text_width, title_band, write};
use super::{BAR_COLOUR, BARS_SIZE, TEXT_COLOUR, TITLE_BAND};
use anyhow::{Context, Result, bail};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};
use std::path::Path;

/// One bar of [`bars_png`].
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Written under the bar (read upwards when the labels do not fit across).
    pub label: String,
    /// The bar's height.
    pub mean: f64,
    /// Half the error bar's length (`mean ± std`); none is drawn when `None`.
    pub std: Option<f64>,
    /// Number of folds (or runs) behind the mean, written as "n=…".
    pub n: usize,
}

/// A bar chart ([`BARS_SIZE`]): one bar per entry of `bars`, its height the
/// mean, an error bar of ± std when given, the mean (± std) and "n=" written
/// above it, its label under it (cut to 40 characters); `y_label` on the y
/// axis and `title` above. The y axis includes 0. A bar with a non-finite
/// mean is left out (its label and "n/a" remain).
pub fn bars_png(path: &Path, bars: &[Bar], title: &str, y_label: &str) -> Result<()> {
    if bars.is_empty() {
        bail!("cannot plot {}: no bars", path.display());
    }
    render(path, BARS_SIZE, |root| {
        draw_bars(root, bars, title, y_label)
    })
    .with_context(|| format!("plotting the bar chart to {}", path.display()))
}

/// Decimals for values of size up to `max`: 3 for fractions (up to 1.5),
/// 2 below 10, 1 below 1000 (percentages), else 0.
fn decimals(max: f64) -> usize {
    match max.abs() {
        m if m <= 1.5 => 3,
        m if m < 10.0 => 2,
        m if m < 1000.0 => 1,
        _ => 0,
    }
}

fn draw_bars(root: &Area<'_>, bars: &[Bar], title: &str, y_label: &str) -> Result<()> {
    let (width, height) = (BARS_SIZE.0 as i32, BARS_SIZE.1 as i32);
    let label_size = 13.0;
    let labels: Vec<String> = bars.iter().map(|b| shorten(&b.label, 40)).collect();
    let mut label_w = 0;
    for l in &labels {
        label_w = label_w.max(text_width(root, l, label_size)?);
    }
    let spread = |b: &Bar| b.std.filter(|s| s.is_finite()).map_or(0.0, f64::abs);
    let finite = || bars.iter().filter(|b| b.mean.is_finite());
    let y_top = finite().map(|b| b.mean + spread(b)).fold(0.0f64, f64::max);
    let y_bottom = finite().map(|b| b.mean - spread(b)).fold(0.0f64, f64::min);
    // Room above the tallest bar for its two lines of text.
    let y_max = if y_top > 0.0 { y_top * 1.18 } else { 1.0 };
    let y_min = if y_bottom < 0.0 { y_bottom * 1.1 } else { 0.0 };

    let value_decimals = decimals(finite().map(|b| b.mean.abs()).fold(0.0, f64::max));
    let value_text = |b: &Bar| match b.std.filter(|s| s.is_finite()) {
        Some(std) => format!("{:.d$} ± {:.d$}", b.mean, std.abs(), d = value_decimals),
        None => format!("{:.d$}", b.mean, d = value_decimals),
    };

    let n = bars.len();
    let (x0, x1) = (96, width - 20);
    let slot = (x1 - x0) / n as i32;
    let rotate = label_w > slot - 6;
    let label_block = if rotate {
        label_w
    } else {
        (label_size * 0.85) as i32
    };
    let frame = Frame {
        x0,
        y0: TITLE_BAND + 10,
        x1,
        y1: height - 10 - label_block - 12,
        xs: (0.0, n as f64),
        ys: (y_min, y_max),
    };
    title_band(root, title)?;
    let (ticks, tick_decimals) = nice_ticks(y_min, y_max, 8);
    let y_ticks: Vec<(f64, String)> = ticks
        .into_iter()
        .map(|t| (t, format!("{t:.tick_decimals$}")))
        .collect();
    frame.axes(root, &[], &y_ticks, false)?;
    write(
        root,
        y_label,
        Label::new(14.0).up(),
        (20, (frame.y0 + frame.y1) / 2),
    )?;
    if y_min < 0.0 {
        let (_, zero) = frame.px(0.0, 0.0);
        line(
            root,
            vec![(frame.x0, zero), (frame.x1, zero)],
            TEXT_COLOUR.stroke_width(1),
        )?;
    }

    // One size for every bar's text: 12 px, or 10 px when one does not fit.
    let mut value_w = 0;
    for b in finite() {
        value_w = value_w.max(text_width(root, &value_text(b), 12.0)?);
    }
    let value_label = Label::new(if value_w > slot - 4 { 10.0 } else { 12.0 });
    let under = Label::new(label_size);
    for (i, (bar, label)) in bars.iter().zip(&labels).enumerate() {
        let x = i as f64;
        let (cx, _) = frame.px(x + 0.5, 0.0);
        if rotate {
            let up = under.up().anchor(HPos::Right, VPos::Center);
            write(root, label, up, (cx, frame.y1 + 8))?;
        } else {
            write(
                root,
                label,
                under.anchor(HPos::Center, VPos::Top),
                (cx, frame.y1 + 10),
            )?;
        }
        if !bar.mean.is_finite() {
            let (_, y) = frame.px(x, 0.0);
            write(
                root,
                &format!("n/a, n={}", bar.n),
                value_label,
                (cx, y - 12),
            )?;
            continue;
        }
        let base = frame.px(x + 0.18, 0.0);
        let tip = frame.px(x + 0.82, bar.mean);
        rect(root, base, tip, BAR_COLOUR.filled())?;
        let mut top = bar.mean.max(0.0);
        if let Some(std) = bar.std.filter(|s| s.is_finite()) {
            let std = std.abs();
            let (lo, hi) = (frame.px(x, bar.mean - std).1, frame.px(x, bar.mean + std).1);
            let cap = (slot / 10).clamp(3, 14);
            let ink = TEXT_COLOUR.stroke_width(2);
            line(root, vec![(cx, lo), (cx, hi)], ink)?;
            line(root, vec![(cx - cap, lo), (cx + cap, lo)], ink)?;
            line(root, vec![(cx - cap, hi), (cx + cap, hi)], ink)?;
            top = top.max(bar.mean + std);
        }
        let (_, ty) = frame.px(x, top);
        write(root, &value_text(bar), value_label, (cx, ty - 26))?;
        write(root, &format!("n={}", bar.n), value_label, (cx, ty - 11))?;
    }
    Ok(())
}
