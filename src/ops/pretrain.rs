//! `train.pretrain`: a ResNet18 backbone trained on a generated multi-class source task (shapes
//! and textures, standing in for ImageNet), or a user's torchvision weights taken as they are.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::{Op, OpContext, OutputSpec, ParamSpec, ParamType, Params};
use crate::artifacts::RunRecord;
use crate::datasets::faces::{ShapesConfig, synthetic_shapes};
use crate::ml::cnn::{CnnConfig, Images, Mode, pretrain};
use crate::ml::resnet::{ResNet, ResNetConfig};

pub struct Pretrain;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "weights",
        ty: ParamType::Str,
        default: Some("''"),
        doc: "a torchvision ResNet18 .safetensors file (torchvision's key names) to use instead of pretraining",
    },
    ParamSpec {
        name: "width",
        ty: ParamType::Int,
        default: Some("16"),
        doc: "ResNet base width (torchvision: 64)",
    },
    ParamSpec {
        name: "size",
        ty: ParamType::Int,
        default: Some("64"),
        doc: "image side of the source task",
    },
    ParamSpec {
        name: "n",
        ty: ParamType::Int,
        default: Some("4000"),
        doc: "source-task images",
    },
    ParamSpec {
        name: "classes",
        ty: ParamType::Int,
        default: Some("10"),
        doc: "source-task classes",
    },
    ParamSpec {
        name: "epochs",
        ty: ParamType::Int,
        default: Some("2"),
        doc: "passes over the source task",
    },
    ParamSpec {
        name: "lr",
        ty: ParamType::Float,
        default: Some("0.001"),
        doc: "Adam's learning rate",
    },
    ParamSpec {
        name: "batch_size",
        ty: ParamType::Int,
        default: Some("64"),
        doc: "batch size",
    },
    ParamSpec {
        name: "mean",
        ty: ParamType::List(&ParamType::Float),
        default: Some("[0.485, 0.456, 0.406]"),
        doc: "normalisation of the source images (match the data's)",
    },
    ParamSpec {
        name: "std",
        ty: ParamType::List(&ParamType::Float),
        default: Some("[0.229, 0.224, 0.225]"),
        doc: "normalisation of the source images (match the data's)",
    },
    ParamSpec {
        name: "seed",
        ty: ParamType::Int,
        default: Some("0"),
        doc: "seed of the source task, the weights and the shuffling",
    },
];

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
        "Pretrain a ResNet18 backbone on a generated shapes-and-textures task (cached: it runs once), or take torchvision weights."
    }
    fn version(&self) -> u32 {
        1
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
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
    fn cost_hint(&self, params: &Params) -> f64 {
        let width = params.f64("width").unwrap_or(16.0);
        params.f64("n").unwrap_or(4000.0) / 1400.0
            * 20.0
            * (width / 16.0).powi(2)
            * params.f64("epochs").unwrap_or(2.0)
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
        let size = p.usize("size")?;
        let classes = p.usize("classes")?;
        let max_classes = crate::datasets::faces::SHAPE_CLASSES.len();
        if !(2..=max_classes).contains(&classes) || size < 16 {
            bail!(
                "the source task needs 2..={max_classes} classes and images of at least 16 pixels"
            );
        }
        let (mean, std) = (p.rgb("mean")?, p.rgb("std")?);
        let source = synthetic_shapes(
            &ShapesConfig {
                seed: p.i64("seed")? as u64,
                n: p.usize("n")?,
                size: size as u32,
                classes,
            },
            mean,
            std,
        );
        let images = Images {
            pixels: &source.pixels,
            labels: &source.labels,
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
        };
        let hooks = super::train_mlp::OpHooks(ctx);
        let (model, epochs) =
            crate::ml::with_threads(ctx.threads, || pretrain(&images, classes, &cfg, &hooks))??;
        model.save(&ctx.out_dir.join("model.safetensors"))?;
        std::fs::write(
            ctx.out_dir.join("model.json"),
            serde_json::to_vec_pretty(
                &json!({"kind": "resnet18", "resnet": cfg.resnet, "size": size}),
            )?,
        )?;
        let n_parameters = burn::module::Module::num_params(&model);
        RunRecord {
            params: p.0.clone(),
            steps_per_epoch: source.len().div_ceil(cfg.batch_size),
            epochs,
            diverged: false,
            data: format!("{} generated shapes, {classes} classes", source.len()),
            n_parameters,
        }
        .write(ctx.out_dir)
    }
}
