//! Training ResNet18 on images (burn): multi-class pretraining on a source task, and the binary
//! real-vs-fake baselines — from scratch, linear probe (frozen backbone), fine-tuning — with
//! Adam and binary cross-entropy on one logit.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;

use super::ElasticPool;
use super::device::{Compute, burn_device, guarded};
use super::native_cnn::{Adam, Maps, NativeResNet, Targets, Workspace};
use super::resnet::{ResNet, ResNetConfig};
use super::train::{Hooks, SHUFFLE_SALT};
use crate::artifacts::EpochRecord;

/// Images in memory: `pixels` is n × 3 × size × size, normalised.
pub struct Images<'a> {
    pub pixels: &'a [f32],
    pub labels: &'a [u32],
    pub size: usize,
}

impl Images<'_> {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn batch(&self, indices: &[usize], device: &Device) -> Tensor<4> {
        let per = 3 * self.size * self.size;
        let mut data = Vec::with_capacity(indices.len() * per);
        for &i in indices {
            data.extend_from_slice(&self.pixels[i * per..(i + 1) * per]);
        }
        Tensor::<4>::from_data(
            TensorData::new(data, [indices.len(), 3, self.size, self.size]),
            device,
        )
    }
}

/// A split's images where the model computes. On a GPU the whole split is uploaded once (up to
/// [`STAGE_LIMIT_BYTES`]) and each batch is gathered on the device: a host-to-device copy per
/// batch would dominate small steps. On the CPU each batch is copied from host memory as
/// before (the same numbers bit for bit, and no second copy of the split).
struct Staged<'a> {
    images: &'a Images<'a>,
    whole: Option<Tensor<4>>,
    /// Where batches for evaluation live (no autodiff).
    device: Device,
}

/// The largest split uploaded to a GPU at once; bigger ones are copied batch by batch.
const STAGE_LIMIT_BYTES: usize = 4 << 30;

impl<'a> Staged<'a> {
    fn new(images: &'a Images<'a>, device: &Device, compute: Compute) -> Staged<'a> {
        let bytes = images.pixels.len().saturating_mul(4);
        let whole =
            (compute.is_gpu() && !images.is_empty() && bytes <= STAGE_LIMIT_BYTES).then(|| {
                let all: Vec<usize> = (0..images.len()).collect();
                images.batch(&all, device)
            });
        Staged {
            images,
            whole,
            device: device.clone(),
        }
    }

    /// A batch on the evaluation device.
    fn batch(&self, indices: &[usize]) -> Tensor<4> {
        match &self.whole {
            Some(whole) => {
                let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
                let idx = Tensor::<1, Int>::from_data(
                    TensorData::new(idx, [indices.len()]),
                    &self.device,
                );
                whole.clone().select(0, idx)
            }
            None => self.images.batch(indices, &self.device),
        }
    }

    /// A batch for a training step on `train_device` (autodiff; the data itself needs no
    /// gradient).
    fn train_batch(&self, indices: &[usize], train_device: &Device) -> Tensor<4> {
        match &self.whole {
            Some(_) => self.batch(indices).autodiff(),
            None => self.images.batch(indices, train_device),
        }
    }

    fn len(&self) -> usize {
        self.images.len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Scratch,
    Probe,
    Finetune,
}

/// Which engine trains on the CPU: the native one (`super::native_cnn`, the default) or burn's
/// Flex backend. On a GPU burn always trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CnnEngine {
    Native,
    Burn,
}

impl CnnEngine {
    pub fn parse(name: &str) -> CnnEngine {
        if name == "burn" {
            CnnEngine::Burn
        } else {
            CnnEngine::Native
        }
    }
}

pub struct CnnConfig {
    pub resnet: ResNetConfig,
    pub mode: Mode,
    pub lr: f64,
    pub batch_size: usize,
    pub epochs: usize,
    pub eval_batch_size: usize,
    pub seed: u64,
    /// Where to train: the CPU or a GPU the scheduler gave this stage.
    pub device: Compute,
    pub engine: CnnEngine,
}

impl CnnConfig {
    fn native(&self) -> bool {
        self.engine == CnnEngine::Native && !self.device.is_gpu()
    }
}

pub struct CnnOutput {
    pub epochs: Vec<EpochRecord>,
    pub step_losses: Vec<f32>,
    pub steps_per_epoch: usize,
    pub diverged: bool,
    /// P(class 1) of every test image.
    pub test_probabilities: Vec<f32>,
    pub model: ResNet,
}

/// Binary cross-entropy on logits, averaged: max(z, 0) − z·y + ln(1 + e^−|z|).
pub(super) fn bce_with_logits(z: Tensor<1>, y: Tensor<1>) -> Tensor<1> {
    let softplus = z.clone().abs().neg().exp().add_scalar(1.0).log();
    (z.clone().clamp_min(0.0) - z * y + softplus).mean()
}

pub(super) fn float_labels(labels: &[u32], indices: &[usize], device: &Device) -> Tensor<1> {
    let y: Vec<f32> = indices.iter().map(|&i| labels[i] as f32).collect();
    Tensor::<1>::from_data(TensorData::new(y, [indices.len()]), device)
}

