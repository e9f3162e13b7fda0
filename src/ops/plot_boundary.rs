//! `plot.decision_boundary`: each model's predicted class over a grid spanning the data, with
//! the test points on top; several models side by side.

use anyhow::{Context, Result, bail};

use super::plot_curves::FIGURE_OUTPUTS;
use super::replicates::{configurations, group_label, replicate_of};
use super::runs::label_of;
use super::table::format_metric;
use super::{InputKind, InputSpec, Op, OpContext, OutputSpec, ParamSpec, ParamType};
use crate::artifacts::{Dataset, DatasetMeta, ItemSummary, RunRecord, Transform, describe_params};
use crate::ml::mlp::MlpConfig;
use crate::ml::native::{NativeMlp, predict};
use crate::plot::{DecisionPanel, decision_boundaries};

pub struct PlotBoundary;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "resolution",
        ty: ParamType::IntRange(2, 4096),
        default: Some("200"),
        doc: "grid cells along the longer axis",
    },
    ParamSpec {
        name: "max_points",
        ty: ParamType::IntRange(0, 100_000_000),
        default: Some("4000"),
        doc: "test points drawn (an even subsample)",
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

const INPUTS: &[InputSpec] = &[
    InputSpec {
        name: "models",
        kind: InputKind::Gather,
        doc: "trained models (train.mlp or select stages), one panel each",
        required: true,
    },
    InputSpec {
        name: "data",
        kind: InputKind::One,
        doc: "the 2-feature dataset whose test points are drawn",
        required: true,
    },
];

#[derive(serde::Deserialize)]
struct ModelFile {
    config: MlpConfig,
    #[serde(default)]
    transforms: Vec<Transform>,
}

impl Op for PlotBoundary {
    fn name(&self) -> &'static str {
        "plot.decision_boundary"
    }
    fn doc(&self) -> &'static str {
        "Plot decision boundaries: predictions over a grid of the data's two raw features, test points on top."
    }
    fn version(&self) -> u32 {
        // 2: the report's parameter line no longer lists one value per run for many runs.
        // 3: it leaves out the op's defaults.
        // 4: one panel per configuration when the models have replicates.
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
        let data_item = &ctx.input("data")[0];
        let data = Dataset::read(&data_item.dir)
            .with_context(|| format!("input `{}`", data_item.stage))?;
        if data.meta.features.len() != 2 || !data.meta.transforms.is_empty() {
            bail!(
                "`{}` has features {:?}: decision boundaries need a dataset of two raw features (give the data before transforms)",
                data_item.stage,
                data.meta.features
            );
        }
        let resolution = ctx.params.usize("resolution")?.clamp(10, 2000);
        let (x_range, y_range) = extent(&data);
        let aspect = (y_range.1 - y_range.0) / (x_range.1 - x_range.0);
        let (nx, ny) = if aspect <= 1.0 {
            (
                resolution,
                ((resolution as f64 * aspect).round() as usize).max(2),
            )
        } else {
            (
                ((resolution as f64 / aspect).round() as usize).max(2),
                resolution,
            )
        };
        let mut grid = Vec::with_capacity(nx * ny * 2);
        for j in 0..ny {
            for i in 0..nx {
                grid.push(
                    (x_range.0 + (i as f64 + 0.5) / nx as f64 * (x_range.1 - x_range.0)) as f32,
                );
                grid.push(
                    (y_range.0 + (j as f64 + 0.5) / ny as f64 * (y_range.1 - y_range.0)) as f32,
                );
            }
        }
        let test = data.test();
        let stride = test
            .len()
            .div_ceil(ctx.params.usize("max_points")?.max(1))
            .max(1);
        let points: Vec<(f64, f64, u32)> = (0..test.len())
            .step_by(stride)
            .map(|i| (test.x[2 * i] as f64, test.x[2 * i + 1] as f64, test.y[i]))
            .collect();

        let mut panels = Vec::new();
        let mut records = Vec::new();
        let mut reading = Vec::new();
        // Replicates of one configuration would draw near-identical panels: the first stands for
        // them, and its title says so.
        let models = ctx.input("models");
        let shown: Vec<(&super::InputItem, String)> = configurations(models)
            .0
            .iter()
            .map(|g| {
                let first = &models[g.members[0]];
                let label = if g.members.len() > 1 {
                    format!(
                        "{} (replicate {} of {})",
                        group_label(g),
                        replicate_of(first).unwrap_or(1),
                        g.members.len()
                    )
                } else {
                    label_of(first)
                };
                (first, label)
            })
            .collect();
        for (item, label) in shown {
            let text = std::fs::read_to_string(item.dir.join("model.json")).with_context(|| {
                format!(
                    "input `{}` is not a trained model (no model.json)",
                    item.stage
                )
            })?;
            let model_file: ModelFile = serde_json::from_str(&text)
                .with_context(|| format!("parsing model.json of `{}`", item.stage))?;
            let meta = DatasetMeta {
                transforms: model_file.transforms.clone(),
                ..data.meta.clone()
            };
            let features = Dataset::transform_rows(&meta, &grid, 2);
            if features.len() / (nx * ny) != model_file.config.inputs {
                bail!(
                    "`{}` expects {} features, the grid gives {}",
                    item.stage,
                    model_file.config.inputs,
                    features.len() / (nx * ny)
                );
            }
            let model = NativeMlp::load(&model_file.config, &item.dir.join("model.safetensors"))?;
            let classes = predict(&model, &features, 4096);
            let record = RunRecord::read(&item.dir).ok();
            let acc = record
                .as_ref()
                .map(|r| r.final_metric("test_acc"))
                .unwrap_or(f64::NAN);
            reading.push(format!("{label}: test accuracy {}", format_metric(acc)));
            panels.push(DecisionPanel {
                title: format!("{label} — test acc {}", format_metric(acc)),
                x_label: data.meta.features[0].clone(),
                y_label: data.meta.features[1].clone(),
                x_range,
                y_range,
                grid_size: (nx, ny),
                grid_classes: classes,
                points: points.clone(),
                n_classes: data.meta.n_classes,
            });
            records.extend(record);
        }
        if panels.is_empty() {
            bail!("no models to plot");
        }
        let title = ctx.params.str("title")?;
        decision_boundaries(title, &panels, &ctx.out_dir.join("plot"))?;
        let refs: Vec<&RunRecord> = records.iter().collect();
        ItemSummary {
            id: ctx.params.str("id")?.into(),
            title: title.into(),
            figures: vec!["plot.png".into(), "plot.svg".into()],
            table_md: None,
            reading: reading.join("; "),
            params: describe_params(&refs),
        }
        .write(ctx.out_dir)
    }
}

/// The bounding box of all splits' points, with a 2% margin.
fn extent(data: &Dataset) -> ((f64, f64), (f64, f64)) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for table in &data.splits {
        for p in table.x.chunks_exact(2) {
            x0 = x0.min(p[0] as f64);
            x1 = x1.max(p[0] as f64);
            y0 = y0.min(p[1] as f64);
            y1 = y1.max(p[1] as f64);
        }
    }
    if x0 > x1 {
        return ((0.0, 1.0), (0.0, 1.0));
    }
    let (mx, my) = (((x1 - x0) * 0.02).max(1e-6), ((y1 - y0) * 0.02).max(1e-6));
    ((x0 - mx, x1 + mx), (y0 - my, y1 + my))
}
