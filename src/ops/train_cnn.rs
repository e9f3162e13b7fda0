//! `train.cnn`: the neural baselines of section 7 on ResNet18 — from scratch, linear probe on a
//! frozen pretrained backbone, or fine-tuning it — with Adam and BCE on one logit.

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::{
    GpuUse, InputKind, InputSpec, Op, OpContext, OutputSpec, ParamSpec, ParamType, Params,
};
use crate::artifacts::{ImageDataset, Predictions};
use crate::ml::cnn::{CnnConfig, CnnEngine, Images, Mode, train_binary};
use crate::ml::resnet::ResNetConfig;

pub struct TrainCnn;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "mode",
        ty: ParamType::Choice(&["scratch", "probe", "finetune"]),
        default: Some("scratch"),
        doc: "scratch: all weights trained from random; probe: frozen backbone (batch norm too) + a trained Linear head; finetune: all weights, from the backbone",
    },
    ParamSpec {
        name: "lr",
        ty: ParamType::PositiveFloat,
        default: Some("0.001"),
        doc: "Adam's learning rate",
    },
    ParamSpec {
        name: "batch_size",
        ty: ParamType::IntRange(1, 1 << 20),
        default: Some("32"),
        doc: "training batch size",
    },
    ParamSpec {
        name: "epochs",
        ty: ParamType::IntRange(1, 1_000_000),
        default: Some("1"),
        doc: "passes over the training images",
    },
    ParamSpec {
        name: "width",
        ty: ParamType::IntRange(1, 1 << 16),
        default: Some("16"),
        doc: "ResNet base width for scratch (torchvision: 64); a backbone brings its own",
    },
    ParamSpec {
        name: "eval_batch_size",
        ty: ParamType::IntRange(1, 1 << 24),
        default: Some("64"),
        doc: "evaluation batch size",
    },
    ParamSpec {
        name: "seed",
        ty: ParamType::Int,
        default: Some("0"),
        doc: "seed of the head's weights and the shuffling",
    },
    ParamSpec {
        name: "engine",
        ty: ParamType::Choice(&["native", "burn"]),
        default: Some("native"),
        doc: "CPU engine: native (hand-written NHWC kernels, fast) or burn (Flex); on a GPU burn trains",
    },
];

const INPUTS: &[InputSpec] = &[
    InputSpec {
        name: "data",
        kind: InputKind::One,
        doc: "an image stage (data.images)",
        required: true,
    },
    InputSpec {
        name: "backbone",
        kind: InputKind::One,
        doc: "a pretrained ResNet (train.pretrain or data.weights); needed by probe and finetune",
        required: false,
    },
];

const OUTPUTS: &[OutputSpec] = &[
    OutputSpec {
        name: "run.json",
        doc: "per-epoch train loss and accuracy, validation and test loss and accuracy",
    },
    OutputSpec {
        name: "predictions.json",
        doc: "P(fake) of every test image",
    },
    OutputSpec {
        name: "model.safetensors",
        doc: "weights with torchvision's names",
    },
    OutputSpec {
        name: "metrics.json",
        doc: "final numbers",
    },
];

