//! A legend box drawn by hand rather than with plotters' series labels, so it can go either in
//! the emptiest corner of the plot or outside it, and can be measured before the chart is laid out.

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::common::{LEGEND_SIZE, text_size, text_style, truncate_to_width};

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Swatch {
    Line { dashed: bool },
    Box,
    None,
}

#[derive(Debug, Clone)]
pub(super) struct LegendEntry {
    pub label: String,
    pub color: RGBColor,
    pub swatch: Swatch,
}

pub(super) struct Legend {
    entries: Vec<LegendEntry>,
    row_h: i32,
    w: i32,
    h: i32,
}

const PAD: i32 = 8;
const SWATCH_W: i32 = 26;
const GAP: i32 = 6;

impl Legend {
    /// Labels wider than `max_label_w` are cut; past `max_rows` entries the rest are summarised
    /// in one "… N more" row, so a sweep of 50 runs still gives a legend that fits.
    pub(super) fn new(mut entries: Vec<LegendEntry>, max_rows: usize, max_label_w: u32) -> Self {
        let max_rows = max_rows.max(1);
        if entries.len() > max_rows {
            let hidden = entries.len() - (max_rows - 1);
            entries.truncate(max_rows - 1);
            entries.push(LegendEntry {
                label: format!("… {hidden} more"),
                color: BLACK,
                swatch: Swatch::None,
            });
        }
        for e in &mut entries {
            e.label = shorten(&e.label, max_label_w);
        }
        let text_h = text_size("Ag", LEGEND_SIZE).1 as i32;
        let row_h = (text_h + 7).max(18);
        let label_w = entries
            .iter()
            .map(|e| text_size(&e.label, LEGEND_SIZE).0 as i32)
            .max()
            .unwrap_or(0);
        let w = PAD + SWATCH_W + GAP + label_w + PAD;
        let h = PAD + row_h * entries.len() as i32 + PAD - 4;
        Legend {
            entries,
            row_h,
            w,
            h,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn size(&self) -> (i32, i32) {
        (self.w, self.h)
    }

    /// Draws with the top-left corner at `at`, in `area`'s pixel coordinates.
    pub(super) fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        at: (i32, i32),
    ) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        if self.entries.is_empty() {
            return Ok(());
        }
        let (x, y) = at;
        area.draw(&Rectangle::new(
            [(x, y), (x + self.w, y + self.h)],
            WHITE.mix(0.85).filled(),
        ))?;
        area.draw(&Rectangle::new(
            [(x, y), (x + self.w, y + self.h)],
            ShapeStyle::from(&BLACK.mix(0.3)).stroke_width(1),
        ))?;
        let text = text_style(LEGEND_SIZE).pos(Pos::new(HPos::Left, VPos::Center));
        for (i, e) in self.entries.iter().enumerate() {
            let cy = y + PAD - 2 + self.row_h * i as i32 + self.row_h / 2;
            let sx = x + PAD;
            match e.swatch {
                Swatch::Line { dashed } => {
                    let style = ShapeStyle::from(&e.color).stroke_width(2);
                    if dashed {
                        for k in 0..3 {
                            let x0 = sx + k * 10;
                            area.draw(&PathElement::new(vec![(x0, cy), (x0 + 6, cy)], style))?;
                        }
                    } else {
                        area.draw(&PathElement::new(
                            vec![(sx, cy), (sx + SWATCH_W, cy)],
                            style,
                        ))?;
                    }
                }
                Swatch::Box => {
                    let r = [(sx + 5, cy - 6), (sx + SWATCH_W - 5, cy + 6)];
                    area.draw(&Rectangle::new(r, e.color.filled()))?;
                }
                Swatch::None => {}
            }
            area.draw_text(&e.label, &text, (sx + SWATCH_W + GAP, cy))?;
        }
        Ok(())
    }
}

