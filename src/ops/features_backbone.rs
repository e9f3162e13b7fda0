//! `features.backbone`: the pooled features of a frozen pretrained ResNet (evaluation mode, batch
//! norm with its running statistics) for every image of an image stage, as a dataset stage, so
//! that any learner on features (`train.logistic`, `train.gbdt`, `train.mlp`) can use them and a
//! change to the learner does not recompute them.

use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::{
    GpuUse, InputKind, InputSpec, Op, OpContext, OutputSpec, ParamSpec, ParamType, Params,
};
use crate::artifacts::{Dataset, DatasetMeta, ImageDataset};
use crate::datasets::Table;
use crate::ml::cnn::{Images, native_features, pooled_features};
use crate::ml::native_cnn::NativeResNet;
use crate::ml::resnet::ResNet;

pub struct FeaturesBackbone;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "batch_size",
        ty: ParamType::IntRange(1, 1 << 20),
        default: Some("64"),
        doc: "images per forward pass",
    },
    ParamSpec {
        name: "engine",
        ty: ParamType::Choice(&["native", "burn"]),
        default: Some("native"),
        doc: "CPU engine: native (hand-written NHWC kernels, fast) or burn (Flex); on a GPU burn runs",
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
        doc: "a pretrained ResNet (train.pretrain)",
        required: true,
    },
];

const OUTPUTS: &[OutputSpec] = &[
    OutputSpec {
        name: "dataset.json",
        doc: "the schema: features f0…, the image classes, the test image names",
    },
    OutputSpec {
        name: "train.bin",
        doc: "features and labels (validation.bin and test.bin likewise)",
    },
];

impl Op for FeaturesBackbone {
    fn name(&self) -> &'static str {
        "features.backbone"
    }
    fn doc(&self) -> &'static str {
        "The frozen pretrained backbone's pooled features (8 × width per image) of an image stage, as a dataset stage."
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
    /// burn's Flex backend in a process of its own, like every training stage.
    fn isolate(&self) -> bool {
        true
    }
    /// Feature extraction: on a GPU whenever the run has one.
    fn gpu(&self, _params: &Params) -> GpuUse {
        GpuUse::Preferred
    }
    /// Image batches, a network and its gradients: more than a cluster\'s usual per-CPU default.
    fn memory_mb(&self, _params: &Params) -> Option<u64> {
        Some(2048)
    }
    fn cost_hint(&self, _params: &Params) -> f64 {
        3.0
    }

    fn run(&self, ctx: &OpContext) -> Result<()> {
        let batch = ctx.params.usize("batch_size")?;
        if batch == 0 {
            bail!("batch_size must be at least 1");
        }
        let item = &ctx.input("data")[0];
        let data =
            ImageDataset::read(&item.dir).with_context(|| format!("input `{}`", item.stage))?;
        let backbone = &ctx.input("backbone")[0];
        let cfg = super::train_cnn::backbone_config(&backbone.dir)
            .with_context(|| format!("input `{}`", backbone.stage))?;
        let device = crate::ml::device::burn_device(ctx.device)?;
        let mut model = ResNet::new(&cfg, &device);
        model.load_weights(&backbone.dir.join("model.safetensors"), true)?;
        let size = data.meta.size;
        let d = cfg.features();
        let total: usize = data.meta.labels.iter().map(Vec::len).sum();
        let started = Instant::now();
        let mut done = 0;
        let native = match (ctx.params.str("engine")? != "burn", ctx.device.is_gpu()) {
            (true, false) => Some(NativeResNet::from_burn(&model, &cfg)?),
            _ => None,
        };
        let mut features = |split: usize| -> Result<Vec<f32>> {
            if ctx.cancelled() {
                bail!("interrupted");
            }
            let pixels = data.normalised(split);
            let images = Images {
                pixels: &pixels,
                labels: &data.meta.labels[split],
                size,
            };
            if images.is_empty() {
                return Ok(Vec::new());
            }
            if let Some(net) = &native {
                let f = native_features(net, &images, batch);
                done += images.len();
                ctx.progress.report(format!("{done}/{total} images"));
                return Ok(f);
            }
            let f = crate::ml::device::guarded(ctx.device, || {
                pooled_features(&model, &images, batch, &device, ctx.device)
                    .into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .map_err(|e| anyhow::anyhow!("{e:?}"))
            })?;
            done += images.len();
            ctx.progress.report(format!("{done}/{total} images"));
            Ok(f)
        };
        let splits = crate::ml::with_threads(ctx.threads, || -> Result<[Vec<f32>; 3]> {
            Ok([features(0)?, features(1)?, features(2)?])
        })??;
        let seconds = started.elapsed().as_secs_f64();
        ctx.log(&format!(
            "{total} images in {seconds:.2} s: {:.0} images/s, threads: {}",
            total as f64 / seconds.max(1e-9),
            ctx.threads
        ))?;
        let names: Vec<String> = (0..d).map(|i| format!("f{i}")).collect();
        let [train, validation, test] = splits;
        let table = |x: Vec<f32>, s: usize| Table {
            features: names.clone(),
            label: "class".into(),
            x,
            y: data.meta.labels[s].clone(),
        };
        let meta = DatasetMeta {
            features: names.clone(),
            label: "class".into(),
            n_classes: data.meta.classes.len(),
            raw_features: names.clone(),
            transforms: Vec::new(),
            rows: [
                data.meta.labels[0].len(),
                data.meta.labels[1].len(),
                data.meta.labels[2].len(),
            ],
            source: format!(
                "{}-d features of `{}` on {}",
                d, backbone.stage, data.meta.source
            ),
            test_names: data.meta.files[2].clone(),
        };
        Dataset {
            meta,
            splits: [table(train, 0), table(validation, 1), table(test, 2)],
        }
        .write(ctx.out_dir)
    }
}
