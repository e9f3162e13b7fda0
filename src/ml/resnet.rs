//! ResNet18 (BasicBlock × [2, 2, 2, 2]) on burn, with torchvision's parameter names so that a
//! user's converted torchvision weights load (`conv1.weight`, `bn1.running_mean`,
//! `layer1.0.conv1.weight`, `layer2.0.downsample.0.weight`, `fc.weight`, …). The base width
//! (64 in torchvision) is configurable so that CPU runs stay practical.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResNetConfig {
    /// Channels of the first stage; the stages use ×1, ×2, ×4, ×8 of it (torchvision: 64).
    pub width: usize,
    /// Outputs of the `fc` head.
    pub outputs: usize,
}

impl ResNetConfig {
    /// Size of the pooled feature vector (512 at width 64).
    pub fn features(&self) -> usize {
        self.width * 8
    }
}

#[derive(Module, Debug)]
pub struct Downsample {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

#[derive(Module, Debug)]
pub struct BasicBlock {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub downsample: Option<Downsample>,
}

fn conv(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    device: &Device,
) -> Conv2d {
    Conv2dConfig::new([in_channels, out_channels], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(
            padding, padding, padding, padding,
        ))
        .with_bias(false)
        .init(device)
}

impl BasicBlock {
    fn new(in_channels: usize, out_channels: usize, stride: usize, device: &Device) -> BasicBlock {
        let downsample = (stride != 1 || in_channels != out_channels).then(|| Downsample {
            conv: conv(in_channels, out_channels, 1, stride, 0, device),
            bn: BatchNormConfig::new(out_channels).init(device),
        });
        BasicBlock {
            conv1: conv(in_channels, out_channels, 3, stride, 1, device),
            bn1: BatchNormConfig::new(out_channels).init(device),
            conv2: conv(out_channels, out_channels, 3, 1, 1, device),
            bn2: BatchNormConfig::new(out_channels).init(device),
            downsample,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = match &self.downsample {
            Some(d) => d.bn.forward(d.conv.forward(x.clone())),
            None => x.clone(),
        };
        let out = relu(self.bn1.forward(self.conv1.forward(x)));
        let out = self.bn2.forward(self.conv2.forward(out));
        relu(out + identity)
    }
}

#[derive(Module, Debug)]
pub struct ResNet {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub maxpool: MaxPool2d,
    pub layer1: Vec<BasicBlock>,
    pub layer2: Vec<BasicBlock>,
    pub layer3: Vec<BasicBlock>,
    pub layer4: Vec<BasicBlock>,
    pub fc: Linear,
}

impl ResNet {
    pub fn new(cfg: &ResNetConfig, device: &Device) -> ResNet {
        let w = cfg.width;
        let stage = |c_in: usize, c_out: usize, stride: usize| {
            vec![
                BasicBlock::new(c_in, c_out, stride, device),
                BasicBlock::new(c_out, c_out, 1, device),
            ]
        };
        ResNet {
            conv1: conv(3, w, 7, 2, 3, device),
            bn1: BatchNormConfig::new(w).init(device),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1: stage(w, w, 1),
            layer2: stage(w, 2 * w, 2),
            layer3: stage(2 * w, 4 * w, 2),
            layer4: stage(4 * w, 8 * w, 2),
            fc: LinearConfig::new(8 * w, cfg.outputs).init(device),
        }
    }

    /// The pooled backbone features, [batch, 8·width].
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut h = self
            .maxpool
            .forward(relu(self.bn1.forward(self.conv1.forward(x))));
        for block in self
            .layer1
            .iter()
            .chain(&self.layer2)
            .chain(&self.layer3)
            .chain(&self.layer4)
        {
            h = block.forward(h);
        }
        // Global average pooling over height and width.
        let [n, c, _, _] = h.dims();
        h.mean_dim(3).mean_dim(2).reshape([n, c])
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.fc.forward(self.features(x))
    }

    /// Saves with torchvision's names and layout (Linear weights [out, in]).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut store = SafetensorsStore::from_bytes(None)
            .with_to_adapter(burn::store::BurnToPyTorchAdapter)
            .with_key_remapping(r"downsample\.conv\.", "downsample.0.")
            .with_key_remapping(r"downsample\.bn\.", "downsample.1.");
        let bytes = self
            .save_into(&mut store)
            .and_then(|()| store.get_bytes())
            .map_err(|e| anyhow!("{e:?}"))
            .and_then(with_sorted_header)
            .with_context(|| format!("saving {}", path.display()))?;
        std::fs::write(path, bytes).with_context(|| format!("saving {}", path.display()))
    }

    /// Loads torchvision-named weights; with `backbone_only`, the `fc` head is left as it is (a
    /// pretrained backbone under a new head).
    pub fn load_weights(&mut self, path: &Path, backbone_only: bool) -> Result<()> {
        if !path.is_file() {
            anyhow::bail!("weights file `{}` does not exist", path.display());
        }
        let mut store = SafetensorsStore::from_file(path)
            .with_from_adapter(burn::store::PyTorchToBurnAdapter)
            .with_key_remapping(r"downsample\.0\.", "downsample.conv.")
            .with_key_remapping(r"downsample\.1\.", "downsample.bn.");
        if backbone_only {
            store = store
                .with_predicate(|path, _| !path.starts_with("fc."))
                .allow_partial(true);
        }
        let result = self
            .load_from(&mut store)
            .map_err(|e| anyhow!("{e:?}"))
            .with_context(|| format!("loading {}", path.display()))?;
        let missing: Vec<&String> = result
            .missing
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !(backbone_only && k.starts_with("fc.")))
            .collect();
        if !missing.is_empty() {
            anyhow::bail!("{} lacks tensors: {:?}", path.display(), missing);
        }
        Ok(())
    }
}

/// A safetensors file with its header's keys sorted: burn writes its metadata from a hash
/// map, so the same weights would give different bytes from run to run. The header keeps its
/// length (padded with spaces, as the format allows), so the tensors' offsets stay.
fn with_sorted_header(bytes: Vec<u8>) -> Result<Vec<u8>> {
    fn sorted(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(
                    entries.into_iter().map(|(k, v)| (k, sorted(v))).collect(),
                )
            }
            other => other,
        }
    }
    let length = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .context("a safetensors file shorter than its header length")?;
    let end = usize::try_from(length)
        .ok()
        .and_then(|n| n.checked_add(8))
        .filter(|&end| end <= bytes.len())
        .context("a safetensors header longer than its file")?;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..end])?;
    let mut text = serde_json::to_vec(&sorted(header))?;
    if text.len() > end - 8 {
        return Ok(bytes);
    }
    text.resize(end - 8, b' ');
    let mut out = bytes;
    out[8..end].copy_from_slice(&text);
    Ok(out)
}