/// Trains a binary classifier (one logit, class 1 = "fake").
pub fn train_binary(
    train: &Images,
    validation: &Images,
    test: &Images,
    cfg: &CnnConfig,
    pretrained: Option<&Path>,
    hooks: &dyn Hooks,
) -> Result<CnnOutput> {
    if train.is_empty() || cfg.batch_size == 0 {
        bail!("no training images, or a batch size of 0");
    }
    guarded(cfg.device, || {
        train_binary_on(train, validation, test, cfg, pretrained, hooks)
    })
}

fn train_binary_on(
    train: &Images,
    validation: &Images,
    test: &Images,
    cfg: &CnnConfig,
    pretrained: Option<&Path>,
    hooks: &dyn Hooks,
) -> Result<CnnOutput> {
    let eval_device = burn_device(cfg.device)?;
    let device = eval_device.clone().autodiff();
    let (train, validation, test) = (
        Staged::new(train, &eval_device, cfg.device),
        Staged::new(validation, &eval_device, cfg.device),
        Staged::new(test, &eval_device, cfg.device),
    );
    let mut model = super::seeded(&device, cfg.seed, |d| {
        ResNet::new(
            &ResNetConfig {
                outputs: 1,
                ..cfg.resnet.clone()
            },
            d,
        )
    });
    match (cfg.mode, pretrained) {
        (Mode::Scratch, _) => {}
        (_, Some(path)) => model.load_weights(path, true)?,
        (_, None) => bail!("probe and finetune need a pretrained backbone"),
    }
    let steps_per_epoch = train.len().div_ceil(cfg.batch_size);
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed ^ SHUFFLE_SALT);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut epochs = Vec::new();
    let mut step_losses = Vec::new();
    let mut diverged = false;

    if cfg.mode == Mode::Probe {
        // The backbone is frozen, batch norm included: its features are computed once, in
        // evaluation mode, and only the linear head trains.
        let backbone = model.valid();
        let native = match cfg.native() {
            true => Some(NativeResNet::from_burn(&backbone, &backbone_config(cfg))?),
            false => None,
        };
        let features = |images: &Staged| match &native {
            Some(net) => {
                let f = native_features(net, images.images, cfg.eval_batch_size);
                Tensor::<2>::from_data(
                    TensorData::new(f, [images.len(), cfg.resnet.features()]),
                    &eval_device,
                )
            }
            None => staged_features(&backbone, images, cfg.eval_batch_size),
        };
        let (train_features, validation_features, test_features) =
            (features(&train), features(&validation), features(&test));
        let mut head: Linear = super::seeded(&device, cfg.seed, |d| {
            LinearConfig::new(cfg.resnet.features(), 1).init(d)
        });
        let mut optim = AdamConfig::new().with_epsilon(1e-8).init();
        let train_features = Tensor::<2>::from_data(train_features.into_data(), &device);
        for epoch in 0..cfg.epochs {
            order.shuffle(&mut rng);
            let started = Instant::now();
            let (trained, loss_sum, correct, stopped) = binary_epoch(
                head,
                &mut optim,
                cfg,
                &order,
                train.images.labels,
                &device,
                |head: &Linear, chunk: &[usize]| {
                    let idx: Vec<i64> = chunk.iter().map(|&i| i as i64).collect();
                    let idx =
                        Tensor::<1, Int>::from_data(TensorData::new(idx, [chunk.len()]), &device);
                    head.forward(train_features.clone().select(0, idx))
                        .reshape([chunk.len()])
                },
                &mut step_losses,
                hooks,
            )?;
            head = trained;
            diverged |= stopped;
            let train_time_s = started.elapsed().as_secs_f64();
            let eval_started = Instant::now();
            let valid_head = head.valid();
            let (validation_loss, validation_acc, _) = evaluate_logits(
                || valid_head.forward(validation_features.clone()),
                validation.images.labels,
            )?;
            let (test_loss, test_acc, _) = evaluate_logits(
                || valid_head.forward(test_features.clone()),
                test.images.labels,
            )?;
            finish_epoch(
                &mut epochs,
                (epoch, cfg, hooks),
                (loss_sum, correct, train.len()),
                [(validation_loss, validation_acc), (test_loss, test_acc)],
                (train_time_s, eval_started),
            );
        }
        let (_, _, test_probabilities) = evaluate_logits(
            || head.valid().forward(test_features.clone()),
            test.images.labels,
        )?;
        let mut model = model.valid();
        model.fc = head.valid();
        return Ok(CnnOutput {
            epochs,
            step_losses,
            steps_per_epoch,
            diverged,
            test_probabilities,
            model,
        });
    }

    if cfg.native() {
        let images = [train.images, validation.images, test.images];
        return train_binary_native(model.valid(), images, cfg, &mut rng, hooks);
    }
    let mut optim = AdamConfig::new().with_epsilon(1e-8).init();
    for epoch in 0..cfg.epochs {
        order.shuffle(&mut rng);
        let started = Instant::now();
        let (trained, loss_sum, correct, stopped) = binary_epoch(
            model,
            &mut optim,
            cfg,
            &order,
            train.images.labels,
            &device,
            |model: &ResNet, chunk: &[usize]| {
                model
                    .forward(train.train_batch(chunk, &device))
                    .reshape([chunk.len()])
            },
            &mut step_losses,
            hooks,
        )?;
        model = trained;
        diverged |= stopped;
        let train_time_s = started.elapsed().as_secs_f64();
        let eval_started = Instant::now();
        let valid = model.valid();
        let logits_of = |images: &Staged| burn_logits(&valid, images, cfg.eval_batch_size);
        let (validation_loss, validation_acc, _) =
            evaluate_logits(|| logits_of(&validation), validation.images.labels)?;
        let (test_loss, test_acc, _) = evaluate_logits(|| logits_of(&test), test.images.labels)?;
        finish_epoch(
            &mut epochs,
            (epoch, cfg, hooks),
            (loss_sum, correct, train.len()),
            [(validation_loss, validation_acc), (test_loss, test_acc)],
            (train_time_s, eval_started),
        );
        if diverged {
            break;
        }
    }
    let valid = model.valid();
    let (_, _, test_probabilities) = evaluate_logits(
        || burn_logits(&valid, &test, cfg.eval_batch_size),
        test.images.labels,
    )?;
    Ok(CnnOutput {
        epochs,
        step_losses,
        steps_per_epoch,
        diverged,
        test_probabilities,
        model: valid,
    })
}