/// The architecture a backbone stage saved beside its weights.
pub fn backbone_config(dir: &std::path::Path) -> Result<ResNetConfig> {
    let path = dir.join("model.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (is it a train.pretrain stage?)", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    serde_json::from_value(v["resnet"].clone())
        .with_context(|| format!("{} has no `resnet` config", path.display()))
}

impl Op for TrainCnn {
    fn name(&self) -> &'static str {
        "train.cnn"
    }
    fn doc(&self) -> &'static str {
        "Train a ResNet18 real-vs-fake classifier: from scratch, as a linear probe on a frozen pretrained backbone, or fine-tuned."
    }
    fn version(&self) -> u32 {
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
    /// Convolutions scale with cores: all the threads the run allows.
    fn threads(&self) -> usize {
        usize::MAX
    }
    fn isolate(&self) -> bool {
        true
    }
    /// On the CPU the native engine widens to threads lent while cores are idle (its numbers do
    /// not depend on the thread count).
    fn elastic(&self, params: &Params) -> bool {
        !params.str("engine").is_ok_and(|e| e == "burn")
    }
    /// CNN training: on a GPU whenever the run has one.
    fn gpu(&self, _params: &Params) -> GpuUse {
        GpuUse::Preferred
    }
    /// Image batches, a network and its gradients: more than a cluster\'s usual per-CPU default.
    fn memory_mb(&self, _params: &Params) -> Option<u64> {
        Some(2048)
    }
    fn cost_hint(&self, params: &super::Params) -> f64 {
        let width = params.f64("width").unwrap_or(16.0);
        match params.str("mode").unwrap_or("scratch") {
            "probe" => 2.0,
            _ => 20.0 * (width / 16.0).powi(2) * params.f64("epochs").unwrap_or(1.0),
        }
    }

    fn run(&self, ctx: &OpContext) -> Result<()> {
        let p = ctx.params;
        let data = &ctx.input("data")[0];
        let images =
            ImageDataset::read(&data.dir).with_context(|| format!("input `{}`", data.stage))?;
        if images.meta.classes.len() != 2 {
            bail!(
                "`{}` has {} classes {:?}: these baselines are binary",
                data.stage,
                images.meta.classes.len(),
                images.meta.classes
            );
        }
        let mode = match p.str("mode")? {
            "probe" => Mode::Probe,
            "finetune" => Mode::Finetune,
            _ => Mode::Scratch,
        };
        let backbone = ctx.input("backbone").first();
        let (resnet, weights) = match (mode, backbone) {
            (Mode::Scratch, _) => (
                ResNetConfig {
                    width: p.usize("width")?,
                    outputs: 1,
                },
                None,
            ),
            (_, Some(b)) => (
                backbone_config(&b.dir)?,
                Some(b.dir.join("model.safetensors")),
            ),
            (_, None) => bail!(
                "mode `{}` needs a `backbone` input (a train.pretrain stage)",
                p.str("mode")?
            ),
        };
        let cfg = CnnConfig {
            resnet: ResNetConfig {
                outputs: 1,
                ..resnet
            },
            mode,
            lr: p.f64("lr")?,
            batch_size: p.usize("batch_size")?,
            epochs: p.usize("epochs")?,
            eval_batch_size: p.usize("eval_batch_size")?,
            seed: p.i64("seed")? as u64,
            device: ctx.device,
            engine: CnnEngine::parse(p.str("engine")?),
        };
        let pixels: Vec<Vec<f32>> = (0..3).map(|s| images.normalised(s)).collect();
        let size = images.meta.size;
        let split = |s: usize| Images {
            pixels: &pixels[s],
            labels: &images.meta.labels[s],
            size,
        };
        let hooks = super::train_mlp::OpHooks(ctx);
        let out = crate::ml::with_threads(ctx.threads, || {
            train_binary(
                &split(0),
                &split(1),
                &split(2),
                &cfg,
                weights.as_deref(),
                &hooks,
            )
        })??;
        out.model.save(&ctx.out_dir.join("model.safetensors"))?;
        std::fs::write(
            ctx.out_dir.join("model.json"),
            serde_json::to_vec_pretty(
                &json!({"kind": "resnet18", "resnet": cfg.resnet, "size": size}),
            )?,
        )?;
        let predictions = Predictions {
            files: images.meta.files[2].clone(),
            labels: images.meta.labels[2].clone(),
            probabilities: out.test_probabilities,
        };
        let n_parameters = burn::module::Module::num_params(&out.model);
        super::runs::write_binary_run(
            ctx,
            p.str("mode")?,
            out.epochs,
            &out.step_losses,
            out.steps_per_epoch,
            out.diverged,
            n_parameters,
            &predictions,
            &images.meta.source,
        )
    }
}
