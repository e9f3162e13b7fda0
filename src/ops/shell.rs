//! `shell`: runs a command, caching its declared outputs like any other stage.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{GpuUse, Op, OpContext, ParamSpec, ParamType, Params};
use crate::spec::format_value;

pub struct Shell;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "cmd",
        ty: ParamType::Str,
        default: None,
        doc: "command run by `sh -c` in the stage's output folder",
    },
    ParamSpec {
        name: "deps",
        ty: ParamType::List(&ParamType::Str),
        default: Some("[]"),
        doc: "files the command reads, relative to the project root; their content is part of the key",
    },
    ParamSpec {
        name: "outputs",
        ty: ParamType::List(&ParamType::Str),
        default: Some("[]"),
        doc: "files the command must create in its folder; the stage fails if one is missing",
    },
];

const RESERVED: &[&str] = &["cmd", "deps", "outputs"];

impl Op for Shell {
    fn name(&self) -> &'static str {
        "shell"
    }

    fn doc(&self) -> &'static str {
        "Run a command in the stage's output folder. Every other parameter is exported as an \
         environment variable of the same name; $ROOT is the project root, $DEPS the declared \
         files (absolute, space-separated), $INPUT_<NAME> each input's folder (gathered \
         inputs: one folder per line) and $DEVICE where it may compute (`cpu`, `cuda:0`, …; \
         a stage given a CUDA GPU also sees only that one in $CUDA_VISIBLE_DEVICES)."
    }

    fn version(&self) -> u32 {
        1
    }

    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }

    fn open_params(&self) -> bool {
        true
    }

    fn open_inputs(&self) -> bool {
        true
    }

    /// A command may use a GPU (a user's own training script): with `resources: {gpu: 1}` it
    /// gets a GPU slot of its own.
    fn gpu(&self, _params: &Params) -> GpuUse {
        GpuUse::Capable
    }

    fn file_deps(&self, params: &Params) -> Result<Vec<PathBuf>> {
        Ok(params
            .str_list("deps")?
            .into_iter()
            .map(PathBuf::from)
            .collect())
    }

    fn run(&self, ctx: &OpContext) -> Result<()> {
        let cmd = ctx.params.str("cmd")?;
        let log = File::create(ctx.log_path)
            .with_context(|| format!("creating {}", ctx.log_path.display()))?;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(cmd)
            .current_dir(ctx.out_dir)
            .stdout(log.try_clone()?)
            .stderr(log)
            .env("ROOT", ctx.root)
            .env("STAGE", ctx.stage)
            .env("THREADS", ctx.threads.to_string())
            .env("DEVICE", ctx.device.to_string());
        if let super::Device::Cuda(index) = ctx.device {
            command.env("CUDA_VISIBLE_DEVICES", index.to_string());
        }
        let deps: Vec<String> = ctx
            .params
            .str_list("deps")?
            .iter()
            .map(|d| ctx.resolve(d).to_string_lossy().into_owned())
            .collect();
        command.env("DEPS", deps.join(" "));
        ctx.stage_process(&mut command);
        for (key, value) in &ctx.params.0 {
            if RESERVED.contains(&key.as_str()) {
                continue;
            }
            let text = match value {
                Value::Array(items) => items.iter().map(format_value).collect::<Vec<_>>().join(" "),
                other => format_value(other),
            };
            command.env(key, text);
        }
        for (input, items) in ctx.inputs {
            let dirs: Vec<String> = items
                .iter()
                .map(|i| i.dir.to_string_lossy().into_owned())
                .collect();
            command.env(format!("INPUT_{}", env_name(input)), dirs.join("\n"));
        }
        let mut child = ctx.spawn(&mut command).context("starting `sh`")?;
        ctx.child_registry.register(child.id());
        let status = child.wait();
        ctx.child_registry.unregister(child.id());
        let status = status.context("waiting for the command")?;
        if ctx.cancelled() {
            bail!("interrupted");
        }
        if !status.success() {
            match status.code() {
                Some(code) => bail!("command exited with status {code}: {cmd}"),
                None => bail!("command was killed by a signal: {cmd}"),
            }
        }
        let mut missing = Vec::new();
        for output in ctx.params.str_list("outputs")? {
            if !ctx.out_dir.join(&output).exists() {
                missing.push(output);
            }
        }
        if !missing.is_empty() {
            let mut log = File::options().append(true).open(ctx.log_path)?;
            writeln!(
                log,
                "pipeline: declared outputs not created: {}",
                missing.join(", ")
            )?;
            bail!("declared output(s) not created: {}", missing.join(", "));
        }
        Ok(())
    }
}

fn env_name(input: &str) -> String {
    input
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}
