//! The Slurm executor: the engine stays the planner and scheduler and hands each stage that does
//! real work to Slurm as one batch job.
//!
//! A job runs the same binary (`pipeline __run-op --job FILE`) on a compute node. Everything it
//! touches lives on the shared filesystem, in the pending entry under the cache's `tmp/`:
//! `job.json` (the job), `job.sh` (the batch script), `slurm.out` (its stdout and stderr, with
//! the op's progress lines) and `result.json` (its outcome). Success is taken from the result
//! file, not from Slurm's state alone; the driver commits the entry by the usual atomic rename.
//!
//! One thread polls all jobs of the run with ONE `squeue` call per interval (no `sacct`, which
//! needs an accounting database; never `sbatch --wait`, which polls at 2, 8 and 32 s). Workers
//! wait on a condition variable for the state of their job.
//!
//! While a job computes a key, the driver holds the key's lock and a claim file
//! (`locks/<key>.job`) names the job. A driver that finds a claim (the last one was killed)
//! adopts the job instead of submitting the stage again: it waits for it and commits its
//! outputs. The watchdog cancels the run's jobs when the driver dies.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use super::isolate::{ChildJob, JobResult, PROGRESS_PREFIX};
use crate::ops::OpContext;

/// Where and how jobs are submitted; from the command line, the environment or a site file.
#[derive(Debug, Clone)]
pub struct Settings {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// More `sbatch` arguments, as given (`--constraint=a100`).
    pub sbatch_args: Vec<String>,
    /// Jobs of this run queued or running at once.
    pub max_jobs: usize,
    pub poll_interval: Duration,
    /// Resubmissions of a stage whose job was lost to NODE_FAIL, PREEMPTED or BOOT_FAIL.
    pub retries: usize,
    /// The binary that jobs run; must be readable at the same path on every node.
    pub binary: PathBuf,
}

/// What one stage asks of its job.
pub struct Request<'a> {
    pub name: &'a str,
    pub threads: usize,
    pub gpus: usize,
    pub mem_mb: Option<u64>,
    pub time_s: Option<u64>,
}

#[derive(Debug, Clone, Default)]
struct JobView {
    state: String,
    reason: String,
    /// Raw wait status as squeue reports it.
    exit_status: Option<i64>,
    /// Consecutive polls that did not list the job.
    missing: u32,
}

/// The run's connection to Slurm: the submitted jobs and their last known states.
pub struct Slurm {
    settings: Settings,
    jobs: Mutex<HashMap<u64, JobView>>,
    polled: Condvar,
    stopping: AtomicBool,
    /// Set (under the `jobs` lock) by [`Slurm::cancel_all`]: a job submitted after it is
    /// cancelled at once.
    cancelling: AtomicBool,
}

impl std::fmt::Debug for Slurm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slurm")
            .field("settings", &self.settings)
            .finish()
    }
}

const TERMINAL: &[&str] = &[
    "COMPLETED",
    "FAILED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "CANCELLED",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "REVOKED",
    "SPECIAL_EXIT",
];

/// States after which Slurm itself lost the job, not the stage: worth a resubmission.
const LOST: &[&str] = &["NODE_FAIL", "PREEMPTED", "BOOT_FAIL"];

/// How often a running job's output is read for the op's progress line.
const OUTPUT_READ_INTERVAL: Duration = Duration::from_secs(1);

/// The shortest time between two `squeue` calls.
const FASTEST_POLL: Duration = Duration::from_millis(100);

/// A job not listed by this many polls in a row is taken as gone (finished long enough ago
/// to have left `squeue`, or purged).
const MISSING_POLLS: u32 = 3;

/// How a job ended, as far as Slurm and its result file tell.
pub enum Ended {
    /// The result file says the stage succeeded.
    Succeeded,
    Failed(String),
    /// Lost to the cluster (node failure, preemption): may be resubmitted.
    Lost(String),
    Cancelled,
}

#[derive(Serialize, Deserialize)]
struct Claim {
    job_id: u64,
    dir: PathBuf,
}

