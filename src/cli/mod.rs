//! The command line: one file per command. Errors are printed here, once, and mapped to exit
//! codes: 0 success, 1 a stage failed, 2 bad input (YAML, CLI, files), 130 interrupted.

pub mod dag;
mod gc;
mod ops;
mod run;
mod show;
mod site;
mod status;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::cache::Cache;
use crate::plan::{FileHasher, Plan};
use crate::spec::SpecError;

#[derive(Parser)]
#[command(
    name = "pipeline",
    version,
    about = "Run machine-learning experiments from YAML pipelines, cached by content"
)]
struct Cli {
    /// Cache folder (shared between runs and pipelines).
    #[arg(long, global = true, env = "PIPELINE_CACHE", default_value = "cache")]
    cache: PathBuf,
    #[command(subcommand)]
    command: Command,
}

/// Options shared by the commands that read a pipeline.
#[derive(clap::Args, Clone)]
struct PipelineArgs {
    /// The pipeline file.
    file: PathBuf,
    /// Override a pipeline parameter (repeatable): `--set seed=7`, `--set lrs=[0.1,0.01]`.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    sets: Vec<(String, String)>,
    /// Refuse pipelines that expand to more stage members than this.
    #[arg(long, env = "PIPELINE_MAX_STAGES", default_value_t = crate::plan::DEFAULT_MAX_STAGES)]
    max_stages: usize,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline: compute what is not cached, then refresh results/.
    Run(Box<run::Args>),
    /// Show each stage as cached or stale, and why it is stale.
    Status(status::Args),
    /// Print the DAG of stages (text, Graphviz dot or Mermaid).
    Dag(dag::Args),
    /// List the ops with their parameters, defaults and docs.
    Ops(ops::Args),
    /// Show a stage's parameters, metrics and output files.
    Show(show::Args),
    /// Delete cache entries that none of the given pipelines reaches.
    Gc(gc::Args),
    /// Check cache entries against their recorded hashes; move damaged ones aside.
    Verify(verify::Args),
    /// Internal: run one stage's op in this process (a job on stdin).
    #[command(name = "__run-op", hide = true)]
    RunOp {
        /// Read the job from this file (a cluster job) instead of stdin.
        #[arg(long)]
        job: Option<PathBuf>,
    },
    /// Internal: kill the stages' process groups if the engine dies.
    #[command(name = "__watchdog", hide = true)]
    Watchdog,
}

fn parse_set(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE (e.g. `--set seed=7`)")),
    }
}

pub enum Exit {
    Ok,
    StageFailed,
    Interrupted,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(&cli.cache, *args),
        Command::Status(args) => status::run(&cli.cache, args),
        Command::Dag(args) => dag::run(&cli.cache, args),
        Command::Ops(args) => ops::run(args),
        Command::Show(args) => show::run(&cli.cache, args),
        Command::Gc(args) => gc::run(&cli.cache, args),
        Command::Verify(args) => verify::run(&cli.cache, args),
        Command::RunOp { job } => return crate::schedule::child_main(job.as_deref()),
        Command::Watchdog => return crate::schedule::watchdog_main(),
    };
    match result {
        Ok(Exit::Ok) => ExitCode::SUCCESS,
        Ok(Exit::StageFailed) => ExitCode::from(1),
        Ok(Exit::Interrupted) => ExitCode::from(130),
        Err(e) => {
            match e.downcast_ref::<SpecError>() {
                Some(spec) => eprintln!("error: {spec}"),
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::from(2)
        }
    }
}

/// Parses and plans a pipeline against a cache (for the file-hash memo).
fn load_plan(args: &PipelineArgs, cache: &Cache) -> Result<Plan> {
    let root = std::env::current_dir().context("reading the current folder")?;
    let pipeline = crate::spec::load(&args.file, &args.sets)?;
    let mut hasher = FileHasher::load(&cache.file_memo_path());
    let mut plan = crate::plan::build_limited(&pipeline, &root, &mut hasher, args.max_stages)?;
    // The pipeline's identity for `status` history is its absolute path.
    plan.pipeline = absolute(&args.file);
    if let Err(e) = hasher.save(&cache.file_memo_path()) {
        eprintln!("warning: could not save the file-hash memo: {e:#}");
    }
    Ok(plan)
}

/// Plans several pipeline files with the same `--set` overrides (for `gc` and `verify`).
fn load_plans(
    files: &[PathBuf],
    sets: &[(String, String)],
    max_stages: usize,
    cache: &Cache,
) -> Result<Vec<Plan>> {
    files
        .iter()
        .map(|file| {
            load_plan(
                &PipelineArgs {
                    file: file.clone(),
                    sets: sets.to_vec(),
                    max_stages,
                },
                cache,
            )
        })
        .collect()
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn open_cache(dir: &Path) -> Result<Cache> {
    Cache::open(dir)
}
