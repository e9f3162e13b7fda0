//! `train.pretrain`: a ResNet18 backbone trained on a multi-class image stage (by default the
//! generated shapes and textures of `data.synthetic_pretrain`, standing in for ImageNet), or a
//! user's torchvision weights taken as they are.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::{
    GpuUse, InputKind, InputSpec, Op, OpContext, OutputSpec, ParamSpec, ParamType, Params,
};
use crate::artifacts::{ImageDataset, RunRecord};
use crate::ml::cnn::{CnnConfig, CnnEngine, Images, Mode, pretrain};
use crate::ml::resnet::{ResNet, ResNetConfig};

pub struct Pretrain;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "weights",
        ty: ParamType::Str,
        default: Some("''"),
        doc: "a torchvision ResNet18 .safetensors file (torchvision's key names) to use instead of pretraining on `data`",
    },
    ParamSpec {
        name: "width",
        ty: ParamType::IntRange(1, 1 << 16),
        default: Some("16"),
        doc: "ResNet base width (torchvision: 64)",
    },
    ParamSpec {
        name: "epochs",
        ty: ParamType::IntRange(1, 1_000_000),
        default: Some("4"),
        doc: "passes over the source task",
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
        default: Some("64"),
        doc: "batch size",
    },
    ParamSpec {
        name: "seed",
        ty: ParamType::Int,
        default: Some("0"),
        doc: "seed of the initial weights and the shuffling",
    },
    ParamSpec {
        name: "engine",
        ty: ParamType::Choice(&["native", "burn"]),
        default: Some("native"),
        doc: "CPU engine: native (hand-written NHWC kernels, fast) or burn (Flex); on a GPU burn trains",
    },
];

const INPUTS: &[InputSpec] = &[InputSpec {
    name: "data",
    kind: InputKind::One,
    doc: "a multi-class image stage to pretrain on (data.synthetic_pretrain, data.images); not needed with `weights`",
    required: false,
}];

const OUTPUTS: &[OutputSpec] = &[
    OutputSpec {
        name: "model.safetensors",
        doc: "the backbone and its source-task head, torchvision's names",
    },
    OutputSpec {
        name: "model.json",
        doc: "the architecture",
    },
    OutputSpec {
        name: "run.json",
        doc: "source-task loss and accuracy per epoch",
    },
];

impl Op for Pretrain {
    fn name(&self) -> &'static str {
        "train.pretrain"
    }
    fn doc(&self) -> &'static str {
        "Pretrain a ResNet18 backbone on a multi-class image stage (cached: it runs once), or take torchvision weights."
    }
    fn version(&self) -> u32 {
        3
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
    /// Pretraining runs on a GPU whenever the run has one; loading given `weights` computes
    /// nothing.
    fn gpu(&self, params: &Params) -> GpuUse {
        if params.str("weights").is_ok_and(|w| !w.is_empty()) {
            GpuUse::Capable
        } else {
            GpuUse::Preferred
        }
    }
    /// Image batches, a network and its gradients: more than a cluster\'s usual per-CPU default.
    fn memory_mb(&self, _params: &Params) -> Option<u64> {
        Some(2048)
    }
    fn cost_hint(&self, params: &Params) -> f64 {
        if !params.str("weights").unwrap_or("").is_empty() {
            return 1.0;
        }
        // The source set's size is not known before it exists. Measured on the report's 6,000
        // images at width 16: about 40 CPU-seconds an epoch.
        let width = params.f64("width").unwrap_or(16.0);
        40.0 * (width / 16.0).powi(2) * params.f64("epochs").unwrap_or(4.0)
    }
    fn file_deps(&self, params: &Params) -> Result<Vec<PathBuf>> {
        Ok(match params.str("weights")? {
            "" => Vec::new(),
            path => vec![PathBuf::from(path)],
        })
    }

    fn run(&self, ctx: &OpContext) -> Result<()> {
        let p = ctx.params;
        let width = p.usize("width")?;
        let weights = p.str("weights")?;
        if !weights.is_empty() {
            // torchvision's ResNet18: base width 64, 1000 ImageNet classes.
            let cfg = ResNetConfig {
                width: 64,
                outputs: 1000,
            };
            let mut model = ResNet::new(&cfg, &burn::tensor::Device::flex());
            model
                .load_weights(&ctx.resolve(weights), false)
                .context("checking the weights against ResNet18")?;
            std::fs::copy(ctx.resolve(weights), ctx.out_dir.join("model.safetensors"))
                .context("copying the weights")?;
            std::fs::write(
                ctx.out_dir.join("model.json"),
                serde_json::to_vec_pretty(
                    &json!({"kind": "resnet18", "resnet": cfg, "source": weights}),
                )?,
            )?;
            return RunRecord {
                params: p.0.clone(),
                data: format!("weights from {weights}"),
                ..Default::default()
            }
            .write(ctx.out_dir);
        }
        let Some(item) = ctx.input("data").first() else {
            bail!("give a `data` input (a multi-class image stage) to pretrain on, or `weights`");
        };
        let source =
            ImageDataset::read(&item.dir).with_context(|| format!("input `{}`", item.stage))?;
        let classes = source.meta.classes.len();
        if classes < 2 || source.meta.labels[0].is_empty() {
            bail!(
                "`{}` has {classes} classes and {} training images: nothing to pretrain on",
                item.stage,
                source.meta.labels[0].len()
            );
        }
        let size = source.meta.size;
        let (train_pixels, held_out_pixels) = (source.normalised(0), source.normalised(1));
        let images = Images {
            pixels: &train_pixels,
            labels: &source.meta.labels[0],
            size,
        };
        let held_out = Images {
            pixels: &held_out_pixels,
            labels: &source.meta.labels[1],
            size,
        };
        let cfg = CnnConfig {
            resnet: ResNetConfig {
                width,
                outputs: classes,
            },
            mode: Mode::Scratch,
            lr: p.f64("lr")?,
            batch_size: p.usize("batch_size")?,
            epochs: p.usize("epochs")?,
            eval_batch_size: 64,
            seed: p.i64("seed")? as u64,
            device: ctx.device,
            engine: CnnEngine::parse(p.str("engine")?),
        };
        let hooks = super::train_mlp::OpHooks(ctx);
        let (model, epochs) = crate::ml::with_threads(ctx.threads, || {
            pretrain(&images, &held_out, classes, &cfg, &hooks)
        })??;
        model.save(&ctx.out_dir.join("model.safetensors"))?;
        std::fs::write(
            ctx.out_dir.join("model.json"),
            serde_json::to_vec_pretty(&json!({
                "kind": "resnet18",
                "resnet": cfg.resnet,
                "size": size,
                "classes": source.meta.classes,
            }))?,
        )?;
        let n_parameters = burn::module::Module::num_params(&model);
        RunRecord {
            params: p.0.clone(),
            steps_per_epoch: images.len().div_ceil(cfg.batch_size),
            epochs,
            diverged: false,
            data: source.meta.source.clone(),
            n_parameters,
        }
        .write(ctx.out_dir)
    }
}
