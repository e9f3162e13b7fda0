//! `plot.curves`: recorded metrics against epoch or batch step, one curve per run and metric.

use anyhow::{Result, bail};

use super::replicates::{
    Stats, configurations, describe_groups, distinguishable, group_label, mean_curve,
    replicate_counts, replicate_of,
};
use super::runs::{downsample, load};
use super::table::format_metric;
use super::{InputKind, InputSpec, Op, OpContext, OutputSpec, ParamSpec, ParamType};
use crate::artifacts::{ItemSummary, canonical_metric, metric_label, read_steps};
use crate::plot::{LineChart, Series, line_chart, line_charts};

pub struct PlotCurves;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "metrics",
        ty: ParamType::List(&ParamType::Str),
        default: Some("[validation_loss]"),
        doc: "per-epoch metrics (train_loss, validation_acc, test_loss, train_time_s, eval_time_s, lr, ...) or `step_loss`",
    },
    ParamSpec {
        name: "x",
        ty: ParamType::Choice(&["epoch", "step"]),
        default: Some("epoch"),
        doc: "x axis; `step` plots the loss of every batch step",
    },
    ParamSpec {
        name: "log_y",
        ty: ParamType::Bool,
        default: Some("false"),
        doc: "logarithmic y axis",
    },
    ParamSpec {
        name: "panels",
        ty: ParamType::Choice(&["none", "metric"]),
        default: Some("none"),
        doc: "`metric`: one panel per metric side by side instead of one chart",
    },
    ParamSpec {
        name: "title",
        ty: ParamType::Str,
        default: Some("''"),
        doc: "figure title",
    },
    ParamSpec {
        name: "id",
        ty: ParamType::Str,
        default: Some("''"),
        doc: "experiment id for the report",
    },
];

const INPUTS: &[InputSpec] = &[InputSpec {
    name: "runs",
    kind: InputKind::Gather,
    doc: "training runs",
    required: true,
}];

pub const FIGURE_OUTPUTS: &[OutputSpec] = &[
    OutputSpec {
        name: "plot.png",
        doc: "the figure",
    },
    OutputSpec {
        name: "plot.svg",
        doc: "the figure, as vectors",
    },
    OutputSpec {
        name: "summary.json",
        doc: "title, reading and parameters, for the report",
    },
];

const MAX_STEP_POINTS: usize = 2000;

