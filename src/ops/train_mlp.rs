//! `train.mlp`: trains a multilayer perceptron on a dataset stage.

use anyhow::{Context, Result};
use serde_json::json;

use super::{InputKind, InputSpec, Op, OpContext, OutputSpec, ParamSpec, ParamType};
use crate::artifacts::{Dataset, RunRecord, write_metrics, write_steps};
use crate::ml::mlp::{Activation, MlpConfig};
use crate::ml::train::{Hooks, Optimizer, Schedule, Splits, TrainConfig, train_on};

pub struct TrainMlp;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "depth",
        ty: ParamType::IntRange(0, 10_000),
        default: Some("6"),
        doc: "hidden layers (depth + 1 linear layers)",
    },
    ParamSpec {
        name: "width",
        ty: ParamType::IntRange(1, 1 << 16),
        default: Some("16"),
        doc: "units per hidden layer",
    },
    ParamSpec {
        name: "activation",
        ty: ParamType::Choice(&["relu", "tanh", "sigmoid"]),
        default: Some("relu"),
        doc: "activation of the hidden layers",
    },
    ParamSpec {
        name: "batch_norm",
        ty: ParamType::Bool,
        default: Some("false"),
        doc: "batch norm before each hidden activation",
    },
    ParamSpec {
        name: "residual",
        ty: ParamType::Bool,
        default: Some("false"),
        doc: "hidden layers after the first become blocks x ← act(x + Wx + b)",
    },
    ParamSpec {
        name: "optimizer",
        ty: ParamType::Choice(&["adam", "sgd"]),
        default: Some("adam"),
        doc: "adam, or sgd with momentum",
    },
    ParamSpec {
        name: "momentum",
        ty: ParamType::FloatRange(0.0, 1.0),
        default: Some("0.9"),
        doc: "momentum of sgd",
    },
    ParamSpec {
        name: "lr",
        ty: ParamType::PositiveFloat,
        default: Some("0.001"),
        doc: "learning rate",
    },
    ParamSpec {
        name: "lr_schedule",
        ty: ParamType::Choice(&["none", "step", "cosine"]),
        default: Some("none"),
        doc: "step: × lr_step_gamma every lr_step_every epochs; cosine: down to 0 over the run",
    },
    ParamSpec {
        name: "lr_step_every",
        ty: ParamType::IntRange(1, 1_000_000),
        default: Some("10"),
        doc: "epochs between steps of the step schedule",
    },
    ParamSpec {
        name: "lr_step_gamma",
        ty: ParamType::PositiveFloat,
        default: Some("0.1"),
        doc: "factor of the step schedule",
    },
    ParamSpec {
        name: "weight_decay",
        ty: ParamType::FloatRange(0.0, f64::MAX),
        default: Some("0"),
        doc: "L2 weight decay (0: off)",
    },
    ParamSpec {
        name: "grad_clip",
        ty: ParamType::FloatRange(0.0, f64::MAX),
        default: Some("0"),
        doc: "clip the global gradient norm to this (0: off)",
    },
    ParamSpec {
        name: "batch_size",
        ty: ParamType::IntRange(1, 1 << 20),
        default: Some("256"),
        doc: "training batch size",
    },
    ParamSpec {
        name: "epochs",
        ty: ParamType::IntRange(1, 1_000_000),
        default: Some("50"),
        doc: "passes over the training split",
    },
    ParamSpec {
        name: "eval_batch_size",
        ty: ParamType::IntRange(1, 1 << 24),
        default: Some("1024"),
        doc: "evaluation batch size",
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
        doc: "native: hand-written CPU kernels for small MLPs (fast); burn: the general framework",
    },
    ParamSpec {
        name: "record_grad_norms",
        ty: ParamType::Bool,
        default: Some("false"),
        doc: "record ‖∇W‖²+‖∇b‖² of every linear layer, averaged over each epoch's batches",
    },
];

const INPUTS: &[InputSpec] = &[InputSpec {
    name: "data",
    kind: InputKind::One,
    doc: "a dataset stage (data.csv, data.synthetic_map, features.sine)",
    required: true,
}];

const OUTPUTS: &[OutputSpec] = &[
    OutputSpec {
        name: "run.json",
        doc: "parameters and per-epoch train/validation/test loss and accuracy, times, lr, gradient norms",
    },
    OutputSpec {
        name: "steps.json",
        doc: "training loss of every batch step",
    },
    OutputSpec {
        name: "metrics.json",
        doc: "final numbers",
    },
    OutputSpec {
        name: "model.json",
        doc: "the architecture",
    },
    OutputSpec {
        name: "model.safetensors",
        doc: "final weights (PyTorch layout: layers.0.weight is [out, in])",
    },
];

pub(super) struct OpHooks<'a>(pub(super) &'a OpContext<'a>);

impl Hooks for OpHooks<'_> {
    fn progress(&self, message: String) {
        self.0.progress.report(message);
    }
    fn cancelled(&self) -> bool {
        self.0.cancelled()
    }
}

