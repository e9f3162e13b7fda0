//! Typed files passed between stages, so that producers and consumers agree on one format:
//! - a dataset folder: `dataset.json` (schema) + `{train,validation,test}.bin` (raw little-endian
//!   f32 features, row-major, then u32 labels): loading 100k rows costs a memcpy, not a CSV parse;
//! - a training run folder: `run.json` (parameters, per-epoch records), `steps.json` (loss of every
//!   batch step), `metrics.json` (final numbers), `model.json` + `model.safetensors`.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::datasets::Table;

pub const SPLITS: [&str; 3] = ["train", "validation", "test"];

/// A feature transform applied on top of the raw features (kept so that a model trained on
/// transformed features can be evaluated on raw points, e.g. a decision-boundary grid).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Transform {
    /// Each raw feature x → sin(α·x) for every α; columns ordered feature-major:
    /// `sin(α₁·x₁), sin(α₂·x₁), …, sin(α₁·x₂), …`.
    Sine { alphas: Vec<f64> },
}

impl Transform {
    pub fn apply_row(&self, raw: &[f32], out: &mut Vec<f32>) {
        match self {
            Transform::Sine { alphas } => {
                for &x in raw {
                    for &a in alphas {
                        out.push((a * x as f64).sin() as f32);
                    }
                }
            }
        }
    }

