//! Helpers shared by the ops that read training runs: loading them with a legend label.

use anyhow::{Context, Result};

use super::InputItem;
use crate::artifacts::RunRecord;
use crate::spec::format_value;

pub struct LabelledRun {
    pub label: String,
    pub stage: String,
    pub record: RunRecord,
}

/// A legend label: the sweep values (`lr=0.01`), `best: grid[depth=6,width=32]` for a
/// selection, or the stage name.
pub fn label_of(item: &InputItem) -> String {
    if let Ok(text) = std::fs::read_to_string(item.dir.join("selected.json"))
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
    {
        let pick = v["pick"].as_str().unwrap_or("selected");
        // With replicates, the configuration chosen (by its mean), not the replicate handed on.
        let stage = v["configuration"]
            .as_str()
            .or(v["stage"].as_str())
            .unwrap_or("?");
        return format!("{pick}: {stage}");
    }
    if item.labels.is_empty() {
        item.stage.clone()
    } else {
        labels_text(&item.labels)
    }
}

/// Sweep labels for a legend: `lr=0.01, width=16`.
pub fn labels_text(labels: &[(String, serde_json::Value)]) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={}", format_value(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn load(items: &[InputItem]) -> Result<Vec<LabelledRun>> {
    items
        .iter()
        .map(|item| {
            Ok(LabelledRun {
                label: label_of(item),
                stage: item.stage.clone(),
                record: RunRecord::read(&item.dir)
                    .with_context(|| format!("input `{}`", item.stage))?,
            })
        })
        .collect()
}

/// Averages consecutive values into at most `max_points` buckets (a 100k-step curve would
/// make a 10 MB SVG and an unreadable line); returns (x of bucket centre, mean).
pub fn downsample(values: &[f64], max_points: usize) -> Vec<(f64, f64)> {
    if values.len() <= max_points {
        return values
            .iter()
            .enumerate()
            .map(|(i, v)| ((i + 1) as f64, *v))
            .collect();
    }
    let bucket = values.len().div_ceil(max_points);
    values
        .chunks(bucket)
        .enumerate()
        .map(|(b, chunk)| {
            let mean = chunk.iter().sum::<f64>() / chunk.len() as f64;
            ((b * bucket) as f64 + chunk.len() as f64 / 2.0, mean)
        })
        .collect()
}

/// Writes what every section-7 model stage produces: `run.json` (with `baseline` among the
/// parameters, for grouping in tables), `steps.json`, `metrics.json` and `predictions.json`.
#[allow(clippy::too_many_arguments)]
pub fn write_binary_run(
    ctx: &super::OpContext,
    baseline: &str,
    epochs: Vec<crate::artifacts::EpochRecord>,
    step_losses: &[f32],
    steps_per_epoch: usize,
    diverged: bool,
    n_parameters: usize,
    predictions: &crate::artifacts::Predictions,
    data: &str,
) -> Result<()> {
    use serde_json::{Value, json};
    let mut params = ctx.params.0.clone();
    params.insert("baseline".into(), Value::String(baseline.to_string()));
    let record = RunRecord {
        params,
        steps_per_epoch,
        epochs,
        diverged,
        data: data.to_string(),
        n_parameters,
    };
    record.write(ctx.out_dir)?;
    crate::artifacts::write_steps(ctx.out_dir, step_losses)?;
    predictions.write(ctx.out_dir)?;
    let mut metrics = record.final_metrics();
    metrics.insert("baseline".into(), json!(baseline));
    crate::artifacts::write_metrics(ctx.out_dir, &metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsampling_keeps_means_and_positions() {
        let v: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        let d = downsample(&v, 100);
        assert_eq!(d.len(), 100);
        assert_eq!(d[0], (5.0, 4.5));
        assert_eq!(downsample(&[1.0, 2.0], 10), vec![(1.0, 1.0), (2.0, 2.0)]);
    }
}
