//! Runs a plan: cache check → run → commit for every node, ready nodes in parallel within a
//! thread budget (`--jobs`) and a GPU budget (`--gpus`). A failed node stops only its
//! dependents; Ctrl-C stops running stages and returns promptly. Everything that happens is
//! an [`Event`] handed to a [`Reporter`]; the scheduler never prints.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

pub mod gpus;
mod isolate;
pub mod slurm;
mod watchdog;
pub use isolate::child_main;
pub use watchdog::watchdog_main;

use crate::cache::{Cache, Check, EntryState, Meta};
use crate::ops::{ChildRegistry, Device, InputItem, OpContext, ProgressSink};
use crate::plan::Plan;
use crate::spec::DeviceChoice;

#[derive(Debug, Clone)]
pub struct Options {
    pub jobs: usize,
    /// The GPUs stages may use, one stage on each at a time (empty: none).
    pub gpus: Vec<Device>,
    /// The GPU backend of cluster jobs that ask for a GPU (the job sees its GPU as index 0).
    pub gpu_backend: Option<crate::ml::device::GpuBackend>,
    /// Why `gpus` is empty, for the error that refuses a `device: gpu` stage.
    pub no_gpu_reason: String,
    /// Nodes to recompute even when cached.
    pub force: HashSet<usize>,
    /// Run only these nodes and what they need (all when `None`).
    pub only: Option<Vec<usize>>,
    pub dry_run: bool,
    /// Check the hashes of cached entries before serving them (not only their sizes).
    pub verify: bool,
    /// Submit stages to Slurm (all but those that run locally); `None`: run everything here.
    pub slurm: Option<Arc<slurm::Slurm>>,
}

#[derive(Debug, Clone)]
pub enum Event {
    Planned {
        total: usize,
        cached: usize,
        to_run: usize,
    },
    WouldRun {
        node: usize,
        name: String,
    },
    Started {
        node: usize,
        name: String,
        threads: usize,
        device: Device,
    },
    Progress {
        node: usize,
        message: String,
    },
    Finished {
        node: usize,
        name: String,
        seconds: f64,
        by_other_run: bool,
    },
    Failed {
        node: usize,
        name: String,
        error: String,
        log_tail: String,
        log_path: PathBuf,
    },
    Skipped {
        node: usize,
        name: String,
        because: String,
    },
    Warning(String),
    Interrupted,
}

pub trait Reporter {
    fn event(&mut self, event: &Event);
}

/// What became of each node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    NotTargeted,
    Pending,
    Running,
    Cached,
    Ran,
    Failed,
    Skipped,
}

#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub ran: usize,
    pub cached: usize,
    pub failed: usize,
    pub skipped: usize,
    pub interrupted: bool,
    pub states: Vec<NodeState>,
    pub failures: Vec<(String, String, String)>,
    /// `device: auto` stages that failed on a GPU and ran on the CPU instead: name, reason.
    pub fallbacks: Vec<(String, String)>,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.skipped == 0 && !self.interrupted
    }
}

enum Message {
    Progress(usize, String),
    Done(usize, Outcome),
}

enum Outcome {
    Ran {
        seconds: f64,
    },
    ByOtherRun,
    Failed {
        error: String,
        log_tail: String,
        log_path: PathBuf,
    },
    Cancelled,
}

/// Child processes of running stages (each leads its own process group), so that Ctrl-C can
/// stop them. Process-wide, because the second Ctrl-C handler must reach them too.
static CHILDREN: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

struct Children;

impl ChildRegistry for Children {
    fn register(&self, pid: u32) {
        CHILDREN
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_default()
            .insert(pid);
        watchdog::watch(pid);
    }
    fn unregister(&self, pid: u32) {
        if let Some(set) = CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            set.remove(&pid);
        }
        watchdog::unwatch(pid);
    }
}