/// One epoch of Adam on BCE over the batches of `order`, for any module (the whole ResNet, or
/// the probe's head on precomputed features). Returns the module, the summed loss, the correct
/// predictions and whether the loss became non-finite (the epoch stops there).
#[allow(clippy::too_many_arguments)]
fn binary_epoch<M: Module>(
    mut module: M,
    optim: &mut ModuleOptimizer,
    cfg: &CnnConfig,
    order: &[usize],
    labels: &[u32],
    device: &Device,
    logits: impl Fn(&M, &[usize]) -> Tensor<1>,
    step_losses: &mut Vec<f32>,
    hooks: &dyn Hooks,
) -> Result<(M, f64, usize, bool)> {
    let (mut loss_sum, mut correct) = (0.0f64, 0usize);
    let steps = order.len().div_ceil(cfg.batch_size);
    for (b, chunk) in order.chunks(cfg.batch_size).enumerate() {
        if hooks.cancelled() {
            bail!("interrupted");
        }
        let z = logits(&module, chunk);
        let y = float_labels(labels, chunk, device);
        let (batch_correct, loss) = step_stats(&z, chunk, labels, bce_with_logits(z.clone(), y))?;
        correct += batch_correct;
        let loss_value: f32 = loss.clone().into_scalar::<f32>();
        step_losses.push(loss_value);
        if !loss_value.is_finite() {
            return Ok((module, loss_sum, correct, true));
        }
        loss_sum += loss_value as f64 * chunk.len() as f64;
        let grads = GradientsParams::from_grads(loss.backward(), &module);
        module = optim.step(cfg.lr, module, grads);
        if b % 10 == 9 {
            hooks.progress(format!("step {}/{steps} loss {loss_value:.3}", b + 1));
        }
    }
    Ok((module, loss_sum, correct, false))
}

/// Records an epoch of a binary training (the train numbers averaged over the epoch's batches,
/// as the weights move during the epoch) and reports it.
fn finish_epoch(
    epochs: &mut Vec<EpochRecord>,
    (epoch, cfg, hooks): (usize, &CnnConfig, &dyn Hooks),
    (loss_sum, correct, n): (f64, usize, usize),
    [validation, test]: [(f64, f64); 2],
    (train_time_s, eval_started): (f64, Instant),
) {
    epochs.push(EpochRecord {
        epoch: epoch + 1,
        lr: cfg.lr,
        train_loss: loss_sum / n as f64,
        train_acc: correct as f64 / n as f64,
        validation_loss: validation.0,
        validation_acc: validation.1,
        test_loss: test.0,
        test_acc: test.1,
        train_time_s,
        eval_time_s: eval_started.elapsed().as_secs_f64(),
        grad_norms: Vec::new(),
    });
    hooks.progress(format!(
        "epoch {}/{} val acc {:.3}",
        epoch + 1,
        cfg.epochs,
        validation.1
    ));
}

/// Correct predictions of a batch (logit > 0 ⇔ sigmoid > 0.5) and its loss.
fn step_stats<L>(z: &Tensor<1>, chunk: &[usize], labels: &[u32], loss: L) -> Result<(usize, L)> {
    let logits = z
        .clone()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let correct = logits
        .iter()
        .zip(chunk)
        .filter(|(l, i)| (**l > 0.0) == (labels[**i] == 1))
        .count();
    Ok((correct, loss))
}

/// Mean BCE, accuracy and P(class 1) from logits.
/// Logits of `images` in evaluation mode on burn, `batch` images a pass.
fn burn_logits(model: &ResNet, images: &Staged, batch: usize) -> Tensor<2> {
    let all: Vec<usize> = (0..images.len()).collect();
    let parts: Vec<Tensor<2>> = all
        .chunks(batch.max(1))
        .map(|c| model.forward(images.batch(c)))
        .collect();
    Tensor::cat(parts, 0)
}

fn evaluate_logits(
    logits: impl FnOnce() -> Tensor<2>,
    labels: &[u32],
) -> Result<(f64, f64, Vec<f32>)> {
    if labels.is_empty() {
        return Ok((f64::NAN, f64::NAN, Vec::new()));
    }
    let z = logits()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(logit_statistics(&z, labels))
}

