//! Line charts: one panel, or several side by side with their own axes.

use std::path::Path;

use anyhow::{Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::LineChart;
use super::axis::{Axis, padded_linear, padded_log};
use super::common::{
    AXIS_DESC_SIZE, FONT, Figure, PALETTE_LEN, PANEL_TITLE_SIZE, TICK_SIZE, TITLE_BAND, TITLE_SIZE,
    draw_note, draw_panel_title, draw_title, ensure_font, series_color, text_width, write_figure,
};
use super::legend::{
    Legend, LegendEntry, Swatch, emptiest_spot, goes_outside, outside_margin, outside_position,
    sample_polyline,
};

/// Writes stem.png and stem.svg. Non-finite points (NaN/inf from a diverging run) are skipped,
/// a series with no finite point still appears in the legend, marked "(diverged)" (so does a
/// series that has some non-finite y values; a series with no points at all is marked
/// "(no data)"). Axis ranges come from the finite data with a small margin; a single point or
/// a constant series still renders, and a chart without any finite point says "no data".
/// The legend sits in the emptiest spot inside the plot, or right of it when no spot is free;
/// past ten series colours repeat with dashed lines, and a legend too long to fit ends in
/// "… N more".
pub fn line_chart(chart: &LineChart, stem: &Path) -> Result<()> {
    ensure_font()?;
    write_figure(&Single(chart), stem)
}

/// Several line charts side by side in one figure (e.g. "train and validation time vs epoch"),
/// each with its own axes and legend, under a common title. More than three panels wrap onto
/// further rows.
pub fn line_charts(title: &str, panels: &[LineChart], stem: &Path) -> Result<()> {
    ensure_font()?;
    if panels.is_empty() {
        bail!("line_charts({}): no panels to draw", stem.display());
    }
    write_figure(&Multi { title, panels }, stem)
}

struct Single<'a>(&'a LineChart);

impl Figure for Single<'_> {
    fn size(&self) -> (u32, u32) {
        (900, 600)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        draw_panel(&root.margin(4, 4, 4, 8), self.0, TITLE_SIZE)
    }
}

struct Multi<'a> {
    title: &'a str,
    panels: &'a [LineChart],
}

impl Multi<'_> {
    fn grid(&self) -> (usize, usize) {
        let cols = self.panels.len().clamp(1, 3);
        (self.panels.len().div_ceil(cols), cols)
    }
}

impl Figure for Multi<'_> {
    fn size(&self) -> (u32, u32) {
        let (rows, cols) = self.grid();
        let rows = u32::try_from(rows).unwrap_or(u32::MAX);
        (
            (cols as u32 * 500).max(900),
            rows.saturating_mul(480).saturating_add(TITLE_BAND),
        )
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let body = draw_title(root, self.title)?;
        let (rows, cols) = self.grid();
        for (panel, area) in self.panels.iter().zip(body.split_evenly((rows, cols))) {
            draw_panel(&area.margin(0, 6, 6, 10), panel, PANEL_TITLE_SIZE)?;
        }
        Ok(())
    }
}

/// A series reduced to what gets drawn: runs of consecutive drawable points (a gap where a
/// point is skipped, rather than a line bridging it).
struct Prepared {
    label: String,
    color: RGBColor,
    dashed: bool,
    runs: Vec<Vec<(f64, f64)>>,
    /// (x, low, high) of the drawable points that have a finite spread, in runs like `runs`.
    spread: Vec<Vec<(f64, f64, f64)>>,
    bars: bool,
    n_drawn: usize,
}

/// (x_min, x_max, y_min, y_max) of the drawable points.
type Bounds = (f64, f64, f64, f64);