impl Slurm {
    /// Checks that Slurm's commands answer, then starts the poller.
    pub fn start(settings: Settings) -> Result<Arc<Slurm>> {
        let probe = Command::new("squeue")
            .args(["-h", "-j", "1", "-o", "%i"])
            .output();
        match probe {
            Err(e) => bail!(
                "--executor slurm: cannot run `squeue` ({e}); run on a machine with Slurm's client commands (a login node) and SLURM_CONF set where needed"
            ),
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stderr);
                // An unknown job id is an answer; an unreachable controller is not.
                if !out.status.success() && !text.contains("Invalid job id") {
                    bail!(
                        "--executor slurm: `squeue` fails: {}",
                        text.trim().lines().next().unwrap_or("no message")
                    );
                }
            }
        }
        let slurm = Arc::new(Slurm {
            settings,
            jobs: Mutex::new(HashMap::new()),
            polled: Condvar::new(),
            stopping: AtomicBool::new(false),
            cancelling: AtomicBool::new(false),
        });
        let poller = slurm.clone();
        std::thread::Builder::new()
            .name("slurm-poll".into())
            .spawn(move || poller.poll_loop())
            .context("starting the Slurm poller")?;
        Ok(slurm)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Stops the poller (its thread ends at its next interval).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.polled.notify_all();
    }

    /// Polls quickly while jobs come and go (a short job is noticed within ~0.1 s) and backs
    /// off, doubling, to the configured interval while nothing changes (long trainings cost the
    /// controller one call per interval).
    fn poll_loop(&self) {
        let mut failures = 0u32;
        let mut interval = FASTEST_POLL;
        let mut last_seen: HashMap<u64, String> = HashMap::new();
        while !self.stopping.load(Ordering::SeqCst) {
            let started = Instant::now();
            let ids: Vec<u64> = {
                let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
                jobs.iter()
                    .filter(|(_, v)| !TERMINAL.contains(&v.state.as_str()))
                    .map(|(&id, _)| id)
                    .collect()
            };
            if !ids.is_empty() {
                match query(&ids) {
                    Ok(listed) => {
                        failures = 0;
                        let seen: HashMap<u64, String> = listed
                            .iter()
                            .map(|(&id, view)| (id, view.state.clone()))
                            .collect();
                        interval = if seen == last_seen {
                            (interval * 2).min(self.settings.poll_interval)
                        } else {
                            FASTEST_POLL
                        };
                        last_seen = seen;
                        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
                        for id in ids {
                            let Some(view) = jobs.get_mut(&id) else {
                                continue;
                            };
                            match listed.get(&id) {
                                Some(now) => {
                                    *view = JobView {
                                        missing: 0,
                                        ..now.clone()
                                    }
                                }
                                None => view.missing += 1,
                            }
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        // A controller that is briefly busy is normal on a big cluster.
                        if failures % 20 == 1 {
                            eprintln!("warning: squeue failed ({e:#}); retrying");
                        }
                    }
                }
                self.polled.notify_all();
            }
            let rest = interval
                .min(self.settings.poll_interval)
                .saturating_sub(started.elapsed());
            let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            let (jobs, woken) = self
                .polled
                .wait_timeout(jobs, rest)
                .unwrap_or_else(|e| e.into_inner());
            drop(jobs);
            // Woken early: a job was submitted. Look again soon.
            if !woken.timed_out() {
                interval = FASTEST_POLL;
            }
        }
    }

    /// Cancels every job of this run that may still be queued or running, with one `scancel`.
    pub fn cancel_all(&self) {
        let ids: Vec<String> = {
            let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            self.cancelling.store(true, Ordering::SeqCst);
            jobs.iter()
                .filter(|(_, v)| !TERMINAL.contains(&v.state.as_str()))
                .map(|(id, _)| id.to_string())
                .collect()
        };
        if !ids.is_empty() {
            let _ = Command::new("scancel").args(&ids).status();
        }
    }

    /// Runs `ctx`'s op as a Slurm job, or adopts the job that a killed driver left computing
    /// this key, and waits for it. `claim` is the key's claim file; `pending_dir` holds the
    /// job's files and `ctx.out_dir` its outputs.
    pub fn run(
        &self,
        op_name: &str,
        ctx: &OpContext,
        request: &Request,
        pending_dir: &Path,
        claim: &Path,
        adopted: Option<u64>,
    ) -> Ended {
        let mut attempt = 0;
        let mut resubmitted: Vec<String> = Vec::new();
        let mut job_id = adopted;
        let mut adopting = adopted.is_some();
        loop {
            let id = match job_id.take() {
                Some(id) => id,
                None => match self.submit(op_name, ctx, request, pending_dir) {
                    Ok(id) => {
                        if let Err(e) = write_claim(claim, id, pending_dir) {
                            self.cancel(id);
                            return Ended::Failed(format!("{e:#}"));
                        }
                        id
                    }
                    Err(e) => return Ended::Failed(format!("{e:#}")),
                },
            };
            if adopting {
                ctx.progress
                    .report(format!("job {id}, left by an earlier run: waiting for it"));
            }
            super::watchdog::watch_job(id);
            if !self.register(id) {
                return Ended::Cancelled;
            }
            let ended = self.wait(id, pending_dir, ctx);
            // A cancelled job stays listed, so that `cancel_all` (one scancel) reaches it.
            if let Ended::Cancelled = ended {
                return ended;
            }
            super::watchdog::unwatch_job(id);
            self.forget(id);
            move_job_output(pending_dir, ctx.log_path);
            let adopting = std::mem::take(&mut adopting);
            match ended {
                // Only an adopted job's success is worth having; otherwise start afresh.
                Ended::Failed(why) | Ended::Lost(why) if adopting => {
                    let _ = ctx.log(&format!(
                        "pipeline: the job left by an earlier run ended without a result ({why}); submitting the stage again"
                    ));
                    if let Err(e) = reset_attempt(pending_dir, ctx.out_dir) {
                        return Ended::Failed(e);
                    }
                }
                Ended::Lost(why) if attempt < self.settings.retries => {
                    attempt += 1;
                    ctx.progress.report(format!(
                        "{why}: resubmitting ({attempt}/{})",
                        self.settings.retries
                    ));
                    // The next attempt starts the stage's log afresh: noted at the end.
                    resubmitted.push(format!(
                        "pipeline: {why}; resubmitted ({attempt}/{})",
                        self.settings.retries
                    ));
                    if let Err(e) = reset_attempt(pending_dir, ctx.out_dir) {
                        return Ended::Failed(e);
                    }
                }
                ended => {
                    for note in &resubmitted {
                        let _ = ctx.log(note);
                    }
                    return ended;
                }
            }
        }
    }

    fn cancel(&self, id: u64) {
        let _ = Command::new("scancel").arg(id.to_string()).status();
    }

    fn forget(&self, id: u64) {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    fn submit(&self, op_name: &str, ctx: &OpContext, request: &Request, dir: &Path) -> Result<u64> {
        let job_file = dir.join("job.json");
        std::fs::write(&job_file, serde_json::to_vec(&ChildJob::new(op_name, ctx))?)
            .with_context(|| format!("writing {}", job_file.display()))?;
        let script = dir.join("job.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n# Stage `{}`, submitted by pipeline.\nexec {} __run-op --job {}\n",
                request.name.replace('\n', " "),
                shell_quote(&self.settings.binary.to_string_lossy()),
                shell_quote(&job_file.to_string_lossy())
            ),
        )
        .with_context(|| format!("writing {}", script.display()))?;
        let mut command = Command::new("sbatch");
        command.args(self.sbatch_args(request, dir));
        command.arg(&script);
        command.stdin(std::process::Stdio::null());
        // A busy controller answers "try again"; sbatch's own retries cover most of it.
        let mut last = String::new();
        for attempt in 0..3 {
            let out = command.output().context("running sbatch")?;
            if out.status.success() {
                let text = String::from_utf8_lossy(&out.stdout);
                let id = text.trim().split(';').next().unwrap_or_default();
                return id
                    .parse()
                    .map_err(|_| anyhow!("sbatch printed `{}`, not a job id", text.trim()));
            }
            last = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let transient = ["temporarily", "timed out", "try again", "Socket"]
                .iter()
                .any(|t| last.contains(t));
            if !transient {
                break;
            }
            std::thread::sleep(Duration::from_millis(500 << attempt));
        }
        bail!("sbatch refused the job: {last}")
    }

    /// The `sbatch` arguments for one stage (the script comes last).
    pub fn sbatch_args(&self, request: &Request, dir: &Path) -> Vec<String> {
        let s = &self.settings;
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name=pipeline:{}", job_name(request.name)),
            format!("--output={}", dir.join("slurm.out").display()),
            format!("--chdir={}", dir.display()),
            "--nodes=1".to_string(),
            "--ntasks=1".to_string(),
            format!("--cpus-per-task={}", request.threads.max(1)),
        ];
        if let Some(mb) = request.mem_mb {
            args.push(format!("--mem={mb}M"));
        }
        if let Some(seconds) = request.time_s {
            args.push(format!("--time={}", slurm_time(seconds)));
        }
        if request.gpus > 0 {
            args.push(format!("--gres=gpu:{}", request.gpus));
        }
        if let Some(p) = &s.partition {
            args.push(format!("--partition={p}"));
        }
        if let Some(a) = &s.account {
            args.push(format!("--account={a}"));
        }
        if let Some(q) = &s.qos {
            args.push(format!("--qos={q}"));
        }
        args.extend(s.sbatch_args.iter().cloned());
        args
    }

    /// Lists a job for polling; `false` (and the job cancelled) when the run is being cancelled.
    fn register(&self, id: u64) -> bool {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if self.cancelling.load(Ordering::SeqCst) {
            drop(jobs);
            self.cancel(id);
            return false;
        }
        jobs.entry(id).or_default();
        drop(jobs);
        self.polled.notify_all();
        true
    }

    fn wait(&self, id: u64, dir: &Path, ctx: &OpContext) -> Ended {
        let mut shown = String::new();
        let mut progress = OutputProgress::new(dir.join("slurm.out"));
        let mut last_read = Instant::now() - OUTPUT_READ_INTERVAL;
        let result_path = dir.join("result.json");
        loop {
            let view = {
                let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
                let (jobs, _) = self
                    .polled
                    .wait_timeout(jobs, self.settings.poll_interval * 2)
                    .unwrap_or_else(|e| e.into_inner());
                jobs.get(&id).cloned().unwrap_or_default()
            };
            if ctx.cancelled() {
                return Ended::Cancelled;
            }
            // The output file is read only while the job runs, and at most once a second: on a
            // shared filesystem hundreds of jobs polled ten times a second would be felt.
            if view.state == "RUNNING" && last_read.elapsed() >= OUTPUT_READ_INTERVAL {
                progress.refresh();
                last_read = Instant::now();
            }
            let op_line = progress.latest.clone();
            let line = match (view.state.as_str(), op_line) {
                ("", _) => format!("job {id} submitted"),
                ("PENDING", _) if view.reason.is_empty() || view.reason == "None" => {
                    format!("job {id} PENDING")
                }
                ("PENDING", _) => format!("job {id} PENDING ({})", view.reason),
                (state, Some(op)) => format!("job {id} {state} · {op}"),
                (state, None) => format!("job {id} {state}"),
            };
            if line != shown {
                ctx.progress.report(line.clone());
                shown = line;
            }
            let state = view.state.as_str();
            let ended = TERMINAL.contains(&state) || view.missing >= MISSING_POLLS;
            if !ended && state != "COMPLETING" {
                continue;
            }
            let result = read_result(&result_path);
            // COMPLETING: the job's script is done, Slurm still runs its epilog.
            if !ended && !result.as_ref().is_some_and(|r| r.ok) {
                continue;
            }
            let how = describe(id, &view);
            return match result {
                Some(r) if r.ok => Ended::Succeeded,
                // Killed by the cluster (preemption, a failing node): the stage itself only saw
                // a signal, and another attempt may well succeed.
                _ if LOST.contains(&state) => Ended::Lost(how),
                Some(r) => Ended::Failed(format!("{} ({how})", r.error)),
                None if state == "TIMEOUT" => Ended::Failed(format!(
                    "{how}: the stage ran over its time limit (raise `resources.time`)"
                )),
                None if state == "OUT_OF_MEMORY" => Ended::Failed(format!(
                    "{how}: the stage ran out of memory (raise `resources.mem`)"
                )),
                None if view.missing >= MISSING_POLLS => Ended::Failed(format!(
                    "Slurm job {id} left the queue without a result (cancelled outside this run, or purged)"
                )),
                None => Ended::Failed(format!("{how} before the stage finished")),
            };
        }
    }
}

