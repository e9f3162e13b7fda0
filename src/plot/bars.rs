//! Grouped bar charts.

use std::path::Path;

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::BarChart;
use super::axis::{Axis, padded_linear};
use super::common::{
    AXIS_DESC_SIZE, FONT, Figure, TICK_SIZE, TITLE_SIZE, draw_note, draw_panel_title, ensure_font,
    series_color, text_width, truncate_to_width, write_figure,
};
use super::legend::{
    Legend, LegendEntry, Swatch, emptiest_spot, goes_outside, outside_margin, outside_position,
};

/// Writes stem.png and stem.svg: one group of bars per category, one bar per series (coloured
/// as in line charts), bars from zero. `groups[s].points[i].1` is series s's value for
/// `categories[i]`; a missing or non-finite value leaves a gap. No categories or no finite
/// value gives an empty chart saying "no data".
pub fn bar_chart(chart: &BarChart, stem: &Path) -> Result<()> {
    ensure_font()?;
    write_figure(&Bars(chart), stem)
}

struct Bars<'a>(&'a BarChart);

const MARGIN: i32 = 6;
const RIGHT_MARGIN: i32 = 18;
/// Share of a category slot the bars of a group take; the rest separates groups.
const GROUP_WIDTH: f64 = 0.8;

impl Figure for Bars<'_> {
    fn size(&self) -> (u32, u32) {
        (900, 600)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        draw_bars(&root.margin(4, 4, 4, 8), self.0)
    }
}

/// (category index, series index, value) for every drawable bar.
fn bars(chart: &BarChart) -> Vec<(usize, usize, f64)> {
    let mut out = Vec::new();
    for (s, series) in chart.groups.iter().enumerate() {
        for (c, &(_, v)) in series
            .points
            .iter()
            .enumerate()
            .take(chart.categories.len())
        {
            if v.is_finite() {
                out.push((c, s, v));
            }
        }
    }
    out
}

/// Data-space rectangle of one bar: (x_left, x_right, 0, value).
fn bar_rect(chart: &BarChart, (c, s, v): (usize, usize, f64)) -> (f64, f64, f64, f64) {
    let n = chart.groups.len().max(1) as f64;
    let w = GROUP_WIDTH / n;
    let left = c as f64 - GROUP_WIDTH / 2.0 + s as f64 * w;
    // A hairline gap between neighbouring bars keeps same-height bars apart.
    (left + w * 0.04, left + w * 0.96, 0.0, v)
}

