//! `pipeline ops`: every op with its parameters, defaults and docs.

use std::fmt::Write;

use anyhow::Result;

use super::Exit;
use crate::ops::{self, InputKind, Op};

#[derive(clap::Args)]
pub struct Args {
    /// Show only this op.
    name: Option<String>,
}

pub fn run(args: Args) -> Result<Exit> {
    let selected: Vec<&dyn Op> = match &args.name {
        None => ops::registry().to_vec(),
        Some(name) => match ops::find(name) {
            Some(op) => vec![op],
            None => anyhow::bail!(
                "no op `{name}`{}",
                crate::suggest::did_you_mean(name, ops::registry().iter().map(|o| o.name()))
            ),
        },
    };
    for (i, op) in selected.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print!("{}", describe(*op));
    }
    Ok(Exit::Ok)
}

pub fn describe(op: &dyn Op) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} (version {})", op.name(), op.version());
    let _ = writeln!(out, "  {}", op.doc());
    if !op.params().is_empty() || op.open_params() {
        let _ = writeln!(out, "  params:");
        for p in op.params() {
            let default = p
                .default
                .map(|d| format!(" = {d}"))
                .unwrap_or_else(|| " (required)".into());
            let _ = writeln!(out, "    {}: {}{default} — {}", p.name, p.ty, p.doc);
        }
        if op.open_params() {
            let _ = writeln!(out, "    (any other parameter is accepted)");
        }
    }
    if !op.inputs().is_empty() || op.open_inputs() {
        let _ = writeln!(out, "  inputs:");
        for i in op.inputs() {
            let kind = match i.kind {
                InputKind::One => "one stage (mapped over a sweep)",
                InputKind::Gather => "stages (a sweep is gathered)",
            };
            let _ = writeln!(out, "    {}: {kind} — {}", i.name, i.doc);
        }
        if op.open_inputs() {
            let _ = writeln!(
                out,
                "    any name: `name: stage` maps over a sweep, `name: [stage, ...]` gathers"
            );
        }
    }
    if !op.outputs().is_empty() {
        let _ = writeln!(out, "  outputs:");
        for o in op.outputs() {
            let _ = writeln!(out, "    {} — {}", o.name, o.doc);
        }
    }
    out
}
