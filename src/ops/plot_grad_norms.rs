//! `plot.grad_norms`: per-layer gradient magnitude ‖∇W‖²+‖∇b‖² against epoch.

use anyhow::{Context, Result, bail};

use super::plot_curves::FIGURE_OUTPUTS;
use super::runs::label_of;
use super::{InputKind, InputSpec, Op, OpContext, OutputSpec, ParamSpec, ParamType};
use crate::artifacts::{ItemSummary, RunRecord, describe_params};
use crate::plot::{LineChart, Series, line_chart};

pub struct PlotGradNorms;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "layers",
        ty: ParamType::List(&ParamType::Int),
        default: Some("[]"),
        doc: "linear layers to plot, 0 = first (empty: all)",
    },
    ParamSpec {
        name: "log_y",
        ty: ParamType::Bool,
        default: Some("true"),
        doc: "logarithmic y axis",
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
    name: "run",
    kind: InputKind::One,
    doc: "a training run with record_grad_norms: true",
    required: true,
}];

impl Op for PlotGradNorms {
    fn name(&self) -> &'static str {
        "plot.grad_norms"
    }
    fn doc(&self) -> &'static str {
        "Plot the per-layer gradient magnitude of a run against epoch (vanishing or healthy gradients)."
    }
    fn version(&self) -> u32 {
        // 2: the report's parameter line no longer lists one value per run for many runs.
        // 3: it leaves out the op's defaults.
        3
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
        let item = &ctx.input("run")[0];
        let record =
            RunRecord::read(&item.dir).with_context(|| format!("input `{}`", item.stage))?;
        let n_layers = record
            .epochs
            .first()
            .map(|e| e.grad_norms.len())
            .unwrap_or(0);
        if n_layers == 0 {
            bail!(
                "`{}` recorded no gradient norms: set `record_grad_norms: true` on it",
                item.stage
            );
        }
        let mut layers: Vec<usize> = ctx
            .params
            .f64_list("layers")?
            .into_iter()
            .map(|l| l as usize)
            .collect();
        if layers.is_empty() {
            layers = (0..n_layers).collect();
        }
        if let Some(bad) = layers.iter().find(|&&l| l >= n_layers) {
            bail!(
                "layer {bad} does not exist: `{}` has linear layers 0..{}",
                item.stage,
                n_layers - 1
            );
        }
        let series: Vec<Series> = layers
            .iter()
            .map(|&l| Series {
                label: format!("layer {l}"),
                points: record
                    .epochs
                    .iter()
                    .map(|e| (e.epoch as f64, e.grad_norms[l]))
                    .collect(),
                ..Default::default()
            })
            .collect();
        let title = ctx.params.str("title")?;
        line_chart(
            &LineChart {
                title: title.into(),
                x_label: "epoch".into(),
                y_label: "‖∇W‖² + ‖∇b‖² (mean over batches)".into(),
                log_y: ctx.params.bool("log_y")?,
                series,
            },
            &ctx.out_dir.join("plot"),
        )?;
        let last = record.epochs.last().map(|e| &e.grad_norms);
        let reading = match last {
            Some(g) => {
                let first = layers[0];
                let deepest = *layers.last().unwrap_or(&first);
                format!(
                    "{}: at the last epoch layer {first} gets {:.2e}, layer {deepest} {:.2e} (ratio {:.1e})",
                    label_of(item),
                    g[first],
                    g[deepest],
                    if g[deepest] > 0.0 {
                        g[first] / g[deepest]
                    } else {
                        f64::INFINITY
                    }
                )
            }
            None => "no epochs recorded".into(),
        };
        ItemSummary {
            id: ctx.params.str("id")?.into(),
            title: title.into(),
            figures: vec!["plot.png".into(), "plot.svg".into()],
            table_md: None,
            reading,
            params: describe_params(&[&record]),
        }
        .write(ctx.out_dir)
    }
}