    pub fn feature_names(&self, raw: &[String]) -> Vec<String> {
        match self {
            Transform::Sine { alphas } => raw
                .iter()
                .flat_map(|f| alphas.iter().map(move |a| format!("sin({a}*{f})")))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DatasetMeta {
    pub features: Vec<String>,
    pub label: String,
    pub n_classes: usize,
    /// The features before `transforms` (equal to `features` when there is none).
    pub raw_features: Vec<String>,
    #[serde(default)]
    pub transforms: Vec<Transform>,
    pub rows: [usize; 3],
    /// Where the data came from, for reports.
    pub source: String,
    /// A name per test row (the image files of `features.backbone`), for per-row predictions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_names: Vec<String>,
}

pub struct Dataset {
    pub meta: DatasetMeta,
    pub splits: [Table; 3],
}

impl Dataset {
    pub fn train(&self) -> &Table {
        &self.splits[0]
    }
    pub fn validation(&self) -> &Table {
        &self.splits[1]
    }
    pub fn test(&self) -> &Table {
        &self.splits[2]
    }

    /// Applies the dataset's transforms to raw feature rows (for points that are not in it).
    pub fn transform_rows(meta: &DatasetMeta, raw: &[f32], raw_dim: usize) -> Vec<f32> {
        if meta.transforms.is_empty() {
            return raw.to_vec();
        }
        let mut out = Vec::new();
        for row in raw.chunks(raw_dim.max(1)) {
            let mut current = row.to_vec();
            for t in &meta.transforms {
                let mut next = Vec::new();
                t.apply_row(&current, &mut next);
                current = next;
            }
            out.extend(current);
        }
        out
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let meta = serde_json::to_vec_pretty(&self.meta)?;
        fs::write(dir.join("dataset.json"), meta).context("writing dataset.json")?;
        for (name, table) in SPLITS.iter().zip(&self.splits) {
            let mut bytes = Vec::with_capacity(table.x.len() * 4 + table.y.len() * 4);
            for v in &table.x {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            for v in &table.y {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            fs::write(dir.join(format!("{name}.bin")), bytes)
                .with_context(|| format!("writing {name}.bin"))?;
        }
        Ok(())
    }

    pub fn read_meta(dir: &Path) -> Result<DatasetMeta> {
        let path = dir.join("dataset.json");
        let bytes = fs::read(&path).with_context(|| {
            format!(
                "reading {} (is the input a dataset stage such as data.csv?)",
                path.display()
            )
        })?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn read(dir: &Path) -> Result<Dataset> {
        let meta = Self::read_meta(dir)?;
        let d = meta.features.len();
        let mut splits = Vec::with_capacity(3);
        for (i, name) in SPLITS.iter().enumerate() {
            let path = dir.join(format!("{name}.bin"));
            let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let n = meta.rows[i];
            if bytes.len() != n * (d + 1) * 4 {
                bail!(
                    "{} has {} bytes, expected {} rows × {} features",
                    path.display(),
                    bytes.len(),
                    n,
                    d
                );
            }
            let (xb, yb) = bytes.split_at(n * d * 4);
            let x = xb
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let y = yb
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            splits.push(Table {
                features: meta.features.clone(),
                label: meta.label.clone(),
                x,
                y,
            });
        }
        let splits: [Table; 3] = splits
            .try_into()
            .map_err(|_| anyhow::anyhow!("three splits"))?;
        Ok(Dataset { meta, splits })
    }
}

/// JSON has no NaN (serde_json writes it as null): read null back as NaN (a diverged run's loss,
/// a metric a run does not have).
fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn nulls_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    Ok(Vec::<Option<f64>>::deserialize(d)?
        .into_iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect())
}

/// One epoch of a training run; losses and accuracies are per-sample averages.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    #[serde(deserialize_with = "null_as_nan")]
    pub lr: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub train_loss: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub train_acc: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub validation_loss: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub validation_acc: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub test_loss: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub test_acc: f64,
    /// Wall time of the epoch's training steps.
    #[serde(deserialize_with = "null_as_nan")]
    pub train_time_s: f64,
    /// Wall time of evaluating the three splits after the epoch.
    #[serde(deserialize_with = "null_as_nan")]
    pub eval_time_s: f64,
    /// Per linear layer, ‖∇W‖² + ‖∇b‖² averaged over the epoch's batches (when recorded).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nulls_as_nan"
    )]
    pub grad_norms: Vec<f64>,
}

impl EpochRecord {
    /// A metric by name, as used in YAML (`validation_loss`, `val_acc`, `train_time_s`, ...).
    pub fn metric(&self, name: &str) -> Option<f64> {
        Some(match canonical_metric(name)? {
            "train_loss" => self.train_loss,
            "train_acc" => self.train_acc,
            "validation_loss" => self.validation_loss,
            "validation_acc" => self.validation_acc,
            "test_loss" => self.test_loss,
            "test_acc" => self.test_acc,
            "train_time_s" => self.train_time_s,
            "eval_time_s" => self.eval_time_s,
            "lr" => self.lr,
            _ => return None,
        })
    }
}

/// Metric names recorded per epoch; short aliases map onto them.
pub const EPOCH_METRICS: &[&str] = &[
    "train_loss",
    "train_acc",
    "validation_loss",
    "validation_acc",
    "test_loss",
    "test_acc",
    "train_time_s",
    "eval_time_s",
    "lr",
];

pub fn canonical_metric(name: &str) -> Option<&'static str> {
    let name = match name {
        "val_loss" => "validation_loss",
        "val_acc" => "validation_acc",
        "train_time" => "train_time_s",
        "eval_time" => "eval_time_s",
        other => other,
    };
    EPOCH_METRICS.iter().copied().find(|m| *m == name)
}

/// Human label of a metric for axes and legends.
pub fn metric_label(name: &str) -> String {
    match canonical_metric(name).unwrap_or(name) {
        "train_loss" => "train loss".into(),
        "train_acc" => "train accuracy".into(),
        "validation_loss" => "validation loss".into(),
        "validation_acc" => "validation accuracy".into(),
        "test_loss" => "test loss".into(),
        "test_acc" => "test accuracy".into(),
        "train_time_s" => "train time (s)".into(),
        "eval_time_s" => "evaluation time (s)".into(),
        "lr" => "learning rate".into(),
        other => other.replace('_', " "),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RunRecord {
    /// The training parameters, as resolved.
    pub params: serde_json::Map<String, serde_json::Value>,
    pub steps_per_epoch: usize,
    pub epochs: Vec<EpochRecord>,
    /// True when the loss became NaN or infinite; the run stopped there.
    pub diverged: bool,
    /// The dataset's source and sizes, for reports.
    pub data: String,
    pub n_parameters: usize,
}

impl RunRecord {
    pub fn last(&self) -> Option<&EpochRecord> {
        self.epochs.last()
    }

    /// The final value of a metric (NaN for a diverged run without that epoch).
    pub fn final_metric(&self, name: &str) -> f64 {
        self.last().and_then(|e| e.metric(name)).unwrap_or(f64::NAN)
    }

    /// The final split metrics and the divergence flag, for `metrics.json` (NaN as null).
    pub fn final_metrics(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut metrics = serde_json::Map::new();
        if let Some(last) = self.last() {
            for name in [
                "train_loss",
                "train_acc",
                "validation_loss",
                "validation_acc",
                "test_loss",
                "test_acc",
            ] {
                let v = last.metric(name).unwrap_or(f64::NAN);
                metrics.insert(
                    name.into(),
                    if v.is_finite() {
                        v.into()
                    } else {
                        serde_json::Value::Null
                    },
                );
            }
        }
        metrics.insert("diverged".into(), self.diverged.into());
        metrics
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        fs::write(dir.join("run.json"), serde_json::to_vec_pretty(self)?)
            .context("writing run.json")
    }

    pub fn read(dir: &Path) -> Result<RunRecord> {
        let path = dir.join("run.json");
        let bytes = fs::read(&path).with_context(|| {
            format!(
                "reading {} (is the input a training stage such as train.mlp?)",
                path.display()
            )
        })?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Loss of every batch step, in order (stored apart: 100k steps for batch size 1).
pub fn write_steps(dir: &Path, losses: &[f32]) -> Result<()> {
    let values: Vec<Option<f32>> = losses.iter().map(|l| l.is_finite().then_some(*l)).collect();
    fs::write(dir.join("steps.json"), serde_json::to_vec(&values)?).context("writing steps.json")
}

pub fn read_steps(dir: &Path) -> Result<Vec<f64>> {
    let path = dir.join("steps.json");
    let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let values: Vec<Option<f64>> =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    Ok(values.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

/// Writes `metrics.json`: the flat numbers `pipeline show` prints.
pub fn write_metrics(
    dir: &Path,
    metrics: &serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    fs::write(
        dir.join("metrics.json"),
        serde_json::to_vec_pretty(metrics)?,
    )
    .context("writing metrics.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(x: Vec<f32>, y: Vec<u32>) -> Table {
        Table {
            features: vec!["a".into(), "b".into()],
            label: "c".into(),
            x,
            y,
        }
    }

    #[test]
    fn described_params_share_list_or_summarise() {
        let run = |pairs: &[(&str, serde_json::Value)]| RunRecord {
            params: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            ..Default::default()
        };
        use serde_json::json;
        let a = run(&[
            ("seed", json!(0)),
            ("lr", json!(0.1)),
            ("trees", json!(100)),
        ]);
        let b = run(&[("seed", json!(0)), ("lr", json!(0.01))]);
        let few = describe_params(&[&a, &b]);
        assert_eq!(
            few,
            [
                ("seed".to_string(), "0".to_string()),
                ("lr".to_string(), "0.1 / 0.01".to_string()),
                ("trees".to_string(), "100 / —".to_string()),
            ]
        );
        let many: Vec<&RunRecord> = std::iter::once(&a).chain([&b; 5]).collect();
        assert_eq!(
            describe_params(&many),
            [
                ("seed".to_string(), "0".to_string()),
                ("lr".to_string(), "varies by run".to_string()),
            ]
        );
    }

    #[test]
    fn described_params_leave_out_the_ops_defaults() {
        let mlp = crate::ops::find("train.mlp").unwrap();
        let mut params = serde_json::Map::new();
        for p in mlp.params() {
            let literal = p.default.unwrap_or("0");
            params.insert(
                p.name.to_string(),
                crate::spec::parse_scalar(literal).unwrap(),
            );
        }
        params.insert("width".into(), serde_json::json!(64));
        let run = RunRecord {
            params,
            ..Default::default()
        };
        let described = describe_params(&[&run]);
        assert!(
            described.contains(&("width".to_string(), "64".to_string())),
            "{described:?}"
        );
        assert!(
            !described
                .iter()
                .any(|(k, _)| k == "activation" || k == "batch_norm"),
            "defaults are left out: {described:?}"
        );
    }

    #[test]
    fn dataset_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset {
            meta: DatasetMeta {
                features: vec!["a".into(), "b".into()],
                label: "c".into(),
                n_classes: 3,
                raw_features: vec!["a".into(), "b".into()],
                transforms: vec![],
                rows: [2, 1, 1],
                source: "test".into(),
                test_names: Vec::new(),
            },
            splits: [
                table(vec![1., 2., 3., 4.], vec![0, 2]),
                table(vec![5., 6.], vec![1]),
                table(vec![7., 8.], vec![0]),
            ],
        };
        ds.write(dir.path()).unwrap();
        let back = Dataset::read(dir.path()).unwrap();
        assert_eq!(back.meta, ds.meta);
        assert_eq!(back.train().x, vec![1., 2., 3., 4.]);
        assert_eq!(back.train().y, vec![0, 2]);
        assert_eq!(back.test().x, vec![7., 8.]);
    }

    #[test]
    fn sine_transform_is_feature_major() {
        let t = Transform::Sine {
            alphas: vec![1.0, 2.0],
        };
        let mut out = Vec::new();
        t.apply_row(&[0.5, 1.0], &mut out);
        let expected = [0.5f64.sin(), 1.0f64.sin(), 1.0f64.sin(), 2.0f64.sin()];
        for (a, b) in out.iter().zip(expected) {
            assert!((*a as f64 - b).abs() < 1e-6);
        }
        assert_eq!(t.feature_names(&["x".into()]), vec!["sin(1*x)", "sin(2*x)"]);
    }

    #[test]
    fn nan_survives_a_round_trip_through_json() {
        let e = EpochRecord {
            train_loss: f64::NAN,
            grad_norms: vec![f64::NAN, 1.0],
            ..Default::default()
        };
        let text = serde_json::to_string(&e).unwrap();
        let back: EpochRecord = serde_json::from_str(&text).unwrap();
        assert!(
            back.train_loss.is_nan() && back.grad_norms[0].is_nan() && back.grad_norms[1] == 1.0
        );
    }

    #[test]
    fn metric_aliases() {
        let e = EpochRecord {
            validation_acc: 0.9,
            ..Default::default()
        };
        assert_eq!(e.metric("val_acc"), Some(0.9));
        assert_eq!(e.metric("nope"), None);
    }
}

/// What a plot or table stage produced, for the report: written as `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ItemSummary {
    /// Experiment id, e.g. `6.1.2.1` (groups items into report sections).
    pub id: String,
    pub title: String,
    /// Figure files (PNG first), relative to the stage's folder.
    #[serde(default)]
    pub figures: Vec<String>,
    /// A Markdown table, relative to the stage's folder.
    #[serde(default)]
    pub table_md: Option<String>,
    /// One line read off the data: best and worst, final accuracies.
    pub reading: String,
    /// The hyperparameters behind the item: shared ones, then what varies.
    #[serde(default)]
    pub params: Vec<(String, String)>,
}

impl ItemSummary {
    pub fn write(&self, dir: &Path) -> Result<()> {
        fs::write(dir.join("summary.json"), serde_json::to_vec_pretty(self)?)
            .context("writing summary.json")
    }

    pub fn read(dir: &Path) -> Result<ItemSummary> {
        let path = dir.join("summary.json");
        let bytes = fs::read(&path).with_context(|| {
            format!(
                "reading {} (report inputs must be plot or table stages)",
                path.display()
            )
        })?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Runs beyond which varying parameters are not listed value by value (tables and legends show
/// them per run; a line of 17 slash-separated values helps nobody).
const LIST_VALUES_UP_TO: usize = 4;

/// The parameters a set of runs share, and those that vary, formatted for a report: a shared
/// value as it is, unless it is the op's default (a reader cares about what was chosen, not
/// `activation=relu, batch_norm=false, …`); varying values one per run for a few runs, else
/// "varies by run"; a parameter that only some of many runs have (one baseline's settings among
/// others) is left out.
pub fn describe_params(runs: &[&RunRecord]) -> Vec<(String, String)> {
    let mut keys: Vec<&String> = Vec::new();
    for run in runs {
        for k in run.params.keys() {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    let mut out = Vec::new();
    for k in keys {
        let values: Vec<Option<String>> = runs
            .iter()
            .map(|r| r.params.get(k).map(crate::spec::format_value))
            .collect();
        if values.iter().all(|x| x == &values[0]) {
            let Some(shared) = &values[0] else { continue };
            if !runs.iter().all(|r| is_default(&r.params, k)) {
                out.push((k.clone(), shared.clone()));
            }
        } else if runs.len() <= LIST_VALUES_UP_TO {
            let listed: Vec<String> = values
                .into_iter()
                .map(|x| x.unwrap_or_else(|| "—".into()))
                .collect();
            out.push((k.clone(), listed.join(" / ")));
        } else if values.iter().all(Option::is_some) {
            out.push((k.clone(), "varies by run".into()));
        }
    }
    out
}

/// Whether `params[key]` is the default of the op these resolved parameters belong to (the op
/// whose parameter names are exactly these keys).
fn is_default(params: &serde_json::Map<String, serde_json::Value>, key: &str) -> bool {
    let Some(op) = crate::ops::registry().iter().find(|op| {
        op.params().len() == params.len() && op.params().iter().all(|p| params.contains_key(p.name))
    }) else {
        return false;
    };
    op.params()
        .iter()
        .find(|p| p.name == key)
        .and_then(|p| p.default)
        .and_then(|literal| crate::spec::parse_scalar(literal).ok())
        .is_some_and(|default| params.get(key) == Some(&default))
}

/// An image dataset folder: `images.json` (size, classes, normalisation, files per split) and
/// `{train,val,test}.u8` (each image's RGB bytes, channel-major, after resize and crop).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageMeta {
    pub size: usize,
    pub classes: Vec<String>,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Per split (train, val, test): each image's path relative to the split folder.
    pub files: [Vec<String>; 3],
    pub labels: [Vec<u32>; 3],
    pub skipped: usize,
    pub source: String,
}

pub const IMAGE_SPLITS: [&str; 3] = ["train", "val", "test"];

pub struct ImageDataset {
    pub meta: ImageMeta,
    /// Per split: n × 3 × size × size bytes.
    pub bytes: [Vec<u8>; 3],
}

impl ImageDataset {
    pub fn write(&self, dir: &Path) -> Result<()> {
        fs::write(
            dir.join("images.json"),
            serde_json::to_vec_pretty(&self.meta)?,
        )
        .context("writing images.json")?;
        for (name, bytes) in IMAGE_SPLITS.iter().zip(&self.bytes) {
            fs::write(dir.join(format!("{name}.u8")), bytes)
                .with_context(|| format!("writing {name}.u8"))?;
        }
        Ok(())
    }

    pub fn read(dir: &Path) -> Result<ImageDataset> {
        let path = dir.join("images.json");
        let text = fs::read(&path).with_context(|| {
            format!(
                "reading {} (is the input an image stage such as data.images?)",
                path.display()
            )
        })?;
        let meta: ImageMeta =
            serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
        let per = 3 * meta.size * meta.size;
        let mut bytes: [Vec<u8>; 3] = Default::default();
        for (i, name) in IMAGE_SPLITS.iter().enumerate() {
            let p = dir.join(format!("{name}.u8"));
            bytes[i] = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            if bytes[i].len() != meta.labels[i].len() * per {
                bail!(
                    "{} holds {} bytes, expected {} images of {per}",
                    p.display(),
                    bytes[i].len(),
                    meta.labels[i].len()
                );
            }
        }
        Ok(ImageDataset { meta, bytes })
    }

    /// The normalised pixels of a split, n × 3 × size × size.
    pub fn normalised(&self, split: usize) -> Vec<f32> {
        let plane = self.meta.size * self.meta.size;
        self.bytes[split]
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                let c = (i / plane) % 3;
                (b as f32 / 255.0 - self.meta.mean[c]) / self.meta.std[c]
            })
            .collect()
    }

    /// RGB (interleaved) bytes of one image, for figures.
    pub fn rgb(&self, split: usize, index: usize) -> Vec<u8> {
        let plane = self.meta.size * self.meta.size;
        let image = &self.bytes[split][index * 3 * plane..(index + 1) * 3 * plane];
        (0..plane)
            .flat_map(|p| [image[p], image[plane + p], image[2 * plane + p]])
            .collect()
    }
}

/// Per-image test predictions of a binary classifier: `predictions.json`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Predictions {
    pub files: Vec<String>,
    pub labels: Vec<u32>,
    /// P(class 1) per test image.
    pub probabilities: Vec<f32>,
}

impl Predictions {
    pub fn write(&self, dir: &Path) -> Result<()> {
        fs::write(dir.join("predictions.json"), serde_json::to_vec(self)?)
            .context("writing predictions.json")
    }

    pub fn read(dir: &Path) -> Result<Predictions> {
        let path = dir.join("predictions.json");
        let bytes = fs::read(&path).with_context(|| {
            format!(
                "reading {} (is the input a section-7 model?)",
                path.display()
            )
        })?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn correct(&self, i: usize) -> bool {
        (self.probabilities[i] > 0.5) == (self.labels[i] == 1)
    }
}