/// Sends `signal` to every running stage's process group.
pub fn signal_children(signal: libc::c_int) {
    if let Some(set) = CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        for &pid in set {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
            unsafe {
                libc::kill(-(pid as i32), signal);
            }
        }
    }
}

struct ChannelProgress {
    node: usize,
    tx: Mutex<Sender<Message>>,
}

impl ProgressSink for ChannelProgress {
    fn report(&self, message: String) {
        let _ = self
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Message::Progress(self.node, message));
    }
}

pub fn run(
    plan: &Plan,
    cache: &Cache,
    opts: &Options,
    cancel: Arc<AtomicBool>,
    reporter: &mut dyn Reporter,
) -> Result<Summary> {
    let n = plan.nodes.len();
    let mut state = vec![NodeState::NotTargeted; n];
    match &opts.only {
        None => state.fill(NodeState::Pending),
        Some(targets) => {
            let mut stack = targets.clone();
            while let Some(node) = stack.pop() {
                if state[node] == NodeState::NotTargeted {
                    state[node] = NodeState::Pending;
                    stack.extend(plan.nodes[node].deps.iter().copied());
                }
            }
        }
    }
    // An entry is served only after a check (sizes, or with --verify hashes); a damaged one is
    // recomputed by its worker, which moves it aside under the key's lock first.
    let how = if opts.verify {
        Check::Hashes
    } else {
        Check::Sizes
    };
    let mut suspect = vec![false; n];
    // Checking is a few system calls per entry: in parallel, a no-op rerun of a wide sweep
    // stays fast.
    let checks: Vec<Option<EntryState>> = {
        use rayon::prelude::*;
        (0..n)
            .into_par_iter()
            .map(|i| {
                (state[i] == NodeState::Pending && !opts.force.contains(&i))
                    .then(|| cache.check(&plan.nodes[i].key, how))
            })
            .collect()
    };
    for (i, check) in checks.into_iter().enumerate() {
        let Some(check) = check else { continue };
        match check {
            EntryState::Ok(_) => state[i] = NodeState::Cached,
            EntryState::Missing => {}
            EntryState::Damaged(why) => {
                suspect[i] = true;
                reporter.event(&Event::Warning(format!(
                    "the cached entry of `{}` is damaged ({why}): recomputing it",
                    plan.node_name(i)
                )));
            }
        }
    }
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, node) in plan.nodes.iter().enumerate() {
        for &d in &node.deps {
            dependents[d].push(i);
        }
    }
    let mut waiting: Vec<usize> = plan
        .nodes
        .iter()
        .map(|node| {
            node.deps
                .iter()
                .filter(|&&d| state[d] != NodeState::Cached)
                .count()
        })
        .collect();
    let cached = state.iter().filter(|&&s| s == NodeState::Cached).count();
    let to_run = state.iter().filter(|&&s| s == NodeState::Pending).count();
    reporter.event(&Event::Planned {
        total: cached + to_run,
        cached,
        to_run,
    });

    // A stage that must have a GPU, in a run without one, stops the run before anything runs.
    if opts.gpus.is_empty()
        && let Some(i) = (0..n).find(|&i| {
            state[i] == NodeState::Pending
                && plan.nodes[i].device == DeviceChoice::Gpu
                && (opts.slurm.is_none() || plan.nodes[i].local)
        })
    {
        anyhow::bail!(
            "`{}` needs a GPU (`device: gpu` or `resources: {{gpu: 1}}`) but this run has none ({}); `device: auto` runs it on the CPU instead",
            plan.node_name(i),
            if opts.no_gpu_reason.is_empty() {
                "none found"
            } else {
                &opts.no_gpu_reason
            }
        );
    }
    let mut summary = Summary {
        cached,
        ..Summary::default()
    };
    if opts.dry_run {
        for i in (0..n).filter(|&i| state[i] == NodeState::Pending) {
            reporter.event(&Event::WouldRun {
                node: i,
                name: plan.node_name(i).to_string(),
            });
        }
        summary.states = state;
        return Ok(summary);
    }

    // Ready nodes by their critical path, longest first: a stage's own estimated wall time plus
    // the longest chain of pending stages that wait for it (ties in plan order). Ordering by a
    // stage's own length alone would start a long stage off the critical path first and leave
    // the longest chain waiting. The cost hints are CPU time; more threads finish sooner.
    let wall =
        |i: usize| plan.nodes[i].cost / plan.nodes[i].threads.clamp(1, opts.jobs.max(1)) as f64;
    let mut critical = vec![0.0f64; n];
    // Nodes are in topological order, so every dependent comes later.
    for i in (0..n).rev() {
        if state[i] != NodeState::Pending {
            continue;
        }
        let after = dependents[i]
            .iter()
            .filter(|&&d| state[d] == NodeState::Pending)
            .map(|&d| critical[d])
            .fold(0.0, f64::max);
        critical[i] = wall(i) + after;
    }
    let priority = |a: &usize, b: &usize| critical[*b].total_cmp(&critical[*a]).then(a.cmp(b));
    let mut ready: Vec<usize> = (0..n)
        .filter(|&i| state[i] == NodeState::Pending && waiting[i] == 0)
        .collect();
    ready.sort_by(priority);
    let jobs = opts.jobs.max(1);
    let mut free_threads = jobs;
    let mut free_gpus: Vec<Device> = opts.gpus.iter().rev().copied().collect();
    // Per running node: the local threads and GPU it holds, and whether it is a cluster job.
    let mut running: HashMap<usize, (usize, Option<Device>, bool)> = HashMap::new();
    // Running elastic stages: their own threads and the cell of their current count. `lent`:
    // the idle threads lent to one of them (node, count), reclaimed when a stage becomes ready.
    let mut elastic: HashMap<usize, (usize, Arc<AtomicUsize>)> = HashMap::new();
    let mut lent: Option<(usize, usize)> = None;
    // `device: auto` stages sent back to the CPU after failing on a GPU.
    let mut on_cpu_instead = vec![false; n];
    let mut jobs_running = 0usize;
    let max_jobs = opts
        .slurm
        .as_ref()
        .map_or(0, |s| s.settings().max_jobs.max(1));
    let children = Arc::new(Children);
    let (tx, rx) = mpsc::channel::<Message>();
    let mut warned_gpu = false;
    let cluster_gpu = opts
        .gpu_backend
        .or_else(crate::ml::device::GpuBackend::preferred)
        .map_or(Device::Cpu, |b| b.device(0));

    loop {
        if cancel.load(Ordering::Relaxed) && !summary.interrupted {
            summary.interrupted = true;
            signal_children(libc::SIGTERM);
            if let Some(slurm) = &opts.slurm {
                slurm.cancel_all();
            }
            reporter.event(&Event::Interrupted);
        }
        // Lent threads come back as soon as a stage is ready to use them.
        if !ready.is_empty()
            && let Some((node, count)) = lent.take()
        {
            if let Some((own, cell)) = elastic.get(&node) {
                cell.store(*own, Ordering::Relaxed);
            }
            free_threads += count;
        }
        // First every ready stage that gets all the threads it asks for; then, if threads are
        // still free and nothing else fits, a stage that takes "all threads" (not pinned by
        // `resources`) starts on what is free rather than leaving cores idle until, say, a long
        // one-thread training ends. Thread counts do not change results (tested).
        for shrink in [false, true] {
            if summary.interrupted {
                break;
            }
            let mut i = 0;
            while i < ready.len() {
                let node_index = ready[i];
                let node = &plan.nodes[node_index];
                let wanted = node.threads.clamp(1, jobs);
                // A cluster job asks Slurm for its threads and GPU; it holds none of ours.
                let remote = opts.slurm.is_some() && !node.local;
                if remote {
                    if jobs_running >= max_jobs {
                        i += 1;
                        continue;
                    }
                    let device = if node.device == DeviceChoice::Gpu {
                        cluster_gpu
                    } else {
                        Device::Cpu
                    };
                    ready.remove(i);
                    jobs_running += 1;
                    running.insert(node_index, (0, None, true));
                    state[node_index] = NodeState::Running;
                    reporter.event(&Event::Started {
                        node: node_index,
                        name: plan.node_name(node_index).to_string(),
                        threads: wanted,
                        device,
                    });
                    spawn_worker(
                        plan,
                        cache,
                        node_index,
                        wanted,
                        device,
                        opts,
                        if suspect[node_index] {
                            Check::Hashes
                        } else {
                            how
                        },
                        &tx,
                        &cancel,
                        &children,
                        None,
                    )?;
                    continue;
                }
                let wants_gpu = match node.device {
                    _ if on_cpu_instead[node_index] => false,
                    DeviceChoice::Cpu => false,
                    DeviceChoice::Gpu | DeviceChoice::Auto if !opts.gpus.is_empty() => true,
                    DeviceChoice::Auto => false,
                    DeviceChoice::Gpu => {
                        // `run` refuses this before scheduling; kept safe for other callers.
                        if !warned_gpu {
                            reporter.event(&Event::Warning(format!(
                                "`{}` asks for a GPU but this run has none: running on the CPU",
                                plan.node_name(node_index)
                            )));
                            warned_gpu = true;
                        }
                        false
                    }
                };
                // A GPU stage holds one thread (the one driving the device) and its GPU, so
                // CPU stages keep the other cores busy meanwhile.
                let (threads, device) = if wants_gpu {
                    if free_threads == 0 || free_gpus.is_empty() {
                        i += 1;
                        continue; // wait for the GPU slot
                    }
                    (1, free_gpus.pop().unwrap_or(Device::Cpu))
                } else if wanted <= free_threads {
                    (wanted, Device::Cpu)
                } else if shrink && node.threads == usize::MAX && free_threads > 0 {
                    (free_threads, Device::Cpu)
                } else {
                    i += 1;
                    continue;
                };
                ready.remove(i);
                free_threads -= threads;
                let gpu = device.is_gpu().then_some(device);
                running.insert(node_index, (threads, gpu, false));
                state[node_index] = NodeState::Running;
                reporter.event(&Event::Started {
                    node: node_index,
                    name: plan.node_name(node_index).to_string(),
                    threads,
                    device,
                });
                // A CPU stage that can widen gets a cell through which idle threads are lent.
                let cell = (device == Device::Cpu && node.op.elastic(&node.params))
                    .then(|| Arc::new(AtomicUsize::new(threads)));
                if let Some(cell) = &cell {
                    elastic.insert(node_index, (threads, cell.clone()));
                }
                spawn_worker(
                    plan,
                    cache,
                    node_index,
                    threads,
                    device,
                    opts,
                    if suspect[node_index] {
                        Check::Hashes
                    } else {
                        how
                    },
                    &tx,
                    &cancel,
                    &children,
                    cell,
                )?;
            }
        }
        if running.is_empty() {
            break;
        }
        // Threads nothing ready can use go to the running elastic stage on the longest path.
        if free_threads > 0 && ready.is_empty() && !summary.interrupted {
            let borrower = lent.map(|(node, _)| node).or_else(|| {
                elastic
                    .keys()
                    .copied()
                    .max_by(|a, b| critical[*a].total_cmp(&critical[*b]).then(b.cmp(a)))
            });
            if let Some(node) = borrower
                && let Some((own, cell)) = elastic.get(&node)
            {
                let count = lent.map_or(0, |(_, count)| count) + free_threads;
                cell.store(own + count, Ordering::Relaxed);
                lent = Some((node, count));
                free_threads = 0;
            }
        }
        let message = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let (node_index, outcome) = match message {
            Message::Progress(node, message) => {
                reporter.event(&Event::Progress { node, message });
                continue;
            }
            Message::Done(node, outcome) => (node, outcome),
        };
        let mut ran_on_gpu = None;
        elastic.remove(&node_index);
        if let Some((node, count)) = lent
            && node == node_index
        {
            free_threads += count;
            lent = None;
        }
        if let Some((threads, gpu, remote)) = running.remove(&node_index) {
            free_threads += threads;
            free_gpus.extend(gpu);
            ran_on_gpu = gpu;
            jobs_running -= usize::from(remote);
        }
        let name = plan.node_name(node_index).to_string();
        match outcome {
            Outcome::Ran { seconds } => {
                state[node_index] = NodeState::Ran;
                summary.ran += 1;
                reporter.event(&Event::Finished {
                    node: node_index,
                    name,
                    seconds,
                    by_other_run: false,
                });
            }
            Outcome::ByOtherRun => {
                state[node_index] = NodeState::Cached;
                summary.cached += 1;
                reporter.event(&Event::Finished {
                    node: node_index,
                    name,
                    seconds: 0.0,
                    by_other_run: true,
                });
            }
            Outcome::Cancelled => {
                state[node_index] = NodeState::Pending;
                continue;
            }
            Outcome::Failed { error, .. }
                if ran_on_gpu.is_some()
                    && plan.nodes[node_index].device == DeviceChoice::Auto
                    && !summary.interrupted =>
            {
                // Nothing of the failed attempt was cached; the CPU computes the same stage.
                let gpu = ran_on_gpu.unwrap_or(Device::Cpu);
                reporter.event(&Event::Warning(format!(
                    "`{name}` failed on {gpu} ({error}): running it on the CPU instead"
                )));
                summary.fallbacks.push((name, error));
                on_cpu_instead[node_index] = true;
                state[node_index] = NodeState::Pending;
                let at = ready.partition_point(|r| priority(r, &node_index).is_lt());
                ready.insert(at, node_index);
                continue;
            }
            Outcome::Failed {
                error,
                log_tail,
                log_path,
            } => {
                state[node_index] = NodeState::Failed;
                summary.failed += 1;
                summary
                    .failures
                    .push((name.clone(), error.clone(), log_tail.clone()));
                reporter.event(&Event::Failed {
                    node: node_index,
                    name: name.clone(),
                    error,
                    log_tail,
                    log_path,
                });
                skip_dependents(
                    plan,
                    node_index,
                    &name,
                    &dependents,
                    &mut state,
                    &mut summary,
                    reporter,
                );
                continue;
            }
        }
        for &d in &dependents[node_index] {
            if state[d] == NodeState::Pending {
                waiting[d] -= 1;
                if waiting[d] == 0 {
                    let at = ready.partition_point(|r| priority(r, &d).is_lt());
                    ready.insert(at, d);
                }
            }
        }
    }
    summary.states = state;
    Ok(summary)
}

