//! `features.sine`: replaces each feature x by sin(α·x) for a list of α.

use anyhow::{Context, Result, bail};

use super::data_csv::DATASET_OUTPUTS;
use super::{InputKind, InputSpec, Op, OpContext, OutputSpec, ParamSpec, ParamType};
use crate::artifacts::{Dataset, Transform};
use crate::datasets::Table;

pub struct SineFeatures;

const PARAMS: &[ParamSpec] = &[ParamSpec {
    name: "alphas",
    ty: ParamType::List(&ParamType::Float),
    default: Some("[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]"),
    doc: "frequencies α; columns are feature-major: sin(α₁x₁), sin(α₂x₁), …, sin(α₁x₂), …",
}];

const INPUTS: &[InputSpec] = &[InputSpec {
    name: "data",
    kind: InputKind::One,
    doc: "a dataset stage",
    required: true,
}];

impl Op for SineFeatures {
    fn name(&self) -> &'static str {
        "features.sine"
    }
    fn doc(&self) -> &'static str {
        "Map every feature x to sin(αx) for each α (2 features × 10 α = 20 features by default)."
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
        DATASET_OUTPUTS
    }

    fn run(&self, ctx: &OpContext) -> Result<()> {
        let alphas = ctx.params.f64_list("alphas")?;
        if alphas.is_empty() {
            bail!("`alphas` is empty: list at least one frequency");
        }
        let input = &ctx.input("data")[0];
        let mut dataset =
            Dataset::read(&input.dir).with_context(|| format!("input `{}`", input.stage))?;
        let transform = Transform::Sine { alphas };
        let features = transform.feature_names(&dataset.meta.features);
        for table in dataset.splits.iter_mut() {
            let mut x = Vec::with_capacity(table.len() * features.len());
            for row in table.x.chunks(table.dim().max(1)) {
                transform.apply_row(row, &mut x);
            }
            *table = Table {
                features: features.clone(),
                label: table.label.clone(),
                x,
                y: std::mem::take(&mut table.y),
            };
        }
        dataset.meta.features = features;
        dataset.meta.transforms.push(transform);
        dataset.meta.source = format!("{} → sine features", dataset.meta.source);
        dataset.write(ctx.out_dir)
    }
}
