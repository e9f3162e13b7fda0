//! YAML → typed pipeline. Anchors and merge keys are resolved, `--set` overrides applied and
//! `${params.x}` interpolated; nothing here knows about ops, the DAG or the cache.
//!
//! Semantic errors carry a key path (`stages.lr.sweep`), resolved to a line and column of the
//! source when rendered, and every error of a file is reported, not just the first.

mod diagnostics;
mod interpolate;
mod sweep;
mod value;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub use diagnostics::{Diagnostic, Diagnostics, SpecError};
pub use sweep::{Assignment, Sweep, member_name};
pub use value::{format_value, parse_scalar, yaml_to_json, yaml_to_json_at};

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub path: PathBuf,
    /// The file's text, kept to locate errors found later (unknown op, bad reference).
    pub source: String,
    pub params: Map<String, Value>,
    pub stages: Vec<StageSpec>,
}

#[derive(Debug, Clone)]
pub struct StageSpec {
    pub name: String,
    pub op: String,
    pub params: Map<String, Value>,
    pub inputs: Vec<(String, InputRef)>,
    pub sweep: Option<Sweep>,
    /// Copies of every member that differ only in their seed (1: no replicates).
    pub replicates: usize,
    pub resources: Resources,
    /// `device:` as written; `None` leaves the op's default.
    pub device: Option<DeviceChoice>,
    pub publish: Publish,
    pub doc: Option<String>,
}

/// The label that numbers a replicate in member names: `grid[width=16,rep=2]`.
pub const REPLICATE_LABEL: &str = "rep";

/// The most replicates a stage may ask for.
pub const MAX_REPLICATES: u64 = 1000;

/// Where a stage computes (`device: cpu|gpu|auto`; `cuda` reads as `gpu`). Not part of the
/// stage's key: a GPU changes the last bits of the numbers, not what is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Cpu,
    /// A GPU, waiting for one to be free; a run without GPUs refuses the stage.
    Gpu,
    /// A GPU when the run has one, else the CPU; a GPU failure retries on the CPU.
    Auto,
}

impl DeviceChoice {
    pub fn parse(text: &str) -> Option<DeviceChoice> {
        match text {
            "cpu" => Some(DeviceChoice::Cpu),
            "gpu" | "cuda" => Some(DeviceChoice::Gpu),
            "auto" => Some(DeviceChoice::Auto),
            _ => None,
        }
    }
}

/// What a stage asks of the machine that runs it. None of it is part of the stage's key: it
/// changes where and how fast a stage runs, never what it computes.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    pub threads: Option<usize>,
    pub gpu: Option<usize>,
    /// Memory in MiB (Slurm's `--mem`).
    pub mem_mb: Option<u64>,
    /// Wall-time limit in seconds (Slurm's `--time`).
    pub time_s: Option<u64>,
    /// Run on the submitting machine even under a cluster executor (or, with `false`, submit
    /// a stage whose op would run locally).
    pub local: Option<bool>,
}

const RESOURCE_KEYS: [&str; 5] = ["threads", "gpu", "mem", "time", "local"];

/// `8G`, `512M`, `1.5G`, `2T` (binary units, as Slurm reads them) → MiB.
fn parse_memory(v: &Value) -> Result<u64, String> {
    let bad = || "must be a size like `512M`, `8G` or `1T`".to_string();
    let text = v.as_str().ok_or_else(bad)?.trim();
    let text = text.strip_suffix(['B', 'b']).unwrap_or(text);
    let (number, unit) = text.split_at(
        text.find(|c: char| c.is_ascii_alphabetic())
            .ok_or_else(bad)?,
    );
    let number: f64 = number.trim().parse().map_err(|_| bad())?;
    let scale = match unit.to_ascii_uppercase().as_str() {
        "K" => 1.0 / 1024.0,
        "M" => 1.0,
        "G" => 1024.0,
        "T" => 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let mb = (number * scale).ceil();
    if !mb.is_finite() || mb < 1.0 || mb > (1u64 << 40) as f64 {
        return Err(format!("{} (from 1M to 1024T)", bad()));
    }
    Ok(mb as u64)
}

/// `90s`, `30m`, `2h`, `1d`, `1h30m` → seconds.
fn parse_duration(v: &Value) -> Result<u64, String> {
    let bad = || "must be a duration like `90s`, `30m`, `2h`, `1d` or `1h30m`".to_string();
    let text = v.as_str().ok_or_else(bad)?.trim();
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
    }
    if !number.is_empty() || total == 0 || total > 365 * 86400 {
        return Err(format!("{} (at most a year)", bad()));
    }
    Ok(total)
}

