//! `baseline.boosting`: XGBoost-style gradient-boosted trees on the raw pixels of the images.

use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::{InputKind, InputSpec, Op, OpContext, OutputSpec, ParamSpec, ParamType};
use crate::artifacts::ImageDataset;
use crate::ml::boosting::{BoostConfig, BoostedTrees};

pub struct Boosting;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "n_estimators",
        ty: ParamType::Int,
        default: Some("100"),
        doc: "trees (XGBoost's default)",
    },
    ParamSpec {
        name: "learning_rate",
        ty: ParamType::Float,
        default: Some("0.3"),
        doc: "shrinkage (eta)",
    },
    ParamSpec {
        name: "max_depth",
        ty: ParamType::Int,
        default: Some("6"),
        doc: "tree depth",
    },
    ParamSpec {
        name: "lambda",
        ty: ParamType::Float,
        default: Some("1.0"),
        doc: "L2 regularisation of leaf weights",
    },
    ParamSpec {
        name: "min_child_weight",
        ty: ParamType::Float,
        default: Some("1.0"),
        doc: "minimum hessian sum in a child",
    },
    ParamSpec {
        name: "max_bins",
        ty: ParamType::Int,
        default: Some("256"),
        doc: "histogram bins per feature",
    },
];

const INPUTS: &[InputSpec] = &[InputSpec {
    name: "data",
    kind: InputKind::One,
    doc: "an image stage; its flattened pixels are the features",
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
        doc: "the trees",
    },
];

impl Op for Boosting {
    fn name(&self) -> &'static str {
        "baseline.boosting"
    }
    fn doc(&self) -> &'static str {
        "Gradient-boosted trees (XGBoost's algorithm and defaults: logistic loss, second-order splits, histogram method) on flattened pixels."
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
        params.f64("n_estimators").unwrap_or(100.0) * 0.2
    }

    fn run(&self, ctx: &OpContext) -> Result<()> {
        let p = ctx.params;
        let item = &ctx.input("data")[0];
        let data =
            ImageDataset::read(&item.dir).with_context(|| format!("input `{}`", item.stage))?;
        if data.meta.classes.len() != 2 {
            bail!(
                "`{}` has {} classes: this baseline is binary",
                item.stage,
                data.meta.classes.len()
            );
        }
        let d = 3 * data.meta.size * data.meta.size;
        let features = |s: usize| -> Vec<f32> { data.bytes[s].iter().map(|&b| b as f32).collect() };
        let cfg = BoostConfig {
            n_estimators: p.usize("n_estimators")?,
            learning_rate: p.f64("learning_rate")? as f32,
            max_depth: p.usize("max_depth")?,
            lambda: p.f64("lambda")? as f32,
            min_child_weight: p.f64("min_child_weight")? as f32,
            max_bins: p.usize("max_bins")?.clamp(2, 256),
            threads: ctx.threads,
            ..BoostConfig::default()
        };
        let train_x = features(0);
        let started = Instant::now();
        let total = cfg.n_estimators;
        let mut progress = |tree: usize| {
            if tree.is_multiple_of(10) {
                ctx.progress.report(format!("tree {tree}/{total}"));
            }
        };
        let model = BoostedTrees::fit(&train_x, &data.meta.labels[0], d, &cfg, &mut progress)?;
        let fit_seconds = started.elapsed().as_secs_f64();
        model.save(&ctx.out_dir.join("model.json"))?;
        let (train_p, val_p, test_p) = (
            model.predict_proba(&train_x),
            model.predict_proba(&features(1)),
            model.predict_proba(&features(2)),
        );
        super::baselines::record(
            ctx,
            "boosting",
            &data,
            &train_p,
            &val_p,
            test_p,
            fit_seconds,
            0,
        )
    }
}
