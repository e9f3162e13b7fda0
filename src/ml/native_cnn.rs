//! The native ResNet18 engine for the CPU: NHWC activations, each convolution one `gemm`
//! product over im2col columns (a 1×1 stride-1 convolution reads its input directly), batch
//! norm fused with its ReLU and residual add, the backward written out by hand, Adam over one
//! flat parameter vector. It computes what [`super::resnet::ResNet`] computes on burn (same
//! layers, batch norm with burn's biased running variance, same Adam), from the same weights:
//! [`NativeResNet::from_burn`] and [`NativeResNet::write_to_burn`] convert, and the tests check
//! loss, gradients and evaluation against burn.
//!
//! Why: burn/Flex's convolutions ran a ResNet18 training step at 0.37× PyTorch's speed here
//! (width 16, batch 32, 2 threads). Reductions (batch-norm sums, weight gradients) run in parts
//! fixed by the shapes and are summed in part order, and `gemm` splits only its output, so the
//! numbers do not depend on the thread count.

use anyhow::{Context, Result, bail};
use burn::module::{Param, RunningState};
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use super::native::{View, matmul_with};
use super::resnet::{BasicBlock, ResNet, ResNetConfig};

const BN_EPS: f32 = 1e-5;
const BN_MOMENTUM: f32 = 0.1;
/// Rows per part of a reduction: each part sums its rows in order, parts are summed in order.
const PART_ROWS: usize = 1024;
/// Rows per part of a weight gradient's product (its sum runs over rows).
const GRADIENT_PART_ROWS: usize = 4096;

