//! `pipeline show`: a stage's parameters, status, metrics and output files.

use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};

use super::{Exit, PipelineArgs, load_plan, open_cache};
use crate::cache::list_files;
use crate::spec::format_value;

/// A metric for people: floats to 4 significant digits (`0.9123`, `1.235e-5`); `--json` keeps
/// full precision.
fn for_people(value: &Value) -> String {
    match value.as_f64() {
        Some(x) if value.is_f64() && x.is_finite() && x != 0.0 => {
            let magnitude = x.abs().log10().floor() as i32;
            if (-4..6).contains(&magnitude) {
                let decimals = (3 - magnitude).max(0) as usize;
                let text = format!("{x:.decimals$}");
                // 0.9000 → 0.9, but keep integers' form (1235).
                if text.contains('.') {
                    text.trim_end_matches('0').trim_end_matches('.').to_string()
                } else {
                    text
                }
            } else {
                format!("{x:.3e}")
            }
        }
        _ => format_value(value),
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// A stage name (all its sweep members) or one member, e.g. `lr[lr=0.01]`.
    stage: String,
    /// One JSON object per member (full-precision metrics), for tools.
    #[arg(long)]
    json: bool,
}

pub fn run(cache_dir: &Path, args: Args) -> Result<Exit> {
    let cache = open_cache(cache_dir)?;
    let plan = load_plan(&args.pipeline, &cache)?;
    let nodes = plan.select_nodes(std::slice::from_ref(&args.stage))?;
    let mut members = Vec::new();
    for stage in plan
        .stages
        .iter()
        .filter(|s| nodes.contains(&s.node) && (s.name == args.stage || s.base == args.stage))
    {
        let node = &plan.nodes[stage.node];
        let mut member = json!({
            "name": stage.name,
            "op": node.op.name(),
            "op_version": node.op.version(),
            "key": node.key,
            "params": Value::Object(node.params.0.clone()),
            "inputs": node.inputs.iter().map(|(input, bindings)| {
                (input.clone(), json!(bindings.iter().map(|b| b.stage.clone()).collect::<Vec<_>>()))
            }).collect::<serde_json::Map<String, Value>>(),
            "published_to": stage.publish.as_ref().map(|dir| format!("results/{dir}")),
        });
        let cached = cache.has(&node.key);
        if cached {
            let meta = cache.read_meta(&node.key)?;
            let out = cache.out_dir(&node.key);
            let metrics = std::fs::read_to_string(out.join("metrics.json"))
                .ok()
                .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                .filter(Value::is_object)
                .unwrap_or(Value::Null);
            member["status"] = json!("cached");
            member["seconds"] = json!(meta.duration_s);
            member["device"] = json!(meta.device);
            member["threads"] = json!(meta.threads);
            member["metrics"] = metrics;
            member["outputs"] = json!(
                list_files(&out)
                    .iter()
                    .map(|f| out.join(f).display().to_string())
                    .collect::<Vec<_>>()
            );
            member["log"] = json!(
                cache
                    .entry_dir(&node.key)
                    .join("log.txt")
                    .display()
                    .to_string()
            );
        } else {
            member["status"] = json!("not computed");
        }
        if args.json {
            members.push(member);
            continue;
        }
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
        if !cached {
            println!(
                "  status: not computed (run `pipeline run {}`)",
                args.pipeline.file.display()
            );
            continue;
        }
        println!(
            "  status: cached ({} on {}, {} thread(s))",
            crate::ui::format_seconds(member["seconds"].as_f64().unwrap_or(0.0)),
            member["device"].as_str().unwrap_or("?"),
            member["threads"]
        );
        if let Value::Object(metrics) = &member["metrics"] {
            for (k, v) in metrics {
                println!("  metric {k}: {}", for_people(v));
            }
        }
        for file in member["outputs"].as_array().into_iter().flatten() {
            println!("  output: {}", file.as_str().unwrap_or_default());
        }
        if let Some(dir) = member["published_to"].as_str() {
            println!("  published to: {dir}");
        }
        println!("  log: {}", member["log"].as_str().unwrap_or_default());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&Value::Array(members))?);
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_rounded_for_people() {
        assert_eq!(for_people(&json!(0.912345678)), "0.9123");
        assert_eq!(for_people(&json!(0.025)), "0.025");
        assert_eq!(for_people(&json!(6.27312)), "6.273");
        assert_eq!(for_people(&json!(1234.567)), "1235");
        assert_eq!(for_people(&json!(0.0000123456)), "1.235e-5");
        assert_eq!(for_people(&json!(47)), "47");
        assert_eq!(for_people(&json!(false)), "false");
    }
}
