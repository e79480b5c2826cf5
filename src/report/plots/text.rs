//! Text: the embedded font, its registration with plotters, and writing
//! text one glyph at a time with the side bearings plotters leaves out.

use super::canvas::{Area, plot_error};
use super::{TEXT_COLOUR, TITLE_BAND};
use anyhow::{Result, bail};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::sync::OnceLock;

/// DejaVu Sans 2.37 (Debian's fonts-dejavu-core); licence in assets/fonts.
static DEJAVU_SANS: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

const FONT: &str = "sans-serif";

/// Registers the embedded font as plotters' "sans-serif" (once per process).
pub(super) fn register_font() -> Result<()> {
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
pub(super) struct Label {
    size: f64,
    colour: RGBColor,
    h: HPos,
    v: VPos,
    /// Read bottom to top (rotated a quarter turn anticlockwise).
    up: bool,
}

impl Label {
    /// Centred, dark, horizontal text of `size` pixels.
    pub(super) fn new(size: f64) -> Self {
        Self {
            size,
            colour: TEXT_COLOUR,
            h: HPos::Center,
            v: VPos::Center,
            up: false,
        }
    }

    pub(super) fn colour(self, colour: RGBColor) -> Self {
        Self { colour, ..self }
    }

    /// `h` is along the text (its start, centre or end at the point), `v`
    /// across it (the top of the capitals, their middle, or the bottom of
    /// the descenders at the point).
    pub(super) fn anchor(self, h: HPos, v: VPos) -> Self {
        Self { h, v, ..self }
    }

    pub(super) fn up(self) -> Self {
        Self { up: true, ..self }
    }
}

/// Advance width of `text` in pixels (plotters' layout, kerning included).
pub(super) fn text_width(area: &Area<'_>, text: &str, size: f64) -> Result<i32> {
    let (w, _) = area
        .estimate_text_size(text, &font(size))
        .map_err(plot_error)?;
    Ok(w as i32)
}

/// Writes `text` at `at` as `label` says, one character at a time with its
/// side bearing (see the module docs).
pub(super) fn write(area: &Area<'_>, text: &str, label: Label, at: (i32, i32)) -> Result<()> {
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
pub(super) fn title_band(area: &Area<'_>, title: &str) -> Result<()> {
    let (width, _) = area.dim_in_pixel();
    write(
        area,
        title,
        Label::new(20.0),
        (width as i32 / 2, TITLE_BAND / 2 + 2),
    )
}

/// `text`, cut to `max` characters with an ellipsis.
pub(super) fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_keeps_short_text() {
        assert_eq!(shorten("anger", 24), "anger");
        assert_eq!(shorten("abcdef", 4), "abc…");
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