/// Mean BCE, accuracy and P(class 1) of one logit per image.
fn logit_statistics(z: &[f32], labels: &[u32]) -> (f64, f64, Vec<f32>) {
    if labels.is_empty() {
        return (f64::NAN, f64::NAN, Vec::new());
    }
    let mut loss = 0.0f64;
    let mut correct = 0usize;
    let mut probabilities = Vec::with_capacity(z.len());
    for (&zi, &y) in z.iter().zip(labels) {
        let zi = zi as f64;
        let y = y as f64;
        loss += zi.max(0.0) - zi * y + (-zi.abs()).exp().ln_1p();
        correct += usize::from((zi > 0.0) == (y == 1.0));
        probabilities.push((1.0 / (1.0 + (-zi).exp())) as f32);
    }
    (
        loss / labels.len() as f64,
        correct as f64 / labels.len() as f64,
        probabilities,
    )
}

/// The pooled backbone features ([n, 8·width]) of non-empty `images`, `batch` images a pass, on
/// `device` (a model in evaluation mode: batch norm uses its running statistics); on a GPU the
/// images are uploaded once.
pub fn pooled_features(
    model: &ResNet,
    images: &Images,
    batch: usize,
    device: &Device,
    compute: Compute,
) -> Tensor<2> {
    staged_features(model, &Staged::new(images, device, compute), batch)
}

/// [`pooled_features`] of staged images (empty images: an empty [0, features] tensor is never
/// needed, callers skip them).
fn staged_features(model: &ResNet, images: &Staged, batch: usize) -> Tensor<2> {
    let all: Vec<usize> = (0..images.len()).collect();
    let parts: Vec<Tensor<2>> = all
        .chunks(batch.max(1))
        .map(|c| model.features(images.batch(c)))
        .collect();
    Tensor::cat(parts, 0)
}

/// How many rows of `logits` ([batch, classes]) have their largest value at the label's index.
fn correct_classes(logits: &Tensor<2>, labels: &[i64]) -> Result<usize> {
    let predictions = logits
        .clone()
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count())
}

/// Mean cross-entropy and accuracy of a multi-class model on `images` (evaluation mode).
fn evaluate_multiclass(model: &ResNet, images: &Staged, batch: usize) -> Result<(f64, f64)> {
    if images.len() == 0 {
        return Ok((f64::NAN, f64::NAN));
    }
    let device = &images.device;
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let all: Vec<usize> = (0..images.len()).collect();
    let (mut loss_sum, mut correct) = (0.0f64, 0usize);
    for chunk in all.chunks(batch.max(1)) {
        let logits = model.forward(images.batch(chunk));
        let labels: Vec<i64> = chunk
            .iter()
            .map(|&i| images.images.labels[i] as i64)
            .collect();
        correct += correct_classes(&logits, &labels)?;
        let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [chunk.len()]), device);
        let loss: f32 = loss_fn.forward(logits, y).into_scalar::<f32>();
        loss_sum += f64::from(loss) * chunk.len() as f64;
    }
    let n = images.len() as f64;
    Ok((loss_sum / n, correct as f64 / n))
}

/// Pretrains a ResNet on a multi-class source task; returns it and its per-epoch records, with
/// the loss and accuracy on `held_out` (may be empty) as the validation numbers.
pub fn pretrain(
    images: &Images,
    held_out: &Images,
    classes: usize,
    cfg: &CnnConfig,
    hooks: &dyn Hooks,
) -> Result<(ResNet, Vec<EpochRecord>)> {
    if images.is_empty() || cfg.batch_size == 0 {
        bail!("no images, or a batch size of 0");
    }
    guarded(cfg.device, || {
        pretrain_on(images, held_out, classes, cfg, hooks)
    })
}

