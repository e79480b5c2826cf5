//! Axes: "nice" tick values, the plotting frame (data to pixels, grid,
//! ticks, axis titles) and the boxed legend.

use super::canvas::{Area, line, rect};
use super::text::{Label, text_width, write};
use super::{GRID_COLOUR, TEXT_COLOUR};
use anyhow::Result;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

/// "Nice" tick values (steps of 1, 2 or 5 times a power of ten) in
/// `lo..=hi`, about `target` of them, and the decimals their step needs.
pub(super) fn nice_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, usize) {
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
pub(super) struct Frame {
    pub(super) x0: i32,
    pub(super) y0: i32,
    pub(super) x1: i32,
    pub(super) y1: i32,
    pub(super) xs: (f64, f64),
    pub(super) ys: (f64, f64),
}

impl Frame {
    /// The pixel of a data point (clamped to the box).
    pub(super) fn px(&self, x: f64, y: f64) -> (i32, i32) {
        let fx = ((x - self.xs.0) / (self.xs.1 - self.xs.0)).clamp(0.0, 1.0);
        let fy = ((y - self.ys.0) / (self.ys.1 - self.ys.0)).clamp(0.0, 1.0);
        (
            self.x0 + (fx * (self.x1 - self.x0) as f64).round() as i32,
            self.y1 - (fy * (self.y1 - self.y0) as f64).round() as i32,
        )
    }

    /// Grid lines at the y ticks (and the x ticks when `x_grid`), the left
    /// and bottom axes with tick marks and labels.
    pub(super) fn axes(
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
    pub(super) fn axis_titles(&self, area: &Area<'_>, x: &str, y: &str, y_at: i32) -> Result<()> {
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
pub(super) enum Corner {
    UpperRight,
    LowerRight,
}

/// A boxed legend of coloured line samples and names.
pub(super) fn legend(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