/// Clears what a job left (outputs, result) before the stage is submitted again.
fn reset_attempt(dir: &Path, out_dir: &Path) -> Result<(), String> {
    let _ = std::fs::remove_file(dir.join("result.json"));
    let _ = std::fs::remove_dir_all(out_dir);
    std::fs::create_dir_all(out_dir).map_err(|e| format!("recreating {}: {e}", out_dir.display()))
}

/// "Slurm job 12 FAILED (NonZeroExitCode), exit code 3".
fn describe(id: u64, view: &JobView) -> String {
    let mut text = format!("Slurm job {id} {}", view.state);
    if !view.reason.is_empty() && view.reason != "None" {
        text.push_str(&format!(" ({})", view.reason));
    }
    if let Some(status) = view.exit_status {
        let signal = status & 0x7f;
        if signal != 0 {
            text.push_str(&format!(", killed by signal {signal}"));
        } else {
            text.push_str(&format!(", exit code {}", status >> 8));
        }
    }
    text
}

/// One `squeue` for all `ids`: state, reason and raw exit status of those it still lists.
fn query(ids: &[u64]) -> Result<HashMap<u64, JobView>> {
    let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let out = Command::new("squeue")
        .args([
            "-h",
            "-t",
            "all",
            "-j",
            &list,
            "-O",
            "JobID:|,State:|,Reason:|,exit_code:|",
        ])
        .output()
        .context("running squeue")?;
    let mut listed = HashMap::new();
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        // Every id has left the queue: an empty answer, not a failure.
        if text.contains("Invalid job id") {
            return Ok(listed);
        }
        bail!("{}", text.trim());
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut fields = line.split('|').map(str::trim);
        let (Some(id), Some(state), Some(reason), exit) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        // Array tasks and heterogeneous jobs print `12_3` / `12+0`; the run submits neither.
        let Ok(id) = id.parse::<u64>() else { continue };
        listed.insert(
            id,
            JobView {
                // `CANCELLED by 0` → `CANCELLED`.
                state: state
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                reason: reason.to_string(),
                exit_status: exit.and_then(|e| e.parse().ok()),
                missing: 0,
            },
        );
    }
    Ok(listed)
}

