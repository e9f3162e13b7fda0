//! Shared pieces: embedded font, palette, text measuring and the atomic PNG + SVG writer.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, anyhow, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};

use super::glyph_text::GlyphText;

/// The family every text in this module asks for; plotters' own defaults (mesh labels) use
/// it too, so registering the embedded font under this name covers all text.
pub(super) const FONT: &str = "sans-serif";
pub(super) static FONT_BYTES: &[u8] = include_bytes!("DejaVuSans.ttf");

pub(super) const TITLE_SIZE: f64 = 22.0;
pub(super) const PANEL_TITLE_SIZE: f64 = 17.0;
pub(super) const AXIS_DESC_SIZE: f64 = 15.0;
pub(super) const TICK_SIZE: f64 = 13.0;
pub(super) const LEGEND_SIZE: f64 = 13.0;

/// Registers the embedded font with plotters (once per process). Every public entry point calls
/// this first, since text measuring fails until a font is registered.
pub(super) fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok());
    if ok {
        Ok(())
    } else {
        Err(anyhow!("the embedded DejaVuSans font could not be parsed"))
    }
}

pub(super) fn text_style(size: f64) -> TextStyle<'static> {
    (FONT, size).into_font().color(&BLACK)
}

/// Width and height of `text` in pixels; a rough estimate if the font is unavailable.
pub(super) fn text_size(text: &str, size: f64) -> (u32, u32) {
    (FONT, size).into_font().box_size(text).unwrap_or((
        (text.chars().count() as f64 * size * 0.6) as u32,
        size as u32,
    ))
}

pub(super) fn text_width(text: &str, size: f64) -> u32 {
    text_size(text, size).0
}

