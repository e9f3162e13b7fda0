//! Binary logistic regression with an L2 penalty on linfa-logistic (L-BFGS from argmin), set to
//! scikit-learn's `LogisticRegression` defaults: `C = 1`, an unpenalised intercept, 100
//! iterations, gradient tolerance 1e-4, inputs not standardised.
//!
//! linfa minimises `Σ log-loss + α‖w‖²/2`, scikit-learn `C·Σ log-loss + ‖w‖²/2`: the same
//! minimiser with `α = 1/C`. linfa calls whichever label it finds more frequent its "positive"
//! class; the model stored here always reports P(label 1).

use std::path::Path;

use anyhow::{Context, Result, anyhow, ensure};
use linfa::prelude::*;
use linfa_logistic::LogisticRegression as Linfa;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogisticConfig {
    /// Inverse regularisation strength (sklearn's `C`).
    pub c: f64,
    /// L-BFGS iterations, sklearn's `max_iter`.
    pub max_iter: usize,
    /// Stop when the gradient's norm is at most this.
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
    /// Weights of P(label 1), one per feature.
    pub weights: Vec<f64>,
    pub intercept: f64,
}

impl LogisticRegression {
    /// Fits on `x` (n × d, row-major) and labels `y` in {0, 1}; both classes must occur.
    pub fn fit(x: &[f32], y: &[u32], d: usize, cfg: &LogisticConfig) -> Result<LogisticRegression> {
        let n = super::metrics::check_binary_xy(x, y, d)?;
        ensure!(
            cfg.c.is_finite() && cfg.c > 0.0,
            "C must be positive and finite, got {}",
            cfg.c
        );
        ensure!(cfg.max_iter >= 1, "max_iter must be at least 1");
        let positives = y.iter().filter(|&&v| v == 1).count();
        ensure!(
            positives > 0 && positives < n,
            "logistic regression needs samples of both classes (got {positives} of {n} positive)"
        );
        let features = Array2::from_shape_vec((n, d), x.iter().map(|&v| f64::from(v)).collect())?;
        let targets = Array1::from_iter(y.iter().copied());
        let fitted = Linfa::default()
            .alpha(1.0 / cfg.c)
            .max_iterations(cfg.max_iter as u64)
            .gradient_tolerance(cfg.tol)
            .fit(&Dataset::new(features, targets))
            .map_err(|e| anyhow!("linfa-logistic: {e}"))?;
        // linfa's probabilities are of its positive class; flip the sign when that is label 0.
        let sign = if fitted.labels().pos.class == 1 {
            1.0
        } else {
            -1.0
        };
        Ok(LogisticRegression {
            weights: fitted.params().iter().map(|w| sign * w).collect(),
            intercept: sign * fitted.intercept(),
        })
    }

    /// P(y = 1) per row of `x` (n × d, row-major, d = `weights.len()`).
    pub fn predict_proba(&self, x: &[f32]) -> Result<Vec<f32>> {
        let d = self.weights.len();
        ensure!(
            d > 0 && x.len().is_multiple_of(d),
            "input length {} is not a multiple of the model's {d} features",
            x.len()
        );
        Ok(x.chunks_exact(d)
            .map(|row| {
                let z: f64 = row
                    .iter()
                    .zip(&self.weights)
                    .map(|(&a, &w)| f64::from(a) * w)
                    .sum::<f64>()
                    + self.intercept;
                (1.0 / (1.0 + (-z).exp())) as f32
            })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::metrics::accuracy;
    use crate::ml::metrics::test_data::dataset;

    fn separable(n: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
        dataset(n, d, seed, 0.0, |r| r[0] + 0.5 * r[1] - 0.2 > 0.0)
    }

    fn sigmoid(z: f64) -> f64 {
        1.0 / (1.0 + (-z).exp())
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
    fn matches_the_newton_solution_of_sklearns_objective() {
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
            for (got, want) in model.weights.iter().chain([&model.intercept]).zip(want) {
                assert!((got - want).abs() < 1e-5, "C={c}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn learns_a_separable_problem() {
        let (x, y) = separable(400, 5, 1);
        let model = LogisticRegression::fit(&x, &y, 5, &LogisticConfig::default()).unwrap();
        let (xt, yt) = separable(400, 5, 2);
        let acc = accuracy(&model.predict_proba(&xt).unwrap(), &yt);
        assert!(acc >= 0.95, "accuracy {acc}");
    }

    #[test]
    fn label_one_is_the_positive_class_whichever_is_more_frequent() {
        // Mostly label 1, then mostly label 0: P(label 1) must follow the rule either way.
        for threshold in [-0.6f32, 0.6] {
            let (x, y) = dataset(400, 3, 5, 0.0, |r| r[0] > threshold);
            let model = LogisticRegression::fit(&x, &y, 3, &LogisticConfig::default()).unwrap();
            let p = model
                .predict_proba(&[1.0, 0.0, 0.0, -1.0, 0.0, 0.0])
                .unwrap();
            assert!(p[0] > 0.5 && p[1] < 0.5, "threshold {threshold}: {p:?}");
        }
    }

    #[test]
    fn cannot_solve_xor() {
        // The counterpart of boosting's XOR test: a linear model stays near chance.
        let (x, y) = dataset(800, 2, 4, 0.0, |r| (r[0] > 0.0) != (r[1] > 0.0));
        let model = LogisticRegression::fit(&x, &y, 2, &LogisticConfig::default()).unwrap();
        let acc = accuracy(&model.predict_proba(&x).unwrap(), &y);
        assert!(acc < 0.6, "accuracy {acc}");
    }

    #[test]
    fn stronger_penalty_shrinks_the_weights() {
        let (x, y) = dataset(300, 4, 6, 0.1, |r| r[0] - r[2] > 0.0);
        let norm = |c: f64| -> f64 {
            let cfg = LogisticConfig {
                c,
                ..LogisticConfig::default()
            };
            let m = LogisticRegression::fit(&x, &y, 4, &cfg).unwrap();
            m.weights.iter().map(|w| w * w).sum::<f64>().sqrt()
        };
        assert!(norm(0.01) < norm(1.0) && norm(1.0) < norm(100.0));
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
        for (p, q) in a
            .predict_proba(&x)
            .unwrap()
            .iter()
            .zip(c.predict_proba(&x).unwrap())
        {
            assert!((p - q).abs() <= 1e-6);
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        let cfg = LogisticConfig::default();
        let x = [0.0f32, 1.0, 2.0, 3.0];
        assert!(LogisticRegression::fit(&x, &[0, 1, 1], 2, &cfg).is_err());
        assert!(LogisticRegression::fit(&x, &[1, 1], 2, &cfg).is_err());
        let bad_c = LogisticConfig { c: 0.0, ..cfg };
        assert!(LogisticRegression::fit(&x, &[0, 1], 2, &bad_c).is_err());
        let model = LogisticRegression::fit(&x, &[0, 1], 2, &cfg).unwrap();
        assert!(model.predict_proba(&[1.0, 2.0, 3.0]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.json");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(LogisticRegression::load(&path).is_err());
        assert!(LogisticRegression::load(&dir.path().join("missing.json")).is_err());
    }
}
