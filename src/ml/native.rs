//! A hand-written CPU engine for the small dense MLPs of section 6: forward and backward passes
//! over plain `f32` buffers with the `gemm` crate's SIMD kernels, Adam / SGD, batch norm,
//! residual blocks, gradient norms and clipping.
//!
//! Why next to burn: a step of the default model (2 → 6×16 → 33, batch 128) is ~60 tiny tensor
//! ops, and a general framework spends most of a step on per-op overhead (burn/Flex: ~200 µs,
//! PyTorch: ~400 µs). Here a step is a handful of small matrix products and costs tens of µs.
//! The math follows PyTorch's definitions (default initialisation, batch norm with biased batch
//! variance and unbiased running variance, Adam with L2 weight decay) and is checked against
//! finite differences and against the burn engine in the tests.

use std::path::Path;

use anyhow::{Context, Result, bail};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::mlp::{Activation, MlpConfig};
use super::train::{
    Hooks, Optimizer, Splits, Stepper, TrainConfig, TrainOutput, TrainedModel, run_loop,
};
use crate::datasets::Table;

const BN_EPS: f32 = 1e-5;
const BN_MOMENTUM: f32 = 0.1;

/// The parameters, in PyTorch's layout (weights `[out, in]`, row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct NativeMlp {
    pub cfg: MlpConfig,
    pub weights: Vec<Vec<f32>>,
    pub biases: Vec<Vec<f32>>,
    /// Batch norm per hidden layer (empty when off).
    pub gammas: Vec<Vec<f32>>,
    pub betas: Vec<Vec<f32>>,
    pub running_means: Vec<Vec<f32>>,
    pub running_vars: Vec<Vec<f32>>,
}

fn fan_in(cfg: &MlpConfig, layer: usize) -> usize {
    if layer == 0 { cfg.inputs } else { cfg.width }
}

fn fan_out(cfg: &MlpConfig, layer: usize) -> usize {
    if layer == cfg.depth {
        cfg.classes
    } else {
        cfg.width
    }
}

impl NativeMlp {
    /// PyTorch's default `nn.Linear` initialisation: weights and biases uniform in ±1/√fan_in.
    pub fn init(cfg: &MlpConfig, seed: u64) -> NativeMlp {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut weights = Vec::new();
        let mut biases = Vec::new();
        for layer in 0..=cfg.depth {
            let (i, o) = (fan_in(cfg, layer), fan_out(cfg, layer));
            let bound = 1.0 / (i as f32).sqrt();
            weights.push(
                (0..i * o)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect(),
            );
            biases.push((0..o).map(|_| rng.random_range(-bound..bound)).collect());
        }
        let hidden = if cfg.batch_norm { cfg.depth } else { 0 };
        NativeMlp {
            cfg: cfg.clone(),
            weights,
            biases,
            gammas: vec![vec![1.0; cfg.width]; hidden],
            betas: vec![vec![0.0; cfg.width]; hidden],
            running_means: vec![vec![0.0; cfg.width]; hidden],
            running_vars: vec![vec![1.0; cfg.width]; hidden],
        }
    }

    /// Trainable values (weights, biases, batch-norm scales and shifts).
    pub fn parameter_count(&self) -> usize {
        self.trainable().iter().map(|p| p.len()).sum()
    }

    fn trainable(&self) -> Vec<&Vec<f32>> {
        self.weights
            .iter()
            .chain(&self.biases)
            .chain(&self.gammas)
            .chain(&self.betas)
            .collect()
    }

    fn trainable_mut(&mut self) -> Vec<&mut Vec<f32>> {
        self.weights
            .iter_mut()
            .chain(self.biases.iter_mut())
            .chain(self.gammas.iter_mut())
            .chain(self.betas.iter_mut())
            .collect()
    }

    /// Logits of a batch, with batch norm on its running statistics.
    pub fn forward_eval(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let mut buffers = EvalBuffers::default();
        self.forward_eval_into(x, rows, &mut buffers).to_vec()
    }