fn pretrain_on(
    images: &Images,
    held_out: &Images,
    classes: usize,
    cfg: &CnnConfig,
    hooks: &dyn Hooks,
) -> Result<(ResNet, Vec<EpochRecord>)> {
    let eval_device = burn_device(cfg.device)?;
    let device = eval_device.clone().autodiff();
    let (images, held_out) = (
        Staged::new(images, &eval_device, cfg.device),
        Staged::new(held_out, &eval_device, cfg.device),
    );
    let mut model = super::seeded(&device, cfg.seed, |d| {
        ResNet::new(
            &ResNetConfig {
                outputs: classes,
                ..cfg.resnet.clone()
            },
            d,
        )
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed ^ SHUFFLE_SALT);
    if cfg.native() {
        let sets = [images.images, held_out.images];
        return pretrain_native(model.valid(), sets, classes, cfg, &mut rng, hooks);
    }
    let mut optim = AdamConfig::new().with_epsilon(1e-8).init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut order: Vec<usize> = (0..images.len()).collect();
    let mut records = Vec::new();
    let steps = images.len().div_ceil(cfg.batch_size);
    for epoch in 0..cfg.epochs {
        order.shuffle(&mut rng);
        let started = Instant::now();
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        for (b, chunk) in order.chunks(cfg.batch_size).enumerate() {
            if hooks.cancelled() {
                bail!("interrupted");
            }
            let x = images.train_batch(chunk, &device);
            let labels: Vec<i64> = chunk
                .iter()
                .map(|&i| images.images.labels[i] as i64)
                .collect();
            let y = Tensor::<1, Int>::from_data(
                TensorData::new(labels.clone(), [chunk.len()]),
                &device,
            );
            let logits = model.forward(x);
            correct += correct_classes(&logits, &labels)?;
            let loss = loss_fn.forward(logits, y);
            let loss_value: f32 = loss.clone().into_scalar::<f32>();
            loss_sum += loss_value as f64 * chunk.len() as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(cfg.lr, model, grads);
            if b % 10 == 9 {
                hooks.progress(format!(
                    "pretrain epoch {}/{} step {}/{steps} loss {loss_value:.3}",
                    epoch + 1,
                    cfg.epochs,
                    b + 1
                ));
            }
        }
        let n = images.len() as f64;
        let train_time_s = started.elapsed().as_secs_f64();
        let eval_started = Instant::now();
        let (validation_loss, validation_acc) =
            evaluate_multiclass(&model.valid(), &held_out, cfg.eval_batch_size)?;
        records.push(EpochRecord {
            epoch: epoch + 1,
            lr: cfg.lr,
            train_loss: loss_sum / n,
            train_acc: correct as f64 / n,
            validation_loss,
            validation_acc,
            test_loss: f64::NAN,
            test_acc: f64::NAN,
            train_time_s,
            eval_time_s: eval_started.elapsed().as_secs_f64(),
            grad_norms: Vec::new(),
        });
    }
    Ok((model.valid(), records))
}

/// The architecture of a binary model of `cfg`: one logit.
fn backbone_config(cfg: &CnnConfig) -> ResNetConfig {
    ResNetConfig {
        outputs: 1,
        ..cfg.resnet.clone()
    }
}

/// Pooled features ([n, 8·width]) in evaluation mode on the native engine, `batch` images a
/// pass.
pub fn native_features(net: &NativeResNet, images: &Images, batch: usize) -> Vec<f32> {
    let mut work = Workspace::default();
    let all: Vec<usize> = (0..images.len()).collect();
    let mut out = Vec::with_capacity(images.len() * net.config.features());
    for chunk in all.chunks(batch.max(1)) {
        out.extend(net.features(
            &Maps::from_chw(images.pixels, chunk, images.size),
            &mut work,
        ));
    }
    out
}

/// Logits ([n, outputs]) in evaluation mode on the native engine.
fn native_logits(
    net: &NativeResNet,
    images: &Images,
    batch: usize,
    work: &mut Workspace,
) -> Vec<f32> {
    let all: Vec<usize> = (0..images.len()).collect();
    let mut out = Vec::with_capacity(images.len() * net.config.outputs);
    for chunk in all.chunks(batch.max(1)) {
        out.extend(net.logits(&Maps::from_chw(images.pixels, chunk, images.size), work));
    }
    out
}

/// Rows of `logits` ([n, outputs]) whose prediction is the label: logit > 0 ⇔ class 1 for one
/// output, else the largest logit.
fn native_correct(logits: &[f32], outputs: usize, labels: &[u32]) -> usize {
    logits
        .chunks(outputs.max(1))
        .zip(labels)
        .filter(|(z, y)| {
            let predicted = if outputs == 1 {
                u32::from(z[0] > 0.0)
            } else {
                let best = z
                    .iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                    );
                best.0 as u32
            };
            predicted == **y
        })
        .count()
}

/// State of a native training run.
struct NativeRun {
    net: NativeResNet,
    adam: Adam,
    work: Workspace,
    grads: Vec<f32>,
    /// Threads lent by the scheduler while cores are idle (the numbers do not depend on them).
    pool: ElasticPool,
}

impl NativeRun {
    fn new(model: &ResNet, config: &ResNetConfig) -> Result<NativeRun> {
        let net = NativeResNet::from_burn(model, config)?;
        let adam = Adam::new(&net);
        Ok(NativeRun {
            net,
            adam,
            work: Workspace::default(),
            grads: Vec::new(),
            pool: ElasticPool::default(),
        })
    }

    /// Logits of `images` in evaluation mode, on the threads granted now.
    fn logits(&mut self, images: &Images, batch: usize) -> Result<Vec<f32>> {
        let NativeRun {
            net, work, pool, ..
        } = self;
        pool.install(|| native_logits(net, images, batch, work))
    }

    /// One epoch over `order`: the summed loss, the correct predictions and whether the loss
    /// became non-finite (the epoch stops there, before that step's update).
    #[allow(clippy::too_many_arguments)]
    fn epoch(
        &mut self,
        images: &Images,
        order: &[usize],
        cfg: &CnnConfig,
        classes: bool,
        step_losses: &mut Vec<f32>,
        progress: &dyn Fn(usize, usize, f32) -> String,
        hooks: &dyn Hooks,
    ) -> Result<(f64, usize, bool)> {
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        let steps = order.len().div_ceil(cfg.batch_size);
        for (b, chunk) in order.chunks(cfg.batch_size).enumerate() {
            if hooks.cancelled() {
                bail!("interrupted");
            }
            let x = Maps::from_chw(images.pixels, chunk, images.size);
            let labels: Vec<u32> = chunk.iter().map(|&i| images.labels[i]).collect();
            let targets = if classes {
                Targets::Classes(&labels)
            } else {
                Targets::Binary(&labels)
            };
            let NativeRun {
                net,
                adam,
                work,
                grads,
                pool,
            } = self;
            let (loss, logits) = pool.install(|| -> Result<(f32, Vec<f32>)> {
                let (loss, logits) = net.loss_and_gradients(x, targets, work, grads)?;
                if loss.is_finite() {
                    adam.step(net, grads, cfg.lr);
                }
                Ok((loss, logits))
            })??;
            correct += native_correct(&logits, self.net.config.outputs, &labels);
            step_losses.push(loss);
            if !loss.is_finite() {
                return Ok((loss_sum, correct, true));
            }
            loss_sum += loss as f64 * chunk.len() as f64;
            if b % 10 == 9 {
                hooks.progress(progress(b + 1, steps, loss));
            }
        }
        Ok((loss_sum, correct, false))
    }
}

