//! Helpers of the two non-neural section-7 baselines (`baseline.boosting`, `baseline.logistic`):
//! loading splits as feature matrices and recording a fitted model like a training run.

use anyhow::Result;

use crate::artifacts::{EpochRecord, ImageDataset, Predictions};
use crate::ml::logistic::{accuracy, log_loss};

/// (loss, accuracy) of predicted probabilities.
pub fn scores(p: &[f32], y: &[u32]) -> (f64, f64) {
    (log_loss(p, y), accuracy(p, y))
}

/// Records a fitted classifier as a one-"epoch" run with its test predictions.
#[allow(clippy::too_many_arguments)]
pub fn record(
    ctx: &super::OpContext,
    baseline: &str,
    data: &ImageDataset,
    train_p: &[f32],
    val_p: &[f32],
    test_p: Vec<f32>,
    fit_seconds: f64,
    n_parameters: usize,
) -> Result<()> {
    let labels = &data.meta.labels;
    let (train_loss, train_acc) = scores(train_p, &labels[0]);
    let (validation_loss, validation_acc) = scores(val_p, &labels[1]);
    let (test_loss, test_acc) = scores(&test_p, &labels[2]);
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
    let predictions = Predictions {
        files: data.meta.files[2].clone(),
        labels: labels[2].clone(),
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
        &data.meta.source,
    )
}
