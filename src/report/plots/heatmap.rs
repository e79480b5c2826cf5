//! The confusion-matrix heatmap and its "Blues" colour map.

use super::canvas::{Area, line, rect, render};
use super::text::{Label, shorten, text_width, title_band, write};
use super::{CONFUSION_SIZE, TEXT_COLOUR, TITLE_BAND};
use crate::metrics::Confusion;
use anyhow::{Context, Result, bail};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};
use std::path::Path;

/// matplotlib's "Blues" colour map at `t` in 0..=1.
fn blues(t: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 9] = [
        (247, 251, 255),
        (222, 235, 247),
        (198, 219, 239),
        (158, 202, 225),
        (107, 174, 214),
        (66, 146, 198),
        (33, 113, 181),
        (8, 81, 156),
        (8, 48, 107),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let pos = t * (STOPS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(STOPS.len() - 2);
    let f = pos - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Heatmap of the row-normalised confusion matrix ([`CONFUSION_SIZE`]):
/// true class on the y axis (with its number of samples), predicted class on
/// the x axis (names vertical when they do not fit across), the count and
/// the share of the row written in each cell, a colour bar and `title`. A
/// row with no samples is drawn white, with 0s.
pub fn confusion_png(
    path: &Path,
    confusion: &Confusion,
    names: &[String],
    title: &str,
) -> Result<()> {
    let k = confusion.counts.len();
    if k == 0 {
        bail!(
            "cannot plot {}: the confusion matrix has no classes",
            path.display()
        );
    }
    if names.len() != k {
        bail!(
            "cannot plot {}: {} class names for a {k}-class confusion matrix",
            path.display(),
            names.len()
        );
    }
    if let Some(r) = confusion.counts.iter().position(|row| row.len() != k) {
        bail!(
            "cannot plot {}: row {r} of the confusion matrix has {} entries, expected {k}",
            path.display(),
            confusion.counts[r].len()
        );
    }
    render(path, CONFUSION_SIZE, |root| {
        draw_confusion(root, confusion, names, title)
    })
    .with_context(|| format!("plotting the confusion matrix to {}", path.display()))
}

fn draw_confusion(
    root: &Area<'_>,
    confusion: &Confusion,
    names: &[String],
    title: &str,
) -> Result<()> {
    let (width, height) = (CONFUSION_SIZE.0 as i32, CONFUSION_SIZE.1 as i32);
    let k = names.len();
    let supports: Vec<u64> = confusion.counts.iter().map(|r| r.iter().sum()).collect();
    let label_size = 14.0;

    let row_labels: Vec<String> = names
        .iter()
        .zip(&supports)
        .map(|(n, s)| format!("{} (n={s})", shorten(n, 24)))
        .collect();
    let col_labels: Vec<String> = names.iter().map(|n| shorten(n, 24)).collect();
    let mut row_label_w = 0;
    for l in &row_labels {
        row_label_w = row_label_w.max(text_width(root, l, label_size)?);
    }
    let mut col_label_w = 0;
    for l in &col_labels {
        col_label_w = col_label_w.max(text_width(root, l, label_size)?);
    }
    let label_h = (label_size * 0.85) as i32;

    // Margins: axis title and labels on the left and at the bottom, the
    // colour bar on the right.
    let left = 34 + row_label_w + 10;
    let right = 110;
    let top = TITLE_BAND + 14;
    let cell_w = (width - left - right) / k as i32;
    let rotate = col_label_w > cell_w - 8;
    let col_block = if rotate { col_label_w } else { label_h };
    let bottom = 10 + col_block + 16 + 26;
    let cell_h = (height - top - bottom) / k as i32;
    if cell_w < 4 || cell_h < 4 {
        bail!("{k} classes are too many for a {width}x{height} heatmap");
    }
    let (x0, y0) = (left, top);
    let (x1, y1) = (x0 + cell_w * k as i32, y0 + cell_h * k as i32);

    title_band(root, title)?;

    // Cells: colour by the share of the row; count and share written inside
    // when there is room for two lines, else the count alone.
    let two_lines = cell_h >= 34 && cell_w >= 44;
    let count_size = if two_lines {
        (cell_h as f64 / 4.5)
            .min(cell_w as f64 / 5.0)
            .clamp(10.0, 17.0)
    } else {
        (cell_h as f64 * 0.45)
            .min(cell_w as f64 / 3.2)
            .clamp(7.0, 14.0)
    };
    for (r, row) in confusion.counts.iter().enumerate() {
        for (c, &n) in row.iter().enumerate() {
            let share = if supports[r] == 0 {
                0.0
            } else {
                n as f64 / supports[r] as f64
            };
            let (cx0, cy0) = (x0 + c as i32 * cell_w, y0 + r as i32 * cell_h);
            rect(
                root,
                (cx0, cy0),
                (cx0 + cell_w, cy0 + cell_h),
                blues(share).filled(),
            )?;
            let ink = if share > 0.5 { WHITE } else { TEXT_COLOUR };
            let (mx, my) = (cx0 + cell_w / 2, cy0 + cell_h / 2);
            let count = Label::new(count_size).colour(ink);
            if two_lines {
                let gap = (count_size * 0.62) as i32;
                write(root, &n.to_string(), count, (mx, my - gap))?;
                let share_text = format!("{:.1}%", 100.0 * share);
                let small = Label::new(count_size * 0.8).colour(ink);
                write(root, &share_text, small, (mx, my + gap))?;
            } else {
                write(root, &n.to_string(), count, (mx, my))?;
            }
        }
    }
    // White lines between the cells, a dark frame around them.
    for i in 1..k as i32 {
        let (x, y) = (x0 + i * cell_w, y0 + i * cell_h);
        line(root, vec![(x, y0), (x, y1)], WHITE.stroke_width(1))?;
        line(root, vec![(x0, y), (x1, y)], WHITE.stroke_width(1))?;
    }
    rect(root, (x0, y0), (x1, y1), TEXT_COLOUR.stroke_width(1))?;

    // Row labels (true class), right-aligned next to the matrix.
    let label = Label::new(label_size);
    for (r, l) in row_labels.iter().enumerate() {
        let y = y0 + r as i32 * cell_h + cell_h / 2;
        write(
            root,
            l,
            label.anchor(HPos::Right, VPos::Center),
            (x0 - 8, y),
        )?;
    }
    write(
        root,
        "true class",
        Label::new(16.0).up(),
        (16, (y0 + y1) / 2),
    )?;

    // Column labels (predicted class), read upwards when they do not fit.
    for (c, l) in col_labels.iter().enumerate() {
        let x = x0 + c as i32 * cell_w + cell_w / 2;
        if rotate {
            let up = label.up().anchor(HPos::Right, VPos::Center);
            write(root, l, up, (x, y1 + 10))?;
        } else {
            write(root, l, label.anchor(HPos::Center, VPos::Top), (x, y1 + 10))?;
        }
    }
    let axis_title = Label::new(16.0).anchor(HPos::Center, VPos::Top);
    write(
        root,
        "predicted class",
        axis_title,
        ((x0 + x1) / 2, y1 + 10 + col_block + 16),
    )?;

    // Colour bar with ticks at every quarter.
    let (bx0, bx1) = (x1 + 24, x1 + 42);
    let steps = (y1 - y0).max(1);
    for i in 0..steps {
        let t = 1.0 - i as f64 / steps as f64;
        line(
            root,
            vec![(bx0, y0 + i), (bx1, y0 + i)],
            blues(t).stroke_width(1),
        )?;
    }
    rect(root, (bx0, y0), (bx1, y1), TEXT_COLOUR.stroke_width(1))?;
    for i in 0..=4 {
        let t = i as f64 / 4.0;
        let y = y1 - ((y1 - y0) as f64 * t).round() as i32;
        line(
            root,
            vec![(bx1, y), (bx1 + 4, y)],
            TEXT_COLOUR.stroke_width(1),
        )?;
        let tick = Label::new(12.0).anchor(HPos::Left, VPos::Center);
        write(root, &format!("{:.0}%", 100.0 * t), tick, (bx1 + 7, y))?;
    }
    let bar_title = Label::new(13.0).up();
    write(
        root,
        "share of the true class",
        bar_title,
        (width - 16, (y0 + y1) / 2),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blues_runs_from_near_white_to_dark_blue() {
        assert_eq!(blues(0.0), RGBColor(247, 251, 255));
        assert_eq!(blues(1.0), RGBColor(8, 48, 107));
        assert_eq!(blues(f64::NAN), RGBColor(247, 251, 255));
    }
}