fn read_result(path: &Path) -> Option<JobResult> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The latest progress line a job printed, read incrementally from its output file.
struct OutputProgress {
    path: PathBuf,
    offset: u64,
    latest: Option<String>,
}

impl OutputProgress {
    fn new(path: PathBuf) -> Self {
        OutputProgress {
            path,
            offset: 0,
            latest: None,
        }
    }

    fn refresh(&mut self) {
        if let Ok(mut file) = std::fs::File::open(&self.path) {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            // Only the last 64 KiB of what is new: progress lines are short.
            let from = self.offset.max(len.saturating_sub(64 * 1024));
            if len > from && file.seek(SeekFrom::Start(from)).is_ok() {
                let mut buf = Vec::new();
                let _ = file.take(len - from).read_to_end(&mut buf);
                // Up to the last complete line; the rest is read next time.
                if let Some(end) = buf.iter().rposition(|&b| b == b'\n') {
                    let text = String::from_utf8_lossy(&buf[..end]);
                    if let Some(message) = text
                        .lines()
                        .rev()
                        .find_map(|l| l.strip_prefix(PROGRESS_PREFIX))
                    {
                        self.latest = Some(message.to_string());
                    }
                    self.offset = from + end as u64 + 1;
                }
            }
        }
    }
}

/// Appends what the job printed (without progress lines) to the stage's log, which the summary
/// shows on failure and the entry keeps.
fn move_job_output(dir: &Path, log_path: &Path) {
    let out = dir.join("slurm.out");
    let Ok(mut file) = std::fs::File::open(&out) else {
        return;
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    // The end matters on failure; a job printing gigabytes keeps its last 1 MiB.
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(1 << 20)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(PROGRESS_PREFIX))
        .collect();
    if !kept.is_empty()
        && let Ok(mut log) = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log_path)
    {
        let _ = writeln!(log, "{}", kept.join("\n"));
    }
    let _ = std::fs::remove_file(&out);
}

