//! `train.gbdt`: gradient-boosted trees (forust-ml, XGBoost's defaults) on a binary task: the raw
//! pixels of an image stage (the flattened centre crop) or the features of a dataset stage.

use std::time::Instant;

use anyhow::Result;

use super::baselines::BinaryData;
use super::{InputKind, InputSpec, Op, OpContext, OutputSpec, ParamSpec, ParamType};
use crate::ml::boosting::{BoostConfig, BoostedTrees};

pub struct TrainGbdt;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "n_estimators",
        ty: ParamType::IntRange(1, 1_000_000),
        default: Some("100"),
        doc: "trees (XGBoost's default)",
    },
    ParamSpec {
        name: "learning_rate",
        ty: ParamType::PositiveFloat,
        default: Some("0.3"),
        doc: "shrinkage (eta)",
    },
    ParamSpec {
        name: "max_depth",
        ty: ParamType::IntRange(1, 64),
        default: Some("6"),
        doc: "tree depth",
    },
    ParamSpec {
        name: "lambda",
        ty: ParamType::FloatRange(0.0, f64::MAX),
        default: Some("1.0"),
        doc: "L2 regularisation of leaf weights",
    },
    ParamSpec {
        name: "gamma",
        ty: ParamType::FloatRange(0.0, f64::MAX),
        default: Some("0.0"),
        doc: "minimum gain a split needs (min_split_loss)",
    },
    ParamSpec {
        name: "min_child_weight",
        ty: ParamType::FloatRange(0.0, f64::MAX),
        default: Some("1.0"),
        doc: "minimum hessian sum in a child",
    },
    ParamSpec {
        name: "max_bins",
        ty: ParamType::IntRange(2, 65_535),
        default: Some("256"),
        doc: "histogram bins per feature",
    },
];

const INPUTS: &[InputSpec] = &[InputSpec {
    name: "data",
    kind: InputKind::One,
    doc: "an image stage (its flattened pixels are the features) or a dataset stage, two classes",
    required: true,
}];

const OUTPUTS: &[OutputSpec] = &[
    OutputSpec {
        name: "run.json",
        doc: "train, validation and test loss and accuracy",
    },
    OutputSpec {
        name: "predictions.json",
        doc: "P(fake) of every test image",
    },
    OutputSpec {
        name: "model.json",
        doc: "the trees (forust-ml's JSON)",
    },
];

impl Op for TrainGbdt {
    fn name(&self) -> &'static str {
        "train.gbdt"
    }
    fn doc(&self) -> &'static str {
        "Gradient-boosted trees (forust-ml: XGBoost's algorithm and defaults, histogram method) on an image stage's pixels or a dataset stage."
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
    /// Histogram building scales with cores: all the threads the run allows.
    fn threads(&self) -> usize {
        usize::MAX
    }
    fn cost_hint(&self, params: &super::Params) -> f64 {
        // forust-ml on the report's 1,400 × 12,288 pixels: about 1.2 CPU-seconds a tree.
        params.f64("n_estimators").unwrap_or(100.0) * 1.2
    }

    fn run(&self, ctx: &OpContext) -> Result<()> {
        let p = ctx.params;
        let data = BinaryData::from_input(ctx)?;
        let cfg = BoostConfig {
            n_estimators: p.usize("n_estimators")?,
            learning_rate: p.f64("learning_rate")? as f32,
            max_depth: p.usize("max_depth")?,
            lambda: p.f64("lambda")? as f32,
            gamma: p.f64("gamma")? as f32,
            min_child_weight: p.f64("min_child_weight")? as f32,
            max_bins: p.usize("max_bins")?,
            threads: ctx.threads,
        };
        ctx.progress.report(format!(
            "fitting {} trees on {} rows × {} features",
            cfg.n_estimators,
            data.y[0].len(),
            data.d
        ));
        let started = Instant::now();
        let model = BoostedTrees::fit(&data.x[0], &data.y[0], data.d, &cfg)?;
        let fit_seconds = started.elapsed().as_secs_f64();
        ctx.log(&format!(
            "fitted {} trees in {fit_seconds:.1} s",
            model.n_trees()
        ))?;
        model.save(&ctx.out_dir.join("model.json"))?;
        let probabilities = [
            model.predict_proba(&data.x[0])?,
            model.predict_proba(&data.x[1])?,
            model.predict_proba(&data.x[2])?,
        ];
        super::baselines::record(ctx, "boosting", &data, probabilities, fit_seconds, 0)
    }
}