/// `text` cut with an ellipsis so that it fits in `max_w` pixels.
pub(super) fn truncate_to_width(text: &str, size: f64, max_w: u32) -> String {
    if text_width(text, size) <= max_w {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut n = chars.len();
    while n > 0 {
        n -= 1;
        let candidate: String = chars[..n].iter().collect::<String>() + "…";
        if text_width(&candidate, size) <= max_w {
            return candidate;
        }
    }
    String::new()
}

/// Largest font size from `size` down to `min_size` at which `text` fits in `max_w`; the
/// text is truncated if even `min_size` is too wide. Titles shrink rather than get clipped.
pub(super) fn fit_text(text: &str, size: f64, min_size: f64, max_w: u32) -> (String, f64) {
    let mut s = size;
    while s > min_size && text_width(text, s) > max_w {
        s -= 1.0;
    }
    (truncate_to_width(text, s, max_w), s)
}

/// Greedy word wrap into at most `max_lines` lines of at most `max_w` pixels each; the last
/// line is truncated with an ellipsis if text remains.
pub(super) fn wrap_text(text: &str, size: f64, max_w: u32, max_lines: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        let candidate = if current.is_empty() {
            word.to_string()
        } else {
            format!("{current} {word}")
        };
        if current.is_empty() || text_width(&candidate, size) <= max_w {
            current = candidate;
        } else {
            lines.push(std::mem::take(&mut current));
            current = word.to_string();
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    if max_lines > 0 && lines.len() > max_lines {
        let rest = lines.split_off(max_lines - 1).join(" ");
        lines.push(rest);
    }
    lines
        .into_iter()
        .map(|l| truncate_to_width(&l, size, max_w))
        .collect()
}

/// Tableau 10: distinct, colour-blind-friendly-ish, and familiar from matplotlib.
const TAB10: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

pub(super) const PALETTE_LEN: usize = TAB10.len();

/// Colour of the i-th series; the palette cycles (callers switch to dashed lines past it).
pub(super) fn series_color(i: usize) -> RGBColor {
    TAB10[i % TAB10.len()]
}

/// Colour of class `k` out of `n`. Up to 10 classes use the series palette; beyond, classes
/// are dealt round-robin to three lightness levels, and each level spreads its classes evenly
/// round the hue wheel, offset from the other levels. Classes of one level are thus 360/(n/3)
/// degrees apart and neighbouring hues differ in lightness (33+ classes stay distinguishable).
pub(super) fn class_color(k: usize, n: usize) -> RGBColor {
    if n <= TAB10.len() {
        return TAB10[k % TAB10.len()];
    }
    const LEVELS: [(f64, f64); 3] = [(0.55, 1.0), (1.0, 0.85), (1.0, 0.6)];
    let k = k % n;
    let per_level = n.div_ceil(LEVELS.len());
    let level = k % LEVELS.len();
    let slot = (k / LEVELS.len()) as f64 + level as f64 / LEVELS.len() as f64;
    let (s, v) = LEVELS[level];
    hsv(360.0 * slot / per_level as f64, s, v)
}

fn hsv(h: f64, s: f64, v: f64) -> RGBColor {
    let c = v * s;
    let hp = (h.rem_euclid(360.0)) / 60.0;
    let x = c * (1.0 - (hp % 2.0 - 1.0).abs());
    let (r, g, b) = match hp as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    let to8 = |f: f64| ((f + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    RGBColor(to8(r), to8(g), to8(b))
}

/// `c` blended towards white; `amount` = share of the original colour kept.
pub(super) fn tint(c: RGBColor, amount: f64) -> RGBColor {
    let f = |v: u8| {
        (255.0 - (255.0 - v as f64) * amount)
            .round()
            .clamp(0.0, 255.0) as u8
    };
    RGBColor(f(c.0), f(c.1), f(c.2))
}

/// A figure that can be drawn onto any plotters backend; `write_figure` draws it twice.
pub(super) trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static;
}

fn with_extension_appended(stem: &Path, ext: &str) -> PathBuf {
    let mut s: OsString = stem.as_os_str().to_os_string();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// A temporary file next to its target, removed on drop unless committed (renamed into place).
struct TempFile {
    path: PathBuf,
    committed: bool,
}

impl TempFile {
    /// A hidden sibling of `target`, unique within this process, keeping the extension
    /// (the bitmap encoder picks the image format from it).
    fn beside(target: &Path, ext: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file = format!(".{name}.{}-{n}.tmp.{ext}", std::process::id());
        TempFile {
            path: target.with_file_name(file),
            committed: false,
        }
    }

    fn commit(mut self, target: &Path) -> Result<()> {
        fs::rename(&self.path, target)
            .with_context(|| format!("renaming {} to {}", self.path.display(), target.display()))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Guards against a runaway layout (say, 100 000 images in one grid) allocating gigabytes.
const MAX_PIXELS: u64 = 100_000_000;

/// Writes `stem.png` and `stem.svg`. Both are fully rendered before either is renamed into
/// place, so an error while drawing leaves any previous figure untouched.
pub(super) fn write_figure(fig: &impl Figure, stem: &Path) -> Result<()> {
    ensure_font()?;
    if stem.file_name().is_none() {
        bail!("figure path {} has no file name", stem.display());
    }
    let (w, h) = fig.size();
    if w == 0 || h == 0 {
        bail!("figure {} would be empty ({w}x{h} px)", stem.display());
    }
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        bail!(
            "figure {} would be {w}x{h} px, too large to render; split it up",
            stem.display()
        );
    }
    if let Some(parent) = stem.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .with_context(|| format!("creating directory {}", parent.display()))?;
    }
    let png_path = with_extension_appended(stem, "png");
    let svg_path = with_extension_appended(stem, "svg");

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        fig.draw(&root)
            .with_context(|| format!("drawing {}", svg_path.display()))?;
        root.present()?;
    }

    let png_tmp = TempFile::beside(&png_path, "png");
    {
        // Dropped before `png_tmp`, so a half-drawn bitmap it may flush is removed too.
        let root = GlyphText(BitMapBackend::new(&png_tmp.path, (w, h))).into_drawing_area();
        root.fill(&WHITE)?;
        fig.draw(&root)
            .with_context(|| format!("drawing {}", png_path.display()))?;
        root.present()
            .with_context(|| format!("writing {}", png_tmp.path.display()))?;
    }
    let svg_tmp = TempFile::beside(&svg_path, "svg");
    fs::write(&svg_tmp.path, svg.as_bytes())
        .with_context(|| format!("writing {}", svg_tmp.path.display()))?;
    png_tmp.commit(&png_path)?;
    svg_tmp.commit(&svg_path)?;
    Ok(())
}

/// Draws a centred grey note (e.g. "no data") in the middle of `area`.
pub(super) fn draw_note<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    center: (i32, i32),
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let style = text_style(16.0)
        .color(&RGBColor(110, 110, 110))
        .pos(Pos::new(HPos::Center, VPos::Center));
    area.draw_text(text, &style, center)?;
    Ok(())
}

/// Draws the figure title centred at the top of `root` and returns the area below it.
pub(super) fn draw_title<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
) -> Result<DrawingArea<DB, Shift>>
where
    DB::ErrorType: 'static,
{
    let (w, _) = root.dim_in_pixel();
    let (text, size) = fit_text(title, TITLE_SIZE, 12.0, w.saturating_sub(20));
    let band = TITLE_BAND as i32;
    let style = text_style(size).pos(Pos::new(HPos::Center, VPos::Center));
    root.draw_text(&text, &style, (w as i32 / 2, band / 2 + 2))?;
    Ok(root.split_vertically(band).1)
}

/// Draws a panel title centred at the top of `area` (shrunk or cut to fit) and returns the
/// area below it; an empty title takes no room.
pub(super) fn draw_panel_title<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    size: f64,
) -> Result<DrawingArea<DB, Shift>>
where
    DB::ErrorType: 'static,
{
    let (w, _) = area.dim_in_pixel();
    let (text, size) = fit_text(title, size, 11.0, w.saturating_sub(10));
    if text.is_empty() {
        return Ok(area.clone());
    }
    let style = text_style(size).pos(Pos::new(HPos::Center, VPos::Top));
    area.draw_text(&text, &style, (w as i32 / 2, 6))?;
    let band = text_size(&text, size).1 + 14;
    Ok(area.split_vertically(band).1)
}

/// Height of the band `draw_title` takes.
pub(super) const TITLE_BAND: u32 = 44;
