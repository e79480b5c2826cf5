//! PNG figures of a trial or a sweep: the confusion-matrix heatmap, the
//! training curves and a bar chart of means with error bars.
//!
//! Everything is drawn with plotters into an RGB buffer and written as PNG
//! with the `image` crate, whatever the path's extension. Text uses DejaVu
//! Sans, embedded in the binary (`assets/fonts`) and registered with plotters
//! once, so plots render on machines without any fonts installed.

use crate::metrics::Confusion;
use crate::train::EpochRecord;
use anyhow::{Context, Result, anyhow, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;
use std::sync::OnceLock;

/// Size of [`confusion_png`]'s image in pixels.
pub const CONFUSION_SIZE: (u32, u32) = (900, 700);
/// Size of [`curves_png`]'s image in pixels.
pub const CURVES_SIZE: (u32, u32) = (1200, 450);
/// Size of [`bars_png`]'s image in pixels.
pub const BARS_SIZE: (u32, u32) = (1000, 600);

/// DejaVu Sans 2.37 (Debian's fonts-dejavu-core); licence in assets/fonts.
static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

const FONT: &str = "sans-serif";
const TRAIN_COLOUR: RGBColor = RGBColor(31, 119, 180);
const VAL_COLOUR: RGBColor = RGBColor(255, 127, 14);
const BAR_COLOUR: RGBColor = RGBColor(66, 146, 198);
const GRID_COLOUR: RGBColor = RGBColor(210, 210, 210);
const TEXT_COLOUR: RGBColor = RGBColor(20, 20, 20);

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Registers the embedded font as plotters' "sans-serif" (once per process).
fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU_SANS).is_ok()
    });
    if ok {
        Ok(())
    } else {
        bail!("the embedded DejaVu Sans font could not be loaded")
    }
}

/// Draws with `draw` on a white `size` canvas and writes it to `path` as PNG.
fn render(path: &Path, size: (u32, u32), draw: impl FnOnce(&Area<'_>) -> Result<()>) -> Result<()> {
    register_font()?;
    let (w, h) = size;
    let mut buffer = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        draw(&root)?;
        root.present().map_err(plot_error)?;
    }
    let image = image::RgbImage::from_raw(w, h, buffer)
        .ok_or_else(|| anyhow!("the plot buffer does not match {w}x{h}"))?;
    image
        .save_with_format(path, image::ImageFormat::Png)
        .with_context(|| format!("writing {}", path.display()))
}

/// plotters' error types are generic over the backend; this turns one into
/// an anyhow error with its message.
fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing the plot: {e}")
}

fn font(size: f64) -> TextStyle<'static> {
    (FONT, size).into_font().color(&TEXT_COLOUR)
}

fn text_size(area: &Area<'_>, text: &str, style: &TextStyle<'_>) -> Result<(i32, i32)> {
    let (w, h) = area.estimate_text_size(text, style).map_err(plot_error)?;
    Ok((w as i32, h as i32))
}

/// Writes `text` centred on `(x, y)`. plotters' centre anchor puts the
/// baseline low, so the text is moved down by a quarter of its size to look
/// centred.
fn centred(area: &Area<'_>, text: &str, style: &TextStyle<'_>, (x, y): (i32, i32)) -> Result<()> {
    let shift = (style.font.get_size() * 0.25) as i32;
    let style = style.pos(Pos::new(HPos::Center, VPos::Center));
    area.draw_text(text, &style, (x, y + shift))
        .map_err(plot_error)
}

/// Writes `text` read bottom to top, centred on `(x, y)`.
fn vertical(area: &Area<'_>, text: &str, style: &TextStyle<'_>, (x, y): (i32, i32)) -> Result<()> {
    let shift = (style.font.get_size() * 0.25) as i32;
    let style = style
        .transform(FontTransform::Rotate270)
        .pos(Pos::new(HPos::Center, VPos::Center));
    area.draw_text(text, &style, (x + shift, y))
        .map_err(plot_error)
}

/// Writes `title` centred in a band at the top of `root` and returns the
/// area below it (plotters' own `titled` puts the text against the edge).
fn with_title<'a>(root: &Area<'a>, title: &str) -> Result<Area<'a>> {
    let (width, _) = root.dim_in_pixel();
    let (head, body) = root.split_vertically(46);
    centred(&head, title, &font(22.0), (width as i32 / 2, 24))?;
    Ok(body)
}

