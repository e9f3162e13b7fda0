//! `pipeline run`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Result;

use super::{Exit, PipelineArgs, load_plan, open_cache};
use crate::schedule::{self, NodeState, Options};
use crate::ui;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Threads for stages in all (default: the machine's cores).
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
    /// GPUs to use, one stage on each at a time (default: those detected; 0 runs every stage
    /// on the CPU).
    #[arg(long, env = "PIPELINE_GPUS")]
    gpus: Option<usize>,
    /// GPU backend: cuda (the default where compiled in) or wgpu (only when named: it also
    /// drives software renderers).
    #[arg(long, value_name = "BACKEND", env = "PIPELINE_GPU_BACKEND")]
    gpu_backend: Option<String>,
    /// Show what would run, run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Recompute these stages (names or sweep members) even if cached.
    #[arg(long, value_name = "STAGE")]
    force: Vec<String>,
    /// Run only these stages and what they need.
    #[arg(long, value_name = "STAGE")]
    only: Vec<String>,
    /// Folder that receives published outputs.
    #[arg(long, env = "PIPELINE_RESULTS", default_value = "results")]
    results: PathBuf,
    /// Print only failures and the summary.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Check the blake3 of every cached entry this run would use (not only sizes); damaged
    /// entries are moved aside and recomputed.
    #[arg(long)]
    verify: bool,
    #[command(flatten)]
    executor: super::site::ExecutorArgs,
}

pub fn run(cache_dir: &Path, args: Args) -> Result<Exit> {
    let start = Instant::now();
    let cache = open_cache(cache_dir)?;
    let plan = load_plan(&args.pipeline, &cache)?;
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if jobs == 0 {
        anyhow::bail!("--jobs must be at least 1");
    }
    let gpus = schedule::gpus::detect(args.gpu_backend.as_deref(), args.gpus)?;
    let slurm = match args.executor.resolve(&plan.root)? {
        Some(settings) if !args.dry_run => Some(schedule::slurm::Slurm::start(settings)?),
        _ => None,
    };
    let options = Options {
        jobs,
        gpus: gpus.devices.clone(),
        gpu_backend: gpus.backend,
        no_gpu_reason: gpus.description.clone(),
        force: plan
            .select_nodes(&args.force)?
            .into_iter()
            .collect::<HashSet<_>>(),
        only: if args.only.is_empty() {
            None
        } else {
            Some(plan.select_nodes(&args.only)?)
        },
        dry_run: args.dry_run,
        verify: args.verify,
        slurm: slurm.clone(),
    };
    if !args.quiet {
        let executor = match &slurm {
            None => String::new(),
            Some(slurm) => {
                let s = slurm.settings();
                let local = plan.nodes.iter().filter(|n| n.local).count();
                format!(
                    ", executor slurm (partition {}, up to {} jobs; {local} cheap stage(s) here)",
                    s.partition.as_deref().unwrap_or("default"),
                    s.max_jobs
                )
            }
        };
        println!(
            "pipeline {}: {} stages ({} unique), jobs {jobs}, gpus {}{}{executor}",
            args.pipeline.file.display(),
            plan.stages.len(),
            plan.nodes.len(),
            gpus.devices.len(),
            if gpus.description.is_empty() {
                String::new()
            } else {
                format!(" ({})", gpus.description)
            }
        );
    }

    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    // A second Ctrl-C kills the stages' processes and exits at once; entries are atomic, so
    // nothing partial is left behind.
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            schedule::signal_children(libc::SIGKILL);
            std::process::exit(130);
        }
    });

    let mut reporter = ui::reporter(args.quiet);
    let summary = schedule::run(&plan, &cache, &options, cancel, reporter.as_mut());
    if let Some(slurm) = &slurm {
        slurm.stop();
    }
    let summary = summary?;
    drop(reporter);
    if args.dry_run {
        return Ok(Exit::Ok);
    }

    let done = |node: usize| matches!(summary.states[node], NodeState::Cached | NodeState::Ran);
    // Bookkeeping and publishing problems (a full disk, a link in results/) fail the run with
    // exit code 1 after the summary; what was computed stays cached.
    let mut problems = Vec::new();
    if let Err(e) = cache.record_keys(
        &plan.pipeline,
        plan.stages
            .iter()
            .filter(|s| done(s.node))
            .map(|s| (s.name.clone(), plan.nodes[s.node].key.clone())),
    ) {
        problems.push(format!("could not record this run for `status`: {e:#}"));
    }
    let mut published = 0;
    let to_publish: Vec<_> = plan
        .stages
        .iter()
        .filter(|s| done(s.node) && s.publish.is_some())
        .collect();
    if !to_publish.is_empty() {
        match crate::results::Publisher::open(&args.results) {
            Err(e) => problems.push(format!("{e:#}")),
            Ok(mut publisher) => {
                for stage in to_publish {
                    let key = &plan.nodes[stage.node].key;
                    let dir = stage.publish.as_deref().unwrap_or(".");
                    let records = match cache.check(key, crate::cache::Check::Sizes) {
                        crate::cache::EntryState::Ok(outputs) => outputs,
                        _ => {
                            problems.push(format!(
                                "`{}` not published: its entry is damaged or gone (run `pipeline verify`)",
                                stage.name
                            ));
                            continue;
                        }
                    };
                    match publisher.publish(&stage.name, dir, &cache.out_dir(key), &records) {
                        Ok(outcome) => {
                            if outcome.changed() {
                                published += 1;
                            }
                            for path in outcome.kept_edited {
                                eprintln!(
                                    "warning: {} was edited since it was published; left as it is",
                                    args.results.join(path).display()
                                );
                            }
                        }
                        Err(e) => problems.push(format!("{e:#}")),
                    }
                }
                if let Err(e) = publisher.save() {
                    problems.push(format!("{e:#}"));
                }
            }
        }
    }
    let mut stdout = std::io::stdout();
    ui::print_summary(&mut stdout, &summary, start.elapsed().as_secs_f64());
    if published > 0 && !args.quiet {
        println!(
            "results: {published} stage(s) refreshed under {}",
            args.results.display()
        );
    }
    for problem in &problems {
        eprintln!("error: {problem}");
    }
    if !problems.is_empty() && !summary.interrupted {
        return Ok(Exit::StageFailed);
    }
    Ok(if summary.interrupted {
        Exit::Interrupted
    } else if summary.ok() {
        Exit::Ok
    } else {
        Exit::StageFailed
    })
}