/// `label` cut to `max_w` pixels, keeping a trailing "(diverged)"-style note whole.
fn shorten(label: &str, max_w: u32) -> String {
    if text_size(label, LEGEND_SIZE).0 <= max_w {
        return label.to_string();
    }
    if let Some(at) = label.rfind(" (").filter(|_| label.ends_with(')')) {
        let (head, note) = label.split_at(at);
        let room = max_w.saturating_sub(text_size(note, LEGEND_SIZE).0);
        if room > 40 {
            return truncate_to_width(head, LEGEND_SIZE, room) + note;
        }
    }
    truncate_to_width(label, LEGEND_SIZE, max_w)
}

/// Top-left position for a `size` legend inside `plot` (x0, y0, x1, y1) that covers the fewest
/// of `samples` (pixels the data passes through), and how many it covers. Corners are tried
/// first (ties keep the conventional upper right), then spots along the sides.
pub(super) fn emptiest_spot(
    plot: (i32, i32, i32, i32),
    size: (i32, i32),
    samples: &[(i32, i32)],
) -> ((i32, i32), usize) {
    const INSET: i32 = 10;
    let (x0, y0, x1, y1) = plot;
    let (w, h) = size;
    let (left, right) = (x0 + INSET, x1 - INSET - w);
    let (top, bottom) = (y0 + INSET, y1 - INSET - h);
    let mid = |a: i32, b: i32, f: f64| a + ((b - a) as f64 * f).round() as i32;
    let mut spots = vec![(right, top), (left, top), (right, bottom), (left, bottom)];
    for f in [0.25, 0.5, 0.75] {
        spots.push((right, mid(top, bottom, f)));
        spots.push((left, mid(top, bottom, f)));
    }
    for f in [0.5, 0.25, 0.75] {
        spots.push((mid(left, right, f), top));
        spots.push((mid(left, right, f), bottom));
    }
    let covered = |(cx, cy): (i32, i32)| {
        samples
            .iter()
            .filter(|(sx, sy)| {
                *sx >= cx - 4 && *sx <= cx + w + 4 && *sy >= cy - 4 && *sy <= cy + h + 4
            })
            .count()
    };
    let mut best = (spots[0], covered(spots[0]));
    for s in &spots[1..] {
        let n = covered(*s);
        if n < best.1 {
            best = (*s, n);
        }
    }
    best
}

/// Whether a legend belongs to the right of the plot rather than inside it: when no spot inside
/// is free of data, or it is too big for one, and moving it out still leaves a usable plot.
/// `inside` is the plotting rectangle with the legend inside, `samples` the data's pixels in it.
pub(super) fn goes_outside(
    legend: &Legend,
    inside: (i32, i32, i32, i32),
    samples: &[(i32, i32)],
) -> bool {
    let (lw, lh) = legend.size();
    let (plot_w, plot_h) = (inside.2 - inside.0, inside.3 - inside.1);
    if legend.is_empty() || plot_w - lw - 16 < 260 {
        return false;
    }
    let fits = (lw as f64) <= plot_w as f64 * 0.6 && (lh as f64) <= plot_h as f64 * 0.8;
    !fits || emptiest_spot(inside, (lw, lh), samples).1 > 0
}

/// Room the right margin needs for an outside legend.
pub(super) fn outside_margin(legend: &Legend) -> i32 {
    legend.size().0 + 22
}

/// Top-left corner of an outside legend, given the plotting area's pixel range.
pub(super) fn outside_position(plot_x_end: i32, plot_y_start: i32) -> (i32, i32) {
    (plot_x_end + 14, plot_y_start)
}

/// Pixels along a polyline every ~3 px, for `emptiest_corner`.
pub(super) fn sample_polyline(points: &[(i32, i32)], out: &mut Vec<(i32, i32)>) {
    if let [only] = points {
        out.push(*only);
    }
    for pair in points.windows(2) {
        let ((ax, ay), (bx, by)) = (pair[0], pair[1]);
        let len = ((bx - ax) as f64).hypot((by - ay) as f64);
        let steps = ((len / 3.0).ceil() as usize).clamp(1, 10_000);
        for k in 0..=steps {
            let t = k as f64 / steps as f64;
            out.push((
                (ax as f64 + t * (bx - ax) as f64).round() as i32,
                (ay as f64 + t * (by - ay) as f64).round() as i32,
            ));
        }
    }
}
