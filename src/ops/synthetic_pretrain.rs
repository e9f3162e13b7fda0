//! `data.synthetic_pretrain`: the multi-class source task the backbone is pretrained on, standing
//! in for ImageNet: procedural shapes and textures (circles, stars, stripes, checkers, rings, …)
//! with random colours, positions, scales, rotations, backgrounds and noise, as an image stage;
//! by default half of them form one more class, `resampled`, passed through the same generator-like
//! up-sampling as the fake faces. Without that class a backbone pretrained here learns shapes
//! but nothing that transfers to spotting fakes, where ImageNet features do transfer.

use anyhow::{Result, bail};

use super::{Op, OpContext, OutputSpec, ParamSpec, ParamType, Params};
use crate::artifacts::{ImageDataset, ImageMeta};
use crate::datasets::faces::{SHAPE_CLASSES, ShapesConfig, synthetic_shapes};

pub struct SyntheticPretrain;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "n_train",
        ty: ParamType::IntRange(1, 10_000_000),
        default: Some("4000"),
        doc: "training images (classes balanced)",
    },
    ParamSpec {
        name: "n_val",
        ty: ParamType::IntRange(1, 10_000_000),
        default: Some("400"),
        doc: "held-out images, for the source-task accuracy",
    },
    ParamSpec {
        name: "classes",
        ty: ParamType::Int,
        default: Some("10"),
        doc: "classes, the first ones of circle, square, triangle, star, stripes, checker, rings, blobs, cross, dots, hexagon, crescent",
    },
    ParamSpec {
        name: "resampled",
        ty: ParamType::FloatRange(0.0, 1.0),
        default: Some("0.5"),
        doc: "fraction of the images in one more class, `resampled`: shapes reduced and brought back up by generator-like ×2 transposed convolutions (0: none)",
    },
    ParamSpec {
        name: "size",
        ty: ParamType::IntRange(8, 4096),
        default: Some("64"),
        doc: "image side in pixels (at least 16)",
    },
    ParamSpec {
        name: "mean",
        ty: ParamType::List(&ParamType::Float),
        default: Some("[0.485, 0.456, 0.406]"),
        doc: "per-channel mean for normalisation (ImageNet's by default)",
    },
    ParamSpec {
        name: "std",
        ty: ParamType::List(&ParamType::Float),
        default: Some("[0.229, 0.224, 0.225]"),
        doc: "per-channel standard deviation for normalisation",
    },
    ParamSpec {
        name: "seed",
        ty: ParamType::Int,
        default: Some("0"),
        doc: "picks every image; the same seed gives the same bytes",
    },
];

const OUTPUTS: &[OutputSpec] = &[
    OutputSpec {
        name: "images.json",
        doc: "size, classes, normalisation, image names and labels per split",
    },
    OutputSpec {
        name: "train.u8",
        doc: "the images' RGB bytes (val.u8 likewise; test.u8 is empty)",
    },
];

impl Op for SyntheticPretrain {
    fn name(&self) -> &'static str {
        "data.synthetic_pretrain"
    }
    fn doc(&self) -> &'static str {
        "A generated multi-class shapes-and-textures image set (stands in for ImageNet) to pretrain a backbone on."
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
    /// Images are drawn in parallel.
    fn threads(&self) -> usize {
        usize::MAX
    }
    fn cost_hint(&self, params: &Params) -> f64 {
        params.f64("n_train").unwrap_or(4000.0) / 2000.0
    }

    fn run(&self, ctx: &OpContext) -> Result<()> {
        let p = ctx.params;
        let (n_train, n_val) = (p.usize("n_train")?, p.usize("n_val")?);
        let classes = p.usize("classes")?;
        let size = p.usize("size")?;
        let max_classes = SHAPE_CLASSES.len();
        if !(2..=max_classes).contains(&classes) {
            bail!("classes must be 2 to {max_classes}, got {classes}");
        }
        if size < 16 {
            bail!("size must be at least 16, got {size}");
        }
        let resampled = p.f64("resampled")?;
        if !(0.0..1.0).contains(&resampled) {
            bail!("resampled must be at least 0 and below 1, got {resampled}");
        }
        if n_train < classes {
            bail!("n_train ({n_train}) must be at least the number of classes ({classes})");
        }
        let cfg = ShapesConfig {
            seed: p.i64("seed")? as u64,
            n: n_train + n_val,
            size: size as u32,
            classes,
            resampled: resampled as f32,
        };
        let set = crate::ml::with_threads(ctx.threads, || synthetic_shapes(&cfg))?;
        let (train, val) = set.bytes.split_at(n_train * 3 * size * size);
        let meta = ImageMeta {
            size,
            classes: set.classes.clone(),
            mean: p.rgb("mean")?,
            std: p.rgb("std")?,
            files: [
                set.files[..n_train].to_vec(),
                set.files[n_train..].to_vec(),
                Vec::new(),
            ],
            labels: [
                set.labels[..n_train].to_vec(),
                set.labels[n_train..].to_vec(),
                Vec::new(),
            ],
            skipped: 0,
            source: format!(
                "{n_train} + {n_val} generated shapes and textures, {} classes (seed {})",
                set.classes.len(),
                cfg.seed
            ),
        };
        ImageDataset {
            meta,
            bytes: [train.to_vec(), val.to_vec(), Vec::new()],
        }
        .write(ctx.out_dir)
    }
}