/// A reference to upstream stages: `data: europe` (one) or `runs: [lr, batch]` (a list, gathered).
#[derive(Debug, Clone)]
pub enum InputRef {
    One(String),
    Many(Vec<String>),
}

impl InputRef {
    pub fn names(&self) -> &[String] {
        match self {
            InputRef::One(name) => std::slice::from_ref(name),
            InputRef::Many(names) => names,
        }
    }
}

/// Where a stage's outputs are copied in `results/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publish {
    /// The op decides (plots, tables and reports publish; training does not).
    Default,
    No,
    /// `results/<stage name>/`.
    StageDir,
    /// `results/<dir>/` (`.` for `results/` itself).
    Dir(String),
}

const TOP_KEYS: &[&str] = &["params", "stages"];
const STAGE_KEYS: &[&str] = &[
    "op",
    "params",
    "inputs",
    "sweep",
    "replicates",
    "resources",
    "device",
    "publish",
    "doc",
];

/// Loads and checks a pipeline file, applying `--set key=value` overrides.
pub fn load(path: &Path, overrides: &[(String, String)]) -> Result<Pipeline, SpecError> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| SpecError::plain(path, format!("cannot read pipeline file: {e}")))?;
    parse(path, &source, overrides)
}

pub fn parse(
    path: &Path,
    source: &str,
    overrides: &[(String, String)],
) -> Result<Pipeline, SpecError> {
    let mut diags = Diagnostics::new(path, source);
    let mut yaml: yaml_serde::Value = match yaml_serde::from_str(source) {
        Ok(v) => v,
        Err(e) => {
            let location = e.location().map(|l| (l.line(), l.column()));
            diags.push_at(location, format!("invalid YAML: {e}"), None);
            return Err(diags.into_error());
        }
    };
    if let Err(e) = yaml.apply_merge() {
        diags.push(&[], format!("invalid merge key (`<<`): {e}"), None);
        return Err(diags.into_error());
    }
    let doc = match yaml_to_json_at(&yaml) {
        Ok(Value::Object(map)) => map,
        Ok(Value::Null) => {
            diags.push(
                &[],
                "the pipeline file is empty".into(),
                Some("start with `stages:`".into()),
            );
            return Err(diags.into_error());
        }
        Ok(_) => {
            diags.push(
                &[],
                "a pipeline file must be a mapping with `params:` and `stages:`".into(),
                None,
            );
            return Err(diags.into_error());
        }
        Err((path, e)) => {
            let message = match path.as_slice() {
                [stages, stage, rest @ ..] if stages == "stages" && !rest.is_empty() => {
                    format!("stage `{stage}`, key `{}`: {e}", rest.join("."))
                }
                [] => e,
                _ => format!("`{}`: {e}", path.join(".")),
            };
            diags.push_path(path, message, None);
            return Err(diags.into_error());
        }
    };

    for key in doc.keys() {
        if !TOP_KEYS.contains(&key.as_str()) && !key.starts_with("x-") {
            diags.push(
                &[key],
                format!("unknown top-level key `{key}`{}", crate::suggest::did_you_mean(key, TOP_KEYS.iter().copied())),
                Some("top-level keys are `params` and `stages`; put anchors under a key starting with `x-`".into()),
            );
        }
    }

    let mut params = match doc.get("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            diags.push(
                &["params"],
                "`params` must be a mapping of names to values".into(),
                None,
            );
            Map::new()
        }
    };
    for (key, raw) in overrides {
        if let Err(e) = apply_override(&mut params, key, raw) {
            diags.push_plain(format!("--set {key}={raw}: {e}"));
        }
    }
    let params = match interpolate::resolve_params(&params) {
        Ok(p) => p,
        Err((key, e)) => {
            diags.push(&["params", &key], e, None);
            params
        }
    };

    let mut stages = Vec::new();
    match doc.get("stages") {
        Some(Value::Object(m)) if !m.is_empty() => {
            for (name, body) in m {
                if let Some(stage) = parse_stage(name, body, &params, &mut diags) {
                    stages.push(stage);
                }
            }
        }
        Some(Value::Object(_)) | None | Some(Value::Null) => diags.push(
            &[],
            "the pipeline has no stages".into(),
            Some("add a `stages:` mapping".into()),
        ),
        Some(_) => diags.push(
            &["stages"],
            "`stages` must be a mapping of stage names to stages".into(),
            None,
        ),
    }

    diags.finish()?;
    Ok(Pipeline {
        path: path.to_path_buf(),
        source: source.to_string(),
        params,
        stages,
    })
}