    /// [`Self::forward_eval`] into reused buffers; returns the logits (rows × classes).
    fn forward_eval_into<'a>(
        &self,
        x: &[f32],
        rows: usize,
        buffers: &'a mut EvalBuffers,
    ) -> &'a [f32] {
        let cfg = &self.cfg;
        let EvalBuffers { h, z } = buffers;
        h.clear();
        h.extend_from_slice(x);
        for layer in 0..=cfg.depth {
            let (i, o) = (fan_in(cfg, layer), fan_out(cfg, layer));
            z.resize(rows * o, 0.0);
            matmul_weights_t(h, rows, i, &self.weights[layer], o, z);
            if layer == cfg.depth {
                add_bias(z, &self.biases[layer]);
                break;
            }
            let residual_input = (cfg.residual && layer > 0).then_some(h.as_slice());
            if cfg.batch_norm {
                add_bias(z, &self.biases[layer]);
                let (g, b, m, v) = (
                    &self.gammas[layer],
                    &self.betas[layer],
                    &self.running_means[layer],
                    &self.running_vars[layer],
                );
                for row in z.chunks_mut(o) {
                    for c in 0..o {
                        row[c] = g[c] * (row[c] - m[c]) / (v[c] + BN_EPS).sqrt() + b[c];
                    }
                }
                hidden_epilogue(cfg.activation, z, None, residual_input);
            } else {
                hidden_epilogue(cfg.activation, z, Some(&self.biases[layer]), residual_input);
            }
            std::mem::swap(h, z);
        }
        &z[..rows * cfg.classes]
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        use safetensors::tensor::{Dtype, TensorView};
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        for layer in 0..=self.cfg.depth {
            let (i, o) = (fan_in(&self.cfg, layer), fan_out(&self.cfg, layer));
            tensors.push((
                format!("layers.{layer}.weight"),
                vec![o, i],
                bytes(&self.weights[layer]),
            ));
            tensors.push((
                format!("layers.{layer}.bias"),
                vec![o],
                bytes(&self.biases[layer]),
            ));
        }
        for j in 0..self.gammas.len() {
            let w = self.cfg.width;
            tensors.push((format!("norms.{j}.weight"), vec![w], bytes(&self.gammas[j])));
            tensors.push((format!("norms.{j}.bias"), vec![w], bytes(&self.betas[j])));
            tensors.push((
                format!("norms.{j}.running_mean"),
                vec![w],
                bytes(&self.running_means[j]),
            ));
            tensors.push((
                format!("norms.{j}.running_var"),
                vec![w],
                bytes(&self.running_vars[j]),
            ));
        }
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|(name, shape, data)| {
                Ok((
                    name.clone(),
                    TensorView::new(Dtype::F32, shape.clone(), data)?,
                ))
            })
            .collect::<Result<_, safetensors::SafeTensorError>>()?;
        safetensors::serialize_to_file(views, None, path)
            .with_context(|| format!("writing {}", path.display()))
    }

    pub fn load(cfg: &MlpConfig, path: &Path) -> Result<NativeMlp> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let file = safetensors::SafeTensors::deserialize(&bytes)
            .with_context(|| format!("parsing {}", path.display()))?;
        let mut model = NativeMlp::init(cfg, 0);
        let read = |name: &str, len: usize| -> Result<Vec<f32>> {
            let t = file
                .tensor(name)
                .with_context(|| format!("{} lacks `{name}`", path.display()))?;
            let data: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if data.len() != len {
                bail!(
                    "`{name}` in {} has {} values, the model needs {len}",
                    path.display(),
                    data.len()
                );
            }
            Ok(data)
        };
        for layer in 0..=cfg.depth {
            let (i, o) = (fan_in(cfg, layer), fan_out(cfg, layer));
            model.weights[layer] = read(&format!("layers.{layer}.weight"), i * o)?;
            model.biases[layer] = read(&format!("layers.{layer}.bias"), o)?;
        }
        for j in 0..model.gammas.len() {
            model.gammas[j] = read(&format!("norms.{j}.weight"), cfg.width)?;
            model.betas[j] = read(&format!("norms.{j}.bias"), cfg.width)?;
            model.running_means[j] = read(&format!("norms.{j}.running_mean"), cfg.width)?;
            model.running_vars[j] = read(&format!("norms.{j}.running_var"), cfg.width)?;
        }
        Ok(model)
    }
}