/// Activations, NHWC: element (b, y, x, ch) at `((b * h + y) * w + x) * c + ch`.
#[derive(Clone, Debug, Default)]
pub struct Maps {
    pub data: Vec<f32>,
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Maps {
    fn rows(&self) -> usize {
        self.n * self.h * self.w
    }

    /// Maps of this shape holding `data`.
    fn with_data(&self, data: Vec<f32>) -> Maps {
        Maps { data, ..*self }
    }

    /// The images `indices` of `pixels` (each 3 × size × size, channel-major as stored) in NHWC.
    pub fn from_chw(pixels: &[f32], indices: &[usize], size: usize) -> Maps {
        let plane = size * size;
        let mut data = vec![0.0; indices.len() * 3 * plane];
        data.par_chunks_mut(3 * plane)
            .zip(indices)
            .for_each(|(out, &i)| {
                let image = &pixels[i * 3 * plane..(i + 1) * 3 * plane];
                for (p, px) in out.chunks_exact_mut(3).enumerate() {
                    for (ch, v) in px.iter_mut().enumerate() {
                        *v = image[ch * plane + p];
                    }
                }
            });
        Maps {
            data,
            n: indices.len(),
            h: size,
            w: size,
            c: 3,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Conv {
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    /// Offset of its weights, `[k·k·cin, cout]` row-major (tap-major rows), in `params`.
    weight: usize,
}

impl Conv {
    fn taps(&self) -> usize {
        self.k * self.k * self.cin
    }

    fn len(&self) -> usize {
        self.taps() * self.cout
    }

    fn out_size(&self, size: usize) -> usize {
        (size + 2 * self.pad - self.k) / self.stride + 1
    }

    fn reads_input_directly(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }
}

#[derive(Clone, Copy, Debug)]
struct Norm {
    c: usize,
    /// Offset of gamma in `params`; beta follows it.
    gamma: usize,
    /// Offset of the running mean in `running`; the running variance follows it.
    stats: usize,
}

#[derive(Clone, Copy, Debug)]
struct Block {
    conv1: Conv,
    bn1: Norm,
    conv2: Conv,
    bn2: Norm,
    down: Option<(Conv, Norm)>,
}

/// Hands out offsets in the flat vectors, in burn's field order.
#[derive(Default)]
struct Layout {
    params: usize,
    running: usize,
}

impl Layout {
    fn conv(&mut self, cin: usize, cout: usize, k: usize, stride: usize, pad: usize) -> Conv {
        let conv = Conv {
            cin,
            cout,
            k,
            stride,
            pad,
            weight: self.params,
        };
        self.params += conv.len();
        conv
    }

    fn norm(&mut self, c: usize) -> Norm {
        let norm = Norm {
            c,
            gamma: self.params,
            stats: self.running,
        };
        self.params += 2 * c;
        self.running += 2 * c;
        norm
    }
}

pub struct NativeResNet {
    pub config: ResNetConfig,
    /// Every trainable parameter, one vector (Adam runs over it in one pass).
    params: Vec<f32>,
    /// Batch norm's running means and variances.
    running: Vec<f32>,
    stem: Conv,
    stem_bn: Norm,
    blocks: Vec<Block>,
    /// `[features, outputs]` row-major, then the bias.
    fc: usize,
}

/// What a training forward keeps for the backward.
struct NormCache {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

struct BlockTape {
    input: Maps,
    z1: Maps,
    bn1: NormCache,
    a1: Maps,
    z2: Maps,
    bn2: NormCache,
    down: Option<(Maps, NormCache)>,
}

struct Tape {
    input: Maps,
    z0: Maps,
    bn0: NormCache,
    a0: Maps,
    pool_argmax: Vec<u32>,
    blocks: Vec<BlockTape>,
    last: Maps,
    features: Vec<f32>,
}

/// Reusable buffers of a training run: the im2col matrix, and activation buffers handed back
/// after each backward (fresh allocations of this size cost a page fault per 4 KiB).
#[derive(Default)]
pub struct Workspace {
    columns: Vec<f32>,
    spare: Vec<Vec<f32>>,
    /// Products on this thread only (an evaluation chunk, run beside others).
    single_thread: bool,
}

/// Images per evaluation chunk (see [`NativeResNet::features`]).
const EVAL_CHUNK: usize = 8;

/// Fewest rows per product for a block to run chunked in evaluation.
const CHUNK_ROWS: usize = 256;

thread_local! {
    /// Each pool thread's buffers for evaluation chunks, kept across batches.
    static EVAL_WORKSPACE: std::cell::RefCell<Workspace> = std::cell::RefCell::default();
}

/// Spare buffers kept at most (a ResNet18 step frees about 60).
const SPARE_BUFFERS: usize = 96;

impl Workspace {
    fn gemm_threads(&self) -> usize {
        if self.single_thread { 1 } else { threads() }
    }

    /// `len` zeros, in the smallest spare buffer that holds them.
    fn zeros(&mut self, len: usize) -> Vec<f32> {
        let mut buffer = self.scratch(len);
        buffer.fill(0.0);
        buffer
    }

    /// `len` values left from earlier use, for an output that is written in full: a reused
    /// buffer skips the zeroing pass (only growth beyond its old length is zeroed).
    fn scratch(&mut self, len: usize) -> Vec<f32> {
        let best = (0..self.spare.len())
            .filter(|&i| self.spare[i].capacity() >= len)
            .min_by_key(|&i| self.spare[i].capacity());
        let mut buffer = match best {
            Some(i) => self.spare.swap_remove(i),
            None => Vec::with_capacity(len),
        };
        buffer.resize(len, 0.0);
        buffer
    }

    fn recycle(&mut self, buffer: Vec<f32>) {
        if self.spare.len() < SPARE_BUFFERS && buffer.capacity() > 0 {
            self.spare.push(buffer);
        }
    }

    fn recycle_maps(&mut self, maps: Maps) {
        self.recycle(maps.data);
    }
}

/// What the loss compares the logits with.
#[derive(Clone, Copy)]
pub enum Targets<'a> {
    /// One logit per image, binary cross-entropy against 0/1 labels.
    Binary(&'a [u32]),
    /// `outputs` logits per image, softmax cross-entropy against class indices.
    Classes(&'a [u32]),
}

impl<'a> Targets<'a> {
    fn labels(self) -> &'a [u32] {
        match self {
            Targets::Binary(labels) | Targets::Classes(labels) => labels,
        }
    }
}

fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

impl NativeResNet {
    fn layout(config: &ResNetConfig) -> (Layout, Conv, Norm, Vec<Block>, usize) {
        let mut layout = Layout::default();
        let w = config.width;
        let stem = layout.conv(3, w, 7, 2, 3);
        let stem_bn = layout.norm(w);
        let mut blocks = Vec::new();
        let mut cin = w;
        for (cout, stride) in [(w, 1), (2 * w, 2), (4 * w, 2), (8 * w, 2)] {
            for (i, block_in) in [(0, cin), (1, cout)] {
                let stride = if i == 0 { stride } else { 1 };
                // burn's field order: conv1, bn1, conv2, bn2, downsample.
                let conv1 = layout.conv(block_in, cout, 3, stride, 1);
                let bn1 = layout.norm(cout);
                let conv2 = layout.conv(cout, cout, 3, 1, 1);
                let bn2 = layout.norm(cout);
                let down = (stride != 1 || block_in != cout)
                    .then(|| (layout.conv(block_in, cout, 1, stride, 0), layout.norm(cout)));
                blocks.push(Block {
                    conv1,
                    bn1,
                    conv2,
                    bn2,
                    down,
                });
            }
            cin = cout;
        }
        let fc = layout.params;
        layout.params += config.features() * config.outputs + config.outputs;
        (layout, stem, stem_bn, blocks, fc)
    }

    /// The same network with `model`'s weights and running statistics.
    pub fn from_burn(model: &ResNet, config: &ResNetConfig) -> Result<NativeResNet> {
        let (layout, stem, stem_bn, blocks, fc) = Self::layout(config);
        let mut net = NativeResNet {
            config: config.clone(),
            params: vec![0.0; layout.params],
            running: vec![0.0; layout.running],
            stem,
            stem_bn,
            blocks,
            fc,
        };
        let burn_blocks = burn_blocks(model);
        if burn_blocks.len() != net.blocks.len() {
            bail!("a ResNet18 has 8 blocks, this model {}", burn_blocks.len());
        }
        net.read_conv(stem, &model.conv1)?;
        net.read_norm(stem_bn, &model.bn1)?;
        for (block, theirs) in net.blocks.clone().iter().zip(burn_blocks) {
            net.read_conv(block.conv1, &theirs.conv1)?;
            net.read_norm(block.bn1, &theirs.bn1)?;
            net.read_conv(block.conv2, &theirs.conv2)?;
            net.read_norm(block.bn2, &theirs.bn2)?;
            match (block.down, &theirs.downsample) {
                (Some((conv, norm)), Some(d)) => {
                    net.read_conv(conv, &d.conv)?;
                    net.read_norm(norm, &d.bn)?;
                }
                (None, None) => {}
                _ => bail!("the model's downsampling differs from ResNet18's"),
            }
        }
        let (features, outputs) = (config.features(), config.outputs);
        let weight = values(&model.fc.weight.val())?;
        if weight.len() != features * outputs {
            bail!(
                "fc has {} weights, expected {}",
                weight.len(),
                features * outputs
            );
        }
        // burn's Linear weight is [in, out]: already the layout used here.
        net.params[fc..fc + weight.len()].copy_from_slice(&weight);
        let bias = match &model.fc.bias {
            Some(b) => values(&b.val())?,
            None => vec![0.0; outputs],
        };
        net.params[fc + weight.len()..fc + weight.len() + outputs].copy_from_slice(&bias);
        Ok(net)
    }

    fn read_conv(&mut self, conv: Conv, theirs: &Conv2d) -> Result<()> {
        let weight = values(&theirs.weight.val())?;
        if weight.len() != conv.len() {
            bail!(
                "a convolution has {} weights, expected {}",
                weight.len(),
                conv.len()
            );
        }
        let (k, cin, cout) = (conv.k, conv.cin, conv.cout);
        let ours = &mut self.params[conv.weight..conv.weight + conv.len()];
        // burn: [cout, cin, ky, kx]; here: [(ky, kx, cin), cout].
        for co in 0..cout {
            for ci in 0..cin {
                for ky in 0..k {
                    for kx in 0..k {
                        ours[((ky * k + kx) * cin + ci) * cout + co] =
                            weight[((co * cin + ci) * k + ky) * k + kx];
                    }
                }
            }
        }
        Ok(())
    }

    fn read_norm(&mut self, norm: Norm, theirs: &BatchNorm) -> Result<()> {
        let c = norm.c;
        let (gamma, beta) = (values(&theirs.gamma.val())?, values(&theirs.beta.val())?);
        if gamma.len() != c || beta.len() != c {
            bail!("a batch norm has {} channels, expected {c}", gamma.len());
        }
        self.params[norm.gamma..norm.gamma + c].copy_from_slice(&gamma);
        self.params[norm.gamma + c..norm.gamma + 2 * c].copy_from_slice(&beta);
        let mean = values(&theirs.running_mean.value_sync())?;
        let var = values(&theirs.running_var.value_sync())?;
        if mean.len() != c || var.len() != c {
            bail!("a batch norm's running statistics do not have {c} channels");
        }
        self.running[norm.stats..norm.stats + c].copy_from_slice(&mean);
        self.running[norm.stats + c..norm.stats + 2 * c].copy_from_slice(&var);
        Ok(())
    }

    /// Writes the weights and running statistics back into `model` (same architecture).
    pub fn write_to_burn(&self, model: &mut ResNet) {
        write_conv(&mut model.conv1, self.stem, &self.params);
        self.write_norm(&mut model.bn1, self.stem_bn);
        let blocks = model
            .layer1
            .iter_mut()
            .chain(model.layer2.iter_mut())
            .chain(model.layer3.iter_mut())
            .chain(model.layer4.iter_mut());
        for (theirs, block) in blocks.zip(&self.blocks) {
            write_conv(&mut theirs.conv1, block.conv1, &self.params);
            self.write_norm(&mut theirs.bn1, block.bn1);
            write_conv(&mut theirs.conv2, block.conv2, &self.params);
            self.write_norm(&mut theirs.bn2, block.bn2);
            if let (Some(d), Some((conv, norm))) = (theirs.downsample.as_mut(), block.down) {
                write_conv(&mut d.conv, conv, &self.params);
                self.write_norm(&mut d.bn, norm);
            }
        }
        let (features, outputs) = (self.config.features(), self.config.outputs);
        let weight = &self.params[self.fc..self.fc + features * outputs];
        set_param(&mut model.fc.weight, weight.to_vec(), [features, outputs]);
        if let Some(bias) = model.fc.bias.as_mut() {
            let b = &self.params[self.fc + features * outputs..][..outputs];
            set_param(bias, b.to_vec(), [outputs]);
        }
    }

    fn write_norm(&self, theirs: &mut BatchNorm, norm: Norm) {
        let c = norm.c;
        set_param(
            &mut theirs.gamma,
            self.params[norm.gamma..norm.gamma + c].to_vec(),
            [c],
        );
        set_param(
            &mut theirs.beta,
            self.params[norm.gamma + c..norm.gamma + 2 * c].to_vec(),
            [c],
        );
        // Replaced, not `update`d: an update is only seen after a sync.
        let device = theirs.running_mean.value().device();
        let state = |v: &[f32]| {
            RunningState::new(Tensor::<1>::from_data(
                TensorData::new(v.to_vec(), [c]),
                &device,
            ))
        };
        theirs.running_mean = state(&self.running[norm.stats..norm.stats + c]);
        theirs.running_var = state(&self.running[norm.stats + c..norm.stats + 2 * c]);
    }

    /// The pooled features ([n, 8·width]) in evaluation mode (running statistics).
    ///
    /// The early blocks (large maps, few channels) run in chunks of [`EVAL_CHUNK`] images side
    /// by side, one thread each: no synchronisation inside a pass. The late blocks (small
    /// maps, many channels) run on the whole batch with each product split over the threads: a
    /// chunk would give them only a few rows per product, which stream the large weights once
    /// per chunk at a third of the GEMM rate (width 64, 64×64 images: 32 rows per product in
    /// the last stage, 20–28 GFLOPS on one core, against 63 with the batch's 128). `gemm`
    /// splits only its output, so the bits do not depend on the thread count.
    pub fn features(&self, x: &Maps, work: &mut Workspace) -> Vec<f32> {
        let early = self.early_blocks(x.h, x.w);
        let per_image = x.h * x.w * x.c;
        let mut h = if x.n <= EVAL_CHUNK {
            let shared = std::mem::replace(&mut work.single_thread, true);
            let h = self.early_eval(x, early, work);
            work.single_thread = shared;
            h
        } else {
            let chunks: Vec<Maps> = x
                .data
                .par_chunks(EVAL_CHUNK * per_image)
                .map(|data| {
                    let chunk = Maps {
                        data: data.to_vec(),
                        n: data.len() / per_image,
                        h: x.h,
                        w: x.w,
                        c: x.c,
                    };
                    EVAL_WORKSPACE.with_borrow_mut(|work| {
                        work.single_thread = true;
                        self.early_eval(&chunk, early, work)
                    })
                })
                .collect();
            let (h, w, c) = (chunks[0].h, chunks[0].w, chunks[0].c);
            let mut data = work.scratch(x.n * h * w * c);
            let mut at = 0;
            for chunk in chunks {
                data[at..at + chunk.data.len()].copy_from_slice(&chunk.data);
                at += chunk.data.len();
                work.recycle(chunk.data);
            }
            Maps {
                data,
                n: x.n,
                h,
                w,
                c,
            }
        };
        for block in &self.blocks[early..] {
            let next = self.block_eval(block, &h, work);
            work.recycle_maps(std::mem::replace(&mut h, next));
        }
        let features = average_pool(&h);
        work.recycle_maps(h);
        features
    }

    /// How many blocks run chunked for an `h`×`w` input: those whose output gives a chunk at
    /// least [`CHUNK_ROWS`] rows per product.
    fn early_blocks(&self, h: usize, w: usize) -> usize {
        let (mut h, mut w) = (
            pooled_size(self.stem.out_size(h)),
            pooled_size(self.stem.out_size(w)),
        );
        let mut early = 0;
        for block in &self.blocks {
            (h, w) = (block.conv1.out_size(h), block.conv1.out_size(w));
            if EVAL_CHUNK * h * w < CHUNK_ROWS {
                break;
            }
            early += 1;
        }
        early
    }

    /// The stem and the first `blocks` blocks.
    fn early_eval(&self, x: &Maps, blocks: usize, work: &mut Workspace) -> Maps {
        let mut h = self.stem_eval(x, work);
        for block in &self.blocks[..blocks] {
            let next = self.block_eval(block, &h, work);
            work.recycle_maps(std::mem::replace(&mut h, next));
        }
        h
    }

    /// Logits ([n, outputs]) in evaluation mode.
    pub fn logits(&self, x: &Maps, work: &mut Workspace) -> Vec<f32> {
        let features = self.features(x, work);
        self.head(&features, x.n)
    }

    fn head(&self, features: &[f32], n: usize) -> Vec<f32> {
        let (f, o) = (self.config.features(), self.config.outputs);
        let mut logits = vec![0.0; n * o];
        matmul_with(
            View::row_major(features, n, f),
            View::row_major(&self.params[self.fc..self.fc + f * o], f, o),
            &mut logits,
            1,
        );
        let bias = &self.params[self.fc + f * o..self.fc + f * o + o];
        for row in logits.chunks_mut(o) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
        logits
    }

    fn stem_eval(&self, x: &Maps, work: &mut Workspace) -> Maps {
        let z = conv_forward(&self.stem, &self.params, x, work);
        let (scale, shift) = self.eval_affine(self.stem_bn);
        let a = normalise(&z, &scale, &shift, None, work);
        work.recycle_maps(z);
        let pooled = max_pool(&a, work).0;
        work.recycle_maps(a);
        pooled
    }

    fn block_eval(&self, block: &Block, x: &Maps, work: &mut Workspace) -> Maps {
        let identity = block.down.map(|(conv, norm)| {
            let z = conv_forward(&conv, &self.params, x, work);
            let (scale, shift) = self.eval_affine(norm);
            let identity = normalise_linear(&z, &scale, &shift, work);
            work.recycle_maps(z);
            identity
        });
        let z1 = conv_forward(&block.conv1, &self.params, x, work);
        let (scale, shift) = self.eval_affine(block.bn1);
        let a1 = normalise(&z1, &scale, &shift, None, work);
        let z2 = conv_forward(&block.conv2, &self.params, &a1, work);
        let (scale, shift) = self.eval_affine(block.bn2);
        let residual = identity.as_ref().map_or(&x.data, |m| &m.data);
        let out = normalise(&z2, &scale, &shift, Some(residual), work);
        for spent in [z1, a1, z2].into_iter().chain(identity) {
            work.recycle_maps(spent);
        }
        out
    }

    /// Batch norm in evaluation mode as y = x·scale + shift.
    fn eval_affine(&self, norm: Norm) -> (Vec<f32>, Vec<f32>) {
        let c = norm.c;
        let gamma = &self.params[norm.gamma..norm.gamma + c];
        let beta = &self.params[norm.gamma + c..norm.gamma + 2 * c];
        let mean = &self.running[norm.stats..norm.stats + c];
        let var = &self.running[norm.stats + c..norm.stats + 2 * c];
        let scale: Vec<f32> = (0..c)
            .map(|i| gamma[i] / (var[i] + BN_EPS).sqrt())
            .collect();
        let shift = (0..c).map(|i| beta[i] - mean[i] * scale[i]).collect();
        (scale, shift)
    }

    /// Batch norm in training mode: batch statistics (the running ones move towards them).
    fn norm_train(&mut self, norm: Norm, z: &Maps) -> (NormCache, Vec<f32>, Vec<f32>) {
        let c = norm.c;
        let (mean, var) = batch_statistics(z);
        let running = &mut self.running[norm.stats..norm.stats + 2 * c];
        for i in 0..c {
            running[i] = (1.0 - BN_MOMENTUM) * running[i] + BN_MOMENTUM * mean[i];
            running[c + i] = (1.0 - BN_MOMENTUM) * running[c + i] + BN_MOMENTUM * var[i];
        }
        let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v + BN_EPS).sqrt()).collect();
        let gamma = &self.params[norm.gamma..norm.gamma + c];
        let beta = &self.params[norm.gamma + c..norm.gamma + 2 * c];
        let scale: Vec<f32> = (0..c).map(|i| gamma[i] * inv_std[i]).collect();
        let shift = (0..c).map(|i| beta[i] - mean[i] * scale[i]).collect();
        (NormCache { mean, inv_std }, scale, shift)
    }

    fn forward_train(&mut self, x: Maps, work: &mut Workspace) -> Tape {
        let z0 = conv_forward(&self.stem, &self.params, &x, work);
        let (bn0, scale, shift) = self.norm_train(self.stem_bn, &z0);
        let a0 = normalise(&z0, &scale, &shift, None, work);
        let (mut h, pool_argmax) = max_pool(&a0, work);
        let mut tapes = Vec::with_capacity(self.blocks.len());
        for block in self.blocks.clone() {
            let down = block.down.map(|(conv, norm)| {
                let z = conv_forward(&conv, &self.params, &h, work);
                let (cache, scale, shift) = self.norm_train(norm, &z);
                let identity = normalise_linear(&z, &scale, &shift, work);
                (z, cache, identity)
            });
            let z1 = conv_forward(&block.conv1, &self.params, &h, work);
            let (bn1, scale, shift) = self.norm_train(block.bn1, &z1);
            let a1 = normalise(&z1, &scale, &shift, None, work);
            let z2 = conv_forward(&block.conv2, &self.params, &a1, work);
            let (bn2, scale, shift) = self.norm_train(block.bn2, &z2);
            let residual = down.as_ref().map_or(&h.data, |(_, _, id)| &id.data);
            let out = normalise(&z2, &scale, &shift, Some(residual), work);
            let down = down.map(|(z, cache, identity)| {
                work.recycle_maps(identity);
                (z, cache)
            });
            tapes.push(BlockTape {
                input: std::mem::replace(&mut h, out),
                z1,
                bn1,
                a1,
                z2,
                bn2,
                down,
            });
        }
        let features = average_pool(&h);
        Tape {
            input: x,
            z0,
            bn0,
            a0,
            pool_argmax,
            blocks: tapes,
            last: h,
            features,
        }
    }

    /// One training forward and backward: the mean loss, the logits and the gradient of every
    /// parameter (same layout as the parameters). The running statistics move as in burn.
    pub fn loss_and_gradients(
        &mut self,
        x: Maps,
        targets: Targets,
        work: &mut Workspace,
        grads: &mut Vec<f32>,
    ) -> Result<(f32, Vec<f32>)> {
        let n = x.n;
        if targets.labels().len() != n || n == 0 {
            bail!(
                "{} labels for a batch of {n} images",
                targets.labels().len()
            );
        }
        grads.clear();
        grads.resize(self.params.len(), 0.0);
        let tape = self.forward_train(x, work);
        let logits = self.head(&tape.features, n);
        let (loss, dlogits) = loss_and_gradient(&logits, self.config.outputs, targets)?;
        self.backward(tape, &dlogits, work, grads);
        Ok((loss, logits))
    }

    fn backward(&self, tape: Tape, dlogits: &[f32], work: &mut Workspace, grads: &mut [f32]) {
        let n = tape.last.n;
        let (f, o) = (self.config.features(), self.config.outputs);
        let fc = self.fc;
        // Head: dW = featuresᵀ·dlogits, db = Σ dlogits, dfeatures = dlogits·Wᵀ.
        matmul_with(
            View::row_major(&tape.features, n, f).t(),
            View::row_major(dlogits, n, o),
            &mut grads[fc..fc + f * o],
            1,
        );
        for row in dlogits.chunks(o) {
            for (g, d) in grads[fc + f * o..fc + f * o + o].iter_mut().zip(row) {
                *g += d;
            }
        }
        let mut dfeatures = vec![0.0; n * f];
        matmul_with(
            View::row_major(dlogits, n, o),
            View::row_major(&self.params[fc..fc + f * o], f, o).t(),
            &mut dfeatures,
            1,
        );
        let last = &tape.last;
        let area = (last.h * last.w) as f32;
        let mut dh = work.scratch(last.data.len());
        dh.par_chunks_mut(last.h * last.w * f)
            .zip(dfeatures.par_chunks(f))
            .for_each(|(image, d)| {
                for pixel in image.chunks_mut(f) {
                    for (v, g) in pixel.iter_mut().zip(d) {
                        *v = g / area;
                    }
                }
            });
        let mut outputs: Vec<&Maps> = tape.blocks.iter().skip(1).map(|b| &b.input).collect();
        outputs.push(&tape.last);
        for ((block, bt), out) in self.blocks.iter().zip(&tape.blocks).zip(outputs).rev() {
            dh = self.block_backward(block, bt, out, dh, work, grads);
        }
        // The stem: max pool, then batch norm behind its ReLU, then the convolution (no input
        // gradient needed).
        let mut da0 = work.zeros(tape.a0.data.len());
        let per_image = tape.a0.h * tape.a0.w * tape.a0.c;
        let pooled_per_image = dh.len() / n.max(1);
        da0.par_chunks_mut(per_image)
            .zip(dh.par_chunks(pooled_per_image))
            .zip(tape.pool_argmax.par_chunks(pooled_per_image))
            .for_each(|((image, d), idx)| {
                for (&i, &g) in idx.iter().zip(d) {
                    image[i as usize] += g;
                }
            });
        let dz0 = self.norm_backward(
            self.stem_bn,
            &tape.z0,
            &tape.bn0,
            &da0,
            Some(&tape.a0.data),
            grads,
            work,
        );
        conv_backward(
            &self.stem,
            &self.params,
            &tape.input,
            &dz0,
            (tape.z0.h, tape.z0.w),
            false,
            work,
            grads,
        );
        for spent in [dh, da0, dz0] {
            work.recycle(spent);
        }
        for block in tape.blocks {
            for spent in [block.input, block.z1, block.a1, block.z2]
                .into_iter()
                .chain(block.down.map(|(z, _)| z))
            {
                work.recycle_maps(spent);
            }
        }
        for spent in [tape.input, tape.z0, tape.a0, tape.last] {
            work.recycle_maps(spent);
        }
    }

    /// Backward through one block, from the gradient of its output to that of its input.
    fn block_backward(
        &self,
        block: &Block,
        tape: &BlockTape,
        out: &Maps,
        dout: Vec<f32>,
        work: &mut Workspace,
        grads: &mut [f32],
    ) -> Vec<f32> {
        // The output ReLU's mask, applied once: both paths use it.
        let mut dsum = dout;
        dsum.par_chunks_mut(1 << 14)
            .zip(out.data.par_chunks(1 << 14))
            .for_each(|(d, o)| {
                for (d, &o) in d.iter_mut().zip(o) {
                    if o <= 0.0 {
                        *d = 0.0;
                    }
                }
            });
        let dz2 = self.norm_backward(block.bn2, &tape.z2, &tape.bn2, &dsum, None, grads, work);
        let da1 = conv_backward(
            &block.conv2,
            &self.params,
            &tape.a1,
            &dz2,
            (tape.z2.h, tape.z2.w),
            true,
            work,
            grads,
        )
        .unwrap_or_default();
        let dz1 = self.norm_backward(
            block.bn1,
            &tape.z1,
            &tape.bn1,
            &da1,
            Some(&tape.a1.data),
            grads,
            work,
        );
        let mut dx = conv_backward(
            &block.conv1,
            &self.params,
            &tape.input,
            &dz1,
            (tape.z1.h, tape.z1.w),
            true,
            work,
            grads,
        )
        .unwrap_or_default();
        match (block.down, &tape.down) {
            (Some((conv, norm)), Some((z, cache))) => {
                let dz = self.norm_backward(norm, z, cache, &dsum, None, grads, work);
                let di = conv_backward(
                    &conv,
                    &self.params,
                    &tape.input,
                    &dz,
                    (z.h, z.w),
                    true,
                    work,
                    grads,
                )
                .unwrap_or_default();
                add_into(&mut dx, &di);
                work.recycle(dz);
                work.recycle(di);
            }
            _ => add_into(&mut dx, &dsum),
        }
        for spent in [dsum, dz2, da1, dz1] {
            work.recycle(spent);
        }
        dx
    }

    /// Batch norm's backward (training mode) from dL/dy to dL/dz; with `mask` (the ReLU's
    /// output), dL/dy is zero where the ReLU was off. Writes dgamma and dbeta into `grads`.
    #[allow(clippy::too_many_arguments)]
    fn norm_backward(
        &self,
        norm: Norm,
        z: &Maps,
        cache: &NormCache,
        dy: &[f32],
        mask: Option<&[f32]>,
        grads: &mut [f32],
        work: &mut Workspace,
    ) -> Vec<f32> {
        let c = norm.c;
        let rows = z.rows();
        let (mean, inv_std) = (&cache.mean, &cache.inv_std);
        // dL/dy behind the ReLU: zero where it was off.
        let masked: Option<Vec<f32>> = mask.map(|m| {
            let mut d = work.scratch(dy.len());
            d.par_chunks_mut(PART_ROWS * c)
                .zip(dy.par_chunks(PART_ROWS * c))
                .zip(m.par_chunks(PART_ROWS * c))
                .for_each(|((d, g), m)| {
                    for ((d, &g), &m) in d.iter_mut().zip(g).zip(m) {
                        *d = if m > 0.0 { g } else { 0.0 };
                    }
                });
            d
        });
        let dy = masked.as_deref().unwrap_or(dy);
        // Σ dy and Σ dy·x̂ per channel, in fixed parts.
        let sums = part_sums(rows, c, 2, |row, acc| {
            let range = row * c..(row + 1) * c;
            let (zr, dr) = (&z.data[range.clone()], &dy[range]);
            let (sum_dy, sum_dy_xhat) = acc.split_at_mut(c);
            for ch in 0..c {
                sum_dy[ch] += dr[ch];
                sum_dy_xhat[ch] += dr[ch] * (zr[ch] - mean[ch]) * inv_std[ch];
            }
        });
        let gamma = &self.params[norm.gamma..norm.gamma + c];
        let m = rows as f32;
        let dbeta: Vec<f32> = sums[..c].iter().map(|&v| v as f32).collect();
        let dgamma: Vec<f32> = sums[c..].iter().map(|&v| v as f32).collect();
        grads[norm.gamma..norm.gamma + c].copy_from_slice(&dgamma);
        grads[norm.gamma + c..norm.gamma + 2 * c].copy_from_slice(&dbeta);
        // dz = γ/σ · (dy − mean(dy) − x̂·mean(dy·x̂)), with x̂ = (z − μ)/σ, as a·dy + b·z + e.
        let coef: Vec<f32> = (0..c).map(|ch| gamma[ch] * inv_std[ch]).collect();
        let slope: Vec<f32> = (0..c)
            .map(|ch| coef[ch] * inv_std[ch] * dgamma[ch] / m)
            .collect();
        let offset: Vec<f32> = (0..c)
            .map(|ch| coef[ch] * (mean[ch] * inv_std[ch] * dgamma[ch] / m - dbeta[ch] / m))
            .collect();
        let mut dz = work.scratch(rows * c);
        dz.par_chunks_mut(PART_ROWS * c)
            .zip(dy.par_chunks(PART_ROWS * c))
            .zip(z.data.par_chunks(PART_ROWS * c))
            .for_each(|((out, dys), zs)| {
                for ((o, d), zr) in out.chunks_mut(c).zip(dys.chunks(c)).zip(zs.chunks(c)) {
                    for ch in 0..c {
                        o[ch] = coef[ch] * d[ch] - slope[ch] * zr[ch] + offset[ch];
                    }
                }
            });
        if let Some(spent) = masked {
            work.recycle(spent);
        }
        dz
    }
}

fn burn_blocks(model: &ResNet) -> Vec<&BasicBlock> {
    model
        .layer1
        .iter()
        .chain(&model.layer2)
        .chain(&model.layer3)
        .chain(&model.layer4)
        .collect()
}

fn values<const D: usize>(t: &Tensor<D>) -> Result<Vec<f32>> {
    t.clone()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .context("reading a burn tensor")
}

fn set_param<const D: usize>(param: &mut Param<Tensor<D>>, data: Vec<f32>, shape: [usize; D]) {
    let device = param.val().device();
    let tensor = Tensor::<D>::from_data(TensorData::new(data, shape), &device);
    *param = Param::initialized(param.id, tensor);
}

fn write_conv(theirs: &mut Conv2d, conv: Conv, params: &[f32]) {
    let (k, cin, cout) = (conv.k, conv.cin, conv.cout);
    let ours = &params[conv.weight..conv.weight + conv.len()];
    let mut weight = vec![0.0; conv.len()];
    for co in 0..cout {
        for ci in 0..cin {
            for ky in 0..k {
                for kx in 0..k {
                    weight[((co * cin + ci) * k + ky) * k + kx] =
                        ours[((ky * k + kx) * cin + ci) * cout + co];
                }
            }
        }
    }
    set_param(&mut theirs.weight, weight, [cout, cin, k, k]);
}

fn add_into(to: &mut [f32], from: &[f32]) {
    to.par_chunks_mut(1 << 14)
        .zip(from.par_chunks(1 << 14))
        .for_each(|(t, f)| {
            for (t, f) in t.iter_mut().zip(f) {
                *t += f;
            }
        });
}

/// Per-channel sums over `rows` rows into `width · c` accumulators, in parts of [`PART_ROWS`]
/// rows (f32 within a part, f64 over parts, both in order): the same bits on any thread count.
fn part_sums(
    rows: usize,
    c: usize,
    width: usize,
    add_row: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f64> {
    let parts: Vec<Vec<f32>> = (0..rows.div_ceil(PART_ROWS))
        .into_par_iter()
        .map(|part| {
            let mut acc = vec![0.0f32; width * c];
            for row in part * PART_ROWS..((part + 1) * PART_ROWS).min(rows) {
                add_row(row, &mut acc);
            }
            acc
        })
        .collect();
    let mut total = vec![0.0f64; width * c];
    for part in &parts {
        for (t, &v) in total.iter_mut().zip(part) {
            *t += v as f64;
        }
    }
    total
}

/// The batch mean and biased variance of each channel (burn's `batch_norm_train`).
fn batch_statistics(z: &Maps) -> (Vec<f32>, Vec<f32>) {
    let (c, rows) = (z.c, z.rows());
    let sums = part_sums(rows, c, 1, |row, acc| {
        for (a, v) in acc.iter_mut().zip(&z.data[row * c..(row + 1) * c]) {
            *a += v;
        }
    });
    let mean: Vec<f32> = sums.iter().map(|s| (s / rows as f64) as f32).collect();
    let squares = part_sums(rows, c, 1, |row, acc| {
        for ((a, v), m) in acc
            .iter_mut()
            .zip(&z.data[row * c..(row + 1) * c])
            .zip(&mean)
        {
            *a += (v - m) * (v - m);
        }
    });
    let var = squares.iter().map(|s| (s / rows as f64) as f32).collect();
    (mean, var)
}

/// y = ReLU(z·scale + shift (+ residual)), per channel.
fn normalise(
    z: &Maps,
    scale: &[f32],
    shift: &[f32],
    residual: Option<&Vec<f32>>,
    work: &mut Workspace,
) -> Maps {
    let c = z.c;
    let mut data = work.scratch(z.data.len());
    data.par_chunks_mut(PART_ROWS * c)
        .zip(z.data.par_chunks(PART_ROWS * c))
        .enumerate()
        .for_each(|(part, (out, zs))| match residual {
            Some(res) => {
                let res = &res[part * PART_ROWS * c..][..zs.len()];
                for ((o, zr), rr) in out.chunks_mut(c).zip(zs.chunks(c)).zip(res.chunks(c)) {
                    for ch in 0..c {
                        o[ch] = (zr[ch] * scale[ch] + shift[ch] + rr[ch]).max(0.0);
                    }
                }
            }
            None => {
                for (o, zr) in out.chunks_mut(c).zip(zs.chunks(c)) {
                    for ch in 0..c {
                        o[ch] = (zr[ch] * scale[ch] + shift[ch]).max(0.0);
                    }
                }
            }
        });
    z.with_data(data)
}

/// y = z·scale + shift per channel (the downsampling path: no ReLU).
fn normalise_linear(z: &Maps, scale: &[f32], shift: &[f32], work: &mut Workspace) -> Maps {
    let c = z.c;
    let mut data = work.scratch(z.data.len());
    data.par_chunks_mut(PART_ROWS * c)
        .zip(z.data.par_chunks(PART_ROWS * c))
        .for_each(|(out, zs)| {
            for (o, zr) in out.chunks_mut(c).zip(zs.chunks(c)) {
                for ch in 0..c {
                    o[ch] = zr[ch] * scale[ch] + shift[ch];
                }
            }
        });
    z.with_data(data)
}

/// The output side of the 3×3, stride-2, padding-1 max pooling.
fn pooled_size(size: usize) -> usize {
    (size + 2).saturating_sub(3) / 2 + 1
}

/// 3×3 max pooling, stride 2, padding 1; with each output's input index (within its image).
fn max_pool(x: &Maps, work: &mut Workspace) -> (Maps, Vec<u32>) {
    let (h, w, c) = (x.h, x.w, x.c);
    let (ho, wo) = (pooled_size(h), pooled_size(w));
    let mut data = work.scratch(x.n * ho * wo * c);
    data.fill(f32::NEG_INFINITY);
    let mut argmax = vec![0u32; data.len()];
    data.par_chunks_mut(ho * wo * c)
        .zip(argmax.par_chunks_mut(ho * wo * c))
        .zip(x.data.par_chunks(h * w * c))
        .for_each(|((out, idx), image)| {
            for oy in 0..ho {
                for ox in 0..wo {
                    let o = (oy * wo + ox) * c;
                    for ky in 0..3 {
                        let Some(iy) = (oy * 2 + ky).checked_sub(1).filter(|&y| y < h) else {
                            continue;
                        };
                        for kx in 0..3 {
                            let Some(ix) = (ox * 2 + kx).checked_sub(1).filter(|&x| x < w) else {
                                continue;
                            };
                            let i = (iy * w + ix) * c;
                            for ch in 0..c {
                                let v = image[i + ch];
                                if v > out[o + ch] {
                                    out[o + ch] = v;
                                    idx[o + ch] = (i + ch) as u32;
                                }
                            }
                        }
                    }
                }
            }
        });
    (
        Maps {
            data,
            n: x.n,
            h: ho,
            w: wo,
            c,
        },
        argmax,
    )
}

/// Global average pooling: [n, c], each the mean of its channel over the image, summed in order.
fn average_pool(x: &Maps) -> Vec<f32> {
    let (area, c) = (x.h * x.w, x.c);
    let mut out = vec![0.0; x.n * c];
    for (o, image) in out.chunks_mut(c).zip(x.data.chunks(area * c)) {
        for pixel in image.chunks(c) {
            for (a, v) in o.iter_mut().zip(pixel) {
                *a += v;
            }
        }
        for a in o.iter_mut() {
            *a /= area as f32;
        }
    }
    out
}

/// The im2col matrix of `x` for `conv`: row (b, oy, ox), columns (ky, kx, ci); zero padding.
fn im2col(conv: &Conv, x: &Maps, (ho, wo): (usize, usize), columns: &mut Vec<f32>) {
    let taps = conv.taps();
    let len = x.n * ho * wo * taps;
    // Every element is written below, so old contents need no clearing.
    if columns.len() < len {
        columns.resize(len, 0.0);
    }
    let (h, w, cin, k) = (x.h, x.w, conv.cin, conv.k);
    columns[..len]
        .par_chunks_mut(wo * taps)
        .enumerate()
        .for_each(|(row, out)| {
            let (b, oy) = (row / ho, row % ho);
            let image = &x.data[b * h * w * cin..(b + 1) * h * w * cin];
            for ox in 0..wo {
                let dst = &mut out[ox * taps..(ox + 1) * taps];
                // A kernel row reads k neighbouring pixels: one contiguous run of k·cin inputs,
                // clipped at the borders.
                let first = (ox * conv.stride) as isize - conv.pad as isize;
                let lo = (-first).clamp(0, k as isize) as usize;
                let hi = (w as isize - first).clamp(0, k as isize) as usize;
                for ky in 0..k {
                    let row = &mut dst[ky * k * cin..(ky + 1) * k * cin];
                    let iy = (oy * conv.stride + ky)
                        .checked_sub(conv.pad)
                        .filter(|&y| y < h);
                    match iy {
                        Some(iy) if lo < hi => {
                            row[..lo * cin].fill(0.0);
                            let start = (iy * w) as isize + first + lo as isize;
                            let start = start as usize * cin;
                            row[lo * cin..hi * cin]
                                .copy_from_slice(&image[start..start + (hi - lo) * cin]);
                            row[hi * cin..].fill(0.0);
                        }
                        _ => row.fill(0.0),
                    }
                }
            }
        });
}

fn conv_forward(conv: &Conv, params: &[f32], x: &Maps, work: &mut Workspace) -> Maps {
    let (ho, wo) = (conv.out_size(x.h), conv.out_size(x.w));
    let rows = x.n * ho * wo;
    let mut out = work.scratch(rows * conv.cout);
    let weights = View::row_major(
        &params[conv.weight..conv.weight + conv.len()],
        conv.taps(),
        conv.cout,
    );
    if conv.reads_input_directly() {
        matmul_with(
            View::row_major(&x.data, rows, conv.cin),
            weights,
            &mut out,
            work.gemm_threads(),
        );
    } else {
        im2col(conv, x, (ho, wo), &mut work.columns);
        matmul_with(
            View::row_major(&work.columns[..rows * conv.taps()], rows, conv.taps()),
            weights,
            &mut out,
            work.gemm_threads(),
        );
    }
    Maps {
        data: out,
        n: x.n,
        h: ho,
        w: wo,
        c: conv.cout,
    }
}

/// A convolution's backward: its weight gradient into `grads`, and with `input_gradient` the
/// gradient of its input `x` (col2im of dz·Wᵀ).
#[allow(clippy::too_many_arguments)]
fn conv_backward(
    conv: &Conv,
    params: &[f32],
    x: &Maps,
    dz: &[f32],
    (ho, wo): (usize, usize),
    input_gradient: bool,
    work: &mut Workspace,
    grads: &mut [f32],
) -> Option<Vec<f32>> {
    let (taps, cout) = (conv.taps(), conv.cout);
    let rows = x.n * ho * wo;
    let direct = conv.reads_input_directly();
    if !direct {
        im2col(conv, x, (ho, wo), &mut work.columns);
    }
    let columns: &[f32] = if direct {
        &x.data
    } else {
        &work.columns[..rows * taps]
    };
    weight_gradient(
        columns,
        rows,
        taps,
        dz,
        cout,
        &mut grads[conv.weight..conv.weight + conv.len()],
    );
    if !input_gradient {
        return None;
    }
    let weights = View::row_major(&params[conv.weight..conv.weight + conv.len()], taps, cout);
    if direct {
        let mut dx = work.scratch(rows * conv.cin);
        matmul_with(
            View::row_major(dz, rows, cout),
            weights.t(),
            &mut dx,
            threads(),
        );
        return Some(dx);
    }
    let dcolumns = &mut work.columns[..rows * taps];
    matmul_with(
        View::row_major(dz, rows, cout),
        weights.t(),
        dcolumns,
        threads(),
    );
    // col2im: each image's input gradient gathers from its own rows only.
    let (h, w, cin, k) = (x.h, x.w, conv.cin, conv.k);
    let mut dx = work.zeros(x.data.len());
    let dcolumns = &work.columns[..rows * taps];
    dx.par_chunks_mut(h * w * cin)
        .enumerate()
        .for_each(|(b, image)| {
            for oy in 0..ho {
                for ky in 0..k {
                    let Some(iy) = (oy * conv.stride + ky)
                        .checked_sub(conv.pad)
                        .filter(|&y| y < h)
                    else {
                        continue;
                    };
                    for ox in 0..wo {
                        let src = &dcolumns[((b * ho + oy) * wo + ox) * taps..][..taps];
                        for kx in 0..k {
                            let Some(ix) = (ox * conv.stride + kx)
                                .checked_sub(conv.pad)
                                .filter(|&x| x < w)
                            else {
                                continue;
                            };
                            let d = &mut image[(iy * w + ix) * cin..][..cin];
                            let s = &src[(ky * k + kx) * cin..][..cin];
                            for (d, s) in d.iter_mut().zip(s) {
                                *d += s;
                            }
                        }
                    }
                }
            }
        });
    Some(dx)
}

/// dW = columnsᵀ·dz ([taps, cout]), the sum over rows split into parts fixed by `rows`, run in
/// parallel and added in part order.
fn weight_gradient(
    columns: &[f32],
    rows: usize,
    taps: usize,
    dz: &[f32],
    cout: usize,
    out: &mut [f32],
) {
    let parts = rows.div_ceil(GRADIENT_PART_ROWS).clamp(1, 8);
    if parts == 1 {
        matmul_with(
            View::row_major(columns, rows, taps).t(),
            View::row_major(dz, rows, cout),
            out,
            threads(),
        );
        return;
    }
    let per = rows.div_ceil(parts);
    let partials: Vec<Vec<f32>> = (0..parts)
        .into_par_iter()
        .map(|p| {
            let (start, end) = (p * per, ((p + 1) * per).min(rows));
            let mut partial = vec![0.0; taps * cout];
            if start < end {
                matmul_with(
                    View::row_major(&columns[start * taps..end * taps], end - start, taps).t(),
                    View::row_major(&dz[start * cout..end * cout], end - start, cout),
                    &mut partial,
                    1,
                );
            }
            partial
        })
        .collect();
    out.copy_from_slice(&partials[0]);
    for partial in &partials[1..] {
        for (o, v) in out.iter_mut().zip(partial) {
            *o += v;
        }
    }
}

/// The mean loss over the batch and its gradient with respect to the logits.
fn loss_and_gradient(logits: &[f32], outputs: usize, targets: Targets) -> Result<(f32, Vec<f32>)> {
    let mut grad = vec![0.0; logits.len()];
    let mut loss = 0.0f64;
    match targets {
        Targets::Binary(labels) => {
            if outputs != 1 {
                bail!("binary cross-entropy needs one logit, the model has {outputs}");
            }
            let n = labels.len() as f32;
            for ((g, &z), &y) in grad.iter_mut().zip(logits).zip(labels) {
                let y = y as f32;
                loss += (z.max(0.0) - z * y + (-z.abs()).exp().ln_1p()) as f64;
                *g = (1.0 / (1.0 + (-z).exp()) - y) / n;
            }
        }
        Targets::Classes(labels) => {
            let n = labels.len() as f32;
            for ((g, z), &y) in grad
                .chunks_mut(outputs)
                .zip(logits.chunks(outputs))
                .zip(labels)
            {
                let y = y as usize;
                if y >= outputs {
                    bail!("class {y} for a model with {outputs} outputs");
                }
                let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let sum: f32 = z.iter().map(|v| (v - max).exp()).sum();
                loss += ((sum.ln() + max) - z[y]) as f64;
                for (j, gj) in g.iter_mut().enumerate() {
                    *gj = ((z[j] - max).exp() / sum - if j == y { 1.0 } else { 0.0 }) / n;
                }
            }
        }
    }
    Ok(((loss / targets.labels().len() as f64) as f32, grad))
}

/// Adam (PyTorch's form, ε 1e-8, no weight decay) over the flat parameter vector.
pub struct Adam {
    step: i32,
    first: Vec<f32>,
    second: Vec<f32>,
}

impl Adam {
    pub fn new(net: &NativeResNet) -> Adam {
        Adam {
            step: 0,
            first: vec![0.0; net.params.len()],
            second: vec![0.0; net.params.len()],
        }
    }

    pub fn step(&mut self, net: &mut NativeResNet, grads: &[f32], lr: f64) {
        self.step += 1;
        let (beta1, beta2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        let step_size = lr as f32 / (1.0 - beta1.powi(self.step));
        let inv_sqrt_bias2 = 1.0 / (1.0 - beta2.powi(self.step)).sqrt();
        const CHUNK: usize = 1 << 14;
        net.params
            .par_chunks_mut(CHUNK)
            .zip(grads.par_chunks(CHUNK))
            .zip(self.first.par_chunks_mut(CHUNK))
            .zip(self.second.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| {
                for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
                    *m = beta1 * *m + (1.0 - beta1) * g;
                    *v = beta2 * *v + (1.0 - beta2) * g * g;
                    *p -= step_size * *m / (v.sqrt() * inv_sqrt_bias2 + eps);
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use burn::module::{Module, ModuleVisitor};
    use burn::optim::GradientsParams;
    use burn::tensor::Device;

    use super::*;
    use crate::ml::cnn::{bce_with_logits, float_labels};

    /// Every float parameter of a burn module, in field order.
    struct Collect(Vec<Vec<f32>>);

    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(values(&param.val()).unwrap());
        }
    }

    fn parameters(model: &ResNet) -> Vec<Vec<f32>> {
        let mut collect = Collect(Vec::new());
        model.visit(&mut collect);
        collect.0
    }

    /// Gradients of a burn model, in field order (none for running statistics).
    struct Grads<'a>(&'a GradientsParams, Vec<Option<Vec<f32>>>);

    impl ModuleVisitor for Grads<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let g = self.0.get::<D>(param.id);
            self.1.push(g.map(|g| values(&g).unwrap()));
        }
    }

    fn pixels(n: usize, size: usize) -> Vec<f32> {
        (0..n * 3 * size * size)
            .map(|i| (((i * 2_654_435_761) % 1000) as f32 / 500.0 - 1.0) + (i % 7) as f32 * 0.1)
            .collect()
    }

    fn assert_close(what: &str, ours: &[f32], theirs: &[f32], tolerance: f32) {
        assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
        let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
            assert!(
                (a - b).abs() <= tolerance * scale,
                "{what}[{i}]: native {a} vs burn {b} (largest {scale})"
            );
        }
    }

    /// Same weights, same batch: burn and the native engine give the same loss, gradients,
    /// running statistics and evaluation logits.
    #[test]
    fn loss_gradients_and_evaluation_match_burn() {
        let config = ResNetConfig {
            width: 4,
            outputs: 1,
        };
        let (n, size) = (8, 32);
        let px = pixels(n, size);
        let labels: Vec<u32> = (0..n as u32).map(|i| (i * 5 / 3) % 2).collect();
        let device = Device::flex().autodiff();
        let model = crate::ml::seeded(&device, 7, |d| ResNet::new(&config, d));
        let mut native = NativeResNet::from_burn(&model, &config).unwrap();

        let indices: Vec<usize> = (0..n).collect();
        let batch =
            Tensor::<4>::from_data(TensorData::new(px.clone(), [n, 3, size, size]), &device);
        let z = model.forward(batch).reshape([n]);
        let burn_logits = values(&z).unwrap();
        let loss = bce_with_logits(z, float_labels(&labels, &indices, &device));
        let burn_loss = values(&loss).unwrap()[0];
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let mut visitor = Grads(&grads, Vec::new());
        model.visit(&mut visitor);
        let burn_grads = visitor.1;

        let mut work = Workspace::default();
        let mut grads = Vec::new();
        let x = Maps::from_chw(&px, &indices, size);
        let (loss, logits) = native
            .loss_and_gradients(x.clone(), Targets::Binary(&labels), &mut work, &mut grads)
            .unwrap();
        assert!((loss - burn_loss).abs() < 1e-5, "{loss} vs {burn_loss}");
        assert_close("logits", &logits, &burn_logits, 1e-4);

        // The gradients, laid out as burn's parameters.
        let mut as_burn = model.valid();
        let gradient_net = NativeResNet {
            params: grads.clone(),
            running: native.running.clone(),
            config: config.clone(),
            ..NativeResNet::from_burn(&model, &config).unwrap()
        };
        gradient_net.write_to_burn(&mut as_burn);
        let ours = parameters(&as_burn);
        assert_eq!(ours.len(), burn_grads.len());
        assert!(burn_grads.iter().flatten().count() > 40);
        for (p, (a, b)) in ours.iter().zip(&burn_grads).enumerate() {
            let Some(b) = b else { continue };
            // Batch norm's backward subtracts nearly equal sums over 8 images.
            assert_close(&format!("gradient {p}"), a, b, 2e-3);
        }

        // Running statistics moved as burn's did.
        let moved = NativeResNet::from_burn(&model, &config).unwrap();
        assert_close("running statistics", &native.running, &moved.running, 1e-4);

        // Evaluation mode, after a change of weights and statistics.
        let mut adam = Adam::new(&native);
        adam.step(&mut native, &grads, 1e-2);
        let mut updated = model.valid();
        native.write_to_burn(&mut updated);
        let eval_batch = Tensor::<4>::from_data(
            TensorData::new(px.clone(), [n, 3, size, size]),
            &Device::flex(),
        );
        let theirs = values(&updated.forward(eval_batch.clone())).unwrap();
        assert_close(
            "evaluation logits",
            &native.logits(&x, &mut work),
            &theirs,
            1e-4,
        );
        let theirs = values(&updated.features(eval_batch)).unwrap();
        assert_close("features", &native.features(&x, &mut work), &theirs, 1e-4);
        // And the round trip keeps every value.
        let back = NativeResNet::from_burn(&updated, &config).unwrap();
        assert_eq!(back.params, native.params);
        assert_eq!(back.running, native.running);
    }

    /// One step on 1, 2 and 3 threads gives the same bits.
    #[test]
    fn numbers_do_not_depend_on_threads() {
        let config = ResNetConfig {
            width: 8,
            outputs: 3,
        };
        let (n, size) = (16, 64);
        let px = pixels(n, size);
        let labels: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
        let device = Device::flex().autodiff();
        let model = crate::ml::seeded(&device, 1, |d| ResNet::new(&config, d));
        let run = |threads: usize| {
            crate::ml::with_threads(threads, || {
                let mut net = NativeResNet::from_burn(&model, &config).unwrap();
                let mut adam = Adam::new(&net);
                let mut work = Workspace::default();
                let mut grads = Vec::new();
                let indices: Vec<usize> = (0..n).collect();
                let x = Maps::from_chw(&px, &indices, size);
                let mut losses = Vec::new();
                for _ in 0..2 {
                    let (loss, _) = net
                        .loss_and_gradients(
                            x.clone(),
                            Targets::Classes(&labels),
                            &mut work,
                            &mut grads,
                        )
                        .unwrap();
                    adam.step(&mut net, &grads, 1e-3);
                    losses.push(loss);
                }
                let logits = net.logits(&x, &mut work);
                (losses, net.params, net.running, logits)
            })
            .unwrap()
        };
        let one = run(1);
        assert!(one.0.iter().all(|l| l.is_finite()));
        for threads in [2, 3] {
            let other = run(threads);
            assert_eq!(one.0, other.0, "losses on {threads} threads");
            assert!(one.1 == other.1, "parameters on {threads} threads");
            assert!(one.2 == other.2, "running statistics on {threads} threads");
            assert!(one.3 == other.3, "logits on {threads} threads");
        }
    }
}