/// Decimals for numbers up to `max`: 3 below 10, then 2, 1 and 0.
fn decimals(max: f64) -> usize {
    match max.abs() {
        m if m < 10.0 => 3,
        m if m < 100.0 => 2,
        m if m < 1000.0 => 1,
        _ => 0,
    }
}

/// `text`, cut to `max` characters with an ellipsis.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

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
/// the x axis, the count and the share of the row written in each cell, a
/// colour bar and `title`. A row with no samples is drawn white, with 0s.
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

    let title_font = font(22.0);
    let axis_font = font(16.0);
    let label_font = font(14.0);
    let tick_font = font(12.0);

    let row_labels: Vec<String> = names
        .iter()
        .zip(&supports)
        .map(|(n, s)| format!("{} (n={s})", shorten(n, 24)))
        .collect();
    let col_labels: Vec<String> = names.iter().map(|n| shorten(n, 24)).collect();
    let mut row_label_w = 0;
    for l in &row_labels {
        row_label_w = row_label_w.max(text_size(root, l, &label_font)?.0);
    }
    let mut col_label_w = 0;
    for l in &col_labels {
        col_label_w = col_label_w.max(text_size(root, l, &label_font)?.0);
    }
    let label_h = text_size(root, "Ag", &label_font)?.1;

    // Margins: axis title + labels on the left and at the bottom, the
    // colour bar on the right.
    let left = 36 + row_label_w + 10;
    let right = 110;
    let top = 60;
    let cell_w = (width - left - right) / k as i32;
    let rotate = col_label_w > cell_w - 8;
    let col_block = if rotate { col_label_w } else { label_h };
    let bottom = 12 + col_block + 12 + 30;
    let cell_h = (height - top - bottom) / k as i32;
    if cell_w < 4 || cell_h < 4 {
        bail!("{k} classes are too many for a {width}x{height} heatmap");
    }
    let (x0, y0) = (left, top);
    let (x1, y1) = (x0 + cell_w * k as i32, y0 + cell_h * k as i32);

    centred(root, title, &title_font, (width / 2, 28))?;

    // Cells: colour by the share of the row, count and share written inside.
    let value_size = (cell_h as f64 / 4.0)
        .clamp(8.0, 16.0)
        .min(cell_w as f64 / 4.0);
    for (r, row) in confusion.counts.iter().enumerate() {
        for (c, &n) in row.iter().enumerate() {
            let share = if supports[r] == 0 {
                0.0
            } else {
                n as f64 / supports[r] as f64
            };
            let (cx0, cy0) = (x0 + c as i32 * cell_w, y0 + r as i32 * cell_h);
            root.draw(&Rectangle::new(
                [(cx0, cy0), (cx0 + cell_w, cy0 + cell_h)],
                blues(share).filled(),
            ))
            .map_err(plot_error)?;
            let ink = if share > 0.5 { WHITE } else { TEXT_COLOUR };
            let (mx, my) = (cx0 + cell_w / 2, cy0 + cell_h / 2);
            if value_size >= 8.0 && cell_h as f64 >= 2.6 * value_size {
                let gap = (value_size * 0.65) as i32;
                centred(
                    root,
                    &n.to_string(),
                    &font(value_size).color(&ink),
                    (mx, my - gap),
                )?;
                let share_text = format!("{:.1}%", 100.0 * share);
                let small = font(value_size * 0.85).color(&ink);
                centred(root, &share_text, &small, (mx, my + gap))?;
            } else {
                centred(
                    root,
                    &n.to_string(),
                    &font(value_size.max(7.0)).color(&ink),
                    (mx, my),
                )?;
            }
        }
    }
    // Grid and frame.
    for i in 0..=k as i32 {
        let colour = if i == 0 || i == k as i32 {
            TEXT_COLOUR
        } else {
            WHITE
        };
        root.draw(&PathElement::new(
            vec![(x0 + i * cell_w, y0), (x0 + i * cell_w, y1)],
            colour,
        ))
        .map_err(plot_error)?;
        root.draw(&PathElement::new(
            vec![(x0, y0 + i * cell_h), (x1, y0 + i * cell_h)],
            colour,
        ))
        .map_err(plot_error)?;
    }

    // Row labels (true class), right-aligned next to the matrix.
    for (r, l) in row_labels.iter().enumerate() {
        let y = y0 + r as i32 * cell_h + cell_h / 2 + (label_font.font.get_size() * 0.25) as i32;
        let style = label_font.pos(Pos::new(HPos::Right, VPos::Center));
        root.draw_text(l, &style, (x0 - 8, y)).map_err(plot_error)?;
    }
    vertical(root, "true class", &axis_font, (14, (y0 + y1) / 2))?;

    // Column labels (predicted class), vertical when they do not fit.
    for (c, l) in col_labels.iter().enumerate() {
        let x = x0 + c as i32 * cell_w + cell_w / 2;
        if rotate {
            let shift = (label_font.font.get_size() * 0.25) as i32;
            let style = label_font
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Right, VPos::Center));
            root.draw_text(l, &style, (x + shift, y1 + 10))
                .map_err(plot_error)?;
        } else {
            centred(root, l, &label_font, (x, y1 + 12 + label_h / 2))?;
        }
    }
    centred(
        root,
        "predicted class",
        &axis_font,
        ((x0 + x1) / 2, y1 + 12 + col_block + 24),
    )?;

    // Colour bar.
    let (bx0, bx1) = (x1 + 24, x1 + 42);
    let steps = (y1 - y0).max(1);
    for i in 0..steps {
        let t = 1.0 - i as f64 / steps as f64;
        root.draw(&PathElement::new(
            vec![(bx0, y0 + i), (bx1, y0 + i)],
            blues(t),
        ))
        .map_err(plot_error)?;
    }
    root.draw(&Rectangle::new([(bx0, y0), (bx1, y1)], TEXT_COLOUR))
        .map_err(plot_error)?;
    for i in 0..=4 {
        let t = i as f64 / 4.0;
        let y = y1 - ((y1 - y0) as f64 * t).round() as i32;
        root.draw(&PathElement::new(vec![(bx1, y), (bx1 + 4, y)], TEXT_COLOUR))
            .map_err(plot_error)?;
        let style = tick_font.pos(Pos::new(HPos::Left, VPos::Center));
        let shift = (tick_font.font.get_size() * 0.25) as i32;
        root.draw_text(&format!("{:.0}%", 100.0 * t), &style, (bx1 + 7, y + shift))
            .map_err(plot_error)?;
    }
    vertical(
        root,
        "share of the true class",
        &tick_font,
        (width - 14, (y0 + y1) / 2),
    )?;
    Ok(())
}

