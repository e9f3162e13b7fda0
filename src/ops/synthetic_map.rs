//! `data.synthetic_map`: the default dataset, a Europe-like map generated from a seed.

use anyhow::{Context, Result};

use super::data_csv::DATASET_OUTPUTS;
use super::{Op, OpContext, OutputSpec, ParamSpec, ParamType};
use crate::artifacts::{Dataset, DatasetMeta, SPLITS};
use crate::datasets::{MapConfig, synthetic_map, write_csv};

pub struct SyntheticMap;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "seed",
        ty: ParamType::Int,
        default: Some("0"),
        doc: "the map and its points follow from the seed",
    },
    ParamSpec {
        name: "n_train",
        ty: ParamType::IntRange(1, 10_000_000),
        default: Some("106897"),
        doc: "training rows",
    },
    ParamSpec {
        name: "n_validation",
        ty: ParamType::IntRange(1, 10_000_000),
        default: Some("13363"),
        doc: "validation rows",
    },
    ParamSpec {
        name: "n_test",
        ty: ParamType::IntRange(1, 10_000_000),
        default: Some("13363"),
        doc: "test rows",
    },
    ParamSpec {
        name: "n_classes",
        ty: ParamType::IntRange(2, 10_000),
        default: Some("33"),
        doc: "countries",
    },
];

impl Op for SyntheticMap {
    fn name(&self) -> &'static str {
        "data.synthetic_map"
    }
    fn doc(&self) -> &'static str {
        "Generate a Europe-like dataset: unbalanced countries with irregular borders, clustered \
         cities, long -10.4..40.2, lat 34.8..71.2; also written as CSVs with the course's schema."
    }
    fn version(&self) -> u32 {
        1
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn outputs(&self) -> &'static [OutputSpec] {
        DATASET_OUTPUTS
    }

    fn run(&self, ctx: &OpContext) -> Result<()> {
        let p = ctx.params;
        let cfg = MapConfig {
            seed: p.i64("seed")? as u64,
            n_train: p.usize("n_train")?,
            n_val: p.usize("n_validation")?,
            n_test: p.usize("n_test")?,
            n_classes: p.usize("n_classes")?,
        };
        if cfg.n_classes == 0
            || cfg.n_classes > crate::datasets::MAX_CLASSES
            || cfg.n_train < cfg.n_classes
        {
            anyhow::bail!(
                "n_classes must be 1..={} and n_train at least n_classes",
                crate::datasets::MAX_CLASSES
            );
        }
        let (train, validation, test) = synthetic_map(&cfg);
        let splits = [train, validation, test];
        for (name, table) in SPLITS.iter().zip(&splits) {
            write_csv(&ctx.out_dir.join(format!("{name}.csv")), table)
                .with_context(|| format!("writing {name}.csv"))?;
        }
        let features = splits[0].features.clone();
        let meta = DatasetMeta {
            label: splits[0].label.clone(),
            n_classes: cfg.n_classes,
            raw_features: features.clone(),
            features,
            transforms: vec![],
            rows: [splits[0].len(), splits[1].len(), splits[2].len()],
            source: format!("synthetic map (seed {})", cfg.seed),
            test_names: Vec::new(),
        };
        Dataset { meta, splits }.write(ctx.out_dir)
    }
}
