//! `select`: the best or worst member of a sweep by a metric, as a run of its own, so that
//! plots of "the best model" follow the data instead of naming a member.

use std::fs;

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::{InputKind, InputSpec, Op, OpContext, OutputSpec, ParamSpec, ParamType};
use crate::artifacts::{RunRecord, canonical_metric};

pub struct Select;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "metric",
        ty: ParamType::Str,
        default: Some("validation_acc"),
        doc: "final-epoch metric to rank by (validation_acc, validation_loss, test_acc, train_loss, ...)",
    },
    ParamSpec {
        name: "pick",
        ty: ParamType::Choice(&["best", "worst"]),
        default: Some("best"),
        doc: "best or worst; accuracies rank high-is-best, losses and times low-is-best; diverged runs rank worst",
    },
];

const INPUTS: &[InputSpec] = &[InputSpec {
    name: "runs",
    kind: InputKind::Gather,
    doc: "training runs to choose from",
    required: true,
}];

const OUTPUTS: &[OutputSpec] = &[
    OutputSpec {
        name: "(the chosen run's files)",
        doc: "so that the stage can stand in for a training run",
    },
    OutputSpec {
        name: "selected.json",
        doc: "the chosen member, its value and every candidate's value",
    },
];

impl Op for Select {
    fn name(&self) -> &'static str {
        "select"
    }
    fn runs_local(&self) -> bool {
        true
    }
    fn doc(&self) -> &'static str {
        "Pick the best or worst run of a sweep by a final metric; downstream stages use it like a run."
    }
    fn version(&self) -> u32 {
        1
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn inputs(&self) -> &'static [InputSpec] {
        INPUTS
    }
    fn outputs(&self) -> &'static [OutputSpec] {
        OUTPUTS
    }

    fn run(&self, ctx: &OpContext) -> Result<()> {
        let metric_name = ctx.params.str("metric")?;
        let Some(metric) = canonical_metric(metric_name) else {
            bail!(
                "unknown metric `{metric_name}`{}",
                crate::suggest::did_you_mean(
                    metric_name,
                    crate::artifacts::EPOCH_METRICS.iter().copied()
                )
            );
        };
        let higher_is_better = metric.ends_with("_acc");
        let want_best = ctx.params.str("pick")? == "best";
        let runs = ctx.input("runs");
        if runs.is_empty() {
            bail!("no runs to choose from");
        }
        let mut scored = Vec::new();
        for item in runs {
            let record =
                RunRecord::read(&item.dir).with_context(|| format!("input `{}`", item.stage))?;
            let value = record.final_metric(metric);
            // A diverged run is worse than any finite one, whichever way the metric points.
            let goodness = if !value.is_finite() || record.diverged {
                f64::NEG_INFINITY
            } else if higher_is_better {
                value
            } else {
                -value
            };
            scored.push((item, value, goodness));
        }
        // Ties go to the first member in sweep order, for stable choices.
        let chosen = if want_best {
            scored
                .iter()
                .fold(None::<&(_, f64, f64)>, |acc, s| match acc {
                    Some(a) if a.2 >= s.2 => Some(a),
                    _ => Some(s),
                })
        } else {
            scored
                .iter()
                .fold(None::<&(_, f64, f64)>, |acc, s| match acc {
                    Some(a) if a.2 <= s.2 => Some(a),
                    _ => Some(s),
                })
        };
        let Some((item, value, _)) = chosen else {
            bail!("no runs to choose from")
        };
        for file in crate::cache::list_files(&item.dir) {
            let dest = ctx.out_dir.join(&file);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent)?;
            }
            let src = item.dir.join(&file);
            if fs::hard_link(&src, &dest).is_err() {
                fs::copy(&src, &dest).with_context(|| format!("copying {}", src.display()))?;
            }
        }
        let labels: serde_json::Map<String, serde_json::Value> =
            item.labels.iter().cloned().collect();
        let selected = json!({
            "stage": item.stage,
            "labels": labels,
            "metric": metric,
            "pick": if want_best { "best" } else { "worst" },
            "value": if value.is_finite() { json!(value) } else { json!(null) },
            "candidates": scored.iter().map(|(i, v, _)| json!({"stage": i.stage, "value": if v.is_finite() { json!(v) } else { json!(null) }})).collect::<Vec<_>>(),
        });
        fs::write(
            ctx.out_dir.join("selected.json"),
            serde_json::to_vec_pretty(&selected)?,
        )?;
        Ok(())
    }
}
