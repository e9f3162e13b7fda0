//! Figures for experiment results: line charts (one or several panels), decision-boundary
//! panels, grouped bar charts and captioned image grids, each written as `<stem>.png` and
//! `<stem>.svg` from one drawing routine generic over the plotters backend.
//!
//! This module owns the look of every figure (fonts, palette, margins, legends, axis ticks) and
//! nothing else: it takes plain series, grids and RGB buffers, and knows nothing of models,
//! YAML or the pipeline. Text is drawn with an embedded DejaVu Sans (registered once), so
//! figures render the same on machines without any system font. Files are rendered under a
//! temporary name and renamed into place, so a crash never leaves half a figure behind.

mod axis;
mod bars;
mod common;
mod decision;
mod glyph_text;
mod images;
mod legend;
mod line;
#[cfg(test)]
mod tests;

pub use bars::bar_chart;
pub use decision::decision_boundaries;
pub use images::image_grid;
pub use line::{line_chart, line_charts};

/// One labelled curve (or, in a [`BarChart`], one group of bars).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// The spread around each point, (low, high) in step with `points` (e.g. mean ± sd over
    /// replicates); empty for none. Line charts shade it, or draw error bars with `bars`.
    pub spread: Vec<(f64, f64)>,
    pub bars: bool,
}

/// A line chart. Non-finite points are skipped (the curve is broken there rather than joined
/// across the gap); with `log_y`, values <= 0 are skipped too.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// log10 y axis (values <= 0 are skipped for log).
    pub log_y: bool,
    pub series: Vec<Series>,
}

/// One decision-boundary panel: a grid of predicted classes with test points on top.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecisionPanel {
    /// e.g. "depth 6, width 16 — test acc 0.91"
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
    /// (nx, ny). Cell (i, j) covers the i-th of nx equal slices of `x_range` and the j-th of ny
    /// equal slices of `y_range`, so predictions are best taken at cell centres.
    pub grid_size: (usize, usize),
    /// nx*ny predicted classes, row-major, row 0 = lowest y.
    pub grid_classes: Vec<u32>,
    /// Test points with their true class, drawn on top (small, dark outline).
    pub points: Vec<(f64, f64, u32)>,
    pub n_classes: usize,
}

/// Grouped bars: one group of bars per category, one bar per series in each group.
/// The value of series `s` for `categories[i]` is `s.points[i].1` (x is ignored);
/// a missing or non-finite value leaves a gap.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BarChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub categories: Vec<String>,
    pub groups: Vec<Series>,
}

/// One image of an [`image_grid`]: `rgb` holds `width * height` RGB triples, row by row from the top.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageTile {
    pub caption: String,
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}
