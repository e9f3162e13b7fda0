//! One axis type for every chart: linear, log10 or categorical. Plotters' own log axis puts no
//! tick at all on a range inside one decade (e.g. a loss between 0.3 and 0.8), and its `{:?}`
//! labels show float noise, so ticks and labels are chosen here.

use std::ops::Range;

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Axis {
    Linear {
        lo: f64,
        hi: f64,
    },
    /// Bounds are values (> 0), not exponents.
    Log {
        lo: f64,
        hi: f64,
    },
    /// Category i sits at x = i; the axis spans -0.5 .. n - 0.5.
    Categories(Vec<String>),
}

impl Axis {
    fn bounds(&self) -> (f64, f64) {
        match self {
            Axis::Linear { lo, hi } | Axis::Log { lo, hi } => (*lo, *hi),
            Axis::Categories(c) => (-0.5, c.len().max(1) as f64 - 0.5),
        }
    }

    /// Tick positions for at most `max_n` labels (used to size the label area too).
    pub(super) fn ticks(&self, max_n: usize) -> Vec<f64> {
        if max_n == 0 {
            return Vec::new();
        }
        match self {
            Axis::Linear { lo, hi } => linear_ticks(*lo, *hi, max_n),
            Axis::Log { lo, hi } => log_ticks(*lo, *hi, max_n),
            Axis::Categories(c) => {
                let step = c.len().div_ceil(max_n).max(1);
                (0..c.len()).step_by(step).map(|i| i as f64).collect()
            }
        }
    }

    pub(super) fn label(&self, v: f64) -> String {
        match self {
            Axis::Linear { lo, hi } => format_tick(v, (hi - lo).abs() * 1e-6),
            Axis::Log { .. } => format_tick(v, v.abs() * 1e-6),
            Axis::Categories(c) => {
                let i = v.round();
                if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < c.len() {
                    c[i as usize].clone()
                } else {
                    String::new()
                }
            }
        }
    }
}

impl Ranged for Axis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let (lo, hi) = self.bounds();
        let (a, b, v) = match self {
            Axis::Log { .. } => (lo.log10(), hi.log10(), value.log10()),
            _ => (lo, hi, *value),
        };
        let t = if b > a { (v - a) / (b - a) } else { 0.5 };
        let px = limit.0 as f64 + t * (limit.1 - limit.0) as f64;
        // Keep far-out values (or a stray NaN) from wrapping around in the i32 conversion.
        if px.is_finite() {
            px.clamp(-1e7, 1e7).round() as i32
        } else {
            limit.0
        }
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        self.ticks(hint.max_num_points())
    }

    fn range(&self) -> Range<f64> {
        let (lo, hi) = self.bounds();
        lo..hi
    }
}

impl ValueFormatter<f64> for Axis {
    fn format_ext(&self, value: &f64) -> String {
        self.label(*value)
    }
}

/// Multiples of 1, 2 or 5 x 10^k inside [lo, hi], at most `max_n` of them.
pub(super) fn linear_ticks(lo: f64, hi: f64, max_n: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite() && hi > lo) || max_n == 0 {
        return Vec::new();
    }
    let raw = (hi - lo) / max_n as f64;
    if !(raw > 0.0 && raw.is_finite()) {
        return Vec::new();
    }
    let mut mag = 10f64.powf(raw.log10().floor());
    // Terminates: each round multiplies the step by 10, and a step above the span fits.
    for _ in 0..700 {
        for m in [1.0, 2.0, 5.0] {
            let step = m * mag;
            if step < raw {
                continue;
            }
            let first = (lo / step).ceil();
            let last = (hi / step).floor();
            if last - first + 1.0 <= max_n as f64 {
                let n = (last - first).max(-1.0) as i64 + 1;
                return (0..n).map(|k| (first + k as f64) * step).collect();
            }
        }
        mag *= 10.0;
        if !(mag.is_finite() && mag > 0.0) {
            break;
        }
    }
    Vec::new()
}

