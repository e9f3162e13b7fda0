//! The stage kinds. Each op is one file declaring its YAML name, version, parameters, inputs,
//! outputs and resources, plus `run`. The engine knows ops only through the [`Op`] trait and
//! the [`registry`] list: adding an op is one file and one line there.
//!
//! An op never sees the cache or the scheduler: it gets an [`OpContext`] with its resolved
//! parameters, its input directories, a fresh output directory, a thread budget, a device, a
//! progress sink and a cancel flag, and writes only into its output directory.

mod baselines;
mod data_csv;
mod data_images;
mod features_backbone;
mod params;
mod plot_boundary;
mod plot_curves;
mod plot_grad_norms;
mod plot_images;
mod plot_vs_param;
mod pretrain;
mod replicates;
mod report;
mod runs;
mod select;
mod shell;
mod sine;
mod synthetic_faces;
mod synthetic_map;
mod synthetic_pretrain;
mod table;
mod train_cnn;
mod train_gbdt;
mod train_logistic;
mod train_mlp;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;

pub use params::{ParamSpec, ParamType, Params};

/// How an input binds to a referenced stage that is a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// One stage: when the reference is a sweep, this stage is mapped (one member per upstream member).
    One,
    /// All members of the referenced stage(s), gathered into one list.
    Gather,
}

#[derive(Debug, Clone, Copy)]
pub struct InputSpec {
    pub name: &'static str,
    pub kind: InputKind,
    pub doc: &'static str,
    /// A stage without a required input is an error; an optional one may be left out.
    pub required: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct OutputSpec {
    pub name: &'static str,
    pub doc: &'static str,
}

/// Whether an op can compute on a GPU, given its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuUse {
    /// Never (a plot, a table, the native MLP engine): `device: gpu` is a plan error.
    Never,
    /// When asked (`device: gpu|auto` or `resources: {gpu: 1}`); the CPU by default.
    Capable,
    /// Whenever the run has a GPU (`device: auto` by default).
    Preferred,
}

/// The device a stage is given to compute on.
pub use crate::ml::device::Compute as Device;

/// One input binding as the op sees it: the producing stage's name, its sweep labels and
/// the directory holding its outputs (read-only).
#[derive(Debug, Clone)]
pub struct InputItem {
    pub stage: String,
    pub labels: Vec<(String, serde_json::Value)>,
    pub dir: PathBuf,
}

/// Receives progress lines ("epoch 12/50 loss 0.31") for the live display.
pub trait ProgressSink: Send + Sync {
    fn report(&self, message: String);
}

pub struct OpContext<'a> {
    pub stage: &'a str,
    pub params: &'a Params,
    pub inputs: &'a [(String, Vec<InputItem>)],
    pub out_dir: &'a Path,
    /// The project root: relative paths in parameters are resolved against it.
    pub root: &'a Path,
    /// The log file of this stage (shown on failure, kept in the entry).
    pub log_path: &'a Path,
    pub threads: usize,
    pub device: Device,
    pub progress: &'a dyn ProgressSink,
    pub cancel: &'a AtomicBool,
    /// Called with a child process id while it runs, so that Ctrl-C can stop it.
    pub child_registry: &'a dyn ChildRegistry,
    /// The descriptor of the key's lock; processes the stage starts inherit it, so the key stays
    /// locked for as long as any of them runs (even one left behind by a killed engine).
    pub lock_fd: Option<i32>,
    /// For an elastic op ([`Op::elastic`]): the threads the scheduler currently lets the stage
    /// use (its own plus any lent), changed while it runs.
    pub lent_threads: Option<&'a std::sync::Arc<std::sync::atomic::AtomicUsize>>,
}

impl OpContext<'_> {
    /// Prepares a command that does this stage's work: its own process group (Ctrl-C reaches the
    /// engine, which stops the whole group; the engine's watchdog kills the group if the engine
    /// dies) and stdin from /dev/null. Start it with [`OpContext::spawn`].
    pub fn stage_process(&self, command: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
        command.stdin(std::process::Stdio::null());
    }

    /// Starts a stage process that inherits the key's lock, so that the key stays locked while
    /// the command or anything it leaves behind (a background job) runs.
    pub fn spawn(
        &self,
        command: &mut std::process::Command,
    ) -> std::io::Result<std::process::Child> {
        spawn_exclusive(command, self.lock_fd)
    }
}

/// Serialises process starts: while one start lets a lock descriptor through, no other child
/// may inherit it.
static SPAWN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Starts `command`; `inherit` (a descriptor) stays open in the child. The descriptor is made
/// inheritable only for the moment of the start, under a process-wide lock, instead of in a
/// `pre_exec` hook: a hook turns `posix_spawn` into a fork of the whole engine, measured at ~8%
/// more per trivial stage. (Not through stdin: `sh` gives background jobs /dev/null as stdin.)
pub fn spawn_exclusive(
    command: &mut std::process::Command,
    inherit: Option<i32>,
) -> std::io::Result<std::process::Child> {
    let _guard = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: fcntl on a descriptor the caller keeps open; only its close-on-exec flag changes.
    let set_cloexec = |on: bool| {
        if let Some(fd) = inherit {
            unsafe {
                libc::fcntl(fd, libc::F_SETFD, if on { libc::FD_CLOEXEC } else { 0 });
            }
        }
    };
    set_cloexec(false);
    let child = command.spawn();
    set_cloexec(true);
    child
}

