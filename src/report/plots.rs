//! PNG figures of a trial or a sweep: the confusion-matrix heatmap, the
//! training curves and a bar chart of means with error bars.
//!
//! Everything is drawn with plotters' primitives into an RGB buffer and
//! written as PNG with the `image` crate, whatever the path's extension.
//! Text uses DejaVu Sans, embedded in the binary (`assets/fonts`) and
//! registered with plotters once, so plots render on machines without any
//! fonts installed.
//!
//! plotters 0.3.7's ab_glyph renderer places every glyph without its left
//! side bearing ("cl" runs together into "d"), so this module writes text
//! one character at a time, each moved right by its bearing as read from the
//! embedded font's `hmtx` table, and draws axes, ticks and legends itself
//! instead of leaving their text to plotters.

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
const GRID_COLOUR: RGBColor = RGBColor(225, 225, 225);
const TEXT_COLOUR: RGBColor = RGBColor(20, 20, 20);
/// Height of the band that holds a figure's title.
const TITLE_BAND: i32 = 46;

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

// ---------------------------------------------------------------- canvas

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

fn line(area: &Area<'_>, points: Vec<(i32, i32)>, style: ShapeStyle) -> Result<()> {
    area.draw(&PathElement::new(points, style))
        .map_err(plot_error)
}

fn rect(
    area: &Area<'_>,
    (x0, y0): (i32, i32),
    (x1, y1): (i32, i32),
    style: ShapeStyle,
) -> Result<()> {
    let corners = [(x0.min(x1), y0.min(y1)), (x0.max(x1), y0.max(y1))];
    area.draw(&Rectangle::new(corners, style))
        .map_err(plot_error)
}

// ------------------------------------------------------------------ text

/// The horizontal metrics of the embedded font that plotters leaves out.
struct FontMetrics {
    data: &'static [u8],
    /// Offset of the cmap format-4 subtable.
    cmap4: usize,
    hmtx: usize,
    long_metrics: usize,
    /// ascender - descender in font units: ab_glyph scales a font of size
    /// `s` pixels by `s / height`.
    height: f64,
}

fn be_u16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]))
}

fn be_i16(data: &[u8], at: usize) -> Option<i16> {
    be_u16(data, at).map(|v| v as i16)
}

fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *data.get(at)?,
        *data.get(at + 1)?,
        *data.get(at + 2)?,
        *data.get(at + 3)?,
    ]))
}

impl FontMetrics {
    /// Reads the `hhea`, `hmtx` and `cmap` (format 4) tables of a TrueType font.
    fn parse(data: &'static [u8]) -> Option<Self> {
        let tables = be_u16(data, 4)? as usize;
        let table = |tag: &[u8; 4]| {
            (0..tables).find_map(|i| {
                let record = 12 + 16 * i;
                (data.get(record..record + 4)? == tag)
                    .then(|| be_u32(data, record + 8))
                    .flatten()
                    .map(|o| o as usize)
            })
        };
        let hhea = table(b"hhea")?;
        let height = f64::from(be_i16(data, hhea + 4)?) - f64::from(be_i16(data, hhea + 6)?);
        let long_metrics = be_u16(data, hhea + 34)? as usize;
        let hmtx = table(b"hmtx")?;
        let cmap = table(b"cmap")?;
        let cmap4 = (0..be_u16(data, cmap + 2)? as usize).find_map(|i| {
            let record = cmap + 4 + 8 * i;
            let platform = be_u16(data, record)?;
            let encoding = be_u16(data, record + 2)?;
            let sub = cmap + be_u32(data, record + 4)? as usize;
            let unicode = platform == 0 || (platform == 3 && encoding == 1);
            (unicode && be_u16(data, sub)? == 4).then_some(sub)
        })?;
        (height > 0.0).then_some(Self {
            data,
            cmap4,
            hmtx,
            long_metrics,
            height,
        })
    }

    /// The glyph of `c` (0, the missing glyph, when the font has none).
    fn glyph(&self, c: char) -> Option<usize> {
        let Ok(code) = u16::try_from(c as u32) else {
            return Some(0);
        };
        let (d, sub) = (self.data, self.cmap4);
        let seg_x2 = be_u16(d, sub + 6)? as usize;
        let ends = sub + 14;
        let starts = ends + seg_x2 + 2;
        let deltas = starts + seg_x2;
        let ranges = deltas + seg_x2;
        for i in 0..seg_x2 / 2 {
            if code > be_u16(d, ends + 2 * i)? {
                continue;
            }
            let start = be_u16(d, starts + 2 * i)?;
            if code < start {
                return Some(0);
            }
            let delta = be_u16(d, deltas + 2 * i)?;
            let range = be_u16(d, ranges + 2 * i)? as usize;
            if range == 0 {
                return Some(code.wrapping_add(delta) as usize);
            }
            let at = ranges + 2 * i + range + 2 * (code - start) as usize;
            let g = be_u16(d, at)?;
            return Some(if g == 0 {
                0
            } else {
                g.wrapping_add(delta) as usize
            });
        }
        Some(0)
    }