fn skip_dependents(
    plan: &Plan,
    failed: usize,
    failed_name: &str,
    dependents: &[Vec<usize>],
    state: &mut [NodeState],
    summary: &mut Summary,
    reporter: &mut dyn Reporter,
) {
    let mut stack = dependents[failed].clone();
    while let Some(d) = stack.pop() {
        if state[d] != NodeState::Pending {
            continue;
        }
        state[d] = NodeState::Skipped;
        summary.skipped += 1;
        reporter.event(&Event::Skipped {
            node: d,
            name: plan.node_name(d).to_string(),
            because: format!("`{failed_name}` failed"),
        });
        stack.extend(dependents[d].iter().copied());
    }
}

#[allow(clippy::too_many_arguments)]
fn spawn_worker(
    plan: &Plan,
    cache: &Cache,
    node_index: usize,
    threads: usize,
    device: Device,
    opts: &Options,
    check: Check,
    tx: &Sender<Message>,
    cancel: &Arc<AtomicBool>,
    children: &Arc<Children>,
    lent: Option<Arc<AtomicUsize>>,
) -> Result<()> {
    let node = &plan.nodes[node_index];
    let inputs: Vec<(String, Vec<InputItem>)> = node
        .inputs
        .iter()
        .map(|(name, bindings)| {
            let items = bindings
                .iter()
                .map(|b| InputItem {
                    stage: b.stage.clone(),
                    labels: b.labels.clone(),
                    dir: cache.out_dir(&plan.nodes[b.node].key),
                })
                .collect();
            (name.clone(), items)
        })
        .collect();
    let job = Job {
        key: node.key.clone(),
        name: plan.node_name(node_index).to_string(),
        stage_names: node
            .stages
            .iter()
            .map(|&s| plan.stages[s].name.clone())
            .collect(),
        op: node.op,
        params: node.params.clone(),
        fingerprint: node.fingerprint.clone(),
        inputs,
        root: plan.root.clone(),
        cache: cache.clone(),
        threads,
        device,
        force: opts.force.contains(&node_index),
        check,
        slurm: opts
            .slurm
            .as_ref()
            .filter(|_| !node.local)
            .map(|slurm| RemoteJob {
                slurm: slurm.clone(),
                gpus: node.gpu,
                mem_mb: node.mem_mb,
                time_s: node.time_s,
            }),
        lent,
    };
    let tx = tx.clone();
    let cancel = cancel.clone();
    let children = children.clone();
    std::thread::Builder::new()
        .name(format!("stage-{node_index}"))
        .spawn(move || {
            let progress = ChannelProgress {
                node: node_index,
                tx: Mutex::new(tx.clone()),
            };
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                job.execute(&progress, &cancel, children.as_ref())
            }))
            .unwrap_or_else(|panic| {
                let text = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Outcome::Failed {
                    error: format!("the op panicked: {text}"),
                    log_tail: String::new(),
                    log_path: PathBuf::new(),
                }
            });
            let _ = tx.send(Message::Done(node_index, outcome));
        })
        .context("starting a worker thread")?;
    Ok(())
}

