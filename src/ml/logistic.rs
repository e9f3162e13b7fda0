//! Binary logistic regression with an L2 penalty, following scikit-learn's `LogisticRegression`
//! defaults (`penalty="l2"`, `C=1.0`, `fit_intercept=True`, `solver="lbfgs"`, `max_iter=100`,
//! `tol=1e-4`), plus the two metrics the baselines report ([`log_loss`], [`accuracy`]).
//!
//! The objective is scikit-learn's (`_logistic_regression_path` with `LinearModelLoss`): the
//! *mean* log-loss plus `‖w‖² / (2·C·n)`, the intercept unpenalised. That has the same minimiser
//! as `Σ log-loss + ‖w‖² / (2C)`, but the scaling matters for the stopping rule, which is SciPy
//! L-BFGS-B's as sklearn calls it: stop when `max |∂f/∂θ| ≤ tol` (`gtol`), when the relative
//! decrease of `f` falls below `64·ε` (`ftol`), or after `max_iter` iterations. The optimiser is
//! a plain L-BFGS (10 correction pairs, SciPy's `maxcor`) with a strong-Wolfe line search
//! (`c1 = 1e-3`, `c2 = 0.9`, at most 50 evaluations, SciPy's `maxls` as sklearn sets it), started
//! from zero with a first step of `1/‖g‖` like L-BFGS-B. Inputs are not standardised: sklearn
//! does not do it either. Iterates are not bit-identical to SciPy's, so a run that stops on
//! `max_iter` (sklearn would warn) can differ slightly; converged solutions agree to `tol`.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

/// SciPy L-BFGS-B settings that sklearn fixes: correction pairs, line-search budget, `ftol`.
const MEMORY: usize = 10;
const MAX_LINE_SEARCH: usize = 50;
const FTOL: f64 = 64.0 * f64::EPSILON;
/// Sufficient-decrease and curvature constants of L-BFGS-B's line search (`dcsrch`).
const WOLFE_C1: f64 = 1e-3;
const WOLFE_C2: f64 = 0.9;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LogisticConfig {
    /// Inverse regularisation strength (sklearn's `C`).
    pub c: f64,
    /// L-BFGS iterations (not function evaluations), sklearn's `max_iter`.
    pub max_iter: usize,
    /// Stop when the largest gradient component of the mean objective is at most this.
    pub tol: f64,
}

