use std::path::{Path, PathBuf};

use super::axis::{format_tick, linear_ticks, log_ticks};
use super::common::class_color;
use super::*;

fn with_ext(stem: &Path, ext: &str) -> PathBuf {
    PathBuf::from(format!("{}.{ext}", stem.display()))
}

/// How plotters' SVG backend escapes text.
fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// Both files exist, the PNG decodes (with `size` when given), the SVG holds every text, and
/// no temporary file is left next to them. Returns the SVG text.
fn assert_figure(stem: &Path, size: Option<(u32, u32)>, texts: &[&str]) -> String {
    let png = with_ext(stem, "png");
    let svg = with_ext(stem, "svg");
    let img =
        image::open(&png).unwrap_or_else(|e| panic!("{} does not decode: {e}", png.display()));
    if let Some((w, h)) = size {
        assert_eq!((img.width(), img.height()), (w, h), "{}", png.display());
    }
    let text = std::fs::read_to_string(&svg).expect("svg written");
    assert!(text.starts_with("<svg"), "{} is not an SVG", svg.display());
    for t in texts {
        assert!(
            text.contains(&xml_escape(t)),
            "{} lacks the text {t:?}",
            svg.display()
        );
    }
    let dir = stem.parent().expect("stem has a directory");
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let name = entry.expect("dir entry").file_name();
        assert!(
            !name.to_string_lossy().contains(".tmp."),
            "temporary file {name:?} left behind"
        );
    }
    text
}

fn curve(n: usize, f: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
    (1..=n).map(|e| (e as f64, f(e as f64))).collect()
}

fn series(label: &str, points: Vec<(f64, f64)>) -> Series {
    Series {
        label: label.to_string(),
        points,
        ..Default::default()
    }
}

fn chart(title: &str, log_y: bool, series: Vec<Series>) -> LineChart {
    LineChart {
        title: title.to_string(),
        x_label: "epoch".to_string(),
        y_label: "loss".to_string(),
        log_y,
        series,
    }
}

#[test]
fn line_chart_writes_png_and_svg() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stem = dir.path().join("loss");
    let c = chart(
        "Training loss",
        false,
        vec![
            series("lr 0.01", curve(30, |e| 2.0 / e)),
            series("lr 0.1 & <wd>", curve(30, |e| 1.0 / e + 0.1)),
            series("adam", curve(30, |e| (-e / 5.0).exp())),
        ],
    );
    line_chart(&c, &stem).expect("line chart");
    assert_figure(
        &stem,
        Some((900, 600)),
        &[
            "Training loss",
            "lr 0.01",
            "lr 0.1 & <wd>",
            "adam",
            "epoch",
            "loss",
        ],
    );
    // Writing again replaces the figure in place.
    line_chart(&c, &stem).expect("second write");
    assert_figure(&stem, Some((900, 600)), &["Training loss"]);
}

#[test]
fn line_chart_log_scale_skips_nan_inf_and_non_positive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stem = dir.path().join("log");
    let mut spiky = curve(20, |e| 1.0 / e);
    spiky[3].1 = f64::NAN;
    spiky[5].1 = 0.0;
    spiky[7].1 = -1.0;
    spiky[9].1 = f64::INFINITY;
    spiky[11].0 = f64::NAN;
    let c = chart(
        "Log loss",
        true,
        vec![
            series("spiky", spiky),
            series("blown up", vec![(1.0, f64::NAN), (2.0, f64::INFINITY)]),
            series("all zero", vec![(1.0, 0.0), (2.0, -3.0)]),
            series("huge", vec![(1.0, f64::MAX), (f64::MAX, f64::MIN_POSITIVE)]),
        ],
    );
    line_chart(&c, &stem).expect("log chart");
    assert_figure(
        &stem,
        Some((900, 600)),
        &[
            "Log loss",
            "spiky (diverged)",
            "blown up (diverged)",
            "all zero (no positive values)",
        ],
    );
    // The same data on a linear axis.
    let lin = LineChart {
        log_y: false,
        ..c.clone()
    };
    line_chart(&lin, &dir.path().join("lin")).expect("linear chart");
    let extreme = chart(
        "extremes",
        false,
        vec![series(
            "s",
            vec![(f64::MIN, f64::MAX), (f64::MAX, f64::MIN), (0.0, 5e-324)],
        )],
    );
    line_chart(&extreme, &dir.path().join("extreme")).expect("extreme values");
}