    /// Left side bearing of `c` in pixels at `size`, rounded down as ab_glyph does.
    fn bearing(&self, c: char, size: f64) -> i32 {
        let lsb = self.glyph(c).and_then(|g| {
            if g < self.long_metrics {
                be_i16(self.data, self.hmtx + 4 * g + 2)
            } else {
                be_i16(
                    self.data,
                    self.hmtx + 4 * self.long_metrics + 2 * (g - self.long_metrics),
                )
            }
        });
        lsb.map_or(0, |u| (f64::from(u) * size / self.height).floor() as i32)
    }
}

fn font_metrics() -> Option<&'static FontMetrics> {
    static METRICS: OnceLock<Option<FontMetrics>> = OnceLock::new();
    METRICS
        .get_or_init(|| FontMetrics::parse(DEJAVU_SANS))
        .as_ref()
}

fn font(size: f64) -> TextStyle<'static> {
    (FONT, size).into_font().color(&TEXT_COLOUR)
}

/// How a piece of text is written: size, colour, anchor and direction.
#[derive(Clone, Copy)]
struct Label {
    size: f64,
    colour: RGBColor,
    h: HPos,
    v: VPos,
    /// Read bottom to top (rotated a quarter turn anticlockwise).
    up: bool,
}

impl Label {
    /// Centred, dark, horizontal text of `size` pixels.
    fn new(size: f64) -> Self {
        Self {
            size,
            colour: TEXT_COLOUR,
            h: HPos::Center,
            v: VPos::Center,
            up: false,
        }
    }

    fn colour(self, colour: RGBColor) -> Self {
        Self { colour, ..self }
    }

    /// `h` is along the text (its start, centre or end at the point), `v`
    /// across it (the top of the capitals, their middle, or the bottom of
    /// the descenders at the point).
    fn anchor(self, h: HPos, v: VPos) -> Self {
        Self { h, v, ..self }
    }

    fn up(self) -> Self {
        Self { up: true, ..self }
    }
}

/// Advance width of `text` in pixels (plotters' layout, kerning included).
fn text_width(area: &Area<'_>, text: &str, size: f64) -> Result<i32> {
    let (w, _) = area
        .estimate_text_size(text, &font(size))
        .map_err(plot_error)?;
    Ok(w as i32)
}

/// Writes `text` at `at` as `label` says, one character at a time with its
/// side bearing (see the module docs).
fn write(area: &Area<'_>, text: &str, label: Label, at: (i32, i32)) -> Result<()> {
    if text.is_empty() {
        return Ok(());
    }
    let size = label.size;
    let mut style = font(size)
        .color(&label.colour)
        .pos(Pos::new(HPos::Left, VPos::Top));
    if label.up {
        style = style.transform(FontTransform::Rotate270);
    }
    let width = text_width(area, text, size)?;
    let start = match label.h {
        HPos::Left => 0,
        HPos::Center => -width / 2,
        HPos::Right => -width,
    };
    // plotters puts the baseline half a size below a top-anchored point.
    // DejaVu's capitals rise 0.63 size above it, descenders drop 0.2 below.
    let (cap_top, baseline) = (size * (0.5 - 0.63), size * 0.5);
    let across = match label.v {
        VPos::Top => cap_top,
        VPos::Center => (cap_top + baseline) / 2.0,
        VPos::Bottom => baseline + 0.2 * size,
    }
    .round() as i32;
    let metrics = font_metrics();
    let mut utf8 = [0u8; 4];
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            continue;
        }
        let pen = if i == 0 {
            0
        } else {
            text_width(area, &text[..i], size)?
        };
        let along = start + pen + metrics.map_or(0, |m| m.bearing(c, size));
        let pos = if label.up {
            (at.0 - across, at.1 - along)
        } else {
            (at.0 + along, at.1 - across)
        };
        area.draw_text(c.encode_utf8(&mut utf8), &style, pos)
            .map_err(plot_error)?;
    }
    Ok(())
}

/// Writes `title` centred in a band at the top of `area`.
fn title_band(area: &Area<'_>, title: &str) -> Result<()> {
    let (width, _) = area.dim_in_pixel();
    write(
        area,
        title,
        Label::new(20.0),
        (width as i32 / 2, TITLE_BAND / 2 + 2),
    )
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

// ------------------------------------------------------------------ axes

/// "Nice" tick values (steps of 1, 2 or 5 times a power of ten) in
/// `lo..=hi`, about `target` of them, and the decimals their step needs.
fn nice_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, usize) {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return (vec![lo], 0);
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    let ticks = (first..=last).map(|k| k as f64 * step).collect();
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    (ticks, decimals)
}

/// A plotting box in pixels and the data ranges it shows.
struct Frame {
    x0: i32,
    y0: i32,
    x1: i32,
    y1: i32,
    xs: (f64, f64),
    ys: (f64, f64),
}

impl Frame {
    /// The pixel of a data point (clamped to the box).
    fn px(&self, x: f64, y: f64) -> (i32, i32) {
        let fx = ((x - self.xs.0) / (self.xs.1 - self.xs.0)).clamp(0.0, 1.0);
        let fy = ((y - self.ys.0) / (self.ys.1 - self.ys.0)).clamp(0.0, 1.0);
        (
            self.x0 + (fx * (self.x1 - self.x0) as f64).round() as i32,
            self.y1 - (fy * (self.y1 - self.y0) as f64).round() as i32,
        )
    }