fn apply_override(params: &mut Map<String, Value>, key: &str, raw: &str) -> Result<(), String> {
    let value = parse_scalar(raw)?;
    let first = key.split('.').next().unwrap_or_default();
    if !params.contains_key(first) {
        let hint = crate::suggest::did_you_mean(first, params.keys().map(String::as_str));
        let known: Vec<&str> = params.keys().map(String::as_str).collect();
        let known = if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        };
        return Err(format!(
            "no pipeline parameter `{first}`{hint} (parameters: {known})"
        ));
    }
    let mut root = Value::Object(std::mem::take(params));
    let pointer = format!("/{}", key.replace('.', "/"));
    let result = match root.pointer_mut(&pointer) {
        Some(slot) => {
            *slot = value;
            Ok(())
        }
        None => Err(format!("parameter `{key}` does not exist")),
    };
    if let Value::Object(m) = root {
        *params = m;
    }
    result
}

/// Longest stage name: names become folder names and appear in every listing.
pub const MAX_STAGE_NAME: usize = 100;

fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    if name.len() > MAX_STAGE_NAME {
        return false;
    }
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn parse_stage(
    name: &str,
    body: &Value,
    params: &Map<String, Value>,
    diags: &mut Diagnostics,
) -> Option<StageSpec> {
    let at = |key: &str| -> Vec<String> {
        if key.is_empty() {
            vec!["stages".into(), name.into()]
        } else {
            vec!["stages".into(), name.into(), key.into()]
        }
    };
    if !valid_stage_name(name) {
        diags.push_path(
            at(""),
            format!("invalid stage name `{name}`"),
            Some(
                "stage names start with a letter and use letters, digits, `_`, `-` and `.` (at most 100)".into(),
            ),
        );
        return None;
    }
    let body = match body {
        Value::Object(m) => m,
        _ => {
            diags.push_path(
                at(""),
                format!("stage `{name}` must be a mapping with at least `op:`"),
                None,
            );
            return None;
        }
    };
    let body = match interpolate::interpolate(&Value::Object(body.clone()), params) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return None,
        Err(e) => {
            diags.push_path(at(""), format!("stage `{name}`: {e}"), None);
            return None;
        }
    };
    let before = diags.len();
    for key in body.keys() {
        if !STAGE_KEYS.contains(&key.as_str()) {
            diags.push_path(
                at(key),
                format!(
                    "stage `{name}`: unknown key `{key}`{}",
                    crate::suggest::did_you_mean(key, STAGE_KEYS.iter().copied())
                ),
                Some(format!("stage keys are {}", STAGE_KEYS.join(", "))),
            );
        }
    }
    let op = match body.get("op") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            diags.push_path(
                at("op"),
                format!("stage `{name}`: `op` must be a string"),
                None,
            );
            String::new()
        }
        None => {
            diags.push_path(
                at(""),
                format!("stage `{name}` has no `op`"),
                Some("run `pipeline ops` to list the ops".into()),
            );
            String::new()
        }
    };
    let stage_params = match body.get("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            diags.push_path(
                at("params"),
                format!("stage `{name}`: `params` must be a mapping"),
                None,
            );
            Map::new()
        }
    };
    let mut inputs = Vec::new();
    match body.get("inputs") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (input, reference) in m {
                match reference {
                    Value::String(s) => inputs.push((input.clone(), InputRef::One(s.clone()))),
                    Value::Array(items) if items.iter().all(Value::is_string) => inputs.push((
                        input.clone(),
                        InputRef::Many(
                            items
                                .iter()
                                .filter_map(|v| v.as_str().map(str::to_owned))
                                .collect(),
                        ),
                    )),
                    _ => diags.push_path(
                        vec!["stages".into(), name.into(), "inputs".into(), input.clone()],
                        format!(
                            "stage `{name}`: input `{input}` must name a stage or a list of stages"
                        ),
                        None,
                    ),
                }
            }
        }
        Some(_) => diags.push_path(
            at("inputs"),
            format!("stage `{name}`: `inputs` must map input names to stage names"),
            Some("e.g. `inputs: {data: europe}`".into()),
        ),
    }
    let sweep = match body.get("sweep") {
        None | Some(Value::Null) => None,
        Some(v) => match Sweep::parse(v) {
            Ok(s) => Some(s),
            Err(e) => {
                diags.push_path(at("sweep"), format!("stage `{name}`: {e}"), None);
                None
            }
        },
    };
    let replicates = match body.get("replicates") {
        None | Some(Value::Null) => 1,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_REPLICATES).contains(&n) => n as usize,
            _ => {
                diags.push_path(
                    at("replicates"),
                    format!(
                        "stage `{name}`: `replicates` must be an integer from 1 to {MAX_REPLICATES}"
                    ),
                    Some("e.g. `replicates: 3` runs three copies with different seeds".into()),
                );
                1
            }
        },
    };
    let mut resources = Resources::default();
    match body.get("resources") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (key, v) in m {
                let problem = match key.as_str() {
                    "threads" => match v.as_u64() {
                        Some(n) if (1..=4096).contains(&n) => {
                            resources.threads = Some(n as usize);
                            None
                        }
                        _ => Some("must be an integer from 1 to 4096".to_string()),
                    },
                    "gpu" => match v.as_u64() {
                        Some(n) if n <= 1 => {
                            resources.gpu = Some(n as usize);
                            None
                        }
                        _ => Some("must be 0 or 1".to_string()),
                    },
                    "mem" => match parse_memory(v) {
                        Ok(mb) => {
                            resources.mem_mb = Some(mb);
                            None
                        }
                        Err(e) => Some(e),
                    },
                    "time" => match parse_duration(v) {
                        Ok(seconds) => {
                            resources.time_s = Some(seconds);
                            None
                        }
                        Err(e) => Some(e),
                    },
                    "local" => match v.as_bool() {
                        Some(b) => {
                            resources.local = Some(b);
                            None
                        }
                        None => Some("must be true or false".to_string()),
                    },
                    _ => {
                        diags.push_path(
                            vec![
                                "stages".into(),
                                name.into(),
                                "resources".into(),
                                key.clone(),
                            ],
                            format!(
                                "stage `{name}`: unknown resource `{key}`{}",
                                crate::suggest::did_you_mean(key, RESOURCE_KEYS)
                            ),
                            Some(format!("resources are {}", RESOURCE_KEYS.map(|k| format!("`{k}`")).join(", "))),
                        );
                        None
                    }
                };
                if let Some(problem) = problem {
                    diags.push_path(
                        vec![
                            "stages".into(),
                            name.into(),
                            "resources".into(),
                            key.clone(),
                        ],
                        format!("stage `{name}`: `resources.{key}` {problem}"),
                        None,
                    );
                }
            }
        }
        Some(_) => diags.push_path(
            at("resources"),
            format!("stage `{name}`: `resources` must be a mapping like {{threads: 2, gpu: 1, mem: 4G, time: 2h}}"),
            None,
        ),
    }
    let device = match body.get("device") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let choice = v.as_str().and_then(DeviceChoice::parse);
            if choice.is_none() {
                diags.push_path(
                    at("device"),
                    format!("stage `{name}`: `device` must be cpu, gpu or auto"),
                    Some("auto: a GPU when the run has one, else the CPU".into()),
                );
            }
            choice
        }
    };
    let publish = match body.get("publish") {
        None | Some(Value::Null) => Publish::Default,
        Some(Value::Bool(true)) => Publish::StageDir,
        Some(Value::Bool(false)) => Publish::No,
        Some(Value::String(dir)) => match crate::results::normalise_publish_dir(dir) {
            Ok(dir) => Publish::Dir(dir),
            Err(e) => {
                diags.push_path(
                    at("publish"),
                    format!("stage `{name}`: {e}"),
                    Some("`publish` is true, false or a folder inside results/ (`.` for results/ itself)".into()),
                );
                Publish::Default
            }
        },
        Some(_) => {
            diags.push_path(
                at("publish"),
                format!(
                    "stage `{name}`: `publish` must be true, false or a folder inside results/"
                ),
                None,
            );
            Publish::Default
        }
    };
    let doc = body.get("doc").and_then(Value::as_str).map(str::to_owned);
    if diags.len() > before {
        return None;
    }
    Some(StageSpec {
        name: name.to_string(),
        op,
        params: stage_params,
        inputs,
        sweep,
        replicates,
        resources,
        device,
        publish,
        doc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(src: &str) -> Result<Pipeline, SpecError> {
        parse(Path::new("p.yaml"), src, &[])
    }

    #[test]
    fn cluster_resources_parse_with_units_and_are_refused_at_their_key() {
        let p = parse_str(
            "stages:\n  a: {op: shell, params: {cmd: x}, resources: {mem: 1.5G, time: 1h30m, local: true}}\n",
        )
        .unwrap();
        let r = &p.stages[0].resources;
        assert_eq!(
            (r.mem_mb, r.time_s, r.local),
            (Some(1536), Some(5400), Some(true))
        );
        let json = |s: &str| Value::String(s.into());
        assert_eq!(parse_memory(&json("512M")), Ok(512));
        assert_eq!(parse_memory(&json("2TB")), Ok(2 << 20));
        assert_eq!(parse_duration(&json("90s")), Ok(90));
        assert_eq!(parse_duration(&json("2d")), Ok(2 * 86400));
        for bad in ["8", "-1G", "8X", "nanG"] {
            assert!(parse_memory(&json(bad)).is_err(), "{bad}");
        }
        for bad in ["90", "1h30", "0s", "1w", "999999999999999999999h"] {
            assert!(parse_duration(&json(bad)).is_err(), "{bad}");
        }
        let e = parse_str(
            "stages:\n  a: {op: shell, params: {cmd: x}, resources: {mem: lots, time: 5}}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`resources.mem` must be a size like"), "{e}");
        assert!(
            e.contains("`resources.time` must be a duration like"),
            "{e}"
        );
    }

    #[test]
    fn anchors_merge_keys_and_typed_interpolation() {
        let p = parse_str(
            "params: {seed: 42, dir: data, lrs: [1, 0.1]}\n\
             x-common: &common {op: shell, params: {cmd: 'echo ${params.dir}/x', seed: '${params.seed}'}}\n\
             stages:\n  a:\n    <<: *common\n    sweep: {lr: '${params.lrs}'}\n",
        )
        .unwrap();
        let a = &p.stages[0];
        assert_eq!(a.op, "shell");
        assert_eq!(a.params["cmd"], "echo data/x");
        assert_eq!(a.params["seed"], 42);
        assert_eq!(a.sweep.as_ref().unwrap().expand().len(), 2);
    }

    #[test]
    fn set_overrides_existing_params_only() {
        let src = "params: {seed: 1}\nstages: {a: {op: shell, params: {cmd: 'x${params.seed}'}}}\n";
        let p = parse(Path::new("p.yaml"), src, &[("seed".into(), "7".into())]).unwrap();
        assert_eq!(p.stages[0].params["cmd"], "x7");
        let err = parse(Path::new("p.yaml"), src, &[("sed".into(), "7".into())])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no pipeline parameter `sed`; did you mean `seed`?"),
            "{err}"
        );
    }

    #[test]
    fn yaml_syntax_error_has_line_and_column() {
        let err = parse_str("stages:\n  a: {op: shell\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("p.yaml:"), "{err}");
        assert!(err.contains("invalid YAML"), "{err}");
    }

    #[test]
    fn reports_every_error_with_location() {
        let err =
            parse_str("stages:\n  a:\n    op: shell\n    sweeep: {x: [1]}\n  b:\n    params: {}\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("p.yaml:4:5"), "{err}");
        assert!(err.contains("did you mean `sweep`"), "{err}");
        assert!(err.contains("stage `b` has no `op`"), "{err}");
    }
}