/// Prepared series plus the data bounds, None if nothing to draw.
fn prepare(chart: &LineChart) -> (Vec<Prepared>, Option<Bounds>) {
    let mut bounds: Option<Bounds> = None;
    let mut out = Vec::with_capacity(chart.series.len());
    for (i, s) in chart.series.iter().enumerate() {
        let mut runs = Vec::new();
        let mut run = Vec::new();
        let mut spread = Vec::new();
        let mut spread_run = Vec::new();
        let mut n_drawn = 0;
        for (j, &(x, y)) in s.points.iter().enumerate() {
            if x.is_finite() && y.is_finite() && (!chart.log_y || y > 0.0) {
                run.push((x, y));
                n_drawn += 1;
                let b = bounds.get_or_insert((x, x, y, y));
                *b = (b.0.min(x), b.1.max(x), b.2.min(y), b.3.max(y));
                match s.spread.get(j) {
                    Some(&(lo, hi))
                        if lo.is_finite() && hi.is_finite() && (!chart.log_y || lo > 0.0) =>
                    {
                        spread_run.push((x, lo, hi));
                        *b = (b.0, b.1, b.2.min(lo), b.3.max(hi));
                    }
                    _ if !spread_run.is_empty() => spread.push(std::mem::take(&mut spread_run)),
                    _ => {}
                }
            } else {
                if !run.is_empty() {
                    runs.push(std::mem::take(&mut run));
                }
                if !spread_run.is_empty() {
                    spread.push(std::mem::take(&mut spread_run));
                }
            }
        }
        if !run.is_empty() {
            runs.push(run);
        }
        if !spread_run.is_empty() {
            spread.push(spread_run);
        }
        let diverged = s.points.iter().any(|p| !p.1.is_finite());
        let label = if s.points.is_empty() {
            format!("{} (no data)", s.label)
        } else if diverged {
            format!("{} (diverged)", s.label)
        } else if n_drawn == 0 {
            format!("{} (no positive values)", s.label)
        } else {
            s.label.clone()
        };
        out.push(Prepared {
            label,
            color: series_color(i),
            // Past the palette, colours repeat: dashes tell the repeats apart.
            dashed: (i / PALETTE_LEN) % 2 == 1,
            runs,
            spread,
            bars: s.bars,
            n_drawn,
        });
    }
    (out, bounds)
}

const MARGIN: i32 = 6;
const RIGHT_MARGIN: i32 = 18;