/// The claim of a key: the job that computes it and its pending folder. Only a folder under
/// the cache's `tmp/` named for the key is accepted, whatever the file says.
pub fn read_claim(claim: &Path, tmp: &Path, key: &str) -> Option<(u64, PathBuf)> {
    let bytes = std::fs::read(claim).ok()?;
    let parsed: Claim = serde_json::from_slice(&bytes).ok()?;
    let name = parsed.dir.file_name()?.to_str()?;
    let inside = parsed.dir.parent() == Some(tmp) && name.starts_with(key);
    (inside && parsed.dir.is_dir()).then_some((parsed.job_id, parsed.dir))
}

fn write_claim(claim: &Path, job_id: u64, dir: &Path) -> Result<()> {
    let tmp = claim.with_extension("job.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(&Claim {
            job_id,
            dir: dir.to_path_buf(),
        })?,
    )
    .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, claim).with_context(|| format!("writing {}", claim.display()))
}

/// Job names show in `squeue`; Slurm keeps up to 1024 bytes, but a readable queue wants less.
fn job_name(stage: &str) -> String {
    let clean: String = stage
        .chars()
        .map(|c| if c.is_control() || c == '\'' { '_' } else { c })
        .collect();
    match clean.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &clean[..at]),
        None => clean,
    }
}