/// Everything a worker thread needs, owned.
struct Job {
    key: String,
    name: String,
    stage_names: Vec<String>,
    op: &'static dyn crate::ops::Op,
    params: crate::ops::Params,
    fingerprint: serde_json::Value,
    inputs: Vec<(String, Vec<InputItem>)>,
    root: PathBuf,
    cache: Cache,
    threads: usize,
    device: Device,
    force: bool,
    /// How closely to look at an entry found after taking the lock.
    check: Check,
    /// Run as a Slurm job with these resources instead of here.
    slurm: Option<RemoteJob>,
    /// An elastic stage's thread count, raised while the scheduler lends it idle threads.
    lent: Option<Arc<AtomicUsize>>,
}

struct RemoteJob {
    slurm: Arc<slurm::Slurm>,
    gpus: usize,
    mem_mb: Option<u64>,
    time_s: Option<u64>,
}

impl Job {
    fn execute(
        &self,
        progress: &dyn ProgressSink,
        cancel: &AtomicBool,
        children: &dyn ChildRegistry,
    ) -> Outcome {
        match self.try_execute(progress, cancel, children) {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Failed {
                error: format!("{e:#}"),
                log_tail: String::new(),
                log_path: PathBuf::new(),
            },
        }
    }

    fn try_execute(
        &self,
        progress: &dyn ProgressSink,
        cancel: &AtomicBool,
        children: &dyn ChildRegistry,
    ) -> Result<Outcome> {
        let cache = &self.cache;
        let lock = cache.lock(&self.key)?;
        // A Slurm job that a killed driver left computing this key (see `slurm`).
        let claim = cache.claim_path(&self.key);
        let adopted = self
            .slurm
            .as_ref()
            .and_then(|_| slurm::read_claim(&claim, &cache.tmp_dir(), &self.key));
        match cache.check(&self.key, self.check) {
            EntryState::Ok(_) if !self.force => {
                let _ = std::fs::remove_file(&claim);
                return Ok(Outcome::ByOtherRun);
            }
            EntryState::Damaged(_) => {
                cache.quarantine(&self.key, &lock)?;
            }
            EntryState::Ok(_) | EntryState::Missing => {}
        }
        if cancel.load(Ordering::Relaxed) {
            return Ok(Outcome::Cancelled);
        }
        let pending = match &adopted {
            Some((_, dir)) => crate::cache::Pending {
                key: self.key.clone(),
                dir: dir.clone(),
            },
            None => cache.begin(&self.key, &lock)?,
        };
        let out_dir = pending.out_dir();
        let log_path = pending.log_path();
        let started_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let start = Instant::now();
        let ctx = OpContext {
            stage: &self.name,
            params: &self.params,
            inputs: &self.inputs,
            out_dir: &out_dir,
            root: &self.root,
            log_path: &log_path,
            threads: self.threads,
            device: self.device,
            progress,
            cancel,
            child_registry: children,
            lock_fd: Some(lock.raw_fd()),
            lent_threads: self.lent.as_ref(),
        };
        let result = if let Some(remote) = &self.slurm {
            let request = slurm::Request {
                name: &self.name,
                threads: self.threads,
                gpus: remote.gpus,
                mem_mb: remote.mem_mb,
                time_s: remote.time_s,
            };
            let ended = remote.slurm.run(
                self.op.name(),
                &ctx,
                &request,
                &pending.dir,
                &claim,
                adopted.map(|(id, _)| id),
            );
            match ended {
                slurm::Ended::Succeeded => Ok(()),
                slurm::Ended::Failed(e) | slurm::Ended::Lost(e) => {
                    let _ = std::fs::remove_file(&claim);
                    Err(anyhow::anyhow!(e))
                }
                // The claim stays: the next driver finds the job cancelled and starts afresh.
                slurm::Ended::Cancelled => return Ok(Outcome::Cancelled),
            }
        } else if self.op.isolate() {
            isolate::run_in_child(self.op.name(), &ctx)
        } else {
            self.op.run(&ctx)
        };
        let seconds = start.elapsed().as_secs_f64();
        if cancel.load(Ordering::Relaxed) {
            cache.discard(pending);
            return Ok(Outcome::Cancelled);
        }
        if let Err(e) = result {
            return Ok(failed(cache, pending, "stage failed", &e));
        }
        let meta = Meta {
            key: self.key.clone(),
            op: self.op.name().to_string(),
            op_version: self.op.version(),
            engine_version: env!("CARGO_PKG_VERSION").to_string(),
            stages: self.stage_names.clone(),
            fingerprint: self.fingerprint.clone(),
            started_at,
            duration_s: seconds,
            threads: self.threads,
            device: self.device.to_string(),
            outputs: Vec::new(),
        };
        // A commit that fails (a full disk, an output that is a symbolic link) fails the stage
        // like any other error: its partial outputs go, its log is kept.
        if let Err(e) = cache.commit(&pending, &meta) {
            let _ = std::fs::remove_file(&claim);
            return Ok(failed(cache, pending, "could not commit the entry", &e));
        }
        let _ = std::fs::remove_file(&claim);
        Ok(Outcome::Ran { seconds })
    }
}

/// A failed attempt: the error goes into its log, the log is kept under `failed/`, partial
/// outputs are deleted.
fn failed(cache: &Cache, pending: crate::cache::Pending, what: &str, e: &anyhow::Error) -> Outcome {
    let error = format!("{e:#}");
    let log_path = pending.log_path();
    append_log(&log_path, &format!("pipeline: {what}: {error}"));
    let log_tail = tail(&log_path, 20);
    Outcome::Failed {
        error,
        log_tail,
        log_path: cache.keep_failed(pending),
    }
}

fn append_log(path: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::File::options()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// The last `lines` lines of a log (reading at most its last 64 KiB).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
