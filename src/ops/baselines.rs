//! What the non-neural section-7 learners (`train.gbdt`, `train.logistic`) share: reading a binary
//! task as feature matrices from a dataset stage (`features.backbone`, `data.csv`) or an image
//! stage (raw pixels), and recording a fitted model like a training run.

use anyhow::{Context, Result, bail};

use super::{InputItem, OpContext};
use crate::artifacts::{Dataset, EpochRecord, ImageDataset, Predictions};
use crate::ml::metrics::{accuracy, log_loss};

/// A binary task as row-major feature matrices per split (train, validation, test).
pub struct BinaryData {
    pub d: usize,
    pub x: [Vec<f32>; 3],
    pub y: [Vec<u32>; 3],
    /// A name per test row (image file names), for the per-image predictions.
    pub test_names: Vec<String>,
    pub source: String,
}

impl BinaryData {
    /// Reads an image stage (its flattened pixels, 0–255, are the features) or a dataset stage.
    pub fn load(item: &InputItem) -> Result<BinaryData> {
        let data = if item.dir.join("images.json").exists() {
            let images = ImageDataset::read(&item.dir)?;
            let d = 3 * images.meta.size * images.meta.size;
            let classes = images.meta.classes.len();
            let x = images
                .bytes
                .map(|split| split.iter().map(|&b| f32::from(b)).collect());
            if classes != 2 {
                bail!(
                    "`{}` has {classes} classes: this learner is binary",
                    item.stage
                );
            }
            BinaryData {
                d,
                x,
                y: images.meta.labels,
                test_names: images.meta.files[2].clone(),
                source: images.meta.source,
            }
        } else {
            let data = Dataset::read(&item.dir)?;
            if data.meta.n_classes != 2 {
                bail!(
                    "`{}` has {} classes: this learner is binary",
                    item.stage,
                    data.meta.n_classes
                );
            }
            let test_names = if data.meta.test_names.is_empty() {
                (0..data.meta.rows[2]).map(|i| format!("row {i}")).collect()
            } else {
                data.meta.test_names.clone()
            };
            let [train, validation, test] = data.splits;
            BinaryData {
                d: data.meta.features.len(),
                x: [train.x, validation.x, test.x],
                y: [train.y, validation.y, test.y],
                test_names,
                source: data.meta.source,
            }
        };
        Ok(data)
    }

    /// The one `data` input every learner reads.
    pub fn from_input(ctx: &OpContext) -> Result<BinaryData> {
        let item = ctx
            .input("data")
            .first()
            .context("the `data` input is missing")?;
        Self::load(item).with_context(|| format!("input `{}`", item.stage))
    }
}

/// Records a fitted classifier as a one-"epoch" run with its test predictions.
pub fn record(
    ctx: &OpContext,
    baseline: &str,
    data: &BinaryData,
    probabilities: [Vec<f32>; 3],
    fit_seconds: f64,
    n_parameters: usize,
) -> Result<()> {
    let score = |s: usize| {
        (
            log_loss(&probabilities[s], &data.y[s]),
            accuracy(&probabilities[s], &data.y[s]),
        )
    };
    let (train_loss, train_acc) = score(0);
    let (validation_loss, validation_acc) = score(1);
    let (test_loss, test_acc) = score(2);
    let epoch = EpochRecord {
        epoch: 1,
        lr: ctx.params.f64("learning_rate").unwrap_or(f64::NAN),
        train_loss,
        train_acc,
        validation_loss,
        validation_acc,
        test_loss,
        test_acc,
        train_time_s: fit_seconds,
        eval_time_s: 0.0,
        grad_norms: Vec::new(),
    };
    let [_, _, test_p] = probabilities;
    let predictions = Predictions {
        files: data.test_names.clone(),
        labels: data.y[2].clone(),
        probabilities: test_p,
    };
    super::runs::write_binary_run(
        ctx,
        baseline,
        vec![epoch],
        &[],
        1,
        false,
        n_parameters,
        &predictions,
        &data.source,
    )
}