/// Seconds → Slurm's `D-HH:MM:SS`.
fn slurm_time(seconds: u64) -> String {
    let (d, rest) = (seconds / 86400, seconds % 86400);
    format!(
        "{d}-{:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_names_are_what_sbatch_reads() {
        assert_eq!(slurm_time(90), "0-00:01:30");
        assert_eq!(slurm_time(2 * 86400 + 3600 + 61), "2-01:01:01");
        assert_eq!(job_name("a'b\nc"), "a_b_c");
        assert_eq!(job_name(&"x".repeat(100)).chars().count(), 81);
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }

    #[test]
    fn exit_statuses_read_as_codes_and_signals() {
        let view = |state: &str, status| JobView {
            state: state.into(),
            reason: "NonZeroExitCode".into(),
            exit_status: Some(status),
            missing: 0,
        };
        assert_eq!(
            describe(7, &view("FAILED", 3 << 8)),
            "Slurm job 7 FAILED (NonZeroExitCode), exit code 3"
        );
        assert_eq!(
            describe(7, &view("FAILED", 9)),
            "Slurm job 7 FAILED (NonZeroExitCode), killed by signal 9"
        );
    }

    #[test]
    fn the_latest_progress_line_is_read_incrementally() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slurm.out");
        let mut progress = OutputProgress::new(path.clone());
        progress.refresh();
        assert_eq!(progress.latest, None, "no file yet");
        let line = |m: &str| format!("{PROGRESS_PREFIX}{m}\n");
        std::fs::write(
            &path,
            format!("{}noise\n{}", line("epoch 1/3"), line("epoch 2/3")),
        )
        .unwrap();
        progress.refresh();
        assert_eq!(progress.latest.as_deref(), Some("epoch 2/3"));
        // A half-written line waits for its end.
        let mut f = std::fs::File::options().append(true).open(&path).unwrap();
        write!(f, "{PROGRESS_PREFIX}epoch 3").unwrap();
        progress.refresh();
        assert_eq!(progress.latest.as_deref(), Some("epoch 2/3"));
        writeln!(f, "/3 loss 0.1").unwrap();
        progress.refresh();
        assert_eq!(progress.latest.as_deref(), Some("epoch 3/3 loss 0.1"));
        // What the job printed goes to the log, without the progress lines.
        let log = dir.path().join("log.txt");
        move_job_output(dir.path(), &log);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "noise\n");
        assert!(!path.exists());
    }

    #[test]
    fn a_claim_outside_the_cache_tmp_folder_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        let own = tmp.join("abc.1.0");
        std::fs::create_dir_all(&own).unwrap();
        let claim = dir.path().join("abc.job");
        write_claim(&claim, 12, &own).unwrap();
        assert_eq!(read_claim(&claim, &tmp, "abc"), Some((12, own.clone())));
        assert_eq!(read_claim(&claim, &tmp, "other"), None);
        write_claim(&claim, 12, dir.path()).unwrap();
        assert_eq!(read_claim(&claim, &tmp, "abc"), None);
    }
}