#[test]
fn line_chart_single_point_constant_and_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = chart(
        "Edge cases",
        false,
        vec![
            series("single", vec![(3.0, 0.5)]),
            series("constant", curve(5, |_| 0.5)),
            series("nothing", vec![]),
        ],
    );
    let stem = dir.path().join("edge");
    line_chart(&c, &stem).expect("edge cases");
    assert_figure(
        &stem,
        Some((900, 600)),
        &["single", "constant", "nothing (no data)"],
    );

    let log_single = chart("one log point", true, vec![series("p", vec![(0.0, 1e-3)])]);
    let stem = dir.path().join("log_single");
    line_chart(&log_single, &stem).expect("single log point");
    assert_figure(&stem, None, &["one log point"]);

    let stem = dir.path().join("empty");
    line_chart(&chart("Nothing yet", false, vec![]), &stem).expect("empty chart");
    assert_figure(&stem, Some((900, 600)), &["Nothing yet", "no data"]);

    let stem = dir.path().join("empty_log");
    line_chart(&chart("Nothing yet", true, vec![]), &stem).expect("empty log chart");
    assert_figure(&stem, None, &["no data"]);
}

#[test]
fn line_chart_many_series_and_long_labels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let many: Vec<Series> = (0..40)
        .map(|i| series(&format!("run {i}"), curve(10, |e| e * i as f64)))
        .collect();
    let mut c = chart(&"a very long title ".repeat(20), false, many);
    c.series[0].label = "an extremely long series label ".repeat(10);
    c.series[0].points[2].1 = f64::NAN;
    let stem = dir.path().join("many");
    line_chart(&c, &stem).expect("many series");
    // The long label is cut but keeps its note; the rows that do not fit are counted.
    assert_figure(
        &stem,
        Some((900, 600)),
        &["an extremely", "… (diverged)", "run 1", "more"],
    );
}

#[test]
fn line_charts_side_by_side() {
    let dir = tempfile::tempdir().expect("tempdir");
    let train = chart(
        "train time",
        false,
        vec![series("cpu", curve(10, |e| 10.0 + e.sin()))],
    );
    let val = chart(
        "validation time",
        true,
        vec![series("gpu", curve(10, |e| 0.1 * e))],
    );
    let stem = dir.path().join("times");
    line_charts("Time vs epoch", &[train.clone(), val.clone()], &stem).expect("two panels");
    assert_figure(
        &stem,
        Some((1000, 524)),
        &[
            "Time vs epoch",
            "train time",
            "validation time",
            "cpu",
            "gpu",
        ],
    );

    let five = vec![
        train.clone(),
        val.clone(),
        train.clone(),
        val,
        chart("", false, vec![]),
    ];
    let stem = dir.path().join("five");
    line_charts("Five", &five, &stem).expect("five panels");
    assert_figure(&stem, Some((1500, 1004)), &["Five"]);

    let err = line_charts("none", &[], &dir.path().join("none")).expect_err("no panels");
    assert!(err.to_string().contains("no panels"), "{err}");
    assert!(!dir.path().join("none.png").exists());
}

fn panel(title: &str, n_classes: usize, n: usize) -> DecisionPanel {
    let mut grid = Vec::with_capacity(n * n);
    for j in 0..n {
        for i in 0..n {
            let (x, y) = (i as f64 / n as f64 - 0.5, j as f64 / n as f64 - 0.5);
            let angle = y.atan2(x) + std::f64::consts::PI;
            let k = (angle / std::f64::consts::TAU * n_classes as f64) as u32;
            grid.push(k.min(n_classes as u32 - 1));
        }
    }
    let points = (0..50)
        .map(|k| {
            let t = k as f64 / 50.0 * std::f64::consts::TAU;
            (0.4 * t.cos(), 0.4 * t.sin(), (k % n_classes) as u32)
        })
        .chain([(f64::NAN, 0.0, 0), (5.0, 5.0, 1)])
        .collect();
    DecisionPanel {
        title: title.to_string(),
        x_label: "x1".to_string(),
        y_label: "x2".to_string(),
        x_range: (-0.5, 0.5),
        y_range: (-0.5, 0.5),
        grid_size: (n, n),
        grid_classes: grid,
        points,
        n_classes,
    }
}

