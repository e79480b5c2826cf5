//! The canvas: a white RGB buffer written as PNG, and the line and rectangle
//! primitives the figures draw with.

use super::text::register_font;
use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

pub(super) type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Draws with `draw` on a white `size` canvas and writes it to `path` as PNG.
pub(super) fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> Result<()>,
) -> Result<()> {
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
pub(super) fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing the plot: {e}")
}

pub(super) fn line(area: &Area<'_>, points: Vec<(i32, i32)>, style: ShapeStyle) -> Result<()> {
    area.draw(&PathElement::new(points, style))
        .map_err(plot_error)
}

pub(super) fn rect(
    area: &Area<'_>,
    (x0, y0): (i32, i32),
    (x1, y1): (i32, i32),
    style: ShapeStyle,
) -> Result<()> {
    let corners = [(x0.min(x1), y0.min(y1)), (x0.max(x1), y0.max(y1))];
    area.draw(&Rectangle::new(corners, style))
        .map_err(plot_error)
}
