//! Running an op in a child process of its own (`pipeline __run-op`), for ops that ask for it.
//!
//! Why: burn's autodiff keeps one process-wide graph lock, so two trainings in threads of one
//! process slow each other down (~40% per step, measured); in two processes they run at full
//! speed. A child also contains a crash (an abort in a native library fails one stage, not the
//! run) and is stopped with its process group on Ctrl-C.
//!
//! The parent writes a [`ChildJob`] as JSON to the child's stdin; the child reports progress as
//! lines on stdout and its error on stderr, and exits 0 on success.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::ops::{self, ChildRegistry, Device, InputItem, OpContext, Params, ProgressSink};

pub(super) const PROGRESS_PREFIX: &str = "\u{1e}progress ";

#[derive(Serialize, Deserialize)]
pub(super) struct ChildJob {
    op: String,
    stage: String,
    params: serde_json::Map<String, serde_json::Value>,
    inputs: Vec<(String, Vec<ChildInput>)>,
    out_dir: PathBuf,
    root: PathBuf,
    log_path: PathBuf,
    threads: usize,
    #[serde(default = "cpu")]
    device: Device,
}

#[derive(Serialize, Deserialize)]
struct ChildInput {
    stage: String,
    labels: Vec<(String, serde_json::Value)>,
    dir: PathBuf,
}

/// The running binary. On Linux `/proc/self/exe` opens the file this process was started from even
/// after it was replaced or deleted (a `cargo build` during a long run), where the path that
/// `current_exe` returns would start a different binary or fail with "No such file or directory".
fn own_executable() -> Result<PathBuf> {
    let proc_exe = PathBuf::from("/proc/self/exe");
    if proc_exe.exists() {
        return Ok(proc_exe);
    }
    std::env::current_exe().context("locating the pipeline executable")
}

impl ChildJob {
    pub(super) fn new(op_name: &str, ctx: &OpContext) -> ChildJob {
        ChildJob {
            op: op_name.to_string(),
            stage: ctx.stage.to_string(),
            params: ctx.params.0.clone(),
            inputs: ctx
                .inputs
                .iter()
                .map(|(name, items)| {
                    let items = items
                        .iter()
                        .map(|i| ChildInput {
                            stage: i.stage.clone(),
                            labels: i.labels.clone(),
                            dir: i.dir.clone(),
                        })
                        .collect();
                    (name.clone(), items)
                })
                .collect(),
            out_dir: ctx.out_dir.to_path_buf(),
            root: ctx.root.to_path_buf(),
            log_path: ctx.log_path.to_path_buf(),
            threads: ctx.threads,
            device: ctx.device,
        }
    }
}

/// What a job run from a file (a cluster job) leaves beside it: the engine takes success from
/// here, not only from the cluster's word.
#[derive(Serialize, Deserialize)]
pub(super) struct JobResult {
    pub ok: bool,
    pub error: String,
}

/// Parent side: runs `ctx`'s op in a child process and waits for it.
pub fn run_in_child(op_name: &str, ctx: &OpContext) -> Result<()> {
    let job = ChildJob::new(op_name, ctx);
    let mut command = Command::new(own_executable()?);
    command.arg("__run-op");
    ctx.stage_process(&mut command);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ctx
        .spawn(&mut command)
        .context("starting a child process for the stage")?;
    ctx.child_registry.register(child.id());
    let done = Arc::new(AtomicBool::new(false));
    let result = (|| {
        let mut stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let mut line = serde_json::to_vec(&job)?;
        line.push(b'\n');
        stdin.write_all(&line)?;
        // An elastic stage's stdin stays open: a `threads N` line follows each change of the
        // threads the scheduler lends it.
        let lender = ctx
            .lent_threads
            .map(|cell| forward_lent_threads(cell.clone(), job.threads, stdin, done.clone()));
        let mut stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        if let Some(stdout) = child.stdout.take() {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(message) = line.strip_prefix(PROGRESS_PREFIX) {
                    ctx.progress.report(message.to_string());
                }
            }
        }
        let status = child.wait().context("waiting for the stage's process")?;
        done.store(true, Ordering::Relaxed);
        if let Some(lender) = lender {
            let _ = lender.join();
        }
        let errors = errors.join().unwrap_or_default();
        if status.success() {
            return Ok(());
        }
        let message = errors.trim();
        match (message.is_empty(), status.code()) {
            (false, _) => bail!("{message}"),
            (true, Some(code)) => bail!("the stage's process exited with status {code}"),
            (true, None) => bail!("the stage's process was killed by a signal"),
        }
    })();
    // Also on an early error: the lender thread stops.
    done.store(true, Ordering::Relaxed);
    ctx.child_registry.unregister(child.id());
    result
}