#[test]
fn decision_boundaries_panels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stem = dir.path().join("db");
    let panels = [
        panel("depth 2, width 8 — test acc 0.71", 3, 60),
        panel("depth 6, width 16 — test acc 0.91", 3, 60),
    ];
    decision_boundaries("Decision boundaries", &panels, &stem).expect("two panels");
    assert_figure(
        &stem,
        Some((900, 44 + 470 + 38)),
        &[
            "Decision boundaries",
            "depth 2, width 8 — test acc 0.71",
            "depth 6, width 16 — test acc 0.91",
            "class 0",
            "class 2",
            "x1",
            "x2",
        ],
    );

    let stem = dir.path().join("db40");
    decision_boundaries("40 classes", &[panel("p", 40, 80)], &stem).expect("40 classes");
    assert_figure(&stem, None, &["40 classes", "39"]);

    // A degenerate range, an empty grid and more panels than fit a row.
    let mut flat = panel("flat", 2, 4);
    flat.x_range = (1.0, 1.0);
    let empty = DecisionPanel {
        title: "empty".to_string(),
        ..DecisionPanel::default()
    };
    let stem = dir.path().join("odd");
    let panels = vec![
        flat,
        empty,
        panel("a", 2, 4),
        panel("b", 2, 4),
        panel("c", 2, 4),
    ];
    decision_boundaries("odd", &panels, &stem).expect("odd panels");
    assert_figure(&stem, None, &["flat", "empty"]);
}

#[test]
fn decision_boundaries_rejects_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stem = dir.path().join("bad");
    let err = decision_boundaries("t", &[], &stem).expect_err("no panels");
    assert!(err.to_string().contains("no panels"), "{err}");

    let mut short = panel("short", 3, 10);
    short.grid_classes.pop();
    let err = decision_boundaries("t", &[short], &stem).expect_err("short grid");
    assert!(err.to_string().contains("grid_classes has 99"), "{err}");

    let mut nan = panel("nan", 3, 10);
    nan.y_range = (f64::NAN, 1.0);
    let err = decision_boundaries("t", &[nan], &stem).expect_err("NaN range");
    assert!(err.to_string().contains("y_range"), "{err}");

    assert!(!with_ext(&stem, "png").exists() && !with_ext(&stem, "svg").exists());
}

#[test]
fn class_colours_are_distinct() {
    // Any n colours crowd each other eventually; 47 (EMNIST balanced) must stay clearly apart.
    for (n, min_d) in [(2, 45), (10, 45), (33, 45), (40, 45), (47, 45), (64, 30)] {
        let colours: Vec<_> = (0..n).map(|k| class_color(k, n)).collect();
        for a in 0..n {
            for b in a + 1..n {
                let (ca, cb) = (colours[a], colours[b]);
                let d = (ca.0 as i32 - cb.0 as i32).abs()
                    + (ca.1 as i32 - cb.1 as i32).abs()
                    + (ca.2 as i32 - cb.2 as i32).abs();
                assert!(
                    d >= min_d,
                    "classes {a} and {b} of {n} look alike: {ca:?} {cb:?}"
                );
            }
        }
    }
}