/// Scratch and fine-tuning on the native engine: the burn loop's records, from the same
/// weights and the same shuffles; the trained weights go back into `model`.
fn train_binary_native(
    mut model: ResNet,
    [train, validation, test]: [&Images; 3],
    cfg: &CnnConfig,
    rng: &mut rand::rngs::StdRng,
    hooks: &dyn Hooks,
) -> Result<CnnOutput> {
    let mut run = NativeRun::new(&model, &backbone_config(cfg))?;
    let steps_per_epoch = train.len().div_ceil(cfg.batch_size);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let (mut epochs, mut step_losses, mut diverged) = (Vec::new(), Vec::new(), false);
    for epoch in 0..cfg.epochs {
        order.shuffle(rng);
        let started = Instant::now();
        let progress =
            |b: usize, steps: usize, loss: f32| format!("step {b}/{steps} loss {loss:.3}");
        let (loss_sum, correct, stopped) = run.epoch(
            train,
            &order,
            cfg,
            false,
            &mut step_losses,
            &progress,
            hooks,
        )?;
        diverged |= stopped;
        let train_time_s = started.elapsed().as_secs_f64();
        let eval_started = Instant::now();
        let mut evaluate = |images: &Images| -> Result<_> {
            let z = run.logits(images, cfg.eval_batch_size)?;
            Ok(logit_statistics(&z, images.labels))
        };
        let (validation_loss, validation_acc, _) = evaluate(validation)?;
        let (test_loss, test_acc, _) = evaluate(test)?;
        finish_epoch(
            &mut epochs,
            (epoch, cfg, hooks),
            (loss_sum, correct, train.len()),
            [(validation_loss, validation_acc), (test_loss, test_acc)],
            (train_time_s, eval_started),
        );
        if diverged {
            break;
        }
    }
    let z = run.logits(test, cfg.eval_batch_size)?;
    let (_, _, test_probabilities) = logit_statistics(&z, test.labels);
    run.net.write_to_burn(&mut model);
    Ok(CnnOutput {
        epochs,
        step_losses,
        steps_per_epoch,
        diverged,
        test_probabilities,
        model,
    })
}

