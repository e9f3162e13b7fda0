//! `select`: the best or worst member of a sweep by a metric, as a run of its own, so that
//! plots of "the best model" follow the data instead of naming a member.

use std::fs;

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::replicates::{Stats, configurations, replicate_of};
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
    ParamSpec {
        name: "replicate",
        ty: ParamType::IntRange(0, crate::spec::MAX_REPLICATES as i64),
        default: Some("0"),
        doc: "with replicates, configurations rank by their mean and one replicate of the chosen one is handed on: \
              0 the median one (its representative run), k replicate k",
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
        "Pick the best or worst run of a sweep by a final metric (with replicates: the configuration \
         with the best mean, handing on its median replicate); downstream stages use it like a run."
    }
    fn version(&self) -> u32 {
        // 2: replicates: configurations rank by their mean; one replicate is handed on.
        2
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
        let goodness_of = |value: f64, diverged: bool| {
            // A diverged run is worse than any finite one, whichever way the metric points.
            if !value.is_finite() || diverged {
                f64::NEG_INFINITY
            } else if higher_is_better {
                value
            } else {
                -value
            }
        };
        let mut scored = Vec::new();
        for item in runs {
            let record =
                RunRecord::read(&item.dir).with_context(|| format!("input `{}`", item.stage))?;
            let value = record.final_metric(metric);
            scored.push((item, value, goodness_of(value, record.diverged)));
        }
        // Configurations (replicates grouped), scored by their mean over non-diverged replicates.
        let (groups, _) = configurations(runs);
        let group_scores: Vec<(Stats, f64)> = groups
            .iter()
            .map(|g| {
                let stats = Stats::of(g.members.iter().map(|&i| {
                    if scored[i].2.is_finite() {
                        scored[i].1
                    } else {
                        f64::NAN
                    }
                }));
                let goodness = goodness_of(stats.mean, false);
                (stats, goodness)
            })
            .collect();
        // Ties go to the first configuration in sweep order, for stable choices.
        let chosen = (0..groups.len()).fold(None::<usize>, |acc, g| match acc {
            Some(a) if want_best && group_scores[a].1 >= group_scores[g].1 => Some(a),
            Some(a) if !want_best && group_scores[a].1 <= group_scores[g].1 => Some(a),
            _ => Some(g),
        });
        let Some(chosen) = chosen else {
            bail!("no runs to choose from")
        };
        let config = &groups[chosen];
        let wanted = ctx.params.usize("replicate")?;
        let member = if config.members.len() == 1 {
            config.members[0]
        } else if wanted == 0 {
            // The median replicate by the metric (with an even N, the better of the middle two).
            let mut by_goodness = config.members.clone();
            by_goodness.sort_by(|&a, &b| scored[b].2.total_cmp(&scored[a].2).then(a.cmp(&b)));
            by_goodness[(by_goodness.len() - 1) / 2]
        } else {
            *config
                .members
                .iter()
                .find(|&&i| replicate_of(&runs[i]) == Some(wanted as u64))
                .with_context(|| {
                    format!(
                        "`{}` has no replicate {wanted} (it has {})",
                        config.name,
                        config.members.len()
                    )
                })?
        };
        let (item, value, _) = scored[member];
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
        let number = |v: f64| if v.is_finite() { json!(v) } else { json!(null) };
        let mut selected = json!({
            "stage": item.stage,
            "labels": labels,
            "metric": metric,
            "pick": if want_best { "best" } else { "worst" },
            "value": number(value),
            "candidates": scored.iter().map(|(i, v, _)| json!({"stage": i.stage, "value": number(*v)})).collect::<Vec<_>>(),
        });
        if config.members.len() > 1 {
            let (stats, _) = group_scores[chosen];
            selected["configuration"] = json!(config.name);
            selected["mean"] = number(stats.mean);
            selected["sd"] = number(stats.sd);
            selected["n"] = json!(config.members.len());
            selected["replicate"] = json!(replicate_of(item));
            selected["configurations"] = groups
                .iter()
                .zip(&group_scores)
                .map(|(g, (s, _))| json!({"configuration": g.name, "mean": number(s.mean), "sd": number(s.sd), "n": g.members.len()}))
                .collect();
        }
        fs::write(
            ctx.out_dir.join("selected.json"),
            serde_json::to_vec_pretty(&selected)?,
        )?;
        Ok(())
    }
}
