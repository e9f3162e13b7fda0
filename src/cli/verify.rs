//! `pipeline verify [FILE...]`: checks cache entries against the size and blake3 recorded for
//! each output at commit. A damaged entry is reported by stage name and moved aside (under
//! `cache/damaged/`), so that the next run recomputes it instead of serving it.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{Exit, load_plans, open_cache};
use crate::cache::{Check, EntryState};

#[derive(clap::Args)]
pub struct Args {
    /// Pipelines whose entries to check (default: every entry in the cache).
    files: Vec<PathBuf>,
    /// Override a pipeline parameter in every file (as for `run`).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = super::parse_set)]
    sets: Vec<(String, String)>,
    /// Refuse pipelines that expand to more stage members than this.
    #[arg(long, env = "PIPELINE_MAX_STAGES", default_value_t = crate::plan::DEFAULT_MAX_STAGES)]
    max_stages: usize,
}

pub fn run(cache_dir: &Path, args: Args) -> Result<Exit> {
    let cache = open_cache(cache_dir)?;
    // (key, stage names)
    let mut targets: Vec<(String, String)> = Vec::new();
    if args.files.is_empty() {
        for key in cache.keys()? {
            targets.push((key, String::new()));
        }
    } else {
        for plan in load_plans(&args.files, &args.sets, args.max_stages, &cache)? {
            for (i, node) in plan.nodes.iter().enumerate() {
                if !targets.iter().any(|(k, _)| *k == node.key) {
                    targets.push((node.key.clone(), plan.node_name(i).to_string()));
                }
            }
        }
    }
    let (mut ok, mut damaged, mut missing, mut bytes) = (0usize, 0usize, 0usize, 0u64);
    for (key, name) in &targets {
        // Under the key's lock: a run may be committing it right now.
        let lock = cache.lock(key)?;
        match cache.check(key, Check::Hashes) {
            EntryState::Ok(outputs) => {
                ok += 1;
                bytes += outputs.iter().map(|r| r.size).sum::<u64>();
            }
            EntryState::Missing => missing += 1,
            EntryState::Damaged(why) => {
                damaged += 1;
                let name = if name.is_empty() {
                    cache
                        .read_meta_lossy(key)
                        .unwrap_or_else(|| format!("entry {}", &key[..12.min(key.len())]))
                } else {
                    name.clone()
                };
                let moved = cache.quarantine(key, &lock)?;
                println!("damaged  {name}: {why} (moved to {})", moved.display());
            }
        }
    }
    let not_computed = if args.files.is_empty() || missing == 0 {
        String::new()
    } else {
        format!(", {missing} not computed")
    };
    println!(
        "verified {} entries ({}): {ok} ok, {damaged} damaged{not_computed}",
        ok + damaged,
        super::gc::human_bytes(bytes)
    );
    if damaged > 0 {
        println!("the next `pipeline run` recomputes the damaged entries");
        return Ok(Exit::StageFailed);
    }
    Ok(Exit::Ok)
}