/// Decades (1, 10, 100…) when the range spans enough of them, else 1-2-5 or 1…9 times powers
/// of ten, else (a range inside a small factor) plain linear ticks.
pub(super) fn log_ticks(lo: f64, hi: f64, max_n: usize) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo && hi.is_finite()) || max_n == 0 {
        return Vec::new();
    }
    let (a, b) = (lo.log10(), hi.log10());
    let in_range = |mantissas: &[f64], decade_step: i64| -> Vec<f64> {
        let mut out = Vec::new();
        let first = a.floor() as i64;
        let last = b.ceil() as i64;
        let mut e = first - first.rem_euclid(decade_step);
        while e <= last {
            for m in mantissas {
                let v = m * 10f64.powi(e as i32);
                if v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9) {
                    out.push(v);
                }
            }
            e += decade_step;
        }
        out
    };
    let decades = in_range(&[1.0], 1);
    if decades.len() > max_n {
        let mut step = 2;
        loop {
            let t = in_range(&[1.0], step);
            if t.len() <= max_n {
                return t;
            }
            step *= 2;
        }
    }
    let candidates = [
        decades,
        in_range(&[1.0, 2.0, 5.0], 1),
        in_range(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], 1),
    ];
    if let Some(t) = candidates.iter().find(|t| t.len() >= 3 && t.len() <= max_n) {
        return t.clone();
    }
    if let Some(t) = candidates
        .iter()
        .filter(|t| t.len() >= 2 && t.len() <= max_n)
        .max_by_key(|t| t.len())
    {
        return t.clone();
    }
    linear_ticks(lo, hi, max_n)
}

/// Shortest decimal that represents `v` to within `tol`; scientific for very large or small
/// magnitudes. Removes float noise such as 0.30000000000000004 from tick labels.
pub(super) fn format_tick(v: f64, tol: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a <= tol || a == 0.0 {
        return "0".to_string();
    }
    if !(1e-3..1e5).contains(&a) {
        let mut e = a.log10().floor();
        let mut m = v / 10f64.powf(e);
        if (m.abs() * 100.0).round() >= 1000.0 {
            m /= 10.0;
            e += 1.0;
        }
        let ms = trim_zeros(format!("{m:.2}"));
        return format!("{ms}e{}", e as i64);
    }
    let tol = tol.max(a * 1e-9);
    for d in 0..=9usize {
        let scale = 10f64.powi(d as i32);
        if ((v * scale).round() / scale - v).abs() <= tol {
            return trim_zeros(format!("{v:.d$}"));
        }
    }
    trim_zeros(format!("{v:.9}"))
}

fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Bounds for linear data with a small margin; degenerate (single value) ranges get widened.
pub(super) fn padded_linear(min: f64, max: f64, frac: f64) -> (f64, f64) {
    let (lo, hi) = padded_linear_raw(min, max, frac);
    // Near f64::MAX the padding overflows; an unpadded axis beats an infinite one.
    if lo.is_finite() && hi.is_finite() {
        (lo, hi)
    } else {
        (min, max)
    }
}

fn padded_linear_raw(min: f64, max: f64, frac: f64) -> (f64, f64) {
    if max > min {
        let pad = (max - min) * frac;
        (min - pad, max + pad)
    } else {
        let d = if min != 0.0 { min.abs() * 0.1 } else { 1.0 };
        (min - d, max + d)
    }
}

/// Bounds for positive data on a log axis, padded in log space.
pub(super) fn padded_log(min: f64, max: f64, frac: f64) -> (f64, f64) {
    let (a, b) = (min.log10(), max.log10());
    let (a, b) = if b - a > 1e-12 {
        let pad = (b - a) * frac;
        (a - pad, b + pad)
    } else {
        (a - 0.3, b + 0.3)
    };
    // Keep the bounds normal positive floats: 10^-330 would round to 0 and break the log.
    (10f64.powf(a.max(-307.0)), 10f64.powf(b.min(308.0)))
}