fn draw_bars<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, chart: &BarChart) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let bars = bars(chart);
    let (lo, hi) = bars.iter().fold((0.0f64, 0.0f64), |(lo, hi), &(_, _, v)| {
        (lo.min(v), hi.max(v))
    });
    let (mut y_lo, y_hi) = if bars.is_empty() {
        (0.0, 1.0)
    } else {
        padded_linear(lo, hi, 0.05)
    };
    if lo >= 0.0 && hi > 0.0 {
        y_lo = 0.0; // bars stand on the axis
    }
    let y_axis = Axis::Linear { lo: y_lo, hi: y_hi };

    let area = &draw_panel_title(area, &chart.title, TITLE_SIZE)?;
    let (aw, ah) = area.dim_in_pixel();
    let tick_w = y_axis
        .ticks(8)
        .iter()
        .map(|v| text_width(&y_axis.label(*v), TICK_SIZE))
        .max()
        .unwrap_or(0);
    let y_area = tick_w + if chart.y_label.is_empty() { 18 } else { 40 };
    let x_area: u32 = if chart.x_label.is_empty() { 30 } else { 52 };
    let base = area.get_base_pixel();
    let inside = (
        base.0 + MARGIN + y_area as i32,
        base.1 + MARGIN,
        base.0 + aw as i32 - RIGHT_MARGIN,
        base.1 + ah as i32 - MARGIN - x_area as i32,
    );

    let entries: Vec<LegendEntry> = chart
        .groups
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.label.is_empty())
        .map(|(i, s)| LegendEntry {
            label: s.label.clone(),
            color: series_color(i),
            swatch: Swatch::Box,
        })
        .collect();
    let legend = Legend::new(
        entries,
        ((inside.3 - inside.1) / 20).max(3) as usize,
        (aw as f64 * 0.3) as u32,
    );
    let x_axis_at = |l: i32, r: i32| -> Axis {
        let n = chart.categories.len().max(1) as f64;
        let slot = ((r - l) as f64 / n) as u32;
        Axis::Categories(
            chart
                .categories
                .iter()
                .map(|c| truncate_to_width(c, TICK_SIZE, slot.saturating_sub(6)))
                .collect(),
        )
    };
    let outside = {
        let x_axis = x_axis_at(inside.0, inside.2);
        let mut samples = Vec::new();
        for &b in &bars {
            let (xl, xr, y0, y1) = bar_rect(chart, b);
            let (pl, pr) = (
                x_axis.map(&xl, (inside.0, inside.2)),
                x_axis.map(&xr, (inside.0, inside.2)),
            );
            let (pb, pt) = (
                y_axis.map(&y0, (inside.3, inside.1)),
                y_axis.map(&y1, (inside.3, inside.1)),
            );
            sample_rect((pl, pt.min(pb), pr, pt.max(pb)), &mut samples);
        }
        goes_outside(&legend, inside, &samples)
    };
    let right = if outside {
        outside_margin(&legend)
    } else {
        RIGHT_MARGIN
    };
    let x_axis = x_axis_at(inside.0, base.0 + aw as i32 - right);

    let mut builder = ChartBuilder::on(area);
    builder
        .margin_top(MARGIN)
        .margin_bottom(MARGIN)
        .margin_left(MARGIN)
        .margin_right(right)
        .x_label_area_size(x_area)
        .y_label_area_size(y_area);
    let mut ctx = builder.build_cartesian_2d(x_axis, y_axis)?;
    ctx.configure_mesh()
        .disable_x_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .x_labels(chart.categories.len().max(1))
        .y_labels(8)
        .label_style((FONT, TICK_SIZE))
        .axis_desc_style((FONT, AXIS_DESC_SIZE))
        .bold_line_style(BLACK.mix(0.1))
        .light_line_style(TRANSPARENT)
        .axis_style(BLACK.mix(0.6))
        .draw()?;

    ctx.draw_series(bars.iter().map(|&b| {
        let (xl, xr, y0, y1) = bar_rect(chart, b);
        Rectangle::new(
            [(xl, y1.max(y0)), (xr, y1.min(y0))],
            series_color(b.1).filled(),
        )
    }))?;
    if y_lo < 0.0 {
        // The zero line, so negative bars read as hanging from it.
        let (l, r) = (-0.5, chart.categories.len().max(1) as f64 - 0.5);
        ctx.draw_series(std::iter::once(PathElement::new(
            vec![(l, 0.0), (r, 0.0)],
            BLACK.mix(0.6),
        )))?;
    }

    let (xr, yr) = ctx.plotting_area().get_pixel_range();
    if bars.is_empty() {
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
            let mut samples = Vec::new();
            for &b in &bars {
                let (xl, xrr, y0, y1) = bar_rect(chart, b);
                let (pl, pt) = ctx.backend_coord(&(xl, y1.max(y0)));
                let (pr, pb) = ctx.backend_coord(&(xrr, y1.min(y0)));
                sample_rect((pl, pt, pr, pb), &mut samples);
            }
            emptiest_spot(
                (xr.start, yr.start, xr.end, yr.end),
                legend.size(),
                &samples,
            )
            .0
        };
        legend.draw(area, (at.0 - base.0, at.1 - base.1))?;
    }
    Ok(())
}

/// A grid of pixels every 4 px over a rectangle (x0, y0, x1, y1), for legend placement.
fn sample_rect((x0, y0, x1, y1): (i32, i32, i32, i32), out: &mut Vec<(i32, i32)>) {
    let mut y = y0;
    while y <= y1 {
        let mut x = x0;
        while x <= x1 {
            out.push((x, y));
            x += 4;
        }
        y += 4;
    }
}