/// Writes `threads N` to a child's stdin whenever the lent count changes, until `done`.
fn forward_lent_threads(
    cell: Arc<std::sync::atomic::AtomicUsize>,
    initial: usize,
    mut stdin: std::process::ChildStdin,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut told = initial;
        while !done.load(Ordering::Relaxed) {
            let now = cell.load(Ordering::Relaxed);
            if now != told {
                if writeln!(stdin, "threads {now}")
                    .and_then(|()| stdin.flush())
                    .is_err()
                {
                    return; // the child has exited
                }
                told = now;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    })
}

/// Child side of [`forward_lent_threads`]: sets [`crate::ml::granted_threads`] from each line,
/// and notes the change in the stage's log.
fn listen_for_lent_threads(stdin: std::io::Stdin, log_path: PathBuf) {
    let _ = std::thread::Builder::new()
        .name("lent-threads".into())
        .spawn(move || {
            for line in stdin.lock().lines().map_while(Result::ok) {
                let Some(n) = line
                    .strip_prefix("threads ")
                    .and_then(|n| n.trim().parse::<usize>().ok())
                else {
                    continue;
                };
                // Bounded: no stage is given more threads than a machine could have.
                let n = n.clamp(1, 4096);
                crate::ml::set_granted_threads(n);
                if let Ok(mut log) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log_path)
                {
                    let _ = writeln!(log, "pipeline: the stage now uses {n} thread(s)");
                }
            }
        });
}

struct StdoutProgress;

impl ProgressSink for StdoutProgress {
    fn report(&self, message: String) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{PROGRESS_PREFIX}{}", message.replace('\n', " "));
        let _ = out.flush();
    }
}

struct NoChildren;

impl ChildRegistry for NoChildren {
    fn register(&self, _pid: u32) {}
    fn unregister(&self, _pid: u32) {}
}

/// Child side: `pipeline __run-op` reads a job from stdin and runs it. With `--job FILE` (a
/// cluster job, which has no stdin) it reads the job from that file and writes `result.json`
/// beside it before it exits.
pub fn child_main(job_file: Option<&std::path::Path>) -> ExitCode {
    // A panic (its details are in the log) becomes the one-line error the engine shows.
    let result = std::panic::catch_unwind(|| child_run(job_file)).unwrap_or_else(|panic| {
        Err(anyhow!(
            "the op panicked: {}",
            crate::ml::device::first_panic(panic.as_ref())
        ))
    });
    if let Some(file) = job_file {
        let report = JobResult {
            ok: result.is_ok(),
            error: result
                .as_ref()
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default(),
        };
        if let Err(e) = write_result(file, &report) {
            eprintln!("pipeline: could not write the job's result: {e:#}");
            return ExitCode::from(1);
        }
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::from(1)
        }
    }
}

/// `result.json` beside the job file, written under a temporary name and renamed, so that a
/// reader never sees half of it.
fn write_result(job_file: &std::path::Path, report: &JobResult) -> Result<()> {
    let dir = job_file.parent().unwrap_or(std::path::Path::new("."));
    let tmp = dir.join(".result.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(report)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join("result.json"))
        .with_context(|| format!("writing {}", dir.join("result.json").display()))?;
    Ok(())
}

fn child_run(job_file: Option<&std::path::Path>) -> Result<()> {
    let input = match job_file {
        Some(file) => {
            std::fs::read(file).with_context(|| format!("reading the job {}", file.display()))?
        }
        None => {
            // The job is the first line; `threads N` lines may follow (an elastic stage).
            let mut input = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut input)
                .context("reading the job")?;
            input.into_bytes()
        }
    };
    let job: ChildJob = serde_json::from_slice(&input).context("parsing the job")?;
    crate::ml::set_granted_threads(job.threads);
    if job_file.is_none() {
        listen_for_lent_threads(std::io::stdin(), job.log_path.clone());
    }
    let op = ops::find(&job.op).ok_or_else(|| anyhow!("no op `{}`", job.op))?;
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    // SIGTERM from the parent (Ctrl-C) asks the op to stop at its next check.
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    let inputs: Vec<(String, Vec<InputItem>)> = job
        .inputs
        .into_iter()
        .map(|(name, items)| {
            let items = items
                .into_iter()
                .map(|i| InputItem {
                    stage: i.stage,
                    labels: i.labels,
                    dir: i.dir,
                })
                .collect();
            (name, items)
        })
        .collect();
    // Panics (a GPU runtime's, on threads of its own) go to the stage's log; the error that
    // the engine shows is the one line the op returns.
    let log_path = job.log_path.clone();
    crate::ml::device::record_panics(move |line| {
        if let Ok(mut log) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
        {
            let _ = writeln!(log, "pipeline: {line}");
        }
    });
    let params = Params(job.params);
    let ctx = OpContext {
        stage: &job.stage,
        params: &params,
        inputs: &inputs,
        out_dir: &job.out_dir,
        root: &job.root,
        log_path: &job.log_path,
        threads: job.threads,
        device: job.device,
        progress: &StdoutProgress,
        cancel: &cancel,
        child_registry: &NoChildren,
        lock_fd: None,
        lent_threads: None,
    };
    op.run(&ctx)
}

fn cpu() -> Device {
    Device::Cpu
}
