//! Gradient-boosted decision trees for binary classification, on forust-ml (XGBoost's algorithm:
//! second-order split gain, histogram split finding, depth-wise growth), set to XGBoost's
//! defaults: 100 rounds, `eta = 0.3`, `max_depth = 6`, `lambda = 1`, `gamma = 0`,
//! `min_child_weight = 1`, 256 bins, a base margin of 0 (`base_score = 0.5`, XGBoost before 2.0;
//! 2.x estimates it from the labels).
//!
//! Why forust-ml: it is maintained (0.8.0, 2026), pure Rust, histogram-based and parallel with
//! rayon, and it exposes XGBoost's knobs. perpetual has no rounds/depth/eta settings (and 2.x
//! needs nightly Rust); gbdt 0.1 is exact-greedy and single-threaded.

use std::path::Path;

use anyhow::{Context, Result, anyhow, ensure};
use forust_ml::GradientBooster;
use forust_ml::data::Matrix;
use forust_ml::objective::ObjectiveType;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoostConfig {
    /// Boosting rounds (one tree each).
    pub n_estimators: usize,
    /// Shrinkage `eta` applied to every leaf.
    pub learning_rate: f32,
    /// Maximum tree depth.
    pub max_depth: usize,
    /// L2 regularisation on leaf weights.
    pub lambda: f32,
    /// Minimum gain (`min_split_loss`) a split needs.
    pub gamma: f32,
    /// Minimum hessian sum in each child of a split.
    pub min_child_weight: f32,
    /// Maximum histogram bins per feature, 2..=256.
    pub max_bins: usize,
    /// Worker threads (at least 1).
    pub threads: usize,
}

impl Default for BoostConfig {
    fn default() -> Self {
        BoostConfig {
            n_estimators: 100,
            learning_rate: 0.3,
            max_depth: 6,
            lambda: 1.0,
            gamma: 0.0,
            min_child_weight: 1.0,
            max_bins: 256,
            threads: 1,
        }
    }
}

impl BoostConfig {
    fn validate(&self) -> Result<()> {
        ensure!(self.n_estimators >= 1, "n_estimators must be at least 1");
        ensure!(
            self.learning_rate.is_finite() && self.learning_rate > 0.0,
            "learning_rate must be positive, got {}",
            self.learning_rate
        );
        ensure!(
            (1..=32).contains(&self.max_depth),
            "max_depth must be 1 to 32, got {}",
            self.max_depth
        );
        for (name, v) in [
            ("lambda", self.lambda),
            ("gamma", self.gamma),
            ("min_child_weight", self.min_child_weight),
        ] {
            ensure!(
                v.is_finite() && v >= 0.0,
                "{name} must be non-negative, got {v}"
            );
        }
        ensure!(
            (2..=256).contains(&self.max_bins),
            "max_bins must be 2 to 256, got {}",
            self.max_bins
        );
        Ok(())
    }
}

pub struct BoostedTrees {
    booster: GradientBooster,
    n_features: usize,
}

impl BoostedTrees {
    /// Fits on `x` (n × d, row-major) and labels `y` in {0, 1}.
    pub fn fit(x: &[f32], y: &[u32], d: usize, cfg: &BoostConfig) -> Result<BoostedTrees> {
        cfg.validate()?;
        let n = super::metrics::check_binary_xy(x, y, d)?;
        let mut booster = GradientBooster::default()
            .set_objective_type(ObjectiveType::LogLoss)
            .set_iterations(cfg.n_estimators)
            .set_learning_rate(cfg.learning_rate)
            .set_max_depth(cfg.max_depth)
            .set_l2(cfg.lambda)
            .set_gamma(cfg.gamma)
            .set_min_leaf_weight(cfg.min_child_weight)
            .set_nbins(cfg.max_bins as u16)
            .set_base_score(0.0)
            .set_initialize_base_score(false)
            .set_parallel(true)
            .set_num_threads(Some(cfg.threads.max(1)))
            .set_seed(0);
        let columns = column_major(x, n, d);
        let labels: Vec<f64> = y.iter().map(|&v| f64::from(v)).collect();
        booster
            .fit_unweighted(&Matrix::new(&columns, n, d), &labels, None)
            .map_err(|e| anyhow!("forust-ml: {e}"))?;
        Ok(BoostedTrees {
            booster,
            n_features: d,
        })
    }

    /// P(y = 1) per row of `x` (row-major, the model's feature count per row).
    pub fn predict_proba(&self, x: &[f32]) -> Result<Vec<f32>> {
        let d = self.n_features;
        ensure!(
            x.len().is_multiple_of(d),
            "input length {} is not a multiple of the model's {d} features",
            x.len()
        );
        let n = x.len() / d;
        let columns = column_major(x, n, d);
        let margins = self.booster.predict(&Matrix::new(&columns, n, d), true);
        Ok(margins
            .iter()
            .map(|&m| (1.0 / (1.0 + (-m).exp())) as f32)
            .collect())
    }

    pub fn n_trees(&self) -> usize {
        self.booster.trees.len()
    }

