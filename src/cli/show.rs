//! `pipeline show`: a stage's parameters, status, metrics and output files.

use std::path::Path;

use anyhow::Result;

use super::{Exit, PipelineArgs, load_plan, open_cache};
use crate::cache::list_files;
use crate::spec::format_value;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// A stage name (all its sweep members) or one member, e.g. `lr[lr=0.01]`.
    stage: String,
}

pub fn run(cache_dir: &Path, args: Args) -> Result<Exit> {
    let cache = open_cache(cache_dir)?;
    let plan = load_plan(&args.pipeline, &cache)?;
    let nodes = plan.select_nodes(std::slice::from_ref(&args.stage))?;
    for stage in plan
        .stages
        .iter()
        .filter(|s| nodes.contains(&s.node) && (s.name == args.stage || s.base == args.stage))
    {
        let node = &plan.nodes[stage.node];
        println!("{}", stage.name);
        println!("  op: {} (version {})", node.op.name(), node.op.version());
        println!("  key: {}", node.key);
        for (k, v) in &node.params.0 {
            println!("  param {k}: {}", format_value(v));
        }
        for (input, bindings) in &node.inputs {
            let names: Vec<&str> = bindings.iter().map(|b| b.stage.as_str()).collect();
            println!("  input {input}: {}", names.join(", "));
        }
        if !cache.has(&node.key) {
            println!(
                "  status: not computed (run `pipeline run {}`)",
                args.pipeline.file.display()
            );
            continue;
        }
        let meta = cache.read_meta(&node.key)?;
        println!(
            "  status: cached ({} on {}, {} thread(s))",
            crate::ui::format_seconds(meta.duration_s),
            meta.device,
            meta.threads
        );
        let out = cache.out_dir(&node.key);
        let metrics = out.join("metrics.json");
        if let Ok(text) = std::fs::read_to_string(&metrics)
            && let Ok(serde_json::Value::Object(m)) =
                serde_json::from_str::<serde_json::Value>(&text)
        {
            for (k, v) in m {
                println!("  metric {k}: {}", format_value(&v));
            }
        }
        for file in list_files(&out) {
            println!("  output: {}", out.join(file).display());
        }
        if let Some(dir) = &stage.publish {
            println!("  published to: results/{dir}");
        }
        println!(
            "  log: {}",
            cache.entry_dir(&node.key).join("log.txt").display()
        );
    }
    Ok(Exit::Ok)
}
