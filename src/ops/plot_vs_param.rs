//! `plot.vs_param`: final metrics of a sweep against one swept parameter (accuracy vs depth).

use anyhow::{Result, bail};

use super::plot_curves::FIGURE_OUTPUTS;
use super::replicates::{Stats, configurations, describe_groups, distinguishable};
use super::runs::load;
use super::table::format_metric;
use super::{InputKind, InputSpec, Op, OpContext, OutputSpec, ParamSpec, ParamType};
use crate::artifacts::{ItemSummary, canonical_metric, metric_label};
use crate::plot::{LineChart, Series, line_chart};

pub struct PlotVsParam;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "param",
        ty: ParamType::Str,
        default: None,
        doc: "the training parameter on the x axis (depth, width, lr, ...)",
    },
    ParamSpec {
        name: "metrics",
        ty: ParamType::List(&ParamType::Str),
        default: Some("[train_acc, validation_acc, test_acc]"),
        doc: "final metrics, one line each",
    },
    ParamSpec {
        name: "log_x",
        ty: ParamType::Bool,
        default: Some("false"),
        doc: "plot log₂ of the parameter (widths 8, 16, 32, 64 evenly spaced)",
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
    doc: "training runs that differ in `param`",
    required: true,
}];

impl Op for PlotVsParam {
    fn name(&self) -> &'static str {
        "plot.vs_param"
    }
    fn doc(&self) -> &'static str {
        "Plot final metrics (e.g. train/validation/test accuracy) against a swept parameter (with \
         replicates: means with ±1 sd error bars)."
    }
    fn version(&self) -> u32 {
        // 2: the report's parameter line no longer lists one value per run for many runs.
        // 3: it leaves out the op's defaults.
        // 4: replicates make one point per configuration (mean, ±1 sd error bars).
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
        let param = ctx.params.str("param")?;
        let metrics = ctx.params.str_list("metrics")?;
        let log_x = ctx.params.bool("log_x")?;
        let title = ctx.params.str("title")?;
        let items = ctx.input("runs");
        let runs = load(items)?;
        // Replicates of one configuration become one point: the mean, with ±1 sd error bars.
        let (groups, aggregated) = configurations(items);
        let mut xs = Vec::new();
        for g in &groups {
            let run = &runs[g.members[0]];
            match run.record.params.get(param).and_then(|v| v.as_f64()) {
                Some(x) if !log_x || x > 0.0 => xs.push(if log_x { x.log2() } else { x }),
                Some(_) => bail!("`{}`: {param} must be positive for log_x", run.stage),
                None => bail!(
                    "`{}` has no numeric parameter `{param}`{}",
                    run.stage,
                    crate::suggest::did_you_mean(
                        param,
                        run.record.params.keys().map(String::as_str)
                    )
                ),
            }
        }
        let mut series = Vec::new();
        let mut reading = Vec::new();
        for metric in &metrics {
            let Some(canonical) = canonical_metric(metric) else {
                bail!("unknown metric `{metric}`")
            };
            let mut points: Vec<(f64, Stats)> = groups
                .iter()
                .zip(&xs)
                .map(|(g, &x)| {
                    let values = g.members.iter().map(|&i| {
                        let r = &runs[i].record;
                        if r.diverged && g.members.len() > 1 {
                            f64::NAN
                        } else {
                            r.final_metric(canonical)
                        }
                    });
                    (x, Stats::of(values))
                })
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let x_value = |x: f64| if log_x { 2f64.powf(x) } else { x };
            let mut ranked: Vec<&(f64, Stats)> = points.iter().filter(|p| p.1.n > 0).collect();
            ranked.sort_by(|a, b| b.1.mean.total_cmp(&a.1.mean));
            if let Some(best) = ranked.first() {
                let mut text = format!(
                    "{} peaks at {param}={} ({})",
                    metric_label(canonical),
                    x_value(best.0),
                    best.1.display(format_metric)
                );
                if let Some(second) = ranked.get(1)
                    && distinguishable(&best.1, &second.1) == Some(false)
                {
                    text.push_str(&format!(
                        ", not distinguishable from {param}={} (95% intervals overlap)",
                        x_value(second.0)
                    ));
                }
                reading.push(text);
            }
            series.push(Series {
                label: metric_label(canonical),
                spread: if aggregated {
                    points
                        .iter()
                        .map(|(_, s)| (s.mean - s.sd, s.mean + s.sd))
                        .collect()
                } else {
                    Vec::new()
                },
                points: points.iter().map(|(x, s)| (*x, s.mean)).collect(),
                bars: true,
            });
        }
        let x_label = if log_x {
            format!("log₂ {param}")
        } else {
            param.to_string()
        };
        let y_label = if metrics.iter().all(|m| m.ends_with("acc")) {
            "accuracy".to_string()
        } else {
            "value".to_string()
        };
        line_chart(
            &LineChart {
                title: title.into(),
                x_label,
                y_label,
                log_y: false,
                series,
            },
            &ctx.out_dir.join("plot"),
        )?;
        ItemSummary {
            id: ctx.params.str("id")?.into(),
            title: title.into(),
            figures: vec!["plot.png".into(), "plot.svg".into()],
            table_md: None,
            reading: reading.join("; "),
            params: describe_groups(
                &runs.iter().map(|r| &r.record).collect::<Vec<_>>(),
                &groups,
                aggregated,
            ),
        }
        .write(ctx.out_dir)
    }
}
