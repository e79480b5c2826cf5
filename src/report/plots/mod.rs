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

mod axes;
mod bars;
mod canvas;
mod curves;
mod heatmap;
mod text;

pub use bars::{Bar, bars_png};
pub use curves::curves_png;
pub use heatmap::confusion_png;

use plotters::style::RGBColor;

/// Size of [`confusion_png`]'s image in pixels.
pub const CONFUSION_SIZE: (u32, u32) = (900, 700);
/// Size of [`curves_png`]'s image in pixels.
pub const CURVES_SIZE: (u32, u32) = (1200, 450);
/// Size of [`bars_png`]'s image in pixels.
pub const BARS_SIZE: (u32, u32) = (1000, 600);

const TRAIN_COLOUR: RGBColor = RGBColor(31, 119, 180);
const VAL_COLOUR: RGBColor = RGBColor(255, 127, 14);
const BAR_COLOUR: RGBColor = RGBColor(66, 146, 198);
const GRID_COLOUR: RGBColor = RGBColor(225, 225, 225);
const TEXT_COLOUR: RGBColor = RGBColor(20, 20, 20);
/// Height of the band that holds a figure's title.
const TITLE_BAND: i32 = 46;