impl Default for LogisticConfig {
    fn default() -> Self {
        LogisticConfig {
            c: 1.0,
            max_iter: 100,
            tol: 1e-4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogisticRegression {
    pub weights: Vec<f64>,
    pub intercept: f64,
    /// Iterations the optimiser ran (sklearn's `n_iter_`).
    #[serde(default)]
    pub n_iter: usize,
    /// False when it stopped on `max_iter` or a failed line search (sklearn warns then).
    #[serde(default)]
    pub converged: bool,
}

impl LogisticRegression {
    /// Fits on `x` (n × d, row-major) and labels `y` in {0, 1}; both classes must occur.
    pub fn fit(x: &[f32], y: &[u32], d: usize, cfg: &LogisticConfig) -> Result<LogisticRegression> {
        let n = check_xy(x, y, d)?;
        ensure!(
            cfg.c.is_finite() && cfg.c > 0.0,
            "C must be positive and finite, got {}",
            cfg.c
        );
        ensure!(
            cfg.tol.is_finite() && cfg.tol >= 0.0,
            "tol must be non-negative, got {}",
            cfg.tol
        );
        let positives = y.iter().filter(|&&v| v == 1).count();
        ensure!(
            positives > 0 && positives < n,
            "logistic regression needs samples of both classes (got {positives} of {n} positive)"
        );

        let problem = Objective {
            x,
            y,
            n,
            d,
            l2: 1.0 / (cfg.c * n as f64),
        };
        let (theta, n_iter, converged) = lbfgs(&problem, cfg);
        let mut weights = theta;
        let intercept = weights.pop().unwrap_or(0.0);
        Ok(LogisticRegression {
            weights,
            intercept,
            n_iter,
            converged,
        })
    }

    /// P(y = 1) per row of `x` (n × d, row-major, d = `weights.len()`).
    ///
    /// # Panics
    /// If `x.len()` is not a multiple of the feature count; [`Self::try_predict_proba`] checks.
    pub fn predict_proba(&self, x: &[f32]) -> Vec<f32> {
        match self.try_predict_proba(x) {
            Ok(p) => p,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// [`Self::predict_proba`] that reports a shape mismatch as an error.
    pub fn try_predict_proba(&self, x: &[f32]) -> Result<Vec<f32>> {
        let d = self.weights.len();
        ensure!(
            (d == 0 && x.is_empty()) || (d > 0 && x.len().is_multiple_of(d)),
            "input length {} is not a multiple of the model's {d} features",
            x.len()
        );
        if d == 0 {
            return Ok(Vec::new());
        }
        Ok(x.chunks_exact(d)
            .map(|row| sigmoid(dot(row, &self.weights) + self.intercept) as f32)
            .collect())
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec(self)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
    }

    pub fn load(path: &Path) -> Result<LogisticRegression> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let model: LogisticRegression = serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing logistic model {}", path.display()))?;
        ensure!(
            model.weights.iter().all(|w| w.is_finite()) && model.intercept.is_finite(),
            "logistic model {} has non-finite parameters",
            path.display()
        );
        Ok(model)
    }
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

/// Checks a training set and returns its row count.
fn check_xy(x: &[f32], y: &[u32], d: usize) -> Result<usize> {
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

fn dot(row: &[f32], w: &[f64]) -> f64 {
    row.iter().zip(w).map(|(&a, &b)| f64::from(a) * b).sum()
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// log(1 + e^z) without overflow.
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// sklearn's objective over θ = [w, b]: mean log-loss + ½·l2·‖w‖².
struct Objective<'a> {
    x: &'a [f32],
    y: &'a [u32],
    n: usize,
    d: usize,
    l2: f64,
}

impl Objective<'_> {
    /// Value and gradient at `theta`.
    fn eval(&self, theta: &[f64], grad: &mut [f64]) -> f64 {
        let (w, b) = theta.split_at(self.d);
        let b = b[0];
        grad.fill(0.0);
        let mut loss = 0.0;
        for (row, &yi) in self.x.chunks_exact(self.d).zip(self.y) {
            let z = dot(row, w) + b;
            let yi = f64::from(yi);
            loss += softplus(z) - yi * z;
            let r = sigmoid(z) - yi;
            for (g, &v) in grad[..self.d].iter_mut().zip(row) {
                *g += r * f64::from(v);
            }
            grad[self.d] += r;
        }
        let inv_n = 1.0 / self.n as f64;
        loss *= inv_n;
        for (g, &wj) in grad[..self.d].iter_mut().zip(w) {
            *g = *g * inv_n + self.l2 * wj;
        }
        grad[self.d] *= inv_n;
        loss + 0.5 * self.l2 * w.iter().map(|v| v * v).sum::<f64>()
    }
}

fn inf_norm(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

fn vdot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Minimises `obj` from θ = 0. Returns (θ, iterations, converged).
fn lbfgs(obj: &Objective, cfg: &LogisticConfig) -> (Vec<f64>, usize, bool) {
    let dim = obj.d + 1;
    let mut theta = vec![0.0; dim];
    let mut grad = vec![0.0; dim];
    let mut f = obj.eval(&theta, &mut grad);
    if inf_norm(&grad) <= cfg.tol {
        return (theta, 0, true);
    }
    let mut history: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> =
        std::collections::VecDeque::with_capacity(MEMORY);
    let mut dir = vec![0.0; dim];
    let mut alpha = [0.0; MEMORY];
    let mut trial = vec![0.0; dim];
    let mut trial_grad = vec![0.0; dim];

    for iter in 1..=cfg.max_iter {
        // Two-loop recursion: dir = −H·g, H₀ scaled by sᵀy / yᵀy of the newest pair.
        dir.iter_mut().zip(&grad).for_each(|(d, g)| *d = -g);
        for (k, (s, yv, rho)) in history.iter().enumerate().rev() {
            alpha[k] = rho * vdot(s, &dir);
            dir.iter_mut().zip(yv).for_each(|(d, y)| *d -= alpha[k] * y);
        }
        let first_step = match history.back() {
            Some((s, yv, _)) => {
                let gamma = vdot(s, yv) / vdot(yv, yv);
                dir.iter_mut().for_each(|d| *d *= gamma);
                1.0
            }
            // L-BFGS-B's first step along −g has length 1.
            None => 1.0 / vdot(&dir, &dir).sqrt(),
        };
        for (k, (s, yv, rho)) in history.iter().enumerate() {
            let beta = rho * vdot(yv, &dir);
            dir.iter_mut()
                .zip(s)
                .for_each(|(d, s)| *d += (alpha[k] - beta) * s);
        }

        let search = line_search(
            obj,
            &theta,
            f,
            &grad,
            &dir,
            first_step,
            &mut trial,
            &mut trial_grad,
        );
        let Some(f_new) = search else {
            if history.is_empty() {
                // Steepest descent failed too: no further progress at this precision.
                return (theta, iter, false);
            }
            // As L-BFGS-B does: drop the curvature memory and retry along −g.
            history.clear();
            continue;
        };

        let s: Vec<f64> = trial.iter().zip(&theta).map(|(a, b)| a - b).collect();
        let yv: Vec<f64> = trial_grad.iter().zip(&grad).map(|(a, b)| a - b).collect();
        let sy = vdot(&s, &yv);
        // Skip pairs without positive curvature; they would break H's positive-definiteness.
        if sy > f64::EPSILON * vdot(&yv, &yv) {
            if history.len() == MEMORY {
                history.pop_front();
            }
            history.push_back((s, yv, 1.0 / sy));
        }
        theta.copy_from_slice(&trial);
        grad.copy_from_slice(&trial_grad);
        let f_old = f;
        f = f_new;
        if (f_old - f) / f_old.abs().max(f.abs()).max(1.0) <= FTOL || inf_norm(&grad) <= cfg.tol {
            return (theta, iter, true);
        }
    }
    (theta, cfg.max_iter, false)
}

/// Strong-Wolfe line search (Nocedal & Wright, algorithms 3.5 and 3.6, cubic interpolation).
/// Leaves the accepted point in `x_out`/`g_out` and returns its value; `None` on failure.
#[allow(clippy::too_many_arguments)]
fn line_search(
    obj: &Objective,
    x0: &[f64],
    f0: f64,
    g0: &[f64],
    dir: &[f64],
    step0: f64,
    x_out: &mut [f64],
    g_out: &mut [f64],
) -> Option<f64> {
    let dg0 = vdot(g0, dir);
    if dg0.is_nan() || dg0 >= 0.0 {
        return None;
    }
    let eval_at = |a: f64, x_out: &mut [f64], g_out: &mut [f64]| -> (f64, f64) {
        for ((xo, &x), &d) in x_out.iter_mut().zip(x0).zip(dir) {
            *xo = x + a * d;
        }
        let f = obj.eval(x_out, g_out);
        (f, vdot(g_out, dir))
    };

    // Bracketing phase.
    let (mut a_prev, mut f_prev, mut dg_prev) = (0.0, f0, dg0);
    let mut a = step0;
    let (mut lo, mut hi);
    let mut evals = 0;
    loop {
        let (fa, dga) = eval_at(a, x_out, g_out);
        evals += 1;
        if !fa.is_finite() {
            // Overshot into overflow: shrink towards the last good point.
            hi = (a, fa, dga);
            lo = (a_prev, f_prev, dg_prev);
            break;
        }
        if fa > f0 + WOLFE_C1 * a * dg0 || (evals > 1 && fa >= f_prev) {
            lo = (a_prev, f_prev, dg_prev);
            hi = (a, fa, dga);
            break;
        }
        if dga.abs() <= -WOLFE_C2 * dg0 {
            return Some(fa);
        }
        if dga >= 0.0 {
            lo = (a, fa, dga);
            hi = (a_prev, f_prev, dg_prev);
            break;
        }
        if evals >= MAX_LINE_SEARCH {
            return None;
        }
        (a_prev, f_prev, dg_prev) = (a, fa, dga);
        a *= 2.0;
    }

    // Zoom phase: shrink [lo, hi] keeping lo the best point satisfying sufficient decrease.
    while evals < MAX_LINE_SEARCH {
        let a_new = interpolate(lo, hi);
        let (fa, dga) = eval_at(a_new, x_out, g_out);
        evals += 1;
        if !fa.is_finite() || fa > f0 + WOLFE_C1 * a_new * dg0 || fa >= lo.1 {
            hi = (a_new, fa, dga);
        } else {
            if dga.abs() <= -WOLFE_C2 * dg0 {
                return Some(fa);
            }
            if dga * (hi.0 - lo.0) >= 0.0 {
                hi = lo;
            }
            lo = (a_new, fa, dga);
        }
        if (hi.0 - lo.0).abs() <= 1e-16 * lo.0.abs().max(1e-16) {
            break;
        }
    }
    // Budget spent: accept the best sufficient-decrease point if it moved at all.
    if lo.0 > 0.0 && lo.1 < f0 {
        let (f, _) = eval_at(lo.0, x_out, g_out);
        return Some(f);
    }
    None
}

/// Minimiser of the cubic through two (step, value, slope) points, kept well inside the
/// interval; bisection when the cubic is unusable.
fn interpolate(a: (f64, f64, f64), b: (f64, f64, f64)) -> f64 {
    let (lo, hi) = if a.0 < b.0 { (a.0, b.0) } else { (b.0, a.0) };
    let mid = 0.5 * (a.0 + b.0);
    if !b.1.is_finite() {
        return mid;
    }
    let d1 = a.2 + b.2 - 3.0 * (a.1 - b.1) / (a.0 - b.0);
    let disc = d1 * d1 - a.2 * b.2;
    if disc.is_nan() || disc < 0.0 {
        return mid;
    }
    let d2 = (b.0 - a.0).signum() * disc.sqrt();
    let t = b.0 - (b.0 - a.0) * (b.2 + d2 - d1) / (b.2 - a.2 + 2.0 * d2);
    let margin = 0.1 * (hi - lo);
    if t.is_finite() && t > lo + margin && t < hi - margin {
        t
    } else {
        mid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random numbers in [0, 1) (SplitMix64), so tests need no crate.
    fn uniform(state: &mut u64) -> f32 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }

    fn separable(n: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
        let mut s = seed;
        let mut x = Vec::with_capacity(n * d);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let row: Vec<f32> = (0..d).map(|_| uniform(&mut s) * 2.0 - 1.0).collect();
            let score = row[0] + 0.5 * row[1] - 0.2;
            y.push(u32::from(score > 0.0));
            x.extend(row);
        }
        (x, y)
    }

    /// Newton's method on Σ log-loss + ‖w‖²/(2C) (intercept unpenalised), d = 2.
    fn newton(x: &[f32], y: &[u32], c: f64) -> [f64; 3] {
        let mut t = [0.0f64; 3];
        for _ in 0..50 {
            let mut g = [t[0] / c, t[1] / c, 0.0];
            let mut h = [[1.0 / c, 0.0, 0.0], [0.0, 1.0 / c, 0.0], [0.0, 0.0, 0.0]];
            for (row, &yi) in x.chunks_exact(2).zip(y) {
                let v = [f64::from(row[0]), f64::from(row[1]), 1.0];
                let p = sigmoid(t[0] * v[0] + t[1] * v[1] + t[2]);
                for i in 0..3 {
                    g[i] += (p - f64::from(yi)) * v[i];
                    for j in 0..3 {
                        h[i][j] += p * (1.0 - p) * v[i] * v[j];
                    }
                }
            }
            let step = solve3(h, g);
            for i in 0..3 {
                t[i] -= step[i];
            }
        }
        t
    }

    /// Gaussian elimination with partial pivoting for a 3 × 3 system.
    fn solve3(mut a: [[f64; 3]; 3], mut b: [f64; 3]) -> [f64; 3] {
        for col in 0..3 {
            let piv = (col..3)
                .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
                .unwrap_or(col);
            a.swap(col, piv);
            b.swap(col, piv);
            let pivot_row = a[col];
            for r in col + 1..3 {
                let f = a[r][col] / pivot_row[col];
                for (x, p) in a[r][col..].iter_mut().zip(&pivot_row[col..]) {
                    *x -= f * p;
                }
                b[r] -= f * b[col];
            }
        }
        let mut out = [0.0; 3];
        for r in (0..3).rev() {
            let s: f64 = (r + 1..3).map(|k| a[r][k] * out[k]).sum();
            out[r] = (b[r] - s) / a[r][r];
        }
        out
    }

    #[test]
    fn learns_a_separable_problem() {
        let (x, y) = separable(400, 5, 1);
        let model = LogisticRegression::fit(&x, &y, 5, &LogisticConfig::default()).unwrap();
        let (xt, yt) = separable(400, 5, 2);
        let acc = accuracy(&model.predict_proba(&xt), &yt);
        assert!(acc >= 0.95, "accuracy {acc}");
    }

    #[test]
    fn cannot_solve_xor() {
        // The counterpart of boosting's XOR test: a linear model stays near chance.
        let mut s = 4;
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..800 {
            let (a, b) = (uniform(&mut s) * 2.0 - 1.0, uniform(&mut s) * 2.0 - 1.0);
            x.extend([a, b]);
            y.push(u32::from((a > 0.0) != (b > 0.0)));
        }
        let model = LogisticRegression::fit(&x, &y, 2, &LogisticConfig::default()).unwrap();
        let acc = accuracy(&model.predict_proba(&x), &y);
        assert!(acc < 0.6, "accuracy {acc}");
    }

    #[test]
    fn matches_newton_solution() {
        // Overlapping classes, so the optimum is finite even with a weak penalty.
        let x: Vec<f32> = vec![
            0.5, 1.0, 1.5, -0.5, -1.0, 0.3, 2.0, 2.5, -2.0, -1.0, 0.1, 0.2, 1.2, -1.5, -0.7, 0.9,
            3.0, 1.0, -0.4, -2.2,
        ];
        let y = vec![1, 0, 0, 1, 0, 1, 1, 0, 1, 0];
        for c in [1.0, 0.3, 10.0] {
            let cfg = LogisticConfig {
                c,
                max_iter: 1000,
                tol: 1e-10,
            };
            let model = LogisticRegression::fit(&x, &y, 2, &cfg).unwrap();
            let want = newton(&x, &y, c);
            assert!(model.converged);
            for (got, want) in model.weights.iter().chain([&model.intercept]).zip(want) {
                assert!((got - want).abs() < 1e-6, "C={c}: {got} vs {want}");
            }
            // Defaults stop at tol = 1e-4 on the mean gradient: close, not exact.
            let defaults = LogisticConfig {
                c,
                ..LogisticConfig::default()
            };
            let loose = LogisticRegression::fit(&x, &y, 2, &defaults).unwrap();
            for (got, want) in loose.weights.iter().chain([&loose.intercept]).zip(want) {
                assert!((got - want).abs() < 1e-3, "C={c} defaults: {got} vs {want}");
            }
        }
    }

    #[test]
    fn deterministic_and_round_trips() {
        let (x, y) = separable(200, 8, 3);
        let cfg = LogisticConfig::default();
        let a = LogisticRegression::fit(&x, &y, 8, &cfg).unwrap();
        let b = LogisticRegression::fit(&x, &y, 8, &cfg).unwrap();
        assert_eq!(a, b);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lr.json");
        a.save(&path).unwrap();
        let c = LogisticRegression::load(&path).unwrap();
        // serde_json's default float parser may be one ulp off (no `float_roundtrip` feature).
        for (u, v) in a
            .weights
            .iter()
            .chain([&a.intercept])
            .zip(c.weights.iter().chain([&c.intercept]))
        {
            assert!((u - v).abs() <= 1e-14 * u.abs().max(1.0), "{u} vs {v}");
        }
        assert_eq!((a.n_iter, a.converged), (c.n_iter, c.converged));
        for (p, q) in a.predict_proba(&x).iter().zip(c.predict_proba(&x)) {
            assert!((p - q).abs() <= 1e-6);
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        let cfg = LogisticConfig::default();
        let x = [0.0f32, 1.0, 2.0, 3.0];
        assert!(LogisticRegression::fit(&x, &[0, 1, 1], 2, &cfg).is_err());
        assert!(LogisticRegression::fit(&x[..3], &[0, 1], 2, &cfg).is_err());
        assert!(LogisticRegression::fit(&x, &[0, 2], 2, &cfg).is_err());
        assert!(LogisticRegression::fit(&[], &[], 2, &cfg).is_err());
        assert!(LogisticRegression::fit(&x, &[0, 1], 0, &cfg).is_err());
        assert!(LogisticRegression::fit(&x, &[1, 1], 2, &cfg).is_err());
        assert!(LogisticRegression::fit(&[f32::NAN, 1.0, 2.0, 3.0], &[0, 1], 2, &cfg).is_err());
        let bad_c = LogisticConfig { c: 0.0, ..cfg };
        assert!(LogisticRegression::fit(&x, &[0, 1], 2, &bad_c).is_err());
        let model = LogisticRegression::fit(&x, &[0, 1], 2, &cfg).unwrap();
        assert!(model.try_predict_proba(&[1.0, 2.0, 3.0]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.json");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(LogisticRegression::load(&path).is_err());
        assert!(LogisticRegression::load(&dir.path().join("missing.json")).is_err());
    }

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
}
