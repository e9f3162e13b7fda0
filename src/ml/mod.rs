//! Models and training loops. Knows nothing of YAML, the cache or ops: it takes plain configs
//! and datasets and returns records. Two engines train the MLP: `native` (hand-written, for
//! small dense nets on the CPU, the default) and burn (`mlp`, `train`: Flex CPU backend with
//! autodiff, the general one for later models and devices). They share configs, records and the
//! safetensors layout, and the tests check that they agree.
//!
//! burn 0.22 picks the backend from the device at run time (`Device::flex().autodiff()` to
//! train, `.inner()` to evaluate). Flex runs its parallel kernels on rayon's *current* pool, so a
//! stage's thread budget is honoured by running it inside [`with_threads`].

pub mod boosting;
pub mod cnn;
pub mod device;
pub mod logistic;
pub mod metrics;
pub mod mlp;
pub mod native;
pub mod native_cnn;
pub mod resnet;
pub mod train;

use std::sync::Mutex;

use anyhow::{Context, Result};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};

/// Flex keeps one random generator per process and initialises parameters lazily: seeding and
/// building a model must happen as one step when several stages train in one process.
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Builds a model from `seed` and materialises every parameter, atomically, then moves it to
/// `device`. Weights are always drawn on the CPU (Flex), so a GPU run starts from the same
/// weights as a CPU run and their numbers differ only by floating-point order.
pub fn seeded<M: Module>(device: &Device, seed: u64, build: impl FnOnce(&Device) -> M) -> M {
    let _guard = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let autodiff = device.gradient_checkpointing_strategy().is_some();
    let home = if autodiff {
        Device::flex().autodiff()
    } else {
        Device::flex()
    };
    home.seed(seed);
    let model = build(&home);
    model.visit(&mut ForceInit);
    if *device == home {
        model
    } else {
        model.fork(device)
    }
}

struct ForceInit;

impl ModuleVisitor for ForceInit {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// Threads this process may use now: the stage's own, plus any the scheduler lends it while
/// cores would otherwise sit idle (`threads N` lines from the engine, see `schedule::isolate`).
/// Engines that can widen (the native MLP engine) read it between steps.
static GRANTED_THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

pub fn granted_threads() -> usize {
    GRANTED_THREADS
        .load(std::sync::atomic::Ordering::Relaxed)
        .max(1)
}

pub fn set_granted_threads(threads: usize) {
    GRANTED_THREADS.store(threads.max(1), std::sync::atomic::Ordering::Relaxed);
}

/// Runs `f` on a rayon pool of `threads` threads with flush-to-zero on: without it, tiny
/// gradients become denormal floats and training steps slow down ~1.7× after a few hundred
/// steps (measured on burn 0.22.1 / Flex). The same setting on every run keeps results
/// deterministic.
pub fn with_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> Result<T> {
    Ok(training_pool(threads)?.install(f))
}

fn training_pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .start_handler(|_| set_flush_to_zero())
        .build()
        .context("creating the training thread pool")
}

/// Runs steps of an elastic stage on the threads granted now ([`granted_threads`]), but never
/// fewer than the pool it is called from has: a pool of the granted size is started when the
/// count grows and dropped when the loan ends. The engine's numbers must not depend on it.
#[derive(Default)]
pub struct ElasticPool {
    lent: Option<(usize, rayon::ThreadPool)>,
}

impl ElasticPool {
    pub fn install<T: Send>(&mut self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let own = rayon::current_num_threads();
        let wanted = granted_threads();
        if wanted <= own {
            self.lent = None;
            return Ok(f());
        }
        if self.lent.as_ref().map(|(n, _)| *n) != Some(wanted) {
            self.lent = Some((wanted, training_pool(wanted)?));
        }
        let (_, pool) = self.lent.as_ref().context("the lent thread pool")?;
        Ok(pool.install(f))
    }
}

#[allow(deprecated)]
fn set_flush_to_zero() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: sets the FTZ and DAZ bits of this thread's MXCSR; no memory is touched.
    unsafe {
        use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
        _mm_setcsr(_mm_getcsr() | 0x8040);
    }
}
