//! A captioned grid of RGB images.

use std::path::Path;

use anyhow::{Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::ImageTile;
use super::common::{
    Figure, TITLE_BAND, draw_title, ensure_font, text_size, text_style, wrap_text, write_figure,
};

/// A grid of RGB images, `columns` per row, with a caption under each (wrapped, at most three
/// lines). Small images are enlarged by a whole factor with nearest-neighbour sampling, so
/// 28x28 or 32x32 pixels stay crisp; each image keeps its aspect ratio. In the SVG the images
/// are embedded as PNG. Errors if `tiles` is empty, `columns` is 0, or a tile's `rgb` is not
/// `width * height * 3` bytes.
pub fn image_grid(title: &str, tiles: &[ImageTile], columns: usize, stem: &Path) -> Result<()> {
    ensure_font()?;
    if tiles.is_empty() {
        bail!("image_grid({}): no images to draw", stem.display());
    }
    if columns == 0 {
        bail!("image_grid({}): columns must be at least 1", stem.display());
    }
    for (i, t) in tiles.iter().enumerate() {
        let expected = (t.width as usize)
            .checked_mul(t.height as usize)
            .and_then(|n| n.checked_mul(3));
        if t.width == 0 || t.height == 0 || expected != Some(t.rgb.len()) {
            bail!(
                "image tile {i} ({:?}): {}x{} px needs {} RGB bytes, got {}",
                t.caption,
                t.width,
                t.height,
                expected.map_or("too many".to_string(), |n| n.to_string()),
                t.rgb.len()
            );
        }
    }
    let columns = columns.min(tiles.len());
    // Boxes shrink as columns grow so that a wide grid stays within ~1300 px.
    let cell = (1200 / columns as u32).saturating_sub(GAP).clamp(72, 192);
    let captions: Vec<Vec<String>> = tiles
        .iter()
        .map(|t| wrap_text(&t.caption, CAPTION_SIZE, cell + GAP - 6, 3))
        .collect();
    let caption_lines = captions.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let fig = Grid {
        title,
        tiles,
        columns,
        cell,
        captions,
        caption_h: caption_lines * LINE_H + 8,
    };
    write_figure(&fig, stem)
}

const GAP: u32 = 18;
const CAPTION_SIZE: f64 = 13.0;
const LINE_H: u32 = 17;

struct Grid<'a> {
    title: &'a str,
    tiles: &'a [ImageTile],
    columns: usize,
    /// Side of the square box each image is fitted into.
    cell: u32,
    captions: Vec<Vec<String>>,
    caption_h: u32,
}

impl Grid<'_> {
    fn rows(&self) -> u32 {
        u32::try_from(self.tiles.len().div_ceil(self.columns)).unwrap_or(u32::MAX)
    }
    fn grid_width(&self) -> u32 {
        u32::try_from(self.columns)
            .unwrap_or(u32::MAX)
            .saturating_mul(self.cell + GAP)
            .saturating_add(GAP)
    }
}

impl Figure for Grid<'_> {
    fn size(&self) -> (u32, u32) {
        let title_w = text_size(self.title, 22.0).0 + 40;
        let w = self.grid_width().max(title_w.min(1400)).max(360);
        let h = self
            .rows()
            .saturating_mul(self.cell + self.caption_h + GAP)
            .saturating_add(TITLE_BAND + GAP / 2);
        (w, h)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let body = draw_title(root, self.title)?;
        let (aw, _) = body.dim_in_pixel();
        let left = (aw as i32 - self.grid_width() as i32).max(0) / 2 + GAP as i32;
        let caption_style = text_style(CAPTION_SIZE).pos(Pos::new(HPos::Center, VPos::Top));
        let cell = self.cell as i32;
        for (i, (tile, caption)) in self.tiles.iter().zip(&self.captions).enumerate() {
            let col = (i % self.columns) as i32;
            let row = (i / self.columns) as i32;
            let x = left + col * (cell + GAP as i32);
            let y = GAP as i32 / 2 + row * (cell + (self.caption_h + GAP) as i32);

            let (dw, dh, pixels) = resample(tile, self.cell);
            let ix = x + (cell - dw as i32) / 2;
            let iy = y + (cell - dh as i32) / 2;
            if let Some(img) = BitMapElement::with_owned_buffer((ix, iy), (dw, dh), pixels) {
                body.draw(&img)?;
            }
            body.draw(&Rectangle::new(
                [(ix - 1, iy - 1), (ix + dw as i32, iy + dh as i32)],
                ShapeStyle::from(&BLACK.mix(0.35)).stroke_width(1),
            ))?;
            for (k, line) in caption.iter().enumerate() {
                let ty = y + cell + 6 + k as i32 * LINE_H as i32;
                body.draw_text(line, &caption_style, (x + cell / 2, ty))?;
            }
        }
        Ok(())
    }
}

/// The tile scaled to fit a `cell` x `cell` box, nearest-neighbour: by a whole factor when it
/// is smaller (crisp pixels), by a fraction when larger. Returns (width, height, RGB bytes).
fn resample(tile: &ImageTile, cell: u32) -> (u32, u32, Vec<u8>) {
    let (w, h) = (tile.width, tile.height);
    let fit = (cell as f64 / w as f64).min(cell as f64 / h as f64);
    let scale = if fit >= 1.0 { fit.floor() } else { fit };
    let dw = ((w as f64 * scale).round() as u32).clamp(1, cell);
    let dh = ((h as f64 * scale).round() as u32).clamp(1, cell);
    let mut out = Vec::with_capacity(dw as usize * dh as usize * 3);
    for y in 0..dh {
        let sy = ((y as f64 / scale) as u32).min(h - 1) as usize;
        for x in 0..dw {
            let sx = ((x as f64 / scale) as u32).min(w - 1) as usize;
            let at = (sy * w as usize + sx) * 3;
            out.extend_from_slice(tile.rgb.get(at..at + 3).unwrap_or(&[0, 0, 0]));
        }
    }
    (dw, dh, out)
}
