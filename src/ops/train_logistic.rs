//! `train.logistic`: L2 logistic regression (linfa-logistic, scikit-learn's defaults) on a binary
//! dataset stage, e.g. the frozen backbone features of `features.backbone`.

use std::time::Instant;

use anyhow::Result;

use super::baselines::BinaryData;
use super::{InputKind, InputSpec, Op, OpContext, OutputSpec, ParamSpec, ParamType};
use crate::ml::logistic::{LogisticConfig, LogisticRegression};

pub struct TrainLogistic;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "c",
        ty: ParamType::PositiveFloat,
        default: Some("1.0"),
        doc: "inverse regularisation strength C (scikit-learn's default)",
    },
    ParamSpec {
        name: "max_iter",
        ty: ParamType::IntRange(1, 100_000_000),
        default: Some("100"),
        doc: "L-BFGS iterations",
    },
];

const INPUTS: &[InputSpec] = &[InputSpec {
    name: "data",
    kind: InputKind::One,
    doc: "a dataset stage (features.backbone, data.csv) or an image stage (raw pixels), two classes",
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
        doc: "weights and intercept",
    },
];

impl Op for TrainLogistic {
    fn name(&self) -> &'static str {
        "train.logistic"
    }
    fn doc(&self) -> &'static str {
        "Logistic regression (linfa-logistic: L2, C = 1, L-BFGS, scikit-learn's defaults) on a binary dataset stage such as backbone features."
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
        let p = ctx.params;
        let data = BinaryData::from_input(ctx)?;
        let cfg = LogisticConfig {
            c: p.f64("c")?,
            max_iter: p.usize("max_iter")?,
            ..LogisticConfig::default()
        };
        let started = Instant::now();
        let fitted = LogisticRegression::fit(&data.x[0], &data.y[0], data.d, &cfg)?;
        let fit_seconds = started.elapsed().as_secs_f64();
        fitted.save(&ctx.out_dir.join("model.json"))?;
        let probabilities = [
            fitted.predict_proba(&data.x[0])?,
            fitted.predict_proba(&data.x[1])?,
            fitted.predict_proba(&data.x[2])?,
        ];
        super::baselines::record(
            ctx,
            "logistic",
            &data,
            probabilities,
            fit_seconds,
            data.d + 1,
        )
    }
}