    /// The trees as forust-ml's JSON (loadable by forust's Python package too).
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self
            .booster
            .json_dump()
            .map_err(|e| anyhow!("forust-ml: {e}"))?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
    }

    pub fn load(path: &Path, n_features: usize) -> Result<BoostedTrees> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let booster = GradientBooster::from_json(&text)
            .map_err(|e| anyhow!("parsing boosted trees {}: {e}", path.display()))?;
        Ok(BoostedTrees {
            booster,
            n_features,
        })
    }
}

/// forust-ml reads features column by column, as f64.
fn column_major(x: &[f32], n: usize, d: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * d];
    for (i, row) in x.chunks_exact(d).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            out[j * n + i] = f64::from(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::metrics::accuracy;
    use crate::ml::metrics::test_data::{dataset, uniform};

    #[test]
    fn learns_a_separable_problem() {
        let rule = |r: &[f32]| r[0] + 0.5 * r[1] > 0.1;
        let (x, y) = dataset(500, 6, 1, 0.0, rule);
        let (xt, yt) = dataset(500, 6, 2, 0.0, rule);
        let model = BoostedTrees::fit(&x, &y, 6, &BoostConfig::default()).unwrap();
        assert_eq!(model.n_trees(), 100);
        assert!(accuracy(&model.predict_proba(&x).unwrap(), &y) >= 0.99);
        let acc = accuracy(&model.predict_proba(&xt).unwrap(), &yt);
        assert!(acc >= 0.95, "test accuracy {acc}");
    }

    #[test]
    fn solves_noisy_xor() {
        // XOR of two signs: no linear model beats chance; depth-2 interactions solve it.
        let rule = |r: &[f32]| (r[0] > 0.0) != (r[1] > 0.0);
        let (x, y) = dataset(800, 5, 3, 0.1, rule);
        let (xt, yt) = dataset(800, 5, 4, 0.1, rule);
        let model = BoostedTrees::fit(&x, &y, 5, &BoostConfig::default()).unwrap();
        let acc = accuracy(&model.predict_proba(&xt).unwrap(), &yt);
        // Labels are 10% noisy, so ~0.9 is the ceiling; chance is 0.5.
        assert!(acc >= 0.8, "test accuracy {acc}");
    }

    #[test]
    fn deterministic_across_runs_and_threads() {
        let rule = |r: &[f32]| r[0] * r[3] > r[5] - 0.2;
        let (x, y) = dataset(300, 40, 5, 0.05, rule);
        let base = BoostConfig {
            n_estimators: 20,
            ..BoostConfig::default()
        };
        let a = BoostedTrees::fit(&x, &y, 40, &base).unwrap();
        let b = BoostedTrees::fit(&x, &y, 40, &base).unwrap();
        let threaded = BoostConfig { threads: 3, ..base };
        let c = BoostedTrees::fit(&x, &y, 40, &threaded).unwrap();
        let p = a.predict_proba(&x).unwrap();
        assert_eq!(p, b.predict_proba(&x).unwrap());
        assert_eq!(p, c.predict_proba(&x).unwrap());
    }

    #[test]
    fn save_load_round_trip() {
        let rule = |r: &[f32]| (r[0] > 0.0) != (r[1] > 0.3);
        let (x, y) = dataset(300, 4, 8, 0.0, rule);
        let cfg = BoostConfig {
            n_estimators: 10,
            ..BoostConfig::default()
        };
        let model = BoostedTrees::fit(&x, &y, 4, &cfg).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gbdt.json");
        model.save(&path).unwrap();
        let loaded = BoostedTrees::load(&path, 4).unwrap();
        assert_eq!(loaded.n_trees(), 10);
        assert_eq!(
            loaded.predict_proba(&x).unwrap(),
            model.predict_proba(&x).unwrap()
        );
        std::fs::write(&path, b"[]").unwrap();
        assert!(BoostedTrees::load(&path, 4).is_err());
    }

    #[test]
    fn bad_input_is_an_error() {
        let cfg = BoostConfig::default();
        let x = [0.0f32, 1.0, 2.0, 3.0];
        assert!(BoostedTrees::fit(&x, &[0, 1, 1], 2, &cfg).is_err());
        assert!(BoostedTrees::fit(&x[..3], &[0, 1], 2, &cfg).is_err());
        assert!(BoostedTrees::fit(&x, &[0, 2], 2, &cfg).is_err());
        assert!(BoostedTrees::fit(&[], &[], 2, &cfg).is_err());
        assert!(BoostedTrees::fit(&x, &[0, 1], 0, &cfg).is_err());
        assert!(BoostedTrees::fit(&[f32::INFINITY, 1.0, 2.0, 3.0], &[0, 1], 2, &cfg).is_err());
        for bad in [
            BoostConfig {
                max_bins: 257,
                ..cfg
            },
            BoostConfig {
                max_depth: 0,
                ..cfg
            },
            BoostConfig {
                learning_rate: 0.0,
                ..cfg
            },
            BoostConfig {
                lambda: -1.0,
                ..cfg
            },
        ] {
            assert!(BoostedTrees::fit(&x, &[0, 1], 2, &bad).is_err());
        }
        let mut s = 9;
        let x20: Vec<f32> = (0..40).map(|_| uniform(&mut s)).collect();
        let model = BoostedTrees::fit(&x20, &[0, 1].repeat(10), 2, &cfg).unwrap();
        assert!(model.predict_proba(&[1.0, 2.0, 3.0]).is_err());
    }
}