#[test]
fn bar_chart_grouped_and_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stem = dir.path().join("bars");
    let c = BarChart {
        title: "Accuracy by model".to_string(),
        x_label: "model".to_string(),
        y_label: "accuracy".to_string(),
        categories: vec!["mlp".to_string(), "cnn".to_string(), "vit".to_string()],
        groups: vec![
            series("train", vec![(0.0, 0.9), (1.0, 0.95), (2.0, f64::NAN)]),
            series("test", vec![(0.0, 0.85), (1.0, -0.1)]),
        ],
    };
    bar_chart(&c, &stem).expect("bars");
    assert_figure(
        &stem,
        Some((900, 600)),
        &["Accuracy by model", "train", "test", "mlp", "cnn", "vit"],
    );

    let stem = dir.path().join("no_bars");
    bar_chart(&BarChart::default(), &stem).expect("empty bars");
    assert_figure(&stem, Some((900, 600)), &["no data"]);
}

fn tile(caption: &str, w: u32, h: u32) -> ImageTile {
    let rgb = (0..w * h)
        .flat_map(|i| [(i % 256) as u8, (i / w * 8 % 256) as u8, 128])
        .collect();
    ImageTile {
        caption: caption.to_string(),
        width: w,
        height: h,
        rgb,
    }
}

#[test]
fn image_grid_with_captions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stem = dir.path().join("grid");
    let tiles = vec![
        tile("true cat, pred dog", 32, 32),
        tile("mnist", 28, 28),
        tile("wide", 64, 16),
        tile("large photo", 300, 200),
        tile(&"a long caption that has to wrap ".repeat(4), 32, 32),
    ];
    image_grid("Hard test images", &tiles, 3, &stem).expect("grid");
    let svg = assert_figure(
        &stem,
        None,
        &[
            "Hard test images",
            "true cat, pred dog",
            "mnist",
            "large photo",
        ],
    );
    assert!(
        svg.contains("<image"),
        "images are embedded as bitmaps in the SVG"
    );

    // More columns than tiles.
    let stem = dir.path().join("one");
    image_grid("one", &tiles[..1], 10, &stem).expect("one tile");
    assert_figure(&stem, None, &["one"]);
}

#[test]
fn image_grid_rejects_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stem = dir.path().join("bad");
    assert!(image_grid("t", &[], 3, &stem).is_err());
    assert!(image_grid("t", &[tile("x", 4, 4)], 0, &stem).is_err());
    let mut broken = tile("broken", 4, 4);
    broken.rgb.pop();
    let err = image_grid("t", &[broken], 2, &stem).expect_err("short buffer");
    assert!(err.to_string().contains("47"), "{err}");
    assert!(image_grid("t", &[tile("empty", 0, 0)], 2, &stem).is_err());
    assert!(!with_ext(&stem, "png").exists());
}

#[test]
fn creates_missing_directories_and_keeps_dots_in_stem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stem = dir.path().join("a/b/run.v2");
    line_chart(
        &chart("dotted", false, vec![series("s", curve(3, |e| e))]),
        &stem,
    )
    .expect("nested");
    assert_figure(&stem, Some((900, 600)), &["dotted"]);
}

#[test]
fn tick_labels_and_positions() {
    assert_eq!(format_tick(0.1 + 0.2, 1e-6), "0.3");
    assert_eq!(format_tick(2.5, 1e-6), "2.5");
    assert_eq!(format_tick(1500.0, 1e-3), "1500");
    assert_eq!(format_tick(1e-4, 1e-10), "1e-4");
    assert_eq!(format_tick(2.5e6, 1.0), "2.5e6");
    assert_eq!(format_tick(-1e-17, 1e-6), "0");

    let t = linear_ticks(0.0, 1.0, 6);
    assert!(!t.is_empty() && t.len() <= 6, "{t:?}");
    assert!(linear_ticks(1.0, 1.0, 5).is_empty());

    assert_eq!(log_ticks(1e-4, 10.0, 10).len(), 6);
    let narrow = log_ticks(0.3, 0.8, 10);
    assert!(
        narrow.len() >= 3,
        "narrow log range still gets ticks: {narrow:?}"
    );
    let tiny = log_ticks(0.31, 0.33, 10);
    assert!(tiny.len() >= 2, "{tiny:?}");
    let wide = log_ticks(1e-30, 1e30, 8);
    assert!(!wide.is_empty() && wide.len() <= 8, "{wide:?}");
}
