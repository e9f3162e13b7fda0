//! `baseline.logistic`: L2 logistic regression (scikit-learn's defaults) on the 512-d features of
//! a frozen pretrained backbone.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Tensor, TensorData};

use super::{InputKind, InputSpec, Op, OpContext, OutputSpec, ParamSpec, ParamType};
use crate::artifacts::ImageDataset;
use crate::ml::logistic::{LogisticConfig, LogisticRegression};
use crate::ml::resnet::ResNet;

pub struct Logistic;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "c",
        ty: ParamType::Float,
        default: Some("1.0"),
        doc: "inverse regularisation strength C (scikit-learn's default)",
    },
    ParamSpec {
        name: "max_iter",
        ty: ParamType::Int,
        default: Some("100"),
        doc: "L-BFGS iterations",
    },
];

const INPUTS: &[InputSpec] = &[
    InputSpec {
        name: "data",
        kind: InputKind::One,
        doc: "an image stage",
        required: true,
    },
    InputSpec {
        name: "backbone",
        kind: InputKind::One,
        doc: "a pretrained ResNet (train.pretrain)",
        required: true,
    },
];

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

impl Op for Logistic {
    fn name(&self) -> &'static str {
        "baseline.logistic"
    }
    fn doc(&self) -> &'static str {
        "Logistic regression (L2, C = 1, L-BFGS) on the pooled features of a frozen pretrained backbone."
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
    /// Feature extraction scales with cores: all the threads the run allows.
    fn threads(&self) -> usize {
        usize::MAX
    }
    fn isolate(&self) -> bool {
        true
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
        let backbone = &ctx.input("backbone")[0];
        let cfg = super::train_cnn::backbone_config(&backbone.dir)?;
        let device = Device::flex();
        let mut model = ResNet::new(&cfg, &device);
        model.load_weights(&backbone.dir.join("model.safetensors"), true)?;
        let size = data.meta.size;
        let features = |s: usize| -> Result<Vec<f32>> {
            let pixels = data.normalised(s);
            let n = data.meta.labels[s].len();
            let per = 3 * size * size;
            let mut out = Vec::with_capacity(n * cfg.features());
            for start in (0..n).step_by(64) {
                let end = (start + 64).min(n);
                let x = Tensor::<4>::from_data(
                    TensorData::new(
                        pixels[start * per..end * per].to_vec(),
                        [end - start, 3, size, size],
                    ),
                    &device,
                );
                let f = model
                    .features(x)
                    .into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                out.extend(f);
            }
            Ok(out)
        };
        let (train_x, val_x, test_x) = crate::ml::with_threads(ctx.threads, || -> Result<_> {
            Ok((features(0)?, features(1)?, features(2)?))
        })??;
        let d = cfg.features();
        let started = Instant::now();
        let lr_cfg = LogisticConfig {
            c: p.f64("c")?,
            max_iter: p.usize("max_iter")?,
            ..LogisticConfig::default()
        };
        let fitted = LogisticRegression::fit(&train_x, &data.meta.labels[0], d, &lr_cfg)?;
        let fit_seconds = started.elapsed().as_secs_f64();
        fitted.save(&ctx.out_dir.join("model.json"))?;
        let (train_p, val_p, test_p) = (
            fitted.predict_proba(&train_x),
            fitted.predict_proba(&val_x),
            fitted.predict_proba(&test_x),
        );
        super::baselines::record(
            ctx,
            "logistic",
            &data,
            &train_p,
            &val_p,
            test_p,
            fit_seconds,
            d + 1,
        )
    }
}