/// Two panels side by side ([`CURVES_SIZE`]): accuracy and loss against
/// epoch, each with a training and a validation line, a legend and axis
/// labels; `title` above both. Non-finite values (a diverged run) are left
/// out; a single epoch is drawn as points, no epochs as empty axes.
pub fn curves_png(path: &Path, epochs: &[EpochRecord], title: &str) -> Result<()> {
    render(path, CURVES_SIZE, |root| draw_curves(root, epochs, title))
        .with_context(|| format!("plotting the training curves to {}", path.display()))
}

fn draw_curves(root: &Area<'_>, epochs: &[EpochRecord], title: &str) -> Result<()> {
    let body = with_title(root, title)?;
    let (left, right) = body.split_horizontally(CURVES_SIZE.0 / 2);

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
    let panel = |area: &Area<'_>,
                 caption: &str,
                 y_desc: &str,
                 y_max: f64,
                 percent: bool,
                 train: fn(&EpochRecord) -> f64,
                 val: fn(&EpochRecord) -> f64,
                 legend_at: SeriesLabelPosition|
     -> Result<()> {
        let last = epochs.iter().map(|e| e.epoch).max().unwrap_or(1).max(1) as f64;
        let first = epochs
            .iter()
            .map(|e| e.epoch)
            .min()
            .unwrap_or(1)
            .min(last as usize) as f64;
        let pad = ((last - first) * 0.03).max(0.5);
        let mut chart = ChartBuilder::on(area)
            .caption(caption, font(16.0))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(62)
            .build_cartesian_2d((first - pad)..(last + pad), 0.0..y_max)
            .map_err(plot_error)?;
        let span = (last - first) as usize + 1;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(y_desc)
            .x_labels(span.clamp(2, 12))
            .y_labels(6)
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-6 && x.round() >= 1.0 {
                    format!("{}", x.round() as i64)
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| {
                if percent {
                    if *y > 1.0 + 1e-9 {
                        String::new()
                    } else {
                        format!("{:.0}%", 100.0 * y)
                    }
                } else {
                    format!("{y:.2}")
                }
            })
            .label_style(font(12.0))
            .axis_desc_style(font(14.0))
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(GRID_COLOUR.mix(0.6))
            .draw()
            .map_err(plot_error)?;
        let points = epochs.len() <= 40;
        for (name, colour, value) in [
            ("training", TRAIN_COLOUR, train),
            ("validation", VAL_COLOUR, val),
        ] {
            // One line per run of finite values.
            let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
            for e in epochs {
                let v = value(e);
                if v.is_finite() {
                    if let Some(run) = runs.last_mut() {
                        run.push((e.epoch as f64, v.min(y_max)));
                    }
                } else if runs.last().is_some_and(|r| !r.is_empty()) {
                    runs.push(Vec::new());
                }
            }
            let style = colour.stroke_width(2);
            let mut labelled = false;
            for run in runs.iter().filter(|r| !r.is_empty()) {
                let series = chart
                    .draw_series(LineSeries::new(run.iter().copied(), style))
                    .map_err(plot_error)?;
                if !labelled {
                    series.label(name).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                    });
                    labelled = true;
                }
                if points || run.len() == 1 {
                    chart
                        .draw_series(run.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                        .map_err(plot_error)?;
                }
            }
        }
        if epochs.is_empty() {
            let (x, y) = chart.backend_coord(&((first + last) / 2.0, y_max / 2.0));
            centred(root, "no epochs recorded", &font(16.0), (x, y))?;
        } else {
            chart
                .configure_series_labels()
                .position(legend_at)
                .margin(10)
                .label_font(font(13.0))
                .background_style(WHITE.mix(0.85))
                .border_style(GRID_COLOUR)
                .draw()
                .map_err(plot_error)?;
        }
        Ok(())
    };

    panel(
        &left,
        &acc_caption,
        "accuracy",
        1.03,
        true,
        |e| e.train_acc,
        |e| e.val_acc,
        SeriesLabelPosition::LowerRight,
    )?;
    let loss_max = epochs
        .iter()
        .flat_map(|e| [e.train_loss, e.val_loss])
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let loss_max = if loss_max > 0.0 { loss_max * 1.1 } else { 1.0 };
    panel(
        &right,
        "loss",
        "loss",
        loss_max,
        false,
        |e| e.train_loss,
        |e| e.val_loss,
        SeriesLabelPosition::UpperRight,
    )?;
    Ok(())
}

