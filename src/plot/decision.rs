//! Decision-boundary panels: a class grid as light tints, test points on top, one shared class key.

use std::path::Path;

use anyhow::{Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::DecisionPanel;
use super::axis::{Axis, padded_linear};
use super::common::{
    AXIS_DESC_SIZE, FONT, Figure, LEGEND_SIZE, PANEL_TITLE_SIZE, TICK_SIZE, TITLE_BAND,
    class_color, draw_panel_title, draw_title, ensure_font, text_style, text_width, tint,
    write_figure,
};

/// One or more decision-boundary panels side by side (more than four wrap into a grid): each
/// grid cell filled with a light tint of its class colour, test points on top in the full class
/// colour with a dark outline, and a class key under the panels. A class keeps its colour in
/// every panel; 33+ classes get distinguishable colours (hue wheel with alternating lightness).
/// Errors if `panels` is empty, a grid's length is not nx*ny, or a range is not finite.
pub fn decision_boundaries(title: &str, panels: &[DecisionPanel], stem: &Path) -> Result<()> {
    ensure_font()?;
    if panels.is_empty() {
        bail!("decision_boundaries({}): no panels to draw", stem.display());
    }
    for (i, p) in panels.iter().enumerate() {
        let (nx, ny) = p.grid_size;
        let cells = nx.checked_mul(ny);
        if cells != Some(p.grid_classes.len()) {
            bail!(
                "decision panel {i} ({:?}): grid_classes has {} entries but grid_size {nx}x{ny} needs {}",
                p.title,
                p.grid_classes.len(),
                cells.map_or("more than usize::MAX".to_string(), |c| c.to_string()),
            );
        }
        for (name, (lo, hi)) in [("x_range", p.x_range), ("y_range", p.y_range)] {
            if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
                bail!(
                    "decision panel {i} ({:?}): {name} ({lo}, {hi}) must be finite with min <= max",
                    p.title
                );
            }
        }
    }
    // Same class, same colour across panels: size the palette for the largest class id seen.
    let n_classes = panels
        .iter()
        .flat_map(|p| {
            let grid_max = p.grid_classes.iter().map(|&c| c as usize + 1).max();
            let point_max = p.points.iter().map(|&(_, _, c)| c as usize + 1).max();
            [Some(p.n_classes), grid_max, point_max]
        })
        .flatten()
        .max()
        .unwrap_or(1)
        .max(1);
    let fig = Decision {
        title,
        panels,
        n_classes,
    };
    write_figure(&fig, stem)
}

struct Decision<'a> {
    title: &'a str,
    panels: &'a [DecisionPanel],
    n_classes: usize,
}

const PANEL_W: u32 = 450;
const PANEL_H: u32 = 470;
/// Past this many classes the key would be a wall of numbers; colours alone must do.
const MAX_KEYED_CLASSES: usize = 60;
const KEY_ROW_H: u32 = 22;

impl Decision<'_> {
    fn grid(&self) -> (usize, usize) {
        let n = self.panels.len();
        let cols = if n <= 4 {
            n
        } else {
            (n as f64).sqrt().ceil() as usize
        };
        (n.div_ceil(cols), cols)
    }

    fn width(&self) -> u32 {
        u32::try_from(self.grid().1)
            .unwrap_or(u32::MAX)
            .saturating_mul(PANEL_W)
            .max(640)
    }

    /// Class key items laid out in rows: (label, colour, x offset) per row.
    fn key_rows(&self) -> Vec<Vec<(String, RGBColor, u32)>> {
        if self.n_classes > MAX_KEYED_CLASSES {
            return Vec::new();
        }
        let max_w = self.width().saturating_sub(40);
        let mut rows: Vec<Vec<(String, RGBColor, u32)>> = vec![Vec::new()];
        let mut x = 0;
        for k in 0..self.n_classes {
            let label = if self.n_classes <= 10 {
                format!("class {k}")
            } else {
                k.to_string()
            };
            let item_w = 16 + 5 + text_width(&label, LEGEND_SIZE) + 16;
            if x > 0 && x + item_w > max_w {
                rows.push(Vec::new());
                x = 0;
            }
            if let Some(row) = rows.last_mut() {
                row.push((label, class_color(k, self.n_classes), x));
            }
            x += item_w;
        }
        rows
    }
}