    /// Grid lines at the y ticks (and the x ticks when `x_grid`), the left
    /// and bottom axes with tick marks and labels.
    fn axes(
        &self,
        area: &Area<'_>,
        x_ticks: &[(f64, String)],
        y_ticks: &[(f64, String)],
        x_grid: bool,
    ) -> Result<()> {
        let grid = GRID_COLOUR.stroke_width(1);
        let ink = TEXT_COLOUR.stroke_width(1);
        let tick_label = Label::new(12.0);
        for (y, text) in y_ticks {
            let (_, py) = self.px(self.xs.0, *y);
            if py > self.y0 && py < self.y1 {
                line(area, vec![(self.x0 + 1, py), (self.x1, py)], grid)?;
            }
            line(area, vec![(self.x0 - 4, py), (self.x0, py)], ink)?;
            let at = (self.x0 - 8, py);
            write(area, text, tick_label.anchor(HPos::Right, VPos::Center), at)?;
        }
        for (x, text) in x_ticks {
            let (px, _) = self.px(*x, self.ys.0);
            if x_grid && px > self.x0 && px < self.x1 {
                line(area, vec![(px, self.y0), (px, self.y1 - 1)], grid)?;
            }
            line(area, vec![(px, self.y1), (px, self.y1 + 4)], ink)?;
            let at = (px, self.y1 + 9);
            write(area, text, tick_label.anchor(HPos::Center, VPos::Top), at)?;
        }
        line(area, vec![(self.x0, self.y0), (self.x0, self.y1)], ink)?;
        line(area, vec![(self.x0, self.y1), (self.x1, self.y1)], ink)?;
        Ok(())
    }

    /// Axis titles: `x` under the tick labels, `y` read upwards at `y_at`.
    fn axis_titles(&self, area: &Area<'_>, x: &str, y: &str, y_at: i32) -> Result<()> {
        let label = Label::new(14.0);
        write(
            area,
            x,
            label.anchor(HPos::Center, VPos::Top),
            ((self.x0 + self.x1) / 2, self.y1 + 32),
        )?;
        write(area, y, label.up(), (y_at, (self.y0 + self.y1) / 2))
    }
}

/// Where a legend goes inside a frame.
#[derive(Debug, Clone, Copy)]
enum Corner {
    UpperRight,
    LowerRight,
}

/// A boxed legend of coloured line samples and names.
fn legend(
    area: &Area<'_>,
    frame: &Frame,
    entries: &[(&str, RGBColor)],
    corner: Corner,
) -> Result<()> {
    let size = 13.0;
    let mut widest = 0;
    for (name, _) in entries {
        widest = widest.max(text_width(area, name, size)?);
    }
    let (w, h) = (12 + 24 + 8 + widest + 12, 10 + 20 * entries.len() as i32);
    let x0 = frame.x1 - 12 - w;
    let y0 = match corner {
        Corner::UpperRight => frame.y0 + 12,
        Corner::LowerRight => frame.y1 - 12 - h,
    };
    rect(area, (x0, y0), (x0 + w, y0 + h), WHITE.filled())?;
    rect(
        area,
        (x0, y0),
        (x0 + w, y0 + h),
        RGBColor(190, 190, 190).stroke_width(1),
    )?;
    for (i, (name, colour)) in entries.iter().enumerate() {
        let y = y0 + 15 + 20 * i as i32;
        line(
            area,
            vec![(x0 + 12, y), (x0 + 36, y)],
            colour.stroke_width(3),
        )?;
        write(
            area,
            name,
            Label::new(size).anchor(HPos::Left, VPos::Center),
            (x0 + 44, y),
        )?;
    }
    Ok(())
}

// --------------------------------------------------------------- heatmap

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

// ---------------------------------------------------------------- curves

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

// ------------------------------------------------------------------ bars

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

    #[test]
    fn nice_ticks_step_by_one_two_or_five() {
        assert_eq!(
            nice_ticks(0.0, 1.0, 5),
            (vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0], 1)
        );
        assert_eq!(
            nice_ticks(1.0, 30.0, 10).0,
            vec![5.0, 10.0, 15.0, 20.0, 25.0, 30.0]
        );
        assert_eq!(nice_ticks(1.0, 1.0, 10).0, vec![1.0]);
    }

    #[test]
    fn font_metrics_read_dejavu() {
        let m = font_metrics().expect("DejaVu Sans parses");
        // DejaVu Sans: hhea ascender 1901, descender -483.
        assert_eq!(m.height, 2384.0);
        assert_ne!(m.glyph('a'), Some(0));
        assert_eq!(m.glyph('\u{10FFFF}'), Some(0));
        // 'l' sits 193 units right of its origin: 8 px at 100 px.
        assert_eq!(
            m.bearing('l', 100.0),
            (193.0f64 * 100.0 / 2384.0).floor() as i32
        );
    }
}
