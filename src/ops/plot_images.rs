//! `plot.images`: test images that one model classifies correctly and another gets wrong
//! (the report's 7.6.2: the best model right, the worst wrong).

use anyhow::{Context, Result, bail};

use super::runs::label_of;
use super::{InputKind, InputSpec, Op, OpContext, OutputSpec, ParamSpec, ParamType};
use crate::artifacts::{ImageDataset, ItemSummary, Predictions};
use crate::plot::{ImageTile, image_grid};

pub struct PlotImages;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "count",
        ty: ParamType::IntRange(1, 10_000),
        default: Some("5"),
        doc: "images to show (the ones `right` is most sure of)",
    },
    ParamSpec {
        name: "title",
        ty: ParamType::Str,
        default: Some("''"),
        doc: "figure title",
    },
    ParamSpec {
        name: "id",
        ty: ParamType::Str,
        default: Some("''"),
        doc: "experiment id for the report",
    },
];

const INPUTS: &[InputSpec] = &[
    InputSpec {
        name: "right",
        kind: InputKind::One,
        doc: "the model that must classify the images correctly",
        required: true,
    },
    InputSpec {
        name: "wrong",
        kind: InputKind::One,
        doc: "the model that must get them wrong",
        required: true,
    },
    InputSpec {
        name: "data",
        kind: InputKind::One,
        doc: "the image stage the models were tested on",
        required: true,
    },
];

const OUTPUTS: &[OutputSpec] = &[
    OutputSpec {
        name: "plot.png",
        doc: "the grid",
    },
    OutputSpec {
        name: "plot.svg",
        doc: "the grid, with embedded images",
    },
    OutputSpec {
        name: "summary.json",
        doc: "for the report",
    },
];

impl Op for PlotImages {
    fn name(&self) -> &'static str {
        "plot.images"
    }
    fn doc(&self) -> &'static str {
        "Show test images that one model gets right and another gets wrong, with both models' P(fake)."
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
    fn publishes(&self) -> bool {
        true
    }
    fn runs_local(&self) -> bool {
        true
    }

    fn run(&self, ctx: &OpContext) -> Result<()> {
        let (right_item, wrong_item, data_item) = (
            &ctx.input("right")[0],
            &ctx.input("wrong")[0],
            &ctx.input("data")[0],
        );
        let right = Predictions::read(&right_item.dir)
            .with_context(|| format!("input `{}`", right_item.stage))?;
        let wrong = Predictions::read(&wrong_item.dir)
            .with_context(|| format!("input `{}`", wrong_item.stage))?;
        let data = ImageDataset::read(&data_item.dir)
            .with_context(|| format!("input `{}`", data_item.stage))?;
        if right.files != data.meta.files[2] || wrong.files != data.meta.files[2] {
            bail!(
                "the models were not tested on the test images of `{}`",
                data_item.stage
            );
        }
        let mut chosen: Vec<usize> = (0..right.files.len())
            .filter(|&i| right.correct(i) && !wrong.correct(i))
            .collect();
        let candidates = chosen.len();
        // The images the right model is surest of first (ties in file order).
        chosen.sort_by(|&a, &b| {
            let margin = |i: usize| (right.probabilities[i] - 0.5).abs();
            margin(b).total_cmp(&margin(a)).then(a.cmp(&b))
        });
        chosen.truncate(ctx.params.usize("count")?);
        let (right_label, wrong_label) = (label_of(right_item), label_of(wrong_item));
        let title = ctx.params.str("title")?;
        let reading = if chosen.is_empty() {
            format!(
                "no test image is classified correctly by {right_label} and wrongly by {wrong_label}"
            )
        } else {
            format!(
                "{candidates} test images are right for {right_label} and wrong for {wrong_label}; showing {}",
                chosen.len()
            )
        };
        let size = data.meta.size as u32;
        let tiles: Vec<ImageTile> = chosen
            .iter()
            .map(|&i| ImageTile {
                caption: format!(
                    "{}: P(fake) {:.2} vs {:.2}",
                    data.meta
                        .classes
                        .get(right.labels[i] as usize)
                        .map(String::as_str)
                        .unwrap_or("?"),
                    right.probabilities[i],
                    wrong.probabilities[i]
                ),
                width: size,
                height: size,
                rgb: data.rgb(2, i),
            })
            .collect();
        let mut figures = Vec::new();
        if !tiles.is_empty() {
            let full_title = if title.is_empty() {
                format!("right: {right_label} — wrong: {wrong_label}")
            } else {
                title.to_string()
            };
            image_grid(
                &full_title,
                &tiles,
                tiles.len().min(5),
                &ctx.out_dir.join("plot"),
            )?;
            figures = vec!["plot.png".into(), "plot.svg".into()];
        }
        ItemSummary {
            id: ctx.params.str("id")?.into(),
            title: title.into(),
            figures,
            table_md: None,
            reading,
            params: Vec::new(),
        }
        .write(ctx.out_dir)
    }
}