/// Draws one titled chart filling `area`.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &LineChart,
    title_size: f64,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (prepared, bounds) = prepare(chart);
    let (x_axis, y_axis) = match bounds {
        Some((x0, x1, y0, y1)) => {
            let (xl, xh) = padded_linear(x0, x1, 0.02);
            let y = if chart.log_y {
                let (lo, hi) = padded_log(y0, y1, 0.04);
                Axis::Log { lo, hi }
            } else {
                let (lo, hi) = padded_linear(y0, y1, 0.05);
                Axis::Linear { lo, hi }
            };
            (Axis::Linear { lo: xl, hi: xh }, y)
        }
        None => (
            Axis::Linear { lo: 0.0, hi: 1.0 },
            if chart.log_y {
                Axis::Log { lo: 0.1, hi: 10.0 }
            } else {
                Axis::Linear { lo: 0.0, hi: 1.0 }
            },
        ),
    };

    // The title is centred over the whole panel, not just the part left of an outside legend.
    let area = &draw_panel_title(area, &chart.title, title_size)?;
    let (aw, ah) = area.dim_in_pixel();
    let n_y_labels = ((ah as f64 / 60.0) as usize).clamp(3, 10);
    let n_x_labels = ((aw as f64 / 90.0) as usize).clamp(3, 10);
    let tick_w = y_axis
        .ticks(n_y_labels)
        .iter()
        .map(|v| text_width(&y_axis.label(*v), TICK_SIZE))
        .max()
        .unwrap_or(0);
    let y_area = tick_w + if chart.y_label.is_empty() { 18 } else { 40 };
    let x_area: u32 = if chart.x_label.is_empty() { 30 } else { 52 };
    // The plotting rectangle (absolute pixels) with the legend inside, as plotters will lay it
    // out; the legend's place has to be settled before the chart is built.
    let base = area.get_base_pixel();
    let inside = (
        base.0 + MARGIN + y_area as i32,
        base.1 + MARGIN,
        base.0 + aw as i32 - RIGHT_MARGIN,
        base.1 + ah as i32 - MARGIN - x_area as i32,
    );
    let plot_h = inside.3 - inside.1;

    let entries: Vec<LegendEntry> = prepared
        .iter()
        .map(|p| LegendEntry {
            label: p.label.clone(),
            color: p.color,
            swatch: Swatch::Line { dashed: p.dashed },
        })
        .collect();
    let legend = Legend::new(
        entries,
        (plot_h / 20).max(3) as usize,
        (aw as f64 * 0.3) as u32,
    );
    let (lw, lh) = legend.size();
    let outside = {
        let mut samples = Vec::new();
        for p in &prepared {
            for run in &p.runs {
                let px: Vec<(i32, i32)> = run
                    .iter()
                    .map(|(x, y)| {
                        (
                            x_axis.map(x, (inside.0, inside.2)),
                            y_axis.map(y, (inside.3, inside.1)),
                        )
                    })
                    .collect();
                sample_polyline(&px, &mut samples);
            }
        }
        goes_outside(&legend, inside, &samples)
    };

    let mut builder = ChartBuilder::on(area);
    builder
        .margin_top(MARGIN)
        .margin_bottom(MARGIN)
        .margin_left(MARGIN)
        .margin_right(if outside {
            outside_margin(&legend)
        } else {
            RIGHT_MARGIN
        })
        .x_label_area_size(x_area)
        .y_label_area_size(y_area);
    let mut ctx = builder.build_cartesian_2d(x_axis, y_axis)?;
    ctx.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .x_labels(n_x_labels)
        .y_labels(n_y_labels)
        .label_style((FONT, TICK_SIZE))
        .axis_desc_style((FONT, AXIS_DESC_SIZE))
        .bold_line_style(BLACK.mix(0.1))
        .light_line_style(TRANSPARENT)
        .axis_style(BLACK.mix(0.6))
        .draw()?;

    // Spreads first, under every line: a shaded band, or error bars with caps.
    for p in &prepared {
        for run in &p.spread {
            if p.bars {
                let style = ShapeStyle::from(&p.color.mix(0.7)).stroke_width(1);
                for &(x, lo, hi) in run {
                    ctx.draw_series(std::iter::once(PathElement::new(
                        vec![(x, lo), (x, hi)],
                        style,
                    )))?;
                    for y in [lo, hi] {
                        ctx.draw_series(std::iter::once(
                            EmptyElement::at((x, y))
                                + PathElement::new(vec![(-4, 0), (4, 0)], style),
                        ))?;
                    }
                }
            } else if run.len() >= 2 {
                let outline: Vec<(f64, f64)> = run
                    .iter()
                    .map(|&(x, _, hi)| (x, hi))
                    .chain(run.iter().rev().map(|&(x, lo, _)| (x, lo)))
                    .collect();
                ctx.draw_series(std::iter::once(Polygon::new(
                    outline,
                    p.color.mix(0.18).filled(),
                )))?;
            }
        }
    }

    let mut samples = Vec::new();
    for p in &prepared {
        let style = ShapeStyle::from(&p.color).stroke_width(2);
        let markers = p.n_drawn <= 25;
        for run in &p.runs {
            if run.len() >= 2 {
                if p.dashed {
                    ctx.draw_series(DashedLineSeries::new(run.iter().copied(), 9, 5, style))?;
                } else {
                    ctx.draw_series(LineSeries::new(run.iter().copied(), style))?;
                }
            }
            if markers || run.len() == 1 {
                ctx.draw_series(run.iter().map(|&pt| Circle::new(pt, 3, p.color.filled())))?;
            }
            let px: Vec<(i32, i32)> = run.iter().map(|pt| ctx.backend_coord(pt)).collect();
            sample_polyline(&px, &mut samples);
        }
    }

    let (xr, yr) = ctx.plotting_area().get_pixel_range();
    if bounds.is_none() {
        let center = (
            (xr.start + xr.end) / 2 - base.0,
            (yr.start + yr.end) / 2 - base.1,
        );
        draw_note(area, "no data", center)?;
    }
    if !legend.is_empty() {
        let at = if outside {
            outside_position(xr.end, yr.start)
        } else {
            emptiest_spot((xr.start, yr.start, xr.end, yr.end), (lw, lh), &samples).0
        };
        legend.draw(area, (at.0 - base.0, at.1 - base.1))?;
    }
    Ok(())
}