impl Figure for Decision<'_> {
    fn size(&self) -> (u32, u32) {
        let rows = u32::try_from(self.grid().0).unwrap_or(u32::MAX);
        let key_h = self.key_rows().len() as u32 * KEY_ROW_H + 16;
        let h = rows
            .saturating_mul(PANEL_H)
            .saturating_add(TITLE_BAND + key_h);
        (self.width(), h)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let body = draw_title(root, self.title)?;
        let key_rows = self.key_rows();
        let key_h = key_rows.len() as u32 * KEY_ROW_H + 16;
        let (_, body_h) = body.dim_in_pixel();
        let (panels_area, key_area) = body.split_vertically(body_h.saturating_sub(key_h));
        let (rows, cols) = self.grid();
        // Panels keep their nominal size and the grid is centred, so a single panel stays square.
        let grid_w = (cols as u32 * PANEL_W) as i32;
        let (aw, _) = panels_area.dim_in_pixel();
        let left = (aw as i32 - grid_w).max(0) / 2;
        let panels_area = panels_area.margin(0, 0, left, 0);
        let cells = panels_area.split_evenly((rows, cols));
        for (panel, area) in self.panels.iter().zip(cells) {
            draw_panel(&area.margin(0, 8, 6, 14), panel, self.n_classes)?;
        }
        draw_key(&key_area, &key_rows)
    }
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &DecisionPanel,
    n_classes: usize,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let area = &draw_panel_title(area, &panel.title, PANEL_TITLE_SIZE)?;
    let (x0, x1) = non_empty(panel.x_range);
    let (y0, y1) = non_empty(panel.y_range);
    let x_axis = Axis::Linear { lo: x0, hi: x1 };
    let y_axis = Axis::Linear { lo: y0, hi: y1 };
    let tick_w = y_axis
        .ticks(6)
        .iter()
        .map(|v| text_width(&y_axis.label(*v), TICK_SIZE))
        .max()
        .unwrap_or(0);

    let mut builder = ChartBuilder::on(area);
    builder
        .margin(4)
        .x_label_area_size(if panel.x_label.is_empty() { 28 } else { 48 })
        .y_label_area_size(tick_w + if panel.y_label.is_empty() { 16 } else { 38 });
    let mut ctx = builder.build_cartesian_2d(x_axis, y_axis)?;
    ctx.configure_mesh()
        .disable_mesh()
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .x_labels(6)
        .y_labels(6)
        .label_style((FONT, TICK_SIZE))
        .axis_desc_style((FONT, AXIS_DESC_SIZE))
        .axis_style(BLACK.mix(0.6))
        .draw()?;

    // Runs of equal class within a row become one rectangle: far fewer SVG elements than cells.
    let (nx, ny) = panel.grid_size;
    let (dx, dy) = ((x1 - x0) / nx.max(1) as f64, (y1 - y0) / ny.max(1) as f64);
    let mut cells = Vec::new();
    for (j, row) in panel.grid_classes.chunks(nx.max(1)).enumerate().take(ny) {
        let mut i = 0;
        while i < row.len() {
            let class = row[i];
            let mut k = i + 1;
            while k < row.len() && row[k] == class {
                k += 1;
            }
            let color = tint(class_color(class as usize, n_classes), 0.33);
            cells.push(Rectangle::new(
                [
                    (x0 + i as f64 * dx, y0 + (j + 1) as f64 * dy),
                    (x0 + k as f64 * dx, y0 + j as f64 * dy),
                ],
                color.filled(),
            ));
            i = k;
        }
    }
    ctx.draw_series(cells)?;

    let visible: Vec<(f64, f64, u32)> = panel
        .points
        .iter()
        .copied()
        .filter(|&(x, y, _)| x >= x0 && x <= x1 && y >= y0 && y <= y1)
        .collect();
    let radius = if visible.len() > 1500 { 3 } else { 4 };
    let outline = ShapeStyle::from(&RGBColor(30, 30, 30).mix(0.85)).stroke_width(1);
    ctx.draw_series(visible.iter().flat_map(|&(x, y, c)| {
        [
            Circle::new((x, y), radius, class_color(c as usize, n_classes).filled()),
            Circle::new((x, y), radius, outline),
        ]
    }))?;

    // The tints cover the inner edge of the axes; redraw the frame on top.
    let (xr, yr) = ctx.plotting_area().get_pixel_range();
    let base = area.get_base_pixel();
    area.draw(&Rectangle::new(
        [
            (xr.start - base.0, yr.start - base.1),
            (xr.end - 1 - base.0, yr.end - 1 - base.1),
        ],
        ShapeStyle::from(&BLACK.mix(0.6)).stroke_width(1),
    ))?;
    Ok(())
}

/// A zero-width range still gets an axis.
fn non_empty((lo, hi): (f64, f64)) -> (f64, f64) {
    if hi > lo {
        (lo, hi)
    } else {
        padded_linear(lo, hi, 0.0)
    }
}

fn draw_key<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    rows: &[Vec<(String, RGBColor, u32)>],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (aw, _) = area.dim_in_pixel();
    let style = text_style(LEGEND_SIZE).pos(Pos::new(HPos::Left, VPos::Center));
    let outline = ShapeStyle::from(&RGBColor(30, 30, 30).mix(0.85)).stroke_width(1);
    for (r, row) in rows.iter().enumerate() {
        let row_w = row
            .last()
            .map(|(label, _, x)| x + 16 + 5 + text_width(label, LEGEND_SIZE))
            .unwrap_or(0);
        let left = (aw as i32 - row_w as i32).max(0) / 2;
        let cy = 8 + r as i32 * KEY_ROW_H as i32 + KEY_ROW_H as i32 / 2;
        for (label, color, x) in row {
            let x = left + *x as i32;
            area.draw(&Rectangle::new(
                [(x, cy - 7), (x + 14, cy + 7)],
                color.filled(),
            ))?;
            area.draw(&Rectangle::new([(x, cy - 7), (x + 14, cy + 7)], outline))?;
            area.draw_text(label, &style, (x + 16 + 5, cy))?;
        }
    }
    Ok(())
}