impl Op for TrainMlp {
    fn name(&self) -> &'static str {
        "train.mlp"
    }
    fn doc(&self) -> &'static str {
        "Train an MLP classifier (cross-entropy) and record its learning curves. A diverging run \
         (NaN loss) stops there and is recorded as diverged, not as an error."
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

    /// burn's autodiff serialises trainings that share a process (a global graph lock), and a
    /// child process keeps any training's crash or abort to its own stage.
    fn isolate(&self) -> bool {
        true
    }

    /// The native engine splits large batches and its evaluations over lent threads.
    fn elastic(&self, params: &super::Params) -> bool {
        !params.str("engine").is_ok_and(|e| e == "burn")
    }

    /// The burn engine trains on any device; the native one is CPU kernels.
    fn gpu(&self, params: &super::Params) -> super::GpuUse {
        if params.str("engine").is_ok_and(|e| e == "burn") {
            super::GpuUse::Capable
        } else {
            super::GpuUse::Never
        }
    }

    /// Per sample and linear layer: ~6·width² flops at ~20 GFLOPS, plus ~30 µs of per-step
    /// overhead shared by the batch (measured on burn/Flex); the row count is not known when
    /// planning, so the real data's 107k rows are assumed.
    fn cost_hint(&self, params: &super::Params) -> f64 {
        let get = |name: &str, default: f64| params.f64(name).unwrap_or(default);
        let (depth, width, batch, epochs) = (
            get("depth", 6.0),
            get("width", 16.0),
            get("batch_size", 256.0),
            get("epochs", 50.0),
        );
        let per_sample_layer = width * width * 3e-10 + 30e-6 / batch.max(1.0);
        epochs * (depth + 1.0) * per_sample_layer * 107_000.0
    }

    fn run(&self, ctx: &OpContext) -> Result<()> {
        let p = ctx.params;
        let data = &ctx.input("data")[0];
        let dataset =
            Dataset::read(&data.dir).with_context(|| format!("input `{}`", data.stage))?;
        let depth = p.usize("depth")?;
        let width = p.usize("width")?;
        if width == 0 {
            anyhow::bail!("width must be at least 1");
        }
        let cfg = TrainConfig {
            model: MlpConfig {
                inputs: dataset.meta.features.len(),
                classes: dataset.meta.n_classes,
                depth,
                width,
                activation: Activation::parse(p.str("activation")?)?,
                batch_norm: p.bool("batch_norm")?,
                residual: p.bool("residual")?,
            },
            optimizer: match p.str("optimizer")? {
                "sgd" => Optimizer::Sgd {
                    momentum: p.f64("momentum")?,
                },
                _ => Optimizer::Adam,
            },
            lr: p.f64("lr")?,
            schedule: match p.str("lr_schedule")? {
                "step" => Schedule::Step {
                    every: p.usize("lr_step_every")?,
                    gamma: p.f64("lr_step_gamma")?,
                },
                "cosine" => Schedule::Cosine,
                _ => Schedule::Constant,
            },
            weight_decay: p.f64("weight_decay")?,
            grad_clip: Some(p.f64("grad_clip")?).filter(|c| *c > 0.0),
            batch_size: p.usize("batch_size")?,
            epochs: p.usize("epochs")?,
            eval_batch_size: p.usize("eval_batch_size")?,
            seed: p.i64("seed")? as u64,
            record_grad_norms: p.bool("record_grad_norms")?,
        };
        let splits = Splits {
            train: dataset.train(),
            validation: dataset.validation(),
            test: dataset.test(),
        };
        let hooks = OpHooks(ctx);
        let output = match p.str("engine")? {
            "burn" => crate::ml::with_threads(ctx.threads, || {
                train_on(&splits, &cfg, &hooks, ctx.device)
            })??,
            _ if ctx.device.is_gpu() => {
                anyhow::bail!(
                    "the native engine runs on the CPU: set `engine: burn` to train on a GPU"
                )
            }
            _ => crate::ml::native::train(&splits, &cfg, &hooks)?,
        };

        output.model.save(&ctx.out_dir.join("model.safetensors"))?;
        let model_json = json!({
            "kind": "mlp",
            "config": cfg.model,
            "raw_features": dataset.meta.raw_features,
            "features": dataset.meta.features,
            "transforms": dataset.meta.transforms,
        });
        std::fs::write(
            ctx.out_dir.join("model.json"),
            serde_json::to_vec_pretty(&model_json)?,
        )?;
        write_steps(ctx.out_dir, &output.step_losses)?;
        let record = RunRecord {
            params: p.0.clone(),
            steps_per_epoch: output.steps_per_epoch,
            epochs: output.epochs,
            diverged: output.diverged,
            data: format!(
                "{} ({} / {} / {} rows)",
                dataset.meta.source,
                dataset.meta.rows[0],
                dataset.meta.rows[1],
                dataset.meta.rows[2]
            ),
            n_parameters: output.n_parameters,
        };
        record.write(ctx.out_dir)?;
        let mut metrics = record.final_metrics();
        let train_time: f64 = record.epochs.iter().map(|e| e.train_time_s).sum();
        metrics.insert("train_time_s".into(), json!(train_time));
        metrics.insert("epochs_run".into(), json!(record.epochs.len()));
        metrics.insert("steps_per_epoch".into(), json!(record.steps_per_epoch));
        metrics.insert("parameters".into(), json!(record.n_parameters));
        write_metrics(ctx.out_dir, &metrics)
    }
}