/// Multi-class pretraining on the native engine (softmax cross-entropy).
fn pretrain_native(
    mut model: ResNet,
    [images, held_out]: [&Images; 2],
    classes: usize,
    cfg: &CnnConfig,
    rng: &mut rand::rngs::StdRng,
    hooks: &dyn Hooks,
) -> Result<(ResNet, Vec<EpochRecord>)> {
    let config = ResNetConfig {
        outputs: classes,
        ..cfg.resnet.clone()
    };
    let mut run = NativeRun::new(&model, &config)?;
    let mut order: Vec<usize> = (0..images.len()).collect();
    let mut records = Vec::new();
    let mut step_losses = Vec::new();
    for epoch in 0..cfg.epochs {
        order.shuffle(rng);
        let started = Instant::now();
        let progress = |b: usize, steps: usize, loss: f32| {
            format!(
                "pretrain epoch {}/{} step {b}/{steps} loss {loss:.3}",
                epoch + 1,
                cfg.epochs
            )
        };
        let (loss_sum, correct, stopped) = run.epoch(
            images,
            &order,
            cfg,
            true,
            &mut step_losses,
            &progress,
            hooks,
        )?;
        if stopped {
            bail!(
                "pretraining diverged (the loss became non-finite in epoch {})",
                epoch + 1
            );
        }
        let n = images.len() as f64;
        let train_time_s = started.elapsed().as_secs_f64();
        let eval_started = Instant::now();
        let (validation_loss, validation_acc) = if held_out.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            let z = run.logits(held_out, cfg.eval_batch_size)?;
            let mut loss = 0.0f64;
            for (row, &y) in z.chunks(classes).zip(held_out.labels) {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
                let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
                loss += sum.ln() + max - row.get(y as usize).map_or(f64::NAN, |&v| v as f64);
            }
            let correct = native_correct(&z, classes, held_out.labels);
            let m = held_out.len() as f64;
            (loss / m, correct as f64 / m)
        };
        records.push(EpochRecord {
            epoch: epoch + 1,
            lr: cfg.lr,
            train_loss: loss_sum / n,
            train_acc: correct as f64 / n,
            validation_loss,
            validation_acc,
            test_loss: f64::NAN,
            test_acc: f64::NAN,
            train_time_s,
            eval_time_s: eval_started.elapsed().as_secs_f64(),
            grad_norms: Vec::new(),
        });
    }
    run.net.write_to_burn(&mut model);
    Ok((model, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Quiet;
    impl Hooks for Quiet {
        fn progress(&self, _message: String) {}
        fn cancelled(&self) -> bool {
            false
        }
    }

    /// Images whose class is the sign of a checkerboard pattern: learnable by a CNN.
    fn images(n: usize, size: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
        let mut pixels = Vec::with_capacity(n * 3 * size * size);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let label = ((i as u64 * 7 + seed) % 2) as u32;
            for c in 0..3 {
                for y in 0..size {
                    for x in 0..size {
                        let checker = if (x + y) % 2 == 0 { 1.0 } else { -1.0 };
                        let smooth = ((x + c) as f32 / size as f32) - 0.5;
                        pixels.push(smooth + if label == 1 { 0.5 * checker } else { 0.0 });
                    }
                }
            }
            labels.push(label);
        }
        (pixels, labels)
    }

    fn config(mode: Mode) -> CnnConfig {
        CnnConfig {
            resnet: ResNetConfig {
                width: 4,
                outputs: 1,
            },
            mode,
            lr: 1e-2,
            batch_size: 8,
            epochs: 2,
            eval_batch_size: 16,
            seed: 1,
            device: Compute::Cpu,
            engine: CnnEngine::Native,
        }
    }

    #[test]
    fn scratch_pretrain_probe_and_finetune_run_and_save_torchvision_names() {
        let (px, y) = images(48, 16, 0);
        let (vpx, vy) = images(16, 16, 1);
        let train = Images {
            pixels: &px,
            labels: &y,
            size: 16,
        };
        let val = Images {
            pixels: &vpx,
            labels: &vy,
            size: 16,
        };
        let out = train_binary(&train, &val, &val, &config(Mode::Scratch), None, &Quiet).unwrap();
        assert_eq!(out.epochs.len(), 2);
        assert_eq!(out.test_probabilities.len(), 16);
        assert!(
            out.epochs
                .iter()
                .all(|e| e.train_loss.is_finite() && e.validation_acc >= 0.0)
        );

        let (pretrained, records) =
            pretrain(&train, &val, 2, &config(Mode::Scratch), &Quiet).unwrap();
        assert_eq!(records.len(), 2);
        assert!(
            records
                .iter()
                .all(|r| (0.0..=1.0).contains(&r.validation_acc))
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backbone.safetensors");
        pretrained.save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = String::from_utf8_lossy(&bytes[8..8 + len]).into_owned();
        for key in [
            "conv1.weight",
            "bn1.running_mean",
            "layer1.0.conv1.weight",
            "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.running_var",
            "fc.weight",
        ] {
            assert!(
                header.contains(&format!("\"{key}\"")),
                "{key} missing from {header}"
            );
        }
        // A pretrained backbone loads under a new one-logit head, for probing and fine-tuning.
        for mode in [Mode::Probe, Mode::Finetune] {
            let out = train_binary(&train, &val, &val, &config(mode), Some(&path), &Quiet).unwrap();
            assert_eq!(out.epochs.len(), 2, "{mode:?}");
        }
        // Probing leaves the backbone exactly as pretrained.
        let probe = train_binary(
            &train,
            &val,
            &val,
            &config(Mode::Probe),
            Some(&path),
            &Quiet,
        )
        .unwrap();
        let a: Vec<f32> = probe
            .model
            .conv1
            .weight
            .val()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let b: Vec<f32> = pretrained
            .conv1
            .weight
            .val()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        assert_eq!(a, b);
        // Fine-tuning moves it.
        let finetuned = train_binary(
            &train,
            &val,
            &val,
            &config(Mode::Finetune),
            Some(&path),
            &Quiet,
        )
        .unwrap();
        let c: Vec<f32> = finetuned
            .model
            .conv1
            .weight
            .val()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        assert_ne!(c, b);
        // Same seed, same numbers.
        let again = train_binary(
            &train,
            &val,
            &val,
            &config(Mode::Finetune),
            Some(&path),
            &Quiet,
        )
        .unwrap();
        assert_eq!(again.step_losses, finetuned.step_losses);
    }

    /// The native engine's training loop (shuffles, steps, Adam, evaluation, records, the
    /// weights written back) agrees with burn's on the CPU from the same weights: every step's
    /// loss within 1e-4 (relative) and every test probability within 1e-4, at a learning rate
    /// small enough that float noise cannot steer Adam's first steps apart (see below); and at
    /// the report's learning rate both learn the task.
    #[test]
    fn native_and_burn_training_agree() {
        let (px, y) = images(32, 16, 0);
        let (vpx, vy) = images(16, 16, 1);
        let train = Images {
            pixels: &px,
            labels: &y,
            size: 16,
        };
        let val = Images {
            pixels: &vpx,
            labels: &vy,
            size: 16,
        };
        let run = |engine: CnnEngine, lr: f64, mode: Mode, weights: Option<&Path>| {
            let cfg = CnnConfig {
                engine,
                lr,
                ..config(mode)
            };
            train_binary(&train, &val, &val, &cfg, weights, &Quiet).unwrap()
        };
        let (native, burn) = (
            run(CnnEngine::Native, 1e-7, Mode::Scratch, None),
            run(CnnEngine::Burn, 1e-7, Mode::Scratch, None),
        );
        assert_eq!(native.step_losses.len(), burn.step_losses.len());
        for (step, (a, b)) in native.step_losses.iter().zip(&burn.step_losses).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                "step {step}: native {a} vs burn {b}"
            );
        }
        for (a, b) in native
            .test_probabilities
            .iter()
            .zip(&burn.test_probabilities)
        {
            assert!((a - b).abs() < 1e-4, "probability {a} vs {b}");
        }
        for (a, b) in native.epochs.iter().zip(&burn.epochs) {
            assert_eq!(a.validation_acc, b.validation_acc);
            assert!((a.train_loss - b.train_loss).abs() < 1e-4);
        }
        // The returned burn model holds the native weights: it predicts what they predicted.
        let staged = Staged::new(&val, &Device::flex(), Compute::Cpu);
        let all: Vec<usize> = (0..val.len()).collect();
        let z = native.model.forward(staged.batch(&all));
        let (_, _, probabilities) = evaluate_logits(|| z, val.labels).unwrap();
        for (a, b) in probabilities.iter().zip(&native.test_probabilities) {
            assert!((a - b).abs() < 1e-5, "saved model {a} vs trained {b}");
        }
        // Both learn the checkerboard at a real learning rate (3 epochs).
        for engine in [CnnEngine::Native, CnnEngine::Burn] {
            let cfg = CnnConfig {
                engine,
                epochs: 3,
                ..config(Mode::Scratch)
            };
            let out = train_binary(&train, &val, &val, &cfg, None, &Quiet).unwrap();
            let last = out.epochs.last().unwrap();
            assert!(last.validation_acc >= 0.75, "{engine:?}: {last:?}");
        }
    }

    /// The device path (staged data, the training loop, Adam, evaluation, fusion, autotune) on
    /// burn's wgpu backend agrees with Flex: same initial weights, every step's loss within
    /// 1e-4 (relative), every parameter's gradient within 5e-3 of its largest element. CI runs
    /// this on Mesa's software Vulkan.
    #[cfg(feature = "wgpu")]
    #[test]
    fn resnet_training_on_wgpu_agrees_with_flex() {
        let (px, y) = images(32, 16, 0);
        let (vpx, vy) = images(16, 16, 1);
        let train = Images {
            pixels: &px,
            labels: &y,
            size: 16,
        };
        let val = Images {
            pixels: &vpx,
            labels: &vy,
            size: 16,
        };
        let run = |device: Compute| {
            // A tiny learning rate. This little network (width 4, 16×16 images, batch norm over
            // 8 images) is chaotic: Adam's first step moves every weight by ±lr whatever the
            // size of its gradient, so gradient elements that are zero but for float noise move
            // by ±lr on one device and ∓lr on the other, and batch norm over tiny variances
            // amplifies that. Measured: at lr 1e-4 the two devices' losses part by 30% at the
            // second step (both correct: lr 0 agrees to 1e-6); at lr 1e-7 they agree to 1e-6.
            let cfg = CnnConfig {
                device,
                lr: 1e-7,
                engine: CnnEngine::Burn,
                ..config(Mode::Scratch)
            };
            train_binary(&train, &val, &val, &cfg, None, &Quiet).unwrap()
        };
        let (cpu, gpu) = (run(Compute::Cpu), run(Compute::Wgpu(0)));
        assert_eq!(cpu.step_losses.len(), gpu.step_losses.len());
        for (step, (c, g)) in cpu.step_losses.iter().zip(&gpu.step_losses).enumerate() {
            assert!(
                (c - g).abs() <= 1e-4 * c.abs().max(1.0),
                "step {step}: flex {c} vs wgpu {g}"
            );
        }
        for (c, g) in cpu.test_probabilities.iter().zip(&gpu.test_probabilities) {
            assert!((c - g).abs() < 1e-4, "probability {c} vs {g}");
        }

        // Gradients of every parameter, one step from the same weights.
        struct Gradients<'a>(&'a GradientsParams, Vec<Vec<f32>>);
        impl burn::module::ModuleVisitor for Gradients<'_> {
            fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
                if let Some(g) = self.0.get::<D>(param.id) {
                    self.1
                        .push(g.into_data().try_into_vec::<f32>().unwrap_or_default());
                }
            }
        }
        let grads_on = |compute: Compute| {
            let eval = burn_device(compute).unwrap();
            let device = eval.clone().autodiff();
            let model = crate::ml::seeded(&device, 3, |d| {
                ResNet::new(
                    &ResNetConfig {
                        width: 4,
                        outputs: 1,
                    },
                    d,
                )
            });
            let staged = Staged::new(&train, &eval, compute);
            let chunk: Vec<usize> = vec![9, 3, 17, 8, 0, 30, 21, 12];
            let z = model
                .forward(staged.train_batch(&chunk, &device))
                .reshape([8]);
            let loss = bce_with_logits(z, float_labels(train.labels, &chunk, &device));
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let mut visitor = Gradients(&grads, Vec::new());
            model.visit(&mut visitor);
            visitor.1
        };
        let (cpu, gpu) = (grads_on(Compute::Cpu), grads_on(Compute::Wgpu(0)));
        assert_eq!(cpu.len(), gpu.len());
        assert!(cpu.len() > 40, "{} parameters with gradients", cpu.len());
        for (p, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
            let scale = c.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
            for (i, (a, b)) in c.iter().zip(g).enumerate() {
                // Batch norm's backward subtracts nearly equal sums over 8 images: the worst
                // element measured was 1.2e-3 of its parameter's largest gradient.
                assert!(
                    (a - b).abs() <= 5e-3 * scale,
                    "parameter {p}[{i}]: flex {a} vs wgpu {b} (largest {scale})"
                );
            }
        }
    }
}