pub trait ChildRegistry: Send + Sync {
    fn register(&self, pid: u32);
    fn unregister(&self, pid: u32);
}

impl OpContext<'_> {
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The items bound to an input name (empty if the stage has no such input).
    pub fn input(&self, name: &str) -> &[InputItem] {
        self.inputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, items)| items.as_slice())
            .unwrap_or(&[])
    }

    pub fn resolve(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    /// Appends a line to the stage's log (kept in the cache entry, shown on failure).
    pub fn log(&self, line: &str) -> Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.log_path)?;
        writeln!(file, "{line}")?;
        Ok(())
    }
}

pub trait Op: Send + Sync {
    /// The name used in YAML (`op: shell`).
    fn name(&self) -> &'static str;
    /// One line for `pipeline ops`.
    fn doc(&self) -> &'static str;
    /// Part of every stage key: bump it when the op's outputs change meaning.
    fn version(&self) -> u32;
    fn params(&self) -> &'static [ParamSpec];
    /// Whether parameters beyond [`Op::params`] are accepted (the shell op exports them).
    fn open_params(&self) -> bool {
        false
    }
    /// Declared inputs. An op with [`Op::open_inputs`] accepts any input name.
    fn inputs(&self) -> &'static [InputSpec] {
        &[]
    }
    /// Any input name is accepted: a string reference binds One, a list Gather.
    fn open_inputs(&self) -> bool {
        false
    }
    fn outputs(&self) -> &'static [OutputSpec] {
        &[]
    }
    /// Threads the op can use well (the scheduler gives at most `--jobs`; `usize::MAX`: all).
    fn threads(&self) -> usize {
        1
    }
    /// Whether this stage can use a GPU (`ctx.device`); the scheduler decides which device.
    fn gpu(&self, _params: &Params) -> GpuUse {
        GpuUse::Never
    }
    /// Cheap enough to run on the submitting machine under a cluster executor (a plot, a
    /// table): a cluster job would cost more in queueing than the work itself.
    fn runs_local(&self) -> bool {
        false
    }
    /// Memory (MiB) to ask a cluster for; `None` leaves the cluster's default.
    fn memory_mb(&self, _params: &Params) -> Option<u64> {
        None
    }
    /// Whether the outputs land in `results/` unless the stage says otherwise.
    fn publishes(&self) -> bool {
        false
    }
    /// Run in a child process of its own (ops whose library serialises threads, or may abort).
    fn isolate(&self) -> bool {
        false
    }
    /// Whether a running stage can use more threads than it started with (and give them back):
    /// the scheduler lends it idle cores while no other stage is ready. Such an op reads the
    /// current count between steps ([`crate::ml::granted_threads`] in its child process) and its
    /// results must not depend on it.
    fn elastic(&self, _params: &Params) -> bool {
        false
    }
    /// A rough relative run time (seconds, order of magnitude), so that the scheduler can start
    /// the longest stages first and no long stage is left to run alone at the end.
    fn cost_hint(&self, _params: &Params) -> f64 {
        0.01
    }
    /// Files (relative to the project root) whose content is part of the stage key.
    fn file_deps(&self, _params: &Params) -> Result<Vec<PathBuf>> {
        Ok(Vec::new())
    }
    fn run(&self, ctx: &OpContext) -> Result<()>;
}

/// Every op, in the order `pipeline ops` lists them.
pub fn registry() -> &'static [&'static dyn Op] {
    static OPS: &[&dyn Op] = &[
        &shell::Shell,
        &data_csv::DataCsv,
        &synthetic_map::SyntheticMap,
        &sine::SineFeatures,
        &train_mlp::TrainMlp,
        &select::Select,
        &table::Table,
        &plot_curves::PlotCurves,
        &plot_vs_param::PlotVsParam,
        &plot_boundary::PlotBoundary,
        &plot_grad_norms::PlotGradNorms,
        &synthetic_faces::SyntheticFaces,
        &data_images::DataImages,
        &synthetic_pretrain::SyntheticPretrain,
        &pretrain::Pretrain,
        &train_cnn::TrainCnn,
        &features_backbone::FeaturesBackbone,
        &train_logistic::TrainLogistic,
        &train_gbdt::TrainGbdt,
        &plot_images::PlotImages,
        &report::Report,
    ];
    OPS
}

pub fn find(name: &str) -> Option<&'static dyn Op> {
    registry().iter().copied().find(|op| op.name() == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ops_are_unique_and_documented() {
        let mut names = HashSet::new();
        for op in registry() {
            assert!(names.insert(op.name()), "duplicate op {}", op.name());
            assert!(!op.doc().is_empty(), "op {} has no doc", op.name());
            for p in op.params() {
                assert!(
                    !p.doc.is_empty(),
                    "param {}.{} has no doc",
                    op.name(),
                    p.name
                );
                if let Some(default) = p.default {
                    let value: yaml_serde::Value =
                        yaml_serde::from_str(default).expect("default parses");
                    let json = crate::spec::yaml_to_json(&value).expect("default converts");
                    p.ty.check(&json).unwrap_or_else(|e| {
                        panic!(
                            "default of {}.{} does not type-check: {e}",
                            op.name(),
                            p.name
                        )
                    });
                }
            }
        }
    }
}
