//! `pipeline status`: each stage cached or stale, and why (against the last entry of that name).

use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use super::{Exit, PipelineArgs, load_plan, open_cache};
use crate::cache::{Cache, Check, EntryState};
use crate::plan::Plan;
use crate::spec::format_value;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pipeline: PipelineArgs,
}

pub fn run(cache_dir: &Path, args: Args) -> Result<Exit> {
    let cache = open_cache(cache_dir)?;
    let plan = load_plan(&args.pipeline, &cache)?;
    let last = cache.last_keys(&plan.pipeline);
    let mut out = String::new();
    let (mut cached, mut stale) = (0, 0);
    let mut damaged = 0;
    let states: Vec<EntryState> = {
        use rayon::prelude::*;
        plan.nodes
            .par_iter()
            .map(|node| cache.check(&node.key, Check::Sizes))
            .collect()
    };
    for stage in &plan.stages {
        let node = &plan.nodes[stage.node];
        match &states[stage.node] {
            EntryState::Ok(_) => {
                cached += 1;
                out.push_str(&format!("cached  {}\n", stage.name));
                continue;
            }
            EntryState::Damaged(why) => {
                damaged += 1;
                out.push_str(&format!(
                    "damaged {}: {why} (the next run recomputes it)\n",
                    stage.name
                ));
                continue;
            }
            EntryState::Missing => {}
        }
        stale += 1;
        let why = match last.get(&stage.name) {
            None => "new".to_string(),
            Some(old) if *old == node.key => "its entry is no longer in the cache".to_string(),
            Some(old) => explain(&cache, &plan, old, &node.fingerprint),
        };
        out.push_str(&format!("stale   {}: {why}\n", stage.name));
    }
    print!("{out}");
    let damaged = if damaged > 0 {
        format!(", {damaged} damaged")
    } else {
        String::new()
    };
    println!(
        "{} stages: {cached} cached, {stale} stale{damaged}",
        plan.stages.len()
    );
    Ok(Exit::Ok)
}

/// What differs between the fingerprint of an old entry and the current one.
fn explain(cache: &Cache, plan: &Plan, old_key: &str, new: &Value) -> String {
    let Ok(meta) = cache.read_meta(old_key) else {
        return "changed (the previous entry is no longer in the cache)".into();
    };
    let old = &meta.fingerprint;
    let mut reasons = Vec::new();
    if old["op"] != new["op"] {
        reasons.push(format!("op {} → {}", show(&old["op"]), show(&new["op"])));
    } else if old["version"] != new["version"] {
        reasons.push(format!(
            "op version {} → {}",
            show(&old["version"]),
            show(&new["version"])
        ));
    }
    if old["engine"] != new["engine"] {
        reasons.push("engine key version changed".into());
    }
    diff_map(&old["params"], &new["params"], &mut |k, a, b| {
        reasons.push(format!("{k}: {a} → {b}"))
    });
    diff_map(&old["files"], &new["files"], &mut |k, _, _| {
        reasons.push(format!("file {k} changed"))
    });
    diff_map(&old["inputs"], &new["inputs"], &mut |k, _, b| {
        let upstream = input_stage_names(plan, new, k);
        reasons.push(if b == "—" {
            format!("input {k} removed")
        } else if upstream.is_empty() {
            format!("input {k} changed")
        } else {
            format!("input {k} changed ({upstream})")
        })
    });
    if reasons.is_empty() {
        "changed".into()
    } else {
        reasons.join("; ")
    }
}

fn show(v: &Value) -> String {
    if v.is_null() {
        "—".into()
    } else {
        format_value(v)
    }
}

fn diff_map(old: &Value, new: &Value, report: &mut dyn FnMut(&str, String, String)) {
    let empty = serde_json::Map::new();
    let old = old.as_object().unwrap_or(&empty);
    let new = new.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let (a, b) = (
            old.get(k).unwrap_or(&Value::Null),
            new.get(k).unwrap_or(&Value::Null),
        );
        if a != b {
            report(k, show(a), show(b));
        }
    }
}

/// The upstream stage names bound to an input, found through the keys in the fingerprint.
fn input_stage_names(plan: &Plan, fingerprint: &Value, input: &str) -> String {
    let Some(items) = fingerprint["inputs"][input].as_array() else {
        return String::new();
    };
    let mut names: Vec<&str> = items
        .iter()
        .filter_map(|item| {
            let key = item
                .as_str()
                .or_else(|| item.get(1).and_then(Value::as_str))?;
            plan.nodes
                .iter()
                .position(|n| n.key == key)
                .map(|n| plan.node_name(n))
        })
        .collect();
    names.dedup();
    if names.len() > 3 {
        format!("{}, … {} stages", names[..3].join(", "), names.len())
    } else {
        names.join(", ")
    }
}
