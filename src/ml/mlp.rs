//! A multilayer perceptron whose depth and width are chosen at run time.
//!
//! "Depth d" is d hidden layers (d + 1 linear layers). Batch norm, when on, sits between each
//! hidden linear layer and its activation. With `residual`, every hidden layer after the first
//! is a block x ← act(x + W·x + b) (the first changes the width, so it cannot add its input).

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::{Device, Tensor, activation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Tanh,
    Sigmoid,
}

impl Activation {
    pub fn parse(name: &str) -> Result<Activation> {
        Ok(match name {
            "relu" => Activation::Relu,
            "tanh" => Activation::Tanh,
            "sigmoid" => Activation::Sigmoid,
            other => bail!("unknown activation `{other}` (relu, tanh, sigmoid)"),
        })
    }

    fn apply(self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Activation::Relu => activation::relu(x),
            Activation::Tanh => activation::tanh(x),
            Activation::Sigmoid => activation::sigmoid(x),
        }
    }
}

/// The architecture, stored beside the weights as `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
    pub inputs: usize,
    pub classes: usize,
    pub depth: usize,
    pub width: usize,
    pub activation: Activation,
    pub batch_norm: bool,
    pub residual: bool,
}

#[derive(Module, Debug)]
pub struct Mlp {
    /// `layers.{i}` for i in 0..=depth; the last maps to the classes.
    pub layers: Vec<Linear>,
    /// One per hidden layer when batch norm is on, else empty.
    pub norms: Vec<BatchNorm>,
}

impl Mlp {
    pub fn new(cfg: &MlpConfig, device: &Device) -> Mlp {
        let mut layers = Vec::with_capacity(cfg.depth + 1);
        let mut norms = Vec::new();
        for i in 0..=cfg.depth {
            let fan_in = if i == 0 { cfg.inputs } else { cfg.width };
            let fan_out = if i == cfg.depth {
                cfg.classes
            } else {
                cfg.width
            };
            layers.push(LinearConfig::new(fan_in, fan_out).init(device));
            if cfg.batch_norm && i < cfg.depth {
                norms.push(BatchNormConfig::new(fan_out).init(device));
            }
        }
        Mlp { layers, norms }
    }

    pub fn forward(&self, x: Tensor<2>, cfg: &MlpConfig) -> Tensor<2> {
        let last = self.layers.len() - 1;
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate() {
            if i == last {
                return layer.forward(h);
            }
            let mut z = layer.forward(h.clone());
            if let Some(norm) = self.norms.get(i) {
                z = norm.forward(z);
            }
            h = if cfg.residual && i > 0 {
                cfg.activation.apply(h + z)
            } else {
                cfg.activation.apply(z)
            };
        }
        h
    }

    /// Trainable values, as PyTorch counts them (burn's `num_params` also counts batch norm's
    /// running statistics).
    pub fn parameter_count(&self) -> usize {
        let linear: usize = self
            .layers
            .iter()
            .map(|l| {
                l.weight.shape().num_elements()
                    + l.bias.as_ref().map_or(0, |b| b.shape().num_elements())
            })
            .sum();
        let norms: usize = self
            .norms
            .iter()
            .map(|n| n.gamma.shape().num_elements() + n.beta.shape().num_elements())
            .sum();
        linear + norms
    }

    /// Saves the weights as safetensors with PyTorch's layout (`layers.0.weight` is [out, in]).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut store = SafetensorsStore::from_file(path)
            .overwrite(true)
            .with_to_adapter(burn::store::BurnToPyTorchAdapter);
        self.save_into(&mut store)
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .with_context(|| format!("saving {}", path.display()))
    }

    pub fn load(cfg: &MlpConfig, path: &Path, device: &Device) -> Result<Mlp> {
        let mut model = Mlp::new(cfg, device);
        let mut store =
            SafetensorsStore::from_file(path).with_from_adapter(burn::store::PyTorchToBurnAdapter);
        let result = model
            .load_from(&mut store)
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .with_context(|| format!("loading {}", path.display()))?;
        if !result.missing.is_empty() {
            bail!("{} lacks tensors {:?}", path.display(), result.missing);
        }
        Ok(model)
    }
}