impl Op for PlotCurves {
    fn name(&self) -> &'static str {
        "plot.curves"
    }
    fn doc(&self) -> &'static str {
        "Plot learning curves: metrics vs epoch (or loss vs batch step) for every run gathered (with \
         replicates: the mean of each configuration, ±1 sd shaded)."
    }
    fn version(&self) -> u32 {
        // 2: the report's parameter line no longer lists one value per run for many runs.
        // 3: it leaves out the op's defaults.
        // 4: replicates make one curve per configuration (mean, ±1 sd shaded).
        4
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn inputs(&self) -> &'static [InputSpec] {
        INPUTS
    }
    fn outputs(&self) -> &'static [OutputSpec] {
        FIGURE_OUTPUTS
    }
    fn publishes(&self) -> bool {
        true
    }
    fn runs_local(&self) -> bool {
        true
    }

    fn run(&self, ctx: &OpContext) -> Result<()> {
        let metrics = ctx.params.str_list("metrics")?;
        let by_step = ctx.params.str("x")? == "step";
        let log_y = ctx.params.bool("log_y")?;
        let title = ctx.params.str("title")?;
        let panels = ctx.params.str("panels")? == "metric";
        if metrics.is_empty() {
            bail!("`metrics` is empty");
        }
        for m in &metrics {
            if m != "step_loss" && canonical_metric(m).is_none() {
                bail!(
                    "unknown metric `{m}`{}",
                    crate::suggest::did_you_mean(
                        m,
                        crate::artifacts::EPOCH_METRICS
                            .iter()
                            .copied()
                            .chain(["step_loss"])
                    )
                );
            }
        }
        let items = ctx.input("runs");
        let runs = load(items)?;
        // Replicates of one configuration become one curve: the mean, with ±1 sd shaded.
        let (groups, aggregated) = configurations(items);
        // One list of series per metric.
        let mut per_metric: Vec<(String, Vec<Series>)> = Vec::new();
        let mut finals: Vec<(String, Stats)> = Vec::new();
        for metric in &metrics {
            let mut series = Vec::new();
            for g in &groups {
                // A run without replicates keeps its own label (`best: grid[…]` for a selection).
                let first = g.members[0];
                let base_label = if aggregated && replicate_of(&items[first]).is_some() {
                    group_label(g)
                } else {
                    runs[first].label.clone()
                };
                // One chart with several metrics: say which metric each curve is.
                let mut label = if metrics.len() > 1 && !panels {
                    format!("{base_label} · {}", metric_label(metric))
                } else {
                    base_label
                };
                let mut curves = Vec::new();
                let mut last_values = Vec::new();
                let diverged = g
                    .members
                    .iter()
                    .filter(|&&i| runs[i].record.diverged)
                    .count();
                for &i in &g.members {
                    let run = &runs[i];
                    let points: Vec<(f64, f64)> = if by_step || metric == "step_loss" {
                        downsample(&read_steps(&items[i].dir)?, MAX_STEP_POINTS)
                    } else {
                        run.record
                            .epochs
                            .iter()
                            .map(|e| (e.epoch as f64, e.metric(metric).unwrap_or(f64::NAN)))
                            .collect()
                    };
                    let last = points
                        .iter()
                        .rev()
                        .find(|p| p.1.is_finite())
                        .map(|p| p.1)
                        .unwrap_or(f64::NAN);
                    last_values.push(if run.record.diverged { f64::NAN } else { last });
                    // A diverged replicate is left out of the mean (and said so in the legend).
                    if !(run.record.diverged && diverged < g.members.len()) {
                        curves.push(points);
                    }
                }
                if g.members.len() > 1 && diverged > 0 {
                    label = format!("{label} ({diverged} of {} diverged)", g.members.len());
                }
                finals.push((label.clone(), Stats::of(last_values)));
                let (points, spread) = mean_curve(&curves);
                series.push(Series {
                    label,
                    points,
                    spread,
                    bars: false,
                });
            }
            per_metric.push((metric.clone(), series));
        }
        let title = if aggregated {
            let counts = replicate_counts(&groups);
            if title.is_empty() {
                format!("mean ± sd over {counts} seeds")
            } else {
                format!("{title} (mean ± sd over {counts} seeds)")
            }
        } else {
            title.to_string()
        };
        let title = title.as_str();
        let x_label = if by_step { "batch step" } else { "epoch" };
        let y_label_of = |m: &str| {
            if m == "step_loss" || by_step {
                "training loss (batch)".to_string()
            } else {
                metric_label(m)
            }
        };
        let stem = ctx.out_dir.join("plot");
        if panels {
            let charts: Vec<LineChart> = per_metric
                .into_iter()
                .map(|(m, series)| LineChart {
                    title: y_label_of(&m),
                    x_label: x_label.into(),
                    y_label: y_label_of(&m),
                    log_y,
                    series,
                })
                .collect();
            line_charts(title, &charts, &stem)?;
        } else {
            let y_label = if metrics.len() == 1 {
                y_label_of(&metrics[0])
            } else {
                "value".into()
            };
            let series = per_metric.into_iter().flat_map(|(_, s)| s).collect();
            line_chart(
                &LineChart {
                    title: title.into(),
                    x_label: x_label.into(),
                    y_label,
                    log_y,
                    series,
                },
                &stem,
            )?;
        }
        let reading = if groups.len() == 1 {
            // One run (or configuration), several metrics: its final value of each.
            let parts: Vec<String> = metrics
                .iter()
                .zip(&finals)
                .map(|(m, f)| format!("{} {}", metric_name(m), f.1.display(format_metric)))
                .collect();
            format!("final {}", parts.join(", "))
        } else {
            reading(&metrics[0], &finals[..groups.len()])
        };
        ItemSummary {
            id: ctx.params.str("id")?.into(),
            title: ctx.params.str("title")?.into(),
            figures: vec!["plot.png".into(), "plot.svg".into()],
            table_md: None,
            reading,
            params: describe_groups(
                &runs.iter().map(|r| &r.record).collect::<Vec<_>>(),
                &groups,
                aggregated,
            ),
        }
        .write(ctx.out_dir)
    }
}

fn metric_name(metric: &str) -> String {
    if metric == "step_loss" {
        "training loss".to_string()
    } else {
        metric_label(metric)
    }
}

/// "final validation loss: lowest lr=0.001 (0.3120), highest lr=1 (diverged)"; with replicates
/// the values are means ± sd and the best is compared with the runner-up.
fn reading(metric: &str, finals: &[(String, Stats)]) -> String {
    let name = metric_name(metric);
    let finite: Vec<&(String, Stats)> = finals.iter().filter(|f| f.1.n > 0).collect();
    let diverged: Vec<&str> = finals
        .iter()
        .filter(|f| f.1.n == 0)
        .map(|f| f.0.as_str())
        .collect();
    let mut parts = Vec::new();
    let mut by_mean = finite.clone();
    by_mean.sort_by(|a, b| a.1.mean.total_cmp(&b.1.mean));
    if let (Some(lo), Some(hi)) = (by_mean.first(), by_mean.last()) {
        parts.push(format!(
            "final {name}: lowest {} ({}), highest {} ({})",
            lo.0,
            lo.1.display(format_metric),
            hi.0,
            hi.1.display(format_metric)
        ));
        // The best end: highest for accuracies, lowest otherwise.
        let ranked: Vec<&&(String, Stats)> = if metric.ends_with("acc") {
            by_mean.iter().rev().collect()
        } else {
            by_mean.iter().collect()
        };
        if let [best, second, ..] = ranked.as_slice()
            && distinguishable(&best.1, &second.1) == Some(false)
        {
            parts.push(format!(
                "{} and {} are not distinguishable (95% intervals overlap)",
                best.0, second.0
            ));
        }
    }
    if !diverged.is_empty() {
        parts.push(format!("diverged: {}", diverged.join(", ")));
    }
    parts.join("; ")
}
