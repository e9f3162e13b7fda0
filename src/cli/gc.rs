//! `pipeline gc`: delete the cache entries that none of the given pipelines reaches.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{Exit, load_plans, open_cache};

#[derive(clap::Args)]
pub struct Args {
    /// Pipelines whose stages are kept.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Override a pipeline parameter in every file (as for `run`).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = super::parse_set)]
    sets: Vec<(String, String)>,
    /// Refuse pipelines that expand to more stage members than this.
    #[arg(long, env = "PIPELINE_MAX_STAGES", default_value_t = crate::plan::DEFAULT_MAX_STAGES)]
    max_stages: usize,
    /// Only print what would be deleted.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(cache_dir: &Path, args: Args) -> Result<Exit> {
    let cache = open_cache(cache_dir)?;
    let mut keep = HashSet::new();
    for plan in load_plans(&args.files, &args.sets, args.max_stages, &cache)? {
        keep.extend(plan.nodes.iter().map(|n| n.key.clone()));
    }
    let report = cache.gc(&keep, args.dry_run)?;
    let verb = if args.dry_run { "would free" } else { "freed" };
    for (key, stages, bytes) in &report.removed {
        let what = if stages.is_empty() {
            "?"
        } else {
            stages.as_str()
        };
        println!(
            "{} {} {what} ({})",
            if args.dry_run {
                "would delete"
            } else {
                "deleted"
            },
            &key[..12.min(key.len())],
            human_bytes(*bytes)
        );
    }
    let total: u64 = report.removed.iter().map(|r| r.2).sum::<u64>() + report.leftover_bytes;
    println!(
        "{verb} {} in {} entries (+ {} of leftovers); kept {} entries",
        human_bytes(total),
        report.removed.len(),
        human_bytes(report.leftover_bytes),
        report.kept
    );
    Ok(Exit::Ok)
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
