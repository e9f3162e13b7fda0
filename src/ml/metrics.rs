//! What the non-neural baselines share: input checks and the two metrics they report.

use anyhow::{Result, bail, ensure};

/// Checks `x` (n × d, row-major, finite) against labels `y` in {0, 1}; returns n.
pub fn check_binary_xy(x: &[f32], y: &[u32], d: usize) -> Result<usize> {
    ensure!(d > 0, "feature count must be positive");
    ensure!(!y.is_empty(), "empty training set");
    ensure!(
        x.len().is_multiple_of(d),
        "input length {} is not a multiple of {d} features",
        x.len()
    );
    let n = x.len() / d;
    ensure!(n == y.len(), "{n} rows of features but {} labels", y.len());
    if let Some(bad) = y.iter().find(|&&v| v > 1) {
        bail!("labels must be 0 or 1, found {bad}");
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        bail!(
            "non-finite feature value at row {}, column {}",
            i / d,
            i % d
        );
    }
    Ok(n)
}

/// Mean log-loss (cross-entropy) of probabilities `p` for labels `y`, with `p` clipped to
/// `[ε, 1 − ε]`, ε = `f32::EPSILON` (sklearn's `log_loss` clips at the input dtype's epsilon).
/// NaN when the lengths differ, the input is empty or a label is not 0/1.
pub fn log_loss(p: &[f32], y: &[u32]) -> f64 {
    if p.len() != y.len() || p.is_empty() || y.iter().any(|&v| v > 1) {
        return f64::NAN;
    }
    let eps = f64::from(f32::EPSILON);
    let total: f64 = p
        .iter()
        .zip(y)
        .map(|(&pi, &yi)| {
            let pi = f64::from(pi).clamp(eps, 1.0 - eps);
            if yi == 1 { -pi.ln() } else { -(1.0 - pi).ln() }
        })
        .sum();
    total / p.len() as f64
}

/// Fraction of rows where `p > 0.5` agrees with `y == 1` (sklearn's and XGBoost's `predict`).
/// NaN when the lengths differ, the input is empty or a label is not 0/1.
pub fn accuracy(p: &[f32], y: &[u32]) -> f64 {
    if p.len() != y.len() || p.is_empty() || y.iter().any(|&v| v > 1) {
        return f64::NAN;
    }
    let correct = p
        .iter()
        .zip(y)
        .filter(|&(&pi, &yi)| (pi > 0.5) == (yi == 1))
        .count();
    correct as f64 / p.len() as f64
}

/// Small seeded problems for the learners' tests.
#[cfg(test)]
pub mod test_data {
    /// Deterministic pseudo-random numbers in [0, 1) (SplitMix64), so tests need no crate.
    pub fn uniform(state: &mut u64) -> f32 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }

    /// n rows of d features uniform in [−1, 1), labelled by `rule`, a `noise` fraction flipped.
    pub fn dataset(
        n: usize,
        d: usize,
        seed: u64,
        noise: f32,
        rule: impl Fn(&[f32]) -> bool,
    ) -> (Vec<f32>, Vec<u32>) {
        let mut s = seed;
        let mut x = Vec::with_capacity(n * d);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let row: Vec<f32> = (0..d).map(|_| uniform(&mut s) * 2.0 - 1.0).collect();
            let flip = uniform(&mut s) < noise;
            y.push(u32::from(rule(&row) != flip));
            x.extend(row);
        }
        (x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics() {
        let p = [0.9f32, 0.2, 0.6, 0.4];
        let y = [1, 0, 0, 1];
        assert_eq!(accuracy(&p, &y), 0.5);
        let want = -(0.9f64.ln() + 0.8f64.ln() + 0.4f64.ln() + 0.4f64.ln()) / 4.0;
        assert!((log_loss(&p, &y) - want).abs() < 1e-6);
        assert!(log_loss(&[1.0], &[0]).is_finite());
        assert!(accuracy(&p, &y[..3]).is_nan());
        assert!(log_loss(&[], &[]).is_nan());
        assert!(accuracy(&[0.5], &[3]).is_nan());
    }

    #[test]
    fn input_checks() {
        let x = [0.0f32, 1.0, 2.0, 3.0];
        assert_eq!(check_binary_xy(&x, &[0, 1], 2).unwrap(), 2);
        assert!(check_binary_xy(&x, &[0, 1, 1], 2).is_err());
        assert!(check_binary_xy(&x[..3], &[0, 1], 2).is_err());
        assert!(check_binary_xy(&x, &[0, 2], 2).is_err());
        assert!(check_binary_xy(&[], &[], 2).is_err());
        assert!(check_binary_xy(&x, &[0, 1], 0).is_err());
        let err = check_binary_xy(&[1.0, f32::NAN, 2.0, 3.0], &[0, 1], 2).unwrap_err();
        assert!(err.to_string().contains("row 0, column 1"), "{err}");
    }
}