/// One bar of [`bars_png`].
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Written under the bar (vertically when the labels do not fit across).
    pub label: String,
    /// The bar's height.
    pub mean: f64,
    /// Half the error bar's length (`mean ± std`); none is drawn when `None`.
    pub std: Option<f64>,
    /// Number of folds (or runs) behind the mean, written as "n=…".
    pub n: usize,
}

/// A bar chart ([`BARS_SIZE`]): one bar per entry of `bars`, its height the
/// mean, an error bar of ± std when given, the mean and "n=" written above
/// it, its label under it; `y_label` on the y axis and `title` above. The y
/// axis starts at 0. A bar with a non-finite mean is left out (its label and
/// "n/a" remain).
pub fn bars_png(path: &Path, bars: &[Bar], title: &str, y_label: &str) -> Result<()> {
    if bars.is_empty() {
        bail!("cannot plot {}: no bars", path.display());
    }
    render(path, BARS_SIZE, |root| {
        draw_bars(root, bars, title, y_label)
    })
    .with_context(|| format!("plotting the bar chart to {}", path.display()))
}

fn draw_bars(root: &Area<'_>, bars: &[Bar], title: &str, y_label: &str) -> Result<()> {
    let label_font = font(13.0);
    let labels: Vec<String> = bars.iter().map(|b| shorten(&b.label, 40)).collect();
    let mut label_w = 0;
    for l in &labels {
        label_w = label_w.max(text_size(root, l, &label_font)?.0);
    }
    let label_h = text_size(root, "Ag", &label_font)?.1;

    let top_of = |b: &Bar| b.mean + b.std.filter(|s| s.is_finite()).unwrap_or(0.0).abs();
    let y_top = bars
        .iter()
        .filter(|b| b.mean.is_finite())
        .map(top_of)
        .fold(0.0f64, f64::max);
    let y_min = bars
        .iter()
        .filter(|b| b.mean.is_finite())
        .map(|b| b.mean - b.std.filter(|s| s.is_finite()).unwrap_or(0.0).abs())
        .fold(0.0f64, f64::min);
    // Room above the tallest bar for its two lines of text.
    let y_max = if y_top > 0.0 { y_top * 1.18 } else { 1.0 };

    let axis_decimals = decimals(y_max).min(2);
    let value_decimals = decimals(y_top);
    let value_text = |b: &Bar| match b.std.filter(|s| s.is_finite()) {
        Some(std) => format!("{:.d$} ± {:.d$}", b.mean, std.abs(), d = value_decimals),
        None => format!("{:.d$}", b.mean, d = value_decimals),
    };

    let n = bars.len();
    let plot_w = BARS_SIZE.0 as i32 - 90 - 20;
    let slot = plot_w / n as i32;
    let rotate = label_w > slot - 6;
    let x_area = if rotate { label_w + 16 } else { label_h + 16 };

    let body = with_title(root, title)?;
    let mut chart = ChartBuilder::on(&body)
        .margin_left(10)
        .margin_right(20)
        .margin_top(10)
        .margin_bottom(6)
        .x_label_area_size(x_area as u32)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..n as f64, y_min..y_max)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_labels(8)
        .y_desc(y_label)
        .y_label_formatter(&|y| format!("{y:.d$}", d = axis_decimals))
        .label_style(font(12.0))
        .axis_desc_style(font(14.0))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(GRID_COLOUR.mix(0.6))
        .draw()
        .map_err(plot_error)?;

    // One size for every bar's text: 12 px, or 10 px when one does not fit.
    let mut value_w = 0;
    for b in bars.iter().filter(|b| b.mean.is_finite()) {
        value_w = value_w.max(text_size(root, &value_text(b), &font(12.0))?.0);
    }
    let value_font = if value_w > slot - 4 {
        font(10.0)
    } else {
        font(12.0)
    };
    for (i, (bar, label)) in bars.iter().zip(&labels).enumerate() {
        let x = i as f64;
        let centre = x + 0.5;
        let (cx, axis_y) = chart.backend_coord(&(centre, y_min));
        if rotate {
            let shift = (label_font.font.get_size() * 0.25) as i32;
            let style = label_font
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Right, VPos::Center));
            root.draw_text(label, &style, (cx + shift, axis_y + 8))
                .map_err(plot_error)?;
        } else {
            centred(root, label, &label_font, (cx, axis_y + 8 + label_h / 2))?;
        }
        if !bar.mean.is_finite() {
            let (_, y) = chart.backend_coord(&(centre, 0.0));
            centred(
                root,
                &format!("n/a, n={}", bar.n),
                &value_font,
                (cx, y - 12),
            )?;
            continue;
        }
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x + 0.18, 0.0), (x + 0.82, bar.mean)],
                BAR_COLOUR.filled(),
            )))
            .map_err(plot_error)?;
        let mut top = bar.mean.max(0.0);
        if let Some(std) = bar.std.filter(|s| s.is_finite()) {
            let std = std.abs();
            let (lo, hi) = (bar.mean - std, bar.mean + std);
            let cap = 0.08;
            for path in [
                vec![(centre, lo), (centre, hi)],
                vec![(centre - cap, lo), (centre + cap, lo)],
                vec![(centre - cap, hi), (centre + cap, hi)],
            ] {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        path,
                        TEXT_COLOUR.stroke_width(2),
                    )))
                    .map_err(plot_error)?;
            }
            top = top.max(hi);
        }
        let (_, ty) = chart.backend_coord(&(centre, top));
        centred(root, &value_text(bar), &value_font, (cx, ty - 26))?;
        centred(root, &format!("n={}", bar.n), &value_font, (cx, ty - 11))?;
    }
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

    #[test]
    fn shorten_keeps_short_text() {
        assert_eq!(shorten("anger", 24), "anger");
        assert_eq!(shorten("abcdef", 4), "abc…");
    }
}
