//! The Slurm executor's benchmark (`cargo bench --bench slurm`), on the cluster that `SLURM_CONF`
//! names (`.ci/slurm-cluster up` starts a one-node one). Prints medians and ratios; never
//! asserts on time.
//!
//! - per-stage overhead: a chain of stages through Slurm (each waits for the one before)
//!   against the same chain of bare `sbatch` jobs, each waited for with a tight `squeue` loop:
//!   what the engine adds to Slurm's own job latency (target ≤ 50 ms)
//! - 1,000 independent shell stages through Slurm against the local executor
//! - the same 1,000 stages through Snakemake's Slurm executor plugin, when `BENCH_SNAKEMAKE`
//!   names a script that runs them (`script N` prints `WALL <seconds>` last): target ≥ 10×
//!
//! `BENCH_REPS` (default 3) repetitions; `BENCH_STAGES` (default 1000) stages.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pipeline");

fn timed(dir: &Path, args: &[&str]) -> f64 {
    let _ = std::fs::remove_dir_all(dir.join("cache"));
    let start = Instant::now();
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("running pipeline");
    assert!(
        out.status.success(),
        "pipeline {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    start.elapsed().as_secs_f64()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// `n` stages, each depending on the one before.
fn chain_yaml(n: usize) -> String {
    let mut yaml = String::from("stages:\n");
    for i in 0..n {
        yaml.push_str(&format!("  c{i}:\n    op: shell\n"));
        if i > 0 {
            yaml.push_str(&format!("    inputs: {{prev: c{}}}\n", i - 1));
        }
        yaml.push_str(&format!(
            "    params: {{cmd: 'echo {i} > out.txt', outputs: [out.txt]}}\n"
        ));
    }
    yaml
}

fn sweep_yaml(n: usize) -> String {
    let values: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    format!(
        "stages:\n  s:\n    op: shell\n    params: {{cmd: 'echo $n > out.txt', outputs: [out.txt]}}\n    sweep: {{n: [{}]}}\n",
        values.join(", ")
    )
}

/// Slurm's own latency for `n` jobs in a row: submit, then poll `squeue` every 10 ms until the
/// job has left the running states.
fn bare_chain(dir: &Path, n: usize) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        let out = Command::new("sbatch")
            .args([
                "--parsable",
                "--output=/dev/null",
                "--wrap",
                &format!("echo {i} > out.txt"),
            ])
            .current_dir(dir)
            .output()
            .expect("sbatch");
        assert!(out.status.success(), "sbatch failed");
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        loop {
            let q = Command::new("squeue")
                .args(["-h", "-t", "all", "-j", &id, "-o", "%T"])
                .output()
                .expect("squeue");
            let state = String::from_utf8_lossy(&q.stdout).trim().to_string();
            if !state.is_empty()
                && !["PENDING", "CONFIGURING", "RUNNING", "COMPLETING"].contains(&state.as_str())
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    start.elapsed().as_secs_f64()
}

fn main() {
    if std::env::var_os("SLURM_CONF").is_none() {
        println!("skipped: SLURM_CONF is not set (start a cluster with `.ci/slurm-cluster up`)");
        return;
    }
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let stages: usize = std::env::var("BENCH_STAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let slurm = ["--executor", "slurm", "-q"];

    // 1. Per-stage overhead over Slurm's own latency, on a chain (no parallelism to hide it).
    let chain = 20;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("chain.yaml"), chain_yaml(chain)).expect("write");
    let mut ours = Vec::new();
    let mut bare = Vec::new();
    for _ in 0..reps {
        let mut args = vec!["run", "chain.yaml"];
        args.extend(slurm);
        ours.push(timed(dir.path(), &args));
        bare.push(bare_chain(dir.path(), chain));
    }
    let (ours, bare) = (median(ours), median(bare));
    println!(
        "chain of {chain} stages: engine via Slurm {:.0} ms/stage, bare sbatch + 10 ms squeue loop {:.0} ms/stage: overhead {:+.0} ms/stage (target ≤ 50 ms)",
        ours / chain as f64 * 1e3,
        bare / chain as f64 * 1e3,
        (ours - bare) / chain as f64 * 1e3
    );

    // 2. Wide sweep: Slurm vs local executor.
    std::fs::write(dir.path().join("sweep.yaml"), sweep_yaml(stages)).expect("write");
    let mut via_slurm = Vec::new();
    let mut local = Vec::new();
    for _ in 0..reps {
        let mut args = vec!["run", "sweep.yaml"];
        args.extend(slurm);
        via_slurm.push(timed(dir.path(), &args));
        local.push(timed(dir.path(), &["run", "sweep.yaml", "-q"]));
    }
    let (via_slurm, local) = (median(via_slurm), median(local));
    println!(
        "{stages} shell stages: via Slurm {via_slurm:.1} s ({:.0} stages/s), local executor {local:.2} s: ratio {:.1}×",
        stages as f64 / via_slurm,
        via_slurm / local
    );

    // 3. Snakemake's Slurm plugin on the same stages, when a script for it is given.
    match std::env::var("BENCH_SNAKEMAKE") {
        Err(_) => println!(
            "Snakemake: not measured (set BENCH_SNAKEMAKE to a script that runs N jobs through its Slurm plugin)"
        ),
        Ok(script) => {
            let mut walls = Vec::new();
            for _ in 0..reps.min(2) {
                let out = Command::new(&script)
                    .arg(stages.to_string())
                    .stderr(Stdio::null())
                    .output()
                    .expect("running the Snakemake script");
                let text = String::from_utf8_lossy(&out.stdout);
                let wall = text
                    .lines()
                    .rev()
                    .find_map(|l| l.strip_prefix("WALL "))
                    .and_then(|w| w.trim().parse::<f64>().ok());
                match wall {
                    Some(w) if out.status.success() => walls.push(w),
                    _ => println!("Snakemake run failed:\n{text}"),
                }
            }
            if !walls.is_empty() {
                let smk = median(walls);
                println!(
                    "{stages} shell stages via Snakemake's Slurm plugin: {smk:.1} s: the engine is {:.1}× faster (target ≥ 10×)",
                    smk / via_slurm
                );
            }
        }
    }
}
