//! `data.synthetic_faces`: the default section-7 data, generated real-vs-fake face images.

use anyhow::Result;

use super::{Op, OpContext, OutputSpec, ParamSpec, ParamType};
use crate::datasets::faces::{FacesConfig, write_synthetic_faces};

pub struct SyntheticFaces;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "seed",
        ty: ParamType::Int,
        default: Some("0"),
        doc: "the images follow from the seed",
    },
    ParamSpec {
        name: "n_train",
        ty: ParamType::IntRange(1, 10_000_000),
        default: Some("1400"),
        doc: "training images (half real, half fake)",
    },
    ParamSpec {
        name: "n_val",
        ty: ParamType::IntRange(1, 10_000_000),
        default: Some("200"),
        doc: "validation images",
    },
    ParamSpec {
        name: "n_test",
        ty: ParamType::IntRange(1, 10_000_000),
        default: Some("400"),
        doc: "test images",
    },
    ParamSpec {
        name: "size",
        ty: ParamType::IntRange(8, 4096),
        default: Some("64"),
        doc: "image side in pixels",
    },
];

const OUTPUTS: &[OutputSpec] = &[OutputSpec {
    name: "{train,val,test}/{0_real,1_fake}/*.png",
    doc: "the ImageFolder tree of the course",
}];

impl Op for SyntheticFaces {
    fn name(&self) -> &'static str {
        "data.synthetic_faces"
    }
    fn doc(&self) -> &'static str {
        "Generate real-vs-fake face images: smooth procedural faces, and fakes up-sampled the way \
         generators do, with faint periodic checkerboard traces of varying strength."
    }
    fn version(&self) -> u32 {
        2
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn outputs(&self) -> &'static [OutputSpec] {
        OUTPUTS
    }

    fn run(&self, ctx: &OpContext) -> Result<()> {
        let p = ctx.params;
        let cfg = FacesConfig {
            seed: p.i64("seed")? as u64,
            n_train: p.usize("n_train")?,
            n_val: p.usize("n_val")?,
            n_test: p.usize("n_test")?,
            size: p.usize("size")? as u32,
        };
        if cfg.size < 16 {
            anyhow::bail!("size must be at least 16");
        }
        write_synthetic_faces(ctx.out_dir, &cfg)
    }
}
