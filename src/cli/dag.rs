//! `pipeline dag`: the stage graph as text, Graphviz dot or Mermaid.

use std::fmt::Write;
use std::path::Path;

use anyhow::Result;

use super::{Exit, PipelineArgs, load_plan, open_cache};
use crate::plan::Plan;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Text,
    Dot,
    Mermaid,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pipeline: PipelineArgs,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

pub fn run(cache_dir: &Path, args: Args) -> Result<Exit> {
    let cache = open_cache(cache_dir)?;
    let plan = load_plan(&args.pipeline, &cache)?;
    print!("{}", render(&plan, args.format));
    Ok(Exit::Ok)
}

/// All names of a node: deduplicated stages share one node.
fn label(plan: &Plan, node: usize) -> String {
    let names: Vec<&str> = plan.nodes[node]
        .stages
        .iter()
        .map(|&s| plan.stages[s].name.as_str())
        .collect();
    names.join(" = ")
}

pub fn render(plan: &Plan, format: Format) -> String {
    let mut out = String::new();
    match format {
        Format::Text => {
            for (i, node) in plan.nodes.iter().enumerate() {
                let _ = write!(out, "{} ({})", label(plan, i), node.op.name());
                if !node.deps.is_empty() {
                    let deps: Vec<&str> = node.deps.iter().map(|&d| plan.node_name(d)).collect();
                    let _ = write!(out, " ← {}", deps.join(", "));
                }
                out.push('\n');
            }
        }
        Format::Dot => {
            out.push_str(
                "digraph pipeline {\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n",
            );
            for (i, node) in plan.nodes.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "  n{i} [label=\"{}\\n{}\"];",
                    escape(&label(plan, i)),
                    node.op.name()
                );
            }
            for (i, node) in plan.nodes.iter().enumerate() {
                for d in &node.deps {
                    let _ = writeln!(out, "  n{d} -> n{i};");
                }
            }
            out.push_str("}\n");
        }
        Format::Mermaid => {
            out.push_str("graph LR\n");
            for (i, node) in plan.nodes.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "  n{i}[\"{}<br/>{}\"]",
                    escape(&label(plan, i)).replace('"', "#quot;"),
                    node.op.name()
                );
            }
            for (i, node) in plan.nodes.iter().enumerate() {
                for d in &node.deps {
                    let _ = writeln!(out, "  n{d} --> n{i}");
                }
            }
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
