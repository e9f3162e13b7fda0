//! `data.images`: an ImageFolder tree `{train,val,test}/{class}/*.{jpg,png}`, decoded, resized
//! (shorter side) and centre-cropped to a square, stored for the training stages.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{InputKind, InputSpec, Op, OpContext, OutputSpec, ParamSpec, ParamType, Params};
use crate::artifacts::{IMAGE_SPLITS, ImageDataset, ImageMeta};
use crate::datasets::images::{LoadOptions, read_image_folder};

pub struct DataImages;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "dir",
        ty: ParamType::Str,
        default: Some("''"),
        doc: "folder holding train/, val/ and test/ (relative to the project root); empty: the `folder` input",
    },
    ParamSpec {
        name: "size",
        ty: ParamType::IntRange(8, 4096),
        default: Some("64"),
        doc: "images become size × size (resize the shorter side, centre crop)",
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
        name: "skip_unreadable",
        ty: ParamType::Bool,
        default: Some("false"),
        doc: "skip (and count) corrupt images instead of failing",
    },
];

const INPUTS: &[InputSpec] = &[InputSpec {
    name: "folder",
    kind: InputKind::One,
    doc: "optional: a stage whose folder holds the tree (e.g. data.synthetic_faces), used when `dir` is empty",
    required: false,
}];

const OUTPUTS: &[OutputSpec] = &[
    OutputSpec {
        name: "images.json",
        doc: "size, classes, normalisation, files and labels per split",
    },
    OutputSpec {
        name: "{train,val,test}.u8",
        doc: "RGB bytes per image, channel-major",
    },
];

fn image_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in read.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

impl Op for DataImages {
    fn name(&self) -> &'static str {
        "data.images"
    }
    fn doc(&self) -> &'static str {
        "Load an ImageFolder tree (train/val/test, one folder per class, jpg or png of any size); \
         every image file is part of the key."
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
    fn file_deps(&self, params: &Params) -> Result<Vec<PathBuf>> {
        match params.str("dir")? {
            "" => Ok(Vec::new()),
            dir => {
                let files = image_files(Path::new(dir));
                if files.is_empty() {
                    bail!(
                        "no .jpg or .png images under `{dir}` (expected {dir}/train/<class>/*.jpg)"
                    );
                }
                Ok(files)
            }
        }
    }

    fn run(&self, ctx: &OpContext) -> Result<()> {
        let p = ctx.params;
        let (root, source) = match (p.str("dir")?, ctx.input("folder").first()) {
            ("", Some(input)) => (
                input.dir.clone(),
                format!("images of stage `{}`", input.stage),
            ),
            ("", None) => bail!("set `dir` to an image folder, or give a `folder` input stage"),
            (dir, _) => (ctx.resolve(dir), format!("images in {dir}")),
        };
        let size = p.usize("size")?;
        if size < 8 {
            bail!("size must be at least 8");
        }
        // Loaded unnormalised (mean 0, std 1, so values are bytes / 255) and stored as bytes.
        let options = LoadOptions {
            size: size as u32,
            mean: [0.0; 3],
            std: [1.0; 3],
            skip_unreadable: p.bool("skip_unreadable")?,
        };
        let mut files: [Vec<String>; 3] = Default::default();
        let mut labels: [Vec<u32>; 3] = Default::default();
        let mut bytes: [Vec<u8>; 3] = Default::default();
        let mut classes = Vec::new();
        let mut skipped = 0;
        for (i, split) in IMAGE_SPLITS.iter().enumerate() {
            let (set, n_skipped) = read_image_folder(&root.join(split), &options)
                .with_context(|| format!("split `{split}`"))?;
            if i == 0 {
                classes = set.classes.clone();
            } else if set.classes != classes {
                bail!(
                    "split `{split}` has classes {:?}, train has {:?}",
                    set.classes,
                    classes
                );
            }
            skipped += n_skipped;
            bytes[i] = set
                .pixels
                .iter()
                .map(|&v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
                .collect();
            labels[i] = set.labels;
            files[i] = set.files;
        }
        if skipped > 0 {
            ctx.progress
                .report(format!("skipped {skipped} unreadable images"));
        }
        let meta = ImageMeta {
            size,
            classes,
            mean: p.rgb("mean")?,
            std: p.rgb("std")?,
            files,
            labels,
            skipped,
            source,
        };
        ImageDataset { meta, bytes }.write(ctx.out_dir)
    }
}
