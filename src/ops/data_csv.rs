//! `data.csv`: a dataset from train/validation/test CSV files with named feature and label columns.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::{InputKind, InputSpec, Op, OpContext, OutputSpec, ParamSpec, ParamType, Params};
use crate::artifacts::{Dataset, DatasetMeta};
use crate::datasets::{Table, read_csv};

pub struct DataCsv;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "dir",
        ty: ParamType::Str,
        default: Some("''"),
        doc: "folder holding the three CSV files (relative to the project root); empty: the folder of the `csv` input",
    },
    ParamSpec {
        name: "features",
        ty: ParamType::List(&ParamType::Str),
        default: Some("[long, lat]"),
        doc: "feature columns, in order",
    },
    ParamSpec {
        name: "label",
        ty: ParamType::Str,
        default: Some("country"),
        doc: "label column: integer classes 0..K-1",
    },
    ParamSpec {
        name: "train",
        ty: ParamType::Str,
        default: Some("train.csv"),
        doc: "training file name",
    },
    ParamSpec {
        name: "validation",
        ty: ParamType::Str,
        default: Some("validation.csv"),
        doc: "validation file name",
    },
    ParamSpec {
        name: "test",
        ty: ParamType::Str,
        default: Some("test.csv"),
        doc: "test file name",
    },
];

const INPUTS: &[InputSpec] = &[InputSpec {
    name: "csv",
    kind: InputKind::One,
    doc: "optional: a stage whose folder holds the CSVs (e.g. data.synthetic_map), used when `dir` is empty",
    required: false,
}];

pub const DATASET_OUTPUTS: &[OutputSpec] = &[
    OutputSpec {
        name: "dataset.json",
        doc: "features, label, classes, rows per split",
    },
    OutputSpec {
        name: "{train,validation,test}.bin",
        doc: "features (f32) and labels (u32), little-endian",
    },
];

fn files(dir: &std::path::Path, params: &Params) -> Result<[PathBuf; 3]> {
    Ok([
        dir.join(params.str("train")?),
        dir.join(params.str("validation")?),
        dir.join(params.str("test")?),
    ])
}

impl Op for DataCsv {
    fn name(&self) -> &'static str {
        "data.csv"
    }
    fn doc(&self) -> &'static str {
        "Load train/validation/test CSVs (a leading unnamed index column is ignored). Their content is part of the key."
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
        DATASET_OUTPUTS
    }
    fn file_deps(&self, params: &Params) -> Result<Vec<PathBuf>> {
        // Files from the `csv` input are covered by that stage's key.
        match params.str("dir")? {
            "" => Ok(Vec::new()),
            dir => Ok(files(std::path::Path::new(dir), params)?.to_vec()),
        }
    }

    fn run(&self, ctx: &OpContext) -> Result<()> {
        let features = ctx.params.str_list("features")?;
        let label = ctx.params.str("label")?;
        let dir = ctx.params.str("dir")?;
        let (folder, source) = match (dir, ctx.input("csv").first()) {
            ("", Some(input)) => (
                input.dir.clone(),
                format!("CSV files of stage `{}`", input.stage),
            ),
            ("", None) => bail!("set `dir` to a folder of CSV files, or give a `csv` input stage"),
            (dir, _) => (ctx.resolve(dir), format!("CSV files in {dir}")),
        };
        let paths = files(&folder, ctx.params)?;
        let mut tables = Vec::with_capacity(3);
        for path in &paths {
            tables.push(read_csv(path, &features, label)?);
        }
        let splits: [Table; 3] = tables
            .try_into()
            .map_err(|_| anyhow::anyhow!("three splits"))?;
        let n_classes = check_labels(&splits, &paths)?;
        let meta = DatasetMeta {
            features: features.clone(),
            label: label.to_string(),
            n_classes,
            raw_features: features,
            transforms: vec![],
            rows: [splits[0].len(), splits[1].len(), splits[2].len()],
            source,
            test_names: Vec::new(),
        };
        Dataset { meta, splits }
            .write(ctx.out_dir)
            .context("writing the dataset")
    }
}

/// Classes are 0..=max train label; a validation or test label never seen in training is an
/// error (naming the file and line), since no model can predict it.
pub fn check_labels(splits: &[Table; 3], paths: &[PathBuf; 3]) -> Result<usize> {
    if splits[0].is_empty() {
        bail!("{}: the training file has no rows", paths[0].display());
    }
    let mut seen = Vec::new();
    for &y in &splits[0].y {
        let y = y as usize;
        if y >= seen.len() {
            seen.resize(y + 1, false);
        }
        seen[y] = true;
    }
    for (split, path) in splits.iter().zip(paths).skip(1) {
        for (row, &y) in split.y.iter().enumerate() {
            if !seen.get(y as usize).copied().unwrap_or(false) {
                bail!(
                    "{}:{}: label {y} does not occur in the training file {}",
                    path.display(),
                    row + 2,
                    paths[0].display()
                );
            }
        }
    }
    Ok(seen.len())
}