/// A matrix over a slice: element (r, c) at `r * row_stride + c * col_stride`.
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> View<'a> {
    pub(super) fn row_major(data: &'a [f32], rows: usize, cols: usize) -> View<'a> {
        View {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    pub(super) fn t(self) -> View<'a> {
        View {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// c = a·b, c row-major and overwritten, on one thread. `gemm` (faer's kernels, already in the
/// build through burn) runs these shapes (512×40·40×40) at 72–75 GFLOPS here against
/// matrixmultiply's 49–63, about 80% of its own rate on large products (92 GFLOPS).
fn matmul(a: View, b: View, c: &mut [f32]) {
    matmul_with(a, b, c, 1);
}

/// c = a·b on up to `threads` threads (gemm splits the output, never the sum, so the bits do
/// not depend on `threads`).
pub(super) fn matmul_with(a: View, b: View, c: &mut [f32], threads: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        b.rows == k && a.in_bounds() && b.in_bounds() && c.len() >= m * n,
        "matmul shapes"
    );
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the assertion above keeps every element the strides reach inside its slice.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// z = h·Wᵀ for `rows` rows (W is `[o, i]` row-major); z is overwritten. The bias is added by
/// the pass that follows, fused with what else that layer does.
fn matmul_weights_t(h: &[f32], rows: usize, i: usize, w: &[f32], o: usize, z: &mut [f32]) {
    matmul(View::row_major(h, rows, i), View::row_major(w, o, i).t(), z);
}

fn add_bias(z: &mut [f32], b: &[f32]) {
    for row in z.chunks_mut(b.len()) {
        for (v, bv) in row.iter_mut().zip(b) {
            *v += bv;
        }
    }
}

/// A hidden layer's epilogue in one pass over z: h' = act(z + b + h) (the bias only when given,
/// h only for a residual block), so each activation is read and written once.
fn hidden_epilogue(
    act: Activation,
    z: &mut [f32],
    bias: Option<&[f32]>,
    residual_input: Option<&[f32]>,
) {
    // One monomorphic loop per activation, so that ReLU's vectorises.
    match act {
        Activation::Relu => epilogue_with(|v: f32| v.max(0.0), z, bias, residual_input),
        Activation::Tanh => epilogue_with(f32::tanh, z, bias, residual_input),
        Activation::Sigmoid => {
            epilogue_with(|v: f32| 1.0 / (1.0 + (-v).exp()), z, bias, residual_input)
        }
    }
}

#[inline(always)]
fn epilogue_with(
    apply: impl Fn(f32) -> f32,
    z: &mut [f32],
    bias: Option<&[f32]>,
    residual_input: Option<&[f32]>,
) {
    let width = match bias {
        Some(b) => b.len(),
        None => z.len(),
    };
    if width == 0 {
        return;
    }
    match (bias, residual_input) {
        (Some(b), Some(h)) => {
            for (row, hrow) in z.chunks_mut(width).zip(h.chunks(width)) {
                for ((v, bv), hv) in row.iter_mut().zip(b).zip(hrow) {
                    *v = apply(*v + bv + hv);
                }
            }
        }
        (Some(b), None) => {
            for row in z.chunks_mut(width) {
                for (v, bv) in row.iter_mut().zip(b) {
                    *v = apply(*v + bv);
                }
            }
        }
        (None, Some(h)) => {
            for (v, hv) in z.iter_mut().zip(h) {
                *v = apply(*v + hv);
            }
        }
        (None, None) => z.iter_mut().for_each(|v| *v = apply(*v)),
    }
}

/// dL/dpre of a hidden layer in one pass, written over `dh`: (dh + carried) ⊙ act'(h_out), where
/// `carried` is the residual path's gradient from the block above and `h_out` the layer's output.
/// With `bias_grad`, also sums the result's columns into it (the bias gradient when no batch
/// norm sits between), in the same row order as a separate pass.
fn activation_backward_fused(
    act: Activation,
    h_out: &[f32],
    dh: &mut [f32],
    carried: Option<&[f32]>,
    bias_grad: Option<&mut [f32]>,
) {
    match act {
        Activation::Relu => backward_with(
            |d: f32, v: f32| if v <= 0.0 { 0.0 } else { d },
            h_out,
            dh,
            carried,
            bias_grad,
        ),
        Activation::Tanh => backward_with(
            |d: f32, v: f32| d * (1.0 - v * v),
            h_out,
            dh,
            carried,
            bias_grad,
        ),
        Activation::Sigmoid => backward_with(
            |d: f32, v: f32| d * (v * (1.0 - v)),
            h_out,
            dh,
            carried,
            bias_grad,
        ),
    }
}

#[inline(always)]
fn backward_with(
    derivative: impl Fn(f32, f32) -> f32,
    h_out: &[f32],
    dh: &mut [f32],
    carried: Option<&[f32]>,
    bias_grad: Option<&mut [f32]>,
) {
    match (carried, bias_grad) {
        (Some(c), Some(db)) => {
            db.fill(0.0);
            let width = db.len();
            for ((row, hrow), crow) in dh
                .chunks_mut(width)
                .zip(h_out.chunks(width))
                .zip(c.chunks(width))
            {
                for (((d, &v), &cv), g) in row.iter_mut().zip(hrow).zip(crow).zip(db.iter_mut()) {
                    *d = derivative(*d + cv, v);
                    *g += *d;
                }
            }
        }
        (None, Some(db)) => {
            db.fill(0.0);
            let width = db.len();
            for (row, hrow) in dh.chunks_mut(width).zip(h_out.chunks(width)) {
                for ((d, &v), g) in row.iter_mut().zip(hrow).zip(db.iter_mut()) {
                    *d = derivative(*d, v);
                    *g += *d;
                }
            }
        }
        (Some(c), None) => {
            for ((d, &v), &cv) in dh.iter_mut().zip(h_out).zip(c) {
                *d = derivative(*d + cv, v);
            }
        }
        (None, None) => {
            for (d, &v) in dh.iter_mut().zip(h_out) {
                *d = derivative(*d, v);
            }
        }
    }
}

fn column_sums(m: &[f32], out: &mut [f32]) {
    out.fill(0.0);
    for row in m.chunks(out.len().max(1)) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}

/// Gradients of every trainable tensor, in [`NativeMlp::trainable`] order.
pub struct Gradients {
    pub weights: Vec<Vec<f32>>,
    pub biases: Vec<Vec<f32>>,
    pub gammas: Vec<Vec<f32>>,
    pub betas: Vec<Vec<f32>>,
}

impl Gradients {
    fn empty() -> Gradients {
        Gradients {
            weights: Vec::new(),
            biases: Vec::new(),
            gammas: Vec::new(),
            betas: Vec::new(),
        }
    }

    /// Shapes the buffers for a model (contents are overwritten by the next backward pass).
    fn resize(&mut self, cfg: &MlpConfig, norms: usize) {
        self.weights.resize(cfg.depth + 1, Vec::new());
        self.biases.resize(cfg.depth + 1, Vec::new());
        for layer in 0..=cfg.depth {
            let (i, o) = (fan_in(cfg, layer), fan_out(cfg, layer));
            self.weights[layer].resize(o * i, 0.0);
            self.biases[layer].resize(o, 0.0);
        }
        self.gammas.resize(norms, Vec::new());
        self.betas.resize(norms, Vec::new());
    }

    fn all(&self) -> impl Iterator<Item = &Vec<f32>> {
        self.weights
            .iter()
            .chain(&self.biases)
            .chain(&self.gammas)
            .chain(&self.betas)
    }

    fn all_mut(&mut self) -> impl Iterator<Item = &mut Vec<f32>> {
        self.weights
            .iter_mut()
            .chain(self.biases.iter_mut())
            .chain(self.gammas.iter_mut())
            .chain(self.betas.iter_mut())
    }

    /// ‖∇W‖² + ‖∇b‖² per linear layer.
    pub fn layer_squares(&self) -> Vec<f64> {
        self.weights
            .iter()
            .zip(&self.biases)
            .map(|(w, b)| w.iter().chain(b).map(|&g| (g as f64) * (g as f64)).sum())
            .collect()
    }

    /// Scales all gradients so that their global norm is at most `limit`.
    pub fn clip_global_norm(&mut self, limit: f64) {
        let total: f64 = self.all().flatten().map(|&g| (g as f64) * (g as f64)).sum();
        let norm = total.sqrt();
        if norm > limit {
            let scale = (limit / (norm + 1e-6)) as f32;
            self.all_mut().flatten().for_each(|g| *g *= scale);
        }
    }
}

/// Two ping-pong activation buffers for evaluation, reused across batches.
#[derive(Default)]
struct EvalBuffers {
    h: Vec<f32>,
    z: Vec<f32>,
}

/// Buffers of one training step, reused across steps (no allocation or page faults per step).
#[derive(Default)]
pub struct WorkspaceHandle {
    /// Input of each linear layer (inputs[0] is the batch); the last slot holds the logits.
    inputs: Vec<Vec<f32>>,
    /// Batch-norm normalised values and 1/std per hidden layer.
    normalized: Vec<Vec<f32>>,
    inv_std: Vec<Vec<f32>>,
    /// dL/dh and dL/dpre of the layer being back-propagated.
    dh: Vec<f32>,
    dpre: Vec<f32>,
    grads: Option<Gradients>,
}

impl WorkspaceHandle {
    /// The gradients of the last [`loss_and_gradients`] call.
    pub fn gradients(&mut self) -> &mut Gradients {
        self.grads.get_or_insert_with(Gradients::empty)
    }
}

/// Runs forward and backward on one batch (training mode: batch norm on batch statistics,
/// running statistics updated). Returns the mean cross-entropy; the gradients are left in the
/// workspace ([`WorkspaceHandle::gradients`]).
pub fn loss_and_gradients(
    model: &mut NativeMlp,
    x: &[f32],
    y: &[u32],
    ws: &mut WorkspaceHandle,
) -> f32 {
    let rows = y.len();
    let mut running = RunningStats {
        means: std::mem::take(&mut model.running_means),
        vars: std::mem::take(&mut model.running_vars),
    };
    let loss = part_loss_and_gradients(model, Some(&mut running), x, y, rows, ws);
    model.running_means = running.means;
    model.running_vars = running.vars;
    loss as f32 * (1.0 / rows as f32)
}

/// Batches of at least 2·PART_ROWS rows without batch norm are computed as parts of about
/// PART_ROWS rows (at most MAX_PARTS) whose gradients are summed in part order. The split depends
/// only on the batch, never on the threads, so the parts can run on as many threads as the
/// scheduler lends the stage and the numbers stay the same (tested). Batch norm's statistics
/// span the whole batch, so such a network is never split.
const PART_ROWS: usize = 256;
const MAX_PARTS: usize = 4;

fn parts_for(cfg: &MlpConfig, rows: usize) -> usize {
    if cfg.batch_norm {
        1
    } else {
        (rows / PART_ROWS).clamp(1, MAX_PARTS)
    }
}

/// The per-part workspaces of a step and the threads that run them.
#[derive(Default)]
pub struct StepParts {
    workspaces: Vec<WorkspaceHandle>,
    pool: Option<rayon::ThreadPool>,
}

impl StepParts {
    /// The helper threads, started on first use; None where none can be started.
    fn pool(&mut self) -> Option<&rayon::ThreadPool> {
        if self.pool.is_none() {
            self.pool = rayon::ThreadPoolBuilder::new()
                .num_threads(MAX_PARTS)
                .thread_name(|i| format!("pipeline-part-{i}"))
                .build()
                .ok();
        }
        self.pool.as_ref()
    }

    /// Runs each of `jobs` (one per part) on up to `threads` threads; part p on group p mod threads.
    fn run<J: FnMut() + Send>(&mut self, jobs: Vec<J>, threads: usize) {
        let threads = threads.clamp(1, jobs.len().max(1));
        if threads == 1 {
            jobs.into_iter().for_each(|mut job| job());
            return;
        }
        // No flush-to-zero on these threads: the calling thread runs without it too, and a part
        // must give the same bits wherever it runs.
        // No threads to be had (a process limit): the same parts, one after another.
        let Some(pool) = self.pool() else {
            jobs.into_iter().for_each(|mut job| job());
            return;
        };
        let mut groups: Vec<Vec<J>> = (0..threads).map(|_| Vec::new()).collect();
        for (p, job) in jobs.into_iter().enumerate() {
            groups[p % threads].push(job);
        }
        pool.scope(|scope| {
            for group in groups {
                scope.spawn(move |_| group.into_iter().for_each(|mut job| job()));
            }
        });
    }
}

/// [`loss_and_gradients`] for a batch split into parts (see [`PART_ROWS`]) on up to `threads`
/// threads; the summed gradients are left in the first part's workspace
/// ([`StepParts::gradients`]).
pub fn loss_and_gradients_in_parts(
    model: &mut NativeMlp,
    x: &[f32],
    y: &[u32],
    parts: &mut StepParts,
    threads: usize,
) -> f32 {
    let rows = y.len();
    let n = parts_for(&model.cfg, rows);
    if parts.workspaces.len() < n {
        parts.workspaces.resize_with(n, WorkspaceHandle::default);
    }
    if n == 1 {
        return loss_and_gradients(model, x, y, &mut parts.workspaces[0]);
    }
    let dim = model.cfg.inputs;
    let shared: &NativeMlp = model;
    let mut losses = vec![0.0f64; n];
    let mut workspaces = std::mem::take(&mut parts.workspaces);
    let jobs: Vec<_> = workspaces
        .iter_mut()
        .zip(losses.iter_mut())
        .enumerate()
        .map(|(p, (ws, loss))| {
            let (start, end) = (p * rows / n, (p + 1) * rows / n);
            let (xs, ys) = (&x[start * dim..end * dim], &y[start..end]);
            move || *loss = part_loss_and_gradients(shared, None, xs, ys, rows, ws)
        })
        .collect();
    parts.run(jobs, threads);
    let (first, rest) = workspaces.split_at_mut(1);
    let total = first[0].gradients();
    for ws in &mut rest[..n - 1] {
        let part = ws.gradients();
        for (t, g) in total.all_mut().zip(part.all()) {
            for (a, b) in t.iter_mut().zip(g) {
                *a += b;
            }
        }
    }
    parts.workspaces = workspaces;
    losses.iter().sum::<f64>() as f32 * (1.0 / rows as f32)
}

impl StepParts {
    /// The gradients of the last [`loss_and_gradients_in_parts`] call.
    pub fn gradients(&mut self) -> &mut Gradients {
        if self.workspaces.is_empty() {
            self.workspaces.push(WorkspaceHandle::default());
        }
        self.workspaces[0].gradients()
    }
}

/// Batch norm's running statistics, apart from the model so that parts of a step can share the
/// model read-only.
struct RunningStats {
    means: Vec<Vec<f32>>,
    vars: Vec<Vec<f32>>,
}

/// Forward and backward over `y.len()` rows of a batch of `batch_rows`: the gradients (left in
/// `ws`) are this part's share of the batch mean's; returns the part's summed cross-entropy.
fn part_loss_and_gradients(
    model: &NativeMlp,
    mut running: Option<&mut RunningStats>,
    x: &[f32],
    y: &[u32],
    batch_rows: usize,
    ws: &mut WorkspaceHandle,
) -> f64 {
    let cfg = &model.cfg;
    let rows = y.len();
    ws.inputs.resize(cfg.depth + 2, Vec::new());
    ws.normalized.resize(cfg.depth, Vec::new());
    ws.inv_std.resize(cfg.depth, Vec::new());
    ws.inputs[0].clear();
    ws.inputs[0].extend_from_slice(x);
    for layer in 0..=cfg.depth {
        let (i, o) = (fan_in(cfg, layer), fan_out(cfg, layer));
        let mut z = std::mem::take(&mut ws.inputs[layer + 1]);
        z.resize(rows * o, 0.0);
        matmul_weights_t(&ws.inputs[layer], rows, i, &model.weights[layer], o, &mut z);
        if layer == cfg.depth {
            add_bias(&mut z, &model.biases[layer]);
        } else {
            let residual_input = (cfg.residual && layer > 0).then_some(ws.inputs[layer].as_slice());
            if cfg.batch_norm {
                add_bias(&mut z, &model.biases[layer]);
                batch_norm_train(
                    &mut z,
                    rows,
                    o,
                    model,
                    running.as_deref_mut(),
                    layer,
                    &mut ws.normalized[layer],
                    &mut ws.inv_std[layer],
                );
                hidden_epilogue(cfg.activation, &mut z, None, residual_input);
            } else {
                hidden_epilogue(
                    cfg.activation,
                    &mut z,
                    Some(&model.biases[layer]),
                    residual_input,
                );
            }
        }
        ws.inputs[layer + 1] = z;
    }

    // Softmax cross-entropy, averaged over the batch; `g` becomes dL/dlogits.
    let classes = cfg.classes;
    let mut loss = 0.0f64;
    let mut g = std::mem::take(&mut ws.inputs[cfg.depth + 1]);
    let inv_rows = 1.0 / batch_rows as f32;
    for (row, &label) in g.chunks_mut(classes).zip(y) {
        let label = label as usize;
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        // log-sum-exp form: finite even when the label's probability underflows.
        let logit = row[label];
        let mut sum = 0.0f32;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        loss += (sum.ln() + max - logit) as f64;
        let scale = inv_rows / sum;
        for v in row.iter_mut() {
            *v *= scale;
        }
        row[label] -= inv_rows;
    }

    let mut grads = ws.grads.take().unwrap_or_else(Gradients::empty);
    grads.resize(cfg, model.gammas.len());
    let mut dh = std::mem::take(&mut ws.dh);
    let mut dpre = std::mem::take(&mut ws.dpre);
    // The output layer.
    column_sums(&g, &mut grads.biases[cfg.depth]);
    weight_gradients(
        &mut grads.weights[cfg.depth],
        model,
        &ws.inputs,
        cfg.depth,
        &g,
        rows,
        Some(&mut dh),
    );
    // Hidden layer j: z = h_j·Wᵀ + b, pre = bn(z) (+ h_j in a residual block), h_{j+1} = act(pre).
    // `dh` holds dL/dh_{j+1} from the layer above's matrix product; when that layer is a
    // residual block, its dL/dpre (still in `dpre`) reaches h_{j+1} directly too, and is added
    // in the same pass that applies the activation's derivative.
    for j in (0..cfg.depth).rev() {
        let above_is_residual = cfg.residual && j + 1 < cfg.depth;
        let bias_grad = (!cfg.batch_norm).then_some(grads.biases[j].as_mut_slice());
        activation_backward_fused(
            cfg.activation,
            &ws.inputs[j + 1],
            &mut dh,
            above_is_residual.then_some(dpre.as_slice()),
            bias_grad,
        );
        std::mem::swap(&mut dh, &mut dpre);
        // Now dpre = dL/dpre_j; dz = dL/dz_j is dpre itself unless batch norm sits between.
        if cfg.batch_norm {
            batch_norm_backward(
                &dpre,
                &mut g,
                rows,
                cfg.width,
                &ws.normalized[j],
                &ws.inv_std[j],
                &model.gammas[j],
                &mut grads.gammas[j],
                &mut grads.betas[j],
            );
            column_sums(&g, &mut grads.biases[j]);
        }
        let dz = if cfg.batch_norm { &g } else { &dpre };
        weight_gradients(
            &mut grads.weights[j],
            model,
            &ws.inputs,
            j,
            dz,
            rows,
            (j > 0).then_some(&mut dh),
        );
    }
    ws.inputs[cfg.depth + 1] = g;
    ws.dh = dh;
    ws.dpre = dpre;
    ws.grads = Some(grads);
    loss
}

/// Stores dW of `layer` from `dz` (dL/dz, rows × out), and dL/d(input) into `dh` if given.
fn weight_gradients(
    dw: &mut [f32],
    model: &NativeMlp,
    inputs: &[Vec<f32>],
    layer: usize,
    dz: &[f32],
    rows: usize,
    dh: Option<&mut Vec<f32>>,
) {
    let (i, o) = (fan_in(&model.cfg, layer), fan_out(&model.cfg, layer));
    let h = &inputs[layer];
    debug_assert!(dz.len() >= rows * o && h.len() >= rows * i && dw.len() >= o * i);
    let dz = View::row_major(dz, rows, o);
    matmul(dz.t(), View::row_major(h, rows, i), dw);
    if let Some(dh) = dh {
        dh.resize(rows * i, 0.0);
        matmul(dz, View::row_major(&model.weights[layer], o, i), dh);
    }
}

#[allow(clippy::too_many_arguments)]
fn batch_norm_train(
    z: &mut [f32],
    rows: usize,
    width: usize,
    model: &NativeMlp,
    running: Option<&mut RunningStats>,
    layer: usize,
    normalized: &mut Vec<f32>,
    inv_std: &mut Vec<f32>,
) {
    let mut mean = vec![0.0f32; width];
    for row in z.chunks(width) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= rows as f32);
    let mut var = vec![0.0f32; width];
    for row in z.chunks(width) {
        for c in 0..width {
            let d = row[c] - mean[c];
            var[c] += d * d;
        }
    }
    var.iter_mut().for_each(|v| *v /= rows as f32);
    inv_std.clear();
    inv_std.extend(var.iter().map(|v| 1.0 / (v + BN_EPS).sqrt()));
    normalized.resize(z.len(), 0.0);
    let (gamma, beta) = (&model.gammas[layer], &model.betas[layer]);
    for (row, nrow) in z.chunks_mut(width).zip(normalized.chunks_mut(width)) {
        for c in 0..width {
            nrow[c] = (row[c] - mean[c]) * inv_std[c];
            row[c] = gamma[c] * nrow[c] + beta[c];
        }
    }
    let unbiased = if rows > 1 {
        rows as f32 / (rows as f32 - 1.0)
    } else {
        1.0
    };
    let Some(running) = running else {
        return;
    };
    for c in 0..width {
        let rm = &mut running.means[layer][c];
        *rm = (1.0 - BN_MOMENTUM) * *rm + BN_MOMENTUM * mean[c];
        let rv = &mut running.vars[layer][c];
        *rv = (1.0 - BN_MOMENTUM) * *rv + BN_MOMENTUM * var[c] * unbiased;
    }
}

/// dL/dz from dL/dy (y = γ·ẑ + β, ẑ = (z − μ)/σ) into `dz`, storing dγ and dβ.
#[allow(clippy::too_many_arguments)]
fn batch_norm_backward(
    dy: &[f32],
    dz: &mut Vec<f32>,
    rows: usize,
    width: usize,
    normalized: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    dgamma: &mut Vec<f32>,
    dbeta: &mut Vec<f32>,
) {
    dgamma.clear();
    dgamma.resize(width, 0.0);
    dbeta.clear();
    dbeta.resize(width, 0.0);
    for (drow, nrow) in dy.chunks(width).zip(normalized.chunks(width)) {
        for c in 0..width {
            dgamma[c] += drow[c] * nrow[c];
            dbeta[c] += drow[c];
        }
    }
    let n = rows as f32;
    dz.resize(rows * width, 0.0);
    for ((zrow, drow), nrow) in dz
        .chunks_mut(width)
        .zip(dy.chunks(width))
        .zip(normalized.chunks(width))
    {
        for c in 0..width {
            zrow[c] = gamma[c] * inv_std[c] / n * (n * drow[c] - dbeta[c] - nrow[c] * dgamma[c]);
        }
    }
}

/// Adam (PyTorch's, with L2 weight decay added to the gradient) or SGD with momentum.
pub struct OptimizerState {
    kind: Optimizer,
    weight_decay: f32,
    step: i32,
    first: Vec<Vec<f32>>,
    second: Vec<Vec<f32>>,
}

impl OptimizerState {
    pub fn new(model: &NativeMlp, cfg: &TrainConfig) -> OptimizerState {
        let zeros: Vec<Vec<f32>> = model
            .trainable()
            .iter()
            .map(|p| vec![0.0; p.len()])
            .collect();
        OptimizerState {
            kind: cfg.optimizer,
            weight_decay: cfg.weight_decay as f32,
            step: 0,
            first: zeros.clone(),
            second: zeros,
        }
    }

    pub fn step(&mut self, model: &mut NativeMlp, grads: &Gradients, lr: f64) {
        self.step += 1;
        let lr = lr as f32;
        let wd = self.weight_decay;
        let (beta1, beta2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        let bias1 = 1.0 - beta1.powi(self.step);
        let bias2 = 1.0 - beta2.powi(self.step);
        for (((param, grad), m), v) in model
            .trainable_mut()
            .into_iter()
            .zip(grads.all())
            .zip(&mut self.first)
            .zip(&mut self.second)
        {
            match self.kind {
                Optimizer::Adam => {
                    // PyTorch's form: p -= lr/bias1 · m / (√v/√bias2 + ε); zipped so that it vectorises.
                    let step_size = lr / bias1;
                    let inv_sqrt_bias2 = 1.0 / bias2.sqrt();
                    for (((p, &g), m), v) in param
                        .iter_mut()
                        .zip(grad.iter())
                        .zip(m.iter_mut())
                        .zip(v.iter_mut())
                    {
                        let g = g + wd * *p;
                        *m = beta1 * *m + (1.0 - beta1) * g;
                        *v = beta2 * *v + (1.0 - beta2) * g * g;
                        *p -= step_size * *m / (v.sqrt() * inv_sqrt_bias2 + eps);
                    }
                }
                Optimizer::Sgd { momentum } => {
                    let momentum = momentum as f32;
                    for j in 0..param.len() {
                        let g = grad[j] + wd * param[j];
                        m[j] = if self.step == 1 {
                            g
                        } else {
                            momentum * m[j] + g
                        };
                        param[j] -= lr * if momentum > 0.0 { m[j] } else { g };
                    }
                }
            }
        }
    }
}

/// Trains with the native engine, in the loop both engines share.
pub fn train(splits: &Splits, cfg: &TrainConfig, hooks: &dyn Hooks) -> Result<TrainOutput> {
    let model = NativeMlp::init(&cfg.model, cfg.seed);
    let n_parameters = model.parameter_count();
    let optimizer = OptimizerState::new(&model, cfg);
    let mut stepper = NativeStepper {
        model,
        optimizer,
        parts: StepParts::default(),
        grad_clip: cfg.grad_clip,
    };
    let record = run_loop(splits, cfg, hooks, &mut stepper)?;
    Ok(TrainOutput {
        epochs: record.epochs,
        step_losses: record.step_losses,
        steps_per_epoch: record.steps_per_epoch,
        diverged: record.diverged,
        model: TrainedModel::Native(stepper.model),
        n_parameters,
    })
}

struct NativeStepper {
    model: NativeMlp,
    optimizer: OptimizerState,
    parts: StepParts,
    grad_clip: Option<f64>,
}

impl Stepper for NativeStepper {
    fn step(&mut self, x: &[f32], y: &[u32], lr: f64, grad_sums: &mut [f64]) -> Result<f32> {
        // The threads lent right now (1 unless the scheduler lends idle cores); the numbers do
        // not depend on them.
        let threads = super::granted_threads();
        if threads > 1 {
            // Started here, so that the evaluations can use the lent threads too.
            let _ = self.parts.pool();
        }
        let loss = loss_and_gradients_in_parts(&mut self.model, x, y, &mut self.parts, threads);
        if !loss.is_finite() {
            return Ok(loss);
        }
        let grads = self.parts.gradients();
        for (sum, g) in grad_sums.iter_mut().zip(grads.layer_squares()) {
            *sum += g;
        }
        if let Some(limit) = self.grad_clip {
            grads.clip_global_norm(limit);
        }
        self.optimizer.step(&mut self.model, grads, lr);
        Ok(loss)
    }

    fn evaluate(&self, table: &Table, batch_size: usize) -> Result<(f64, f64)> {
        Ok(evaluate_on_threads(
            &self.model,
            table,
            batch_size,
            self.parts.pool.as_ref(),
            super::granted_threads(),
        ))
    }
}

/// Per-sample mean cross-entropy and accuracy of a split (batch norm on running statistics).
pub fn evaluate(model: &NativeMlp, table: &Table, batch_size: usize) -> (f64, f64) {
    evaluate_on_threads(model, table, batch_size, None, 1)
}

/// [`evaluate`] with the batches shared among up to `threads` threads of `pool`. Each batch's sums are
/// kept apart and added in batch order, so the result does not depend on the thread count.
pub fn evaluate_on_threads(
    model: &NativeMlp,
    table: &Table,
    batch_size: usize,
    pool: Option<&rayon::ThreadPool>,
    threads: usize,
) -> (f64, f64) {
    if table.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let batch_size = batch_size.max(1);
    let batches = table.len().div_ceil(batch_size);
    let mut sums = vec![(0.0f64, 0usize); batches];
    let threads = threads.clamp(1, batches);
    let per_thread = batches.div_ceil(threads);
    let run = |first: usize, out: &mut [(f64, usize)]| {
        let mut buffers = EvalBuffers::default();
        for (b, slot) in out.iter_mut().enumerate() {
            *slot = batch_sums(
                model,
                table,
                (first + b) * batch_size,
                batch_size,
                &mut buffers,
            );
        }
    };
    match pool {
        Some(pool) if threads > 1 => pool.scope(|scope| {
            for (t, chunk) in sums.chunks_mut(per_thread).enumerate() {
                let run = &run;
                scope.spawn(move |_| run(t * per_thread, chunk));
            }
        }),
        _ => run(0, &mut sums),
    }
    let (loss, correct) = sums
        .iter()
        .fold((0.0f64, 0usize), |(l, c), (bl, bc)| (l + bl, c + bc));
    (
        loss / table.len() as f64,
        correct as f64 / table.len() as f64,
    )
}

/// Summed cross-entropy and correct predictions of the batch starting at row `start`.
fn batch_sums(
    model: &NativeMlp,
    table: &Table,
    start: usize,
    batch_size: usize,
    buffers: &mut EvalBuffers,
) -> (f64, usize) {
    let (dim, classes) = (table.dim(), model.cfg.classes);
    let end = (start + batch_size).min(table.len());
    let logits = model.forward_eval_into(&table.x[start * dim..end * dim], end - start, buffers);
    let mut loss = 0.0f64;
    let mut correct = 0usize;
    for (row, &label) in logits.chunks(classes).zip(&table.y[start..end]) {
        let (best, max) = row
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |acc, (c, &v)| {
                    if v > acc.1 { (c, v) } else { acc }
                },
            );
        let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
        loss += (sum.ln() + max - row[label as usize]) as f64;
        correct += usize::from(best == label as usize);
    }
    (loss, correct)
}

/// Predicted classes of feature rows.
pub fn predict(model: &NativeMlp, x: &[f32], batch_size: usize) -> Vec<u32> {
    let (dim, classes) = (model.cfg.inputs, model.cfg.classes);
    let rows = x.len() / dim.max(1);
    let mut out = Vec::with_capacity(rows);
    let mut buffers = EvalBuffers::default();
    for start in (0..rows).step_by(batch_size.max(1)) {
        let end = (start + batch_size).min(rows);
        let logits = model.forward_eval_into(&x[start * dim..end * dim], end - start, &mut buffers);
        out.extend(logits.chunks(classes).map(|row| {
            row.iter()
                .enumerate()
                .fold((0u32, f32::NEG_INFINITY), |acc, (c, &v)| {
                    if v > acc.1 { (c as u32, v) } else { acc }
                })
                .0
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(depth: usize, batch_norm: bool, residual: bool, activation: Activation) -> MlpConfig {
        MlpConfig {
            inputs: 3,
            classes: 4,
            depth,
            width: 5,
            activation,
            batch_norm,
            residual,
        }
    }

    fn batch() -> (Vec<f32>, Vec<u32>) {
        let x: Vec<f32> = (0..8 * 3)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) / 5.0)
            .collect();
        let y = vec![0, 1, 2, 3, 1, 2, 0, 3];
        (x, y)
    }

    /// Every analytic gradient matches a central finite difference of the loss.
    #[test]
    fn gradients_match_finite_differences() {
        for (bn, residual, act) in [
            (false, false, Activation::Relu),
            (true, false, Activation::Tanh),
            (false, true, Activation::Sigmoid),
            (true, true, Activation::Tanh),
        ] {
            let cfg = config(3, bn, residual, act);
            let model = NativeMlp::init(&cfg, 7);
            let (x, y) = batch();
            let loss_of = |m: &NativeMlp| {
                let mut m = m.clone();
                loss_and_gradients(&mut m, &x, &y, &mut WorkspaceHandle::default()) as f64
            };
            let mut ws = WorkspaceHandle::default();
            loss_and_gradients(&mut model.clone(), &x, &y, &mut ws);
            let analytic: Vec<f32> = ws.gradients().all().flatten().copied().collect();
            let n_params = model.trainable().iter().map(|p| p.len()).sum::<usize>();
            assert_eq!(analytic.len(), n_params);
            let h = 1e-2f32;
            let mut flat_index = 0;
            for tensor in 0..model.trainable().len() {
                for j in 0..model.trainable()[tensor].len() {
                    let mut plus = model.clone();
                    plus.trainable_mut()[tensor][j] += h;
                    let mut minus = model.clone();
                    minus.trainable_mut()[tensor][j] -= h;
                    let numeric = (loss_of(&plus) - loss_of(&minus)) / (2.0 * h as f64);
                    let a = analytic[flat_index] as f64;
                    assert!(
                        (numeric - a).abs() <= 2e-3 + 2e-2 * numeric.abs(),
                        "bn={bn} residual={residual} {act:?}: tensor {tensor} value {j}: analytic {a}, numeric {numeric}"
                    );
                    flat_index += 1;
                }
            }
        }
    }

    #[test]
    fn save_and_load_round_trip() {
        let cfg = config(2, true, false, Activation::Relu);
        let model = NativeMlp::init(&cfg, 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        model.save(&path).unwrap();
        assert_eq!(NativeMlp::load(&cfg, &path).unwrap(), model);
    }

    /// A split step gives the same bits on any number of threads, and matches the unsplit step
    /// up to float reordering; so does an evaluation.
    #[test]
    fn split_steps_and_evaluations_do_not_depend_on_threads() {
        let cfg = MlpConfig {
            inputs: 3,
            classes: 4,
            depth: 5,
            width: 9,
            activation: Activation::Relu,
            batch_norm: false,
            residual: true,
        };
        let model = NativeMlp::init(&cfg, 11);
        let rows = 1024;
        let x: Vec<f32> = (0..rows * 3)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let y: Vec<u32> = (0..rows).map(|i| (i * 7 % 4) as u32).collect();
        assert_eq!(parts_for(&cfg, rows), 4);
        let split = |threads: usize| {
            let mut m = model.clone();
            let mut parts = StepParts::default();
            let loss = loss_and_gradients_in_parts(&mut m, &x, &y, &mut parts, threads);
            let grads: Vec<f32> = parts.gradients().all().flatten().copied().collect();
            (loss, grads)
        };
        let one = split(1);
        for threads in [2, 3, 4, 8] {
            assert_eq!(split(threads), one, "{threads} threads");
        }
        let mut ws = WorkspaceHandle::default();
        let whole = loss_and_gradients(&mut model.clone(), &x, &y, &mut ws);
        assert!((whole - one.0).abs() <= 1e-6 * whole.abs());
        for (a, b) in ws.gradients().all().flatten().zip(&one.1) {
            assert!((a - b).abs() <= 1e-5 * a.abs().max(1e-3), "{a} vs {b}");
        }
        // Batch norm's statistics span the batch: never split.
        assert_eq!(
            parts_for(
                &MlpConfig {
                    batch_norm: true,
                    ..cfg.clone()
                },
                rows
            ),
            1
        );

        let table = Table {
            features: vec!["a".into(), "b".into(), "c".into()],
            label: "y".into(),
            x: x.clone(),
            y: y.clone(),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let sequential = evaluate(&model, &table, 100);
        for threads in [2, 3, 5] {
            assert_eq!(
                evaluate_on_threads(&model, &table, 100, Some(&pool), threads),
                sequential
            );
        }
    }
}
