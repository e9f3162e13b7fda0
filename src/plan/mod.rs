//! From a parsed pipeline to an executable plan: op lookup, parameter checks, sweep expansion,
//! mapping over upstream sweeps, stage keys (blake3) and deduplication of identical stages.
//!
//! Every stage member gets a [`PlannedStage`] (its name, labels and where it publishes); members
//! with the same key share one [`Node`], which is what executes and what the cache stores.
//! Nodes are created in dependency order, so `nodes` is a topological order.

mod hash;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::{Map, Value, json};

use crate::ops::{self, GpuUse, InputKind, Op, Params};
use crate::results::member_folder;
use crate::spec::{
    Assignment, DeviceChoice, Diagnostics, InputRef, Pipeline, Publish, REPLICATE_LABEL, SpecError,
    StageSpec,
};
use crate::suggest::did_you_mean;

pub use crate::spec::member_name;
pub use hash::{FileHasher, KEY_VERSION, key_of};

/// One input binding: the upstream member and the node that produces it.
#[derive(Debug, Clone)]
pub struct Binding {
    pub stage: String,
    pub labels: Assignment,
    pub node: usize,
}

/// A unit of execution, unique by key.
pub struct Node {
    pub key: String,
    pub op: &'static dyn Op,
    pub params: Params,
    pub inputs: Vec<(String, Vec<Binding>)>,
    /// Upstream nodes, without duplicates.
    pub deps: Vec<usize>,
    pub threads: usize,
    /// Where it computes (resolved from `device:`, `resources.gpu` and the op's default).
    pub device: DeviceChoice,
    /// GPUs to ask a cluster for (1 for `device: gpu`).
    pub gpu: usize,
    /// Memory (MiB) and wall time (s) to ask a cluster for; `None`: the cluster's default.
    pub mem_mb: Option<u64>,
    pub time_s: Option<u64>,
    /// Runs on the submitting machine even under a cluster executor (cheap stages).
    pub local: bool,
    /// The op's estimate of the run time, for ordering ready nodes.
    pub cost: f64,
    /// Every stage member that resolved to this node (deduplicated stages share it).
    pub stages: Vec<usize>,
    /// What the key was computed from; stored in the entry to explain later changes.
    pub fingerprint: Value,
}

pub struct PlannedStage {
    pub name: String,
    pub base: String,
    pub labels: Assignment,
    pub node: usize,
    /// The folder under `results/` that receives this stage's outputs, if any.
    pub publish: Option<String>,
}

pub struct Plan {
    pub pipeline: PathBuf,
    pub root: PathBuf,
    pub nodes: Vec<Node>,
    pub stages: Vec<PlannedStage>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.stages.iter().map(|s| s.name.as_str()).collect();
        f.debug_struct("Plan")
            .field("pipeline", &self.pipeline)
            .field("stages", &names)
            .finish()
    }
}

impl Plan {
    pub fn node_name(&self, node: usize) -> &str {
        &self.stages[self.nodes[node].stages[0]].name
    }

    /// Stage members whose name or base stage name is `pattern`.
    pub fn select(&self, pattern: &str) -> Vec<usize> {
        self.stages
            .iter()
            .enumerate()
            .filter(|(_, s)| s.name == pattern || s.base == pattern)
            .map(|(i, _)| i)
            .collect()
    }

    /// Resolves stage names given on the command line to nodes, with a suggestion on a miss.
    pub fn select_nodes(&self, patterns: &[String]) -> anyhow::Result<Vec<usize>> {
        let mut nodes = Vec::new();
        for p in patterns {
            let found = self.select(p);
            if found.is_empty() {
                let mut names: Vec<&str> = self.stages.iter().map(|s| s.base.as_str()).collect();
                names.dedup();
                anyhow::bail!(
                    "no stage `{p}` in {}{}",
                    self.pipeline.display(),
                    did_you_mean(
                        p,
                        names
                            .iter()
                            .copied()
                            .chain(self.stages.iter().map(|s| s.name.as_str()))
                    )
                );
            }
            nodes.extend(found.into_iter().map(|s| self.stages[s].node));
        }
        nodes.sort_unstable();
        nodes.dedup();
        Ok(nodes)
    }
}

/// The seed of replicate `r` (1-based) of a stage whose seed is `base`. Replicate 1 keeps the
/// stage's own seed, so adding `replicates:` to a stage reuses the run it had; the others hash
/// (base, r) with blake3, which is the same on every machine. Seeds stay below 2³¹ for the ops
/// and tools that take 32-bit seeds.
pub fn replicate_seed(base: i64, r: usize) -> i64 {
    if r <= 1 {
        return base;
    }
    let mut h = blake3::Hasher::new();
    h.update(b"pipeline/replicate-seed/v1");
    h.update(&base.to_le_bytes());
    h.update(&(r as u64).to_le_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.finalize().as_bytes()[..8]);
    (u64::from_le_bytes(first) % (1 << 31)) as i64
}

/// Splits `lr[lr=0.01]` into (`lr`, Some(`lr[lr=0.01]`)).
fn split_ref(reference: &str) -> (&str, bool) {
    match reference.find('[') {
        Some(i) => (&reference[..i], true),
        None => (reference, false),
    }
}

/// The most stage members a plan may hold unless the user raises it (`--max-stages`): a grid of
/// 12 axes × 10 values is 10¹² members, which must be refused before anything is allocated.
pub const DEFAULT_MAX_STAGES: usize = 1_000_000;

pub fn build(pipeline: &Pipeline, root: &Path, hasher: &mut FileHasher) -> Result<Plan, SpecError> {
    build_limited(pipeline, root, hasher, DEFAULT_MAX_STAGES)
}

/// [`build`] with a bound on the number of stage members.
pub fn build_limited(
    pipeline: &Pipeline,
    root: &Path,
    hasher: &mut FileHasher,
    max_stages: usize,
) -> Result<Plan, SpecError> {
    let mut diags = Diagnostics::new(&pipeline.path, &pipeline.source);
    let order = match stage_order(pipeline, &mut diags) {
        Some(order) => order,
        None => return Err(diags.into_error()),
    };
    let mut planner = Planner {
        root,
        hasher,
        max_stages,
        nodes: Vec::new(),
        stages: Vec::new(),
        by_key: HashMap::new(),
        members: HashMap::new(),
        by_name: HashMap::new(),
    };
    for index in order {
        planner.plan_stage(&pipeline.stages[index], &mut diags);
    }
    diags.finish()?;
    Ok(Plan {
        pipeline: pipeline.path.clone(),
        root: root.to_path_buf(),
        nodes: planner.nodes,
        stages: planner.stages,
    })
}

/// Marks a planning error as being about where a stage computes (not a parameter).
const DEVICE_KEY: &str = "\0device";

/// Where a stage computes: `device:` or `resources: {gpu: N}` (which must agree when both are
/// given), else the op's default for these parameters.
fn resolve_device(spec: &StageSpec, gpu_use: GpuUse) -> Result<DeviceChoice, String> {
    let from_resources = spec.resources.gpu.map(|n| {
        if n > 0 {
            DeviceChoice::Gpu
        } else {
            DeviceChoice::Cpu
        }
    });
    let choice = match (spec.device, from_resources) {
        (Some(d), Some(r)) if d != r => {
            return Err(format!(
                "`device: {}` contradicts `resources: {{gpu: {}}}`: give one of them",
                device_word(d),
                spec.resources.gpu.unwrap_or(0)
            ));
        }
        (Some(d), _) | (None, Some(d)) => d,
        (None, None) if gpu_use == GpuUse::Preferred => DeviceChoice::Auto,
        (None, None) => DeviceChoice::Cpu,
    };
    if choice != DeviceChoice::Cpu && gpu_use == GpuUse::Never {
        return Err(format!(
            "op `{}` does not compute on a GPU with these parameters (`device: {}`){}",
            spec.op,
            device_word(choice),
            if spec.op == "train.mlp" {
                ": set `engine: burn`"
            } else {
                ""
            }
        ));
    }
    Ok(choice)
}

fn device_word(d: DeviceChoice) -> &'static str {
    match d {
        DeviceChoice::Cpu => "cpu",
        DeviceChoice::Gpu => "gpu",
        DeviceChoice::Auto => "auto",
    }
}

/// Stage indices in dependency order; reports unknown references and cycles.
fn stage_order(pipeline: &Pipeline, diags: &mut Diagnostics) -> Option<Vec<usize>> {
    let index: HashMap<&str, usize> = pipeline
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut graph: DiGraph<usize, ()> = DiGraph::new();
    for i in 0..pipeline.stages.len() {
        graph.add_node(i);
    }
    let errors_before = diags.len();
    for (i, stage) in pipeline.stages.iter().enumerate() {
        for (input, reference) in &stage.inputs {
            for r in reference.names() {
                let (base, _) = split_ref(r);
                match index.get(base) {
                    Some(&j) => {
                        graph.add_edge(NodeIndex::new(j), NodeIndex::new(i), ());
                    }
                    None => diags.push_path(
                        vec![
                            "stages".into(),
                            stage.name.clone(),
                            "inputs".into(),
                            input.clone(),
                        ],
                        format!(
                            "stage `{}`: input `{input}` refers to a missing stage `{base}`{}",
                            stage.name,
                            did_you_mean(base, index.keys().copied())
                        ),
                        None,
                    ),
                }
            }
        }
    }
    if diags.len() > errors_before {
        return None;
    }
    if let Some(order) = declaration_topo_order(&graph) {
        return Some(order.into_iter().map(|n| graph[n]).collect());
    }
    for scc in tarjan_scc(&graph) {
        let cyclic = scc.len() > 1 || graph.contains_edge(scc[0], scc[0]);
        if cyclic {
            // tarjan_scc lists a cycle's nodes in reverse dependency order.
            let mut names: Vec<&str> = scc
                .iter()
                .rev()
                .map(|n| pipeline.stages[graph[*n]].name.as_str())
                .collect();
            names.push(names[0]);
            diags.push_path(
                vec!["stages".into(), names[0].to_string()],
                format!("the stages form a cycle: {}", names.join(" → ")),
                Some("a stage cannot depend, directly or not, on itself".into()),
            );
        }
    }
    None
}

/// Kahn's algorithm taking the earliest-declared ready stage first, so stages keep the order of
/// the file wherever dependencies allow (stable names, listings and scheduling). `None` on a cycle.
fn declaration_topo_order(graph: &DiGraph<usize, ()>) -> Option<Vec<NodeIndex>> {
    use std::collections::BTreeSet;
    let mut indegree: Vec<usize> = graph
        .node_indices()
        .map(|n| {
            graph
                .neighbors_directed(n, petgraph::Direction::Incoming)
                .count()
        })
        .collect();
    let mut ready: BTreeSet<usize> = (0..indegree.len()).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(indegree.len());
    while let Some(i) = ready.pop_first() {
        order.push(NodeIndex::new(i));
        for next in graph.neighbors_directed(NodeIndex::new(i), petgraph::Direction::Outgoing) {
            indegree[next.index()] -= 1;
            if indegree[next.index()] == 0 {
                ready.insert(next.index());
            }
        }
    }
    (order.len() == indegree.len()).then_some(order)
}

struct Planner<'a> {
    root: &'a Path,
    hasher: &'a mut FileHasher,
    max_stages: usize,
    nodes: Vec<Node>,
    stages: Vec<PlannedStage>,
    by_key: HashMap<String, usize>,
    /// Base stage name → its members (indices into `stages`).
    members: HashMap<String, Vec<usize>>,
    by_name: HashMap<String, usize>,
}

/// One member of a stage before planning: its name labels, its sweep assignment and, with
/// `replicates:`, its replicate number (1-based).
struct Member<'a> {
    labels: Assignment,
    assignment: &'a Assignment,
    replicate: Option<usize>,
}

/// Input name → the upstream members (indices into `stages`) bound to it.
type BoundInputs = Vec<(String, Vec<usize>)>;

/// How one input of a stage resolves before member expansion.
enum Resolved {
    /// Fixed bindings (gathered, or a single upstream member).
    Fixed(Vec<usize>),
    /// Mapped over the members of an upstream stage: one member per upstream member.
    Mapped(String),
}

impl Planner<'_> {
    fn plan_stage(&mut self, spec: &StageSpec, diags: &mut Diagnostics) {
        let at = |rest: &[&str]| -> Vec<String> {
            let mut p = vec!["stages".to_string(), spec.name.clone()];
            p.extend(rest.iter().map(|s| s.to_string()));
            p
        };
        let Some(op) = ops::find(&spec.op) else {
            diags.push_path(
                at(&["op"]),
                format!(
                    "stage `{}`: unknown op `{}`{}",
                    spec.name,
                    spec.op,
                    did_you_mean(&spec.op, ops::registry().iter().map(|o| o.name()))
                ),
                Some("run `pipeline ops` to list the ops and their parameters".into()),
            );
            return;
        };
        let errors_before = diags.len();
        let known: Vec<&str> = op.params().iter().map(|p| p.name).collect();
        let sweep_keys = spec.sweep.as_ref().map(|s| s.keys()).unwrap_or_default();
        if !op.open_params() {
            for key in spec
                .params
                .keys()
                .map(|k| (k, "params"))
                .chain(sweep_keys.iter().map(|k| (k, "sweep")))
            {
                if !known.contains(&key.0.as_str()) {
                    diags.push_path(
                        at(&[key.1, key.0]),
                        format!(
                            "stage `{}`: op `{}` has no parameter `{}`{}",
                            spec.name,
                            op.name(),
                            key.0,
                            did_you_mean(key.0, known.iter().copied())
                        ),
                        Some(format!(
                            "parameters of `{}`: {}",
                            op.name(),
                            known.join(", ")
                        )),
                    );
                }
            }
        }
        for p in op.params() {
            if p.default.is_none()
                && !spec.params.contains_key(p.name)
                && !sweep_keys.iter().any(|k| k == p.name)
            {
                diags.push_path(
                    at(&[]),
                    format!(
                        "stage `{}`: op `{}` needs parameter `{}` ({})",
                        spec.name,
                        op.name(),
                        p.name,
                        p.doc
                    ),
                    None,
                );
            }
        }

        // Inputs: declared names and kinds (open ops take the shape of the reference).
        let mut resolved: Vec<(String, Resolved)> = Vec::new();
        if !op.open_inputs() {
            for declared in op.inputs().iter().filter(|i| i.required) {
                if !spec.inputs.iter().any(|(n, _)| n == declared.name) {
                    diags.push_path(
                        at(&[]),
                        format!(
                            "stage `{}`: op `{}` needs input `{}` ({})",
                            spec.name,
                            op.name(),
                            declared.name,
                            declared.doc
                        ),
                        None,
                    );
                }
            }
        }
        for (input, reference) in &spec.inputs {
            let kind = if op.open_inputs() {
                match reference {
                    InputRef::One(_) => InputKind::One,
                    InputRef::Many(_) => InputKind::Gather,
                }
            } else {
                match op.inputs().iter().find(|i| i.name == input) {
                    Some(i) => i.kind,
                    None => {
                        let names: Vec<&str> = op.inputs().iter().map(|i| i.name).collect();
                        diags.push_path(
                            at(&["inputs", input]),
                            format!(
                                "stage `{}`: op `{}` has no input `{input}`{}",
                                spec.name,
                                op.name(),
                                did_you_mean(input, names.iter().copied())
                            ),
                            Some(format!(
                                "inputs of `{}`: {}",
                                op.name(),
                                if names.is_empty() {
                                    "none".into()
                                } else {
                                    names.join(", ")
                                }
                            )),
                        );
                        continue;
                    }
                }
            };
            match self.resolve_input(spec, input, reference, kind) {
                Ok(r) => resolved.push((input.clone(), r)),
                Err(e) => diags.push_path(at(&["inputs", input]), e, None),
            }
        }
        if diags.len() > errors_before {
            return;
        }

        // Members: the product of mapped upstream stages and the stage's own sweep. Counted
        // before anything is built, so that a huge grid is refused, not allocated.
        let mut count = spec
            .sweep
            .as_ref()
            .map_or(Some(1), |s| s.count())
            .and_then(|c| c.checked_mul(spec.replicates));
        for (_, r) in &resolved {
            if let Resolved::Mapped(upstream) = r {
                count = count.and_then(|c| c.checked_mul(self.members[upstream].len()));
            }
        }
        let room = self.max_stages.saturating_sub(self.stages.len());
        match count {
            Some(c) if c <= room => {}
            _ => {
                let shown = count.map_or("more than 2^64".to_string(), |c| c.to_string());
                diags.push_path(
                    if spec.sweep.is_some() { at(&["sweep"]) } else { at(&[]) },
                    format!(
                        "stage `{}` expands to {shown} members, beyond the limit of {} stages in a pipeline{}",
                        spec.name,
                        self.max_stages,
                        if self.stages.is_empty() {
                            String::new()
                        } else {
                            format!(" ({} planned before it)", self.stages.len())
                        }
                    ),
                    Some("use fewer values, or raise the limit with `--max-stages N`".into()),
                );
                return;
            }
        }
        let mut combos: Vec<(Assignment, BoundInputs)> = vec![(Vec::new(), Vec::new())];
        for (input, r) in &resolved {
            combos = match r {
                Resolved::Fixed(members) => combos
                    .into_iter()
                    .map(|(labels, mut bound)| {
                        bound.push((input.clone(), members.clone()));
                        (labels, bound)
                    })
                    .collect(),
                Resolved::Mapped(upstream) => {
                    let ups = self.members[upstream].clone();
                    combos
                        .into_iter()
                        .flat_map(|(labels, bound)| {
                            // A second input mapped over the same upstream stage pairs with the first.
                            let already = bound.iter().find_map(|(_, m)| {
                                m.first()
                                    .filter(|&&s| m.len() == 1 && self.stages[s].base == *upstream)
                                    .copied()
                            });
                            ups.iter()
                                .filter(move |&&u| already.is_none_or(|a| a == u))
                                .map(|&u| {
                                    let mut labels = labels.clone();
                                    if already.is_none() {
                                        labels.extend(self.stages[u].labels.iter().cloned());
                                    }
                                    let mut bound = bound.clone();
                                    bound.push((input.clone(), vec![u]));
                                    (labels, bound)
                                })
                                .collect::<Vec<_>>()
                        })
                        .collect()
                }
            };
        }
        let replicates: Vec<Option<usize>> = if spec.replicates > 1 {
            if !op.open_params() && !op.params().iter().any(|p| p.name == "seed") {
                diags.push_path(
                    at(&["replicates"]),
                    format!(
                        "stage `{}`: op `{}` has no `seed` parameter, so its replicates would all be the same",
                        spec.name,
                        op.name()
                    ),
                    Some("replicate the training stages; gathering stages (tables, plots) summarise their replicates".into()),
                );
                return;
            }
            let replicated = |stage: &usize| {
                self.stages[*stage]
                    .labels
                    .iter()
                    .any(|(k, _)| k == REPLICATE_LABEL)
            };
            if let Some(upstream) = resolved.iter().find_map(|(_, r)| match r {
                Resolved::Mapped(up) if self.members[up].iter().any(replicated) => Some(up),
                _ => None,
            }) {
                diags.push_path(
                    at(&["replicates"]),
                    format!(
                        "stage `{}` maps over the replicates of `{upstream}` already, one member per replicate",
                        spec.name
                    ),
                    Some(format!("remove `replicates` here, or from `{upstream}`")),
                );
                return;
            }
            if sweep_keys.iter().any(|k| k == REPLICATE_LABEL) {
                diags.push_path(
                    at(&["sweep"]),
                    format!(
                        "stage `{}`: `{REPLICATE_LABEL}` names the replicates; sweep a parameter of another name",
                        spec.name
                    ),
                    None,
                );
                return;
            }
            (1..=spec.replicates).map(Some).collect()
        } else {
            vec![None]
        };
        let sweep_members = spec
            .sweep
            .as_ref()
            .map(|s| s.expand())
            .unwrap_or_else(|| vec![Vec::new()]);
        let many = combos.len() * sweep_members.len() * replicates.len() > 1;
        for (up_labels, bound) in &combos {
            for (assignment, &rep) in sweep_members
                .iter()
                .flat_map(|a| replicates.iter().map(move |r| (a, r)))
            {
                let mut labels = up_labels.clone();
                labels.extend(assignment.iter().cloned());
                if let Some(r) = rep {
                    labels.push((REPLICATE_LABEL.to_string(), Value::from(r)));
                }
                let member = Member {
                    labels,
                    assignment,
                    replicate: rep,
                };
                if let Err(errors) = self.plan_member(spec, op, member, bound, many) {
                    for (key, e) in errors {
                        // Point at the parameter where the stage or its sweep sets it.
                        let path = match key {
                            Some(k) if k == DEVICE_KEY && spec.device.is_some() => at(&["device"]),
                            Some(k) if k == DEVICE_KEY => at(&["resources", "gpu"]),
                            Some(k) if spec.params.contains_key(&k) => at(&["params", &k]),
                            Some(k) if sweep_keys.contains(&k) => at(&["sweep"]),
                            _ => at(&[]),
                        };
                        diags.push_path(path, format!("stage `{}`: {e}", spec.name), None);
                    }
                    return;
                }
            }
        }
    }

    fn resolve_input(
        &self,
        spec: &StageSpec,
        input: &str,
        reference: &InputRef,
        kind: InputKind,
    ) -> Result<Resolved, String> {
        let mut fixed = Vec::new();
        for r in reference.names() {
            let (base, is_member) = split_ref(r);
            // A stage with errors of its own has no members; its errors are reported already.
            let Some(members) = self.members.get(base) else {
                return Err(format!(
                    "input `{input}`: stage `{base}` could not be planned (see its errors)"
                ));
            };
            if is_member {
                let &member = self.by_name.get(r).ok_or_else(|| {
                    let names = members.iter().map(|&m| self.stages[m].name.as_str());
                    format!(
                        "input `{input}`: `{base}` has no member `{r}`{}",
                        did_you_mean(r, names)
                    )
                })?;
                fixed.push(member);
                continue;
            }
            match kind {
                InputKind::Gather => fixed.extend(members.iter().copied()),
                InputKind::One if members.len() == 1 => fixed.push(members[0]),
                InputKind::One => {
                    if matches!(reference, InputRef::Many(_)) {
                        return Err(format!(
                            "input `{input}` takes one stage, but `{base}` is a sweep of {} members inside a list",
                            members.len()
                        ));
                    }
                    return Ok(Resolved::Mapped(base.to_string()));
                }
            }
        }
        if kind == InputKind::One && fixed.len() != 1 {
            return Err(format!(
                "input `{input}` of op `{}` takes one stage, got {}",
                spec.op,
                fixed.len()
            ));
        }
        Ok(Resolved::Fixed(fixed))
    }

    fn plan_member(
        &mut self,
        spec: &StageSpec,
        op: &'static dyn Op,
        member: Member,
        bound: &[(String, Vec<usize>)],
        many: bool,
    ) -> Result<(), Vec<(Option<String>, String)>> {
        let Member {
            labels,
            assignment,
            replicate,
        } = member;
        let name = member_name(&spec.name, &labels);
        let which = if many {
            format!("member `{name}`: ")
        } else {
            String::new()
        };
        let mut params = resolve_params(op, &spec.params, assignment).map_err(|errors| {
            errors
                .into_iter()
                .map(|(key, e)| (Some(key), format!("{which}{e}")))
                .collect::<Vec<_>>()
        })?;
        if let Some(r) = replicate {
            // An open op (shell) without a seed gets one, as it gets every other parameter.
            let base = match params.0.get("seed") {
                None => 0,
                Some(v) => v.as_i64().ok_or_else(|| {
                    vec![(
                        Some("seed".to_string()),
                        format!(
                            "{which}replicates vary `seed`, which must be an integer here, not {v}"
                        ),
                    )]
                })?,
            };
            params
                .0
                .insert("seed".into(), Value::from(replicate_seed(base, r)));
        }
        let device = resolve_device(spec, op.gpu(&params))
            .map_err(|e| vec![(Some(DEVICE_KEY.to_string()), format!("{which}{e}"))])?;
        let mut files = BTreeMap::new();
        for path in op
            .file_deps(&params)
            .map_err(|e| vec![(None, format!("{e:#}"))])?
        {
            let full = self.root.join(&path);
            let hash = self
                .hasher
                .hash(&full)
                .map_err(|e| vec![(None, format!("{e:#}"))])?;
            files.insert(path.to_string_lossy().into_owned(), Value::String(hash));
        }
        let mut inputs = Vec::new();
        let mut input_keys = Map::new();
        let mut deps = Vec::new();
        for (input, members) in bound {
            let gathered = matches!(
                spec.inputs.iter().find(|(n, _)| n == input),
                Some((_, InputRef::Many(_)))
            ) || op
                .inputs()
                .iter()
                .any(|i| i.name == input && i.kind == InputKind::Gather);
            let bindings: Vec<Binding> = members
                .iter()
                .map(|&m| {
                    let s = &self.stages[m];
                    Binding {
                        stage: s.name.clone(),
                        labels: s.labels.clone(),
                        node: s.node,
                    }
                })
                .collect();
            // Gathered inputs show member names (plot legends), so names are part of the key.
            let keys: Vec<Value> = bindings
                .iter()
                .map(|b| {
                    let key = Value::String(self.nodes[b.node].key.clone());
                    if gathered { json!([b.stage, key]) } else { key }
                })
                .collect();
            input_keys.insert(input.clone(), Value::Array(keys));
            deps.extend(bindings.iter().map(|b| b.node));
            inputs.push((input.clone(), bindings));
        }
        deps.sort_unstable();
        deps.dedup();
        let fingerprint = json!({
            "engine": KEY_VERSION,
            "op": op.name(),
            "version": op.version(),
            "params": Value::Object(params.0.clone()),
            "inputs": input_keys,
            "files": files,
        });
        let key = key_of(&fingerprint);
        let stage_index = self.stages.len();
        let node = match self.by_key.get(&key) {
            Some(&n) => {
                self.nodes[n].stages.push(stage_index);
                n
            }
            None => {
                let threads = spec.resources.threads.unwrap_or_else(|| op.threads());
                let gpu = usize::from(device == DeviceChoice::Gpu);
                let mem_mb = spec.resources.mem_mb.or_else(|| op.memory_mb(&params));
                let time_s = spec.resources.time_s;
                let local = spec.resources.local.unwrap_or_else(|| op.runs_local());
                let cost = op.cost_hint(&params);
                self.nodes.push(Node {
                    key: key.clone(),
                    op,
                    cost,
                    params,
                    inputs,
                    deps,
                    threads,
                    device,
                    gpu,
                    mem_mb,
                    time_s,
                    local,
                    stages: vec![stage_index],
                    fingerprint,
                });
                self.by_key.insert(key, self.nodes.len() - 1);
                self.nodes.len() - 1
            }
        };
        let publish = match &spec.publish {
            Publish::No => None,
            Publish::Default if !op.publishes() => None,
            Publish::Default | Publish::StageDir => Some(member_folder(&name)),
            Publish::Dir(dir) if many && dir == "." => Some(member_folder(&name)),
            Publish::Dir(dir) if many => Some(format!("{dir}/{}", member_folder(&name))),
            Publish::Dir(dir) => Some(dir.clone()),
        };
        self.members
            .entry(spec.name.clone())
            .or_default()
            .push(stage_index);
        self.by_name.insert(name.clone(), stage_index);
        self.stages.push(PlannedStage {
            name,
            base: spec.name.clone(),
            labels,
            node,
            publish,
        });
        Ok(())
    }
}

/// Stage params overridden by the sweep member, type-checked, with defaults filled in.
fn resolve_params(
    op: &dyn Op,
    base: &Map<String, Value>,
    assignment: &Assignment,
) -> Result<Params, Vec<(String, String)>> {
    let mut values = base.clone();
    for (k, v) in assignment {
        values.insert(k.clone(), v.clone());
    }
    let mut out = Map::new();
    // Every bad parameter is reported, not only the first.
    let mut errors = Vec::new();
    for p in op.params() {
        let value = match values.remove(p.name) {
            Some(v) => v,
            None => match p.default {
                Some(literal) => match crate::spec::parse_scalar(literal) {
                    Ok(v) => v,
                    Err(e) => {
                        errors.push((p.name.to_string(), format!("default of `{}`: {e}", p.name)));
                        continue;
                    }
                },
                None => {
                    errors.push((
                        p.name.to_string(),
                        format!("parameter `{}` is required", p.name),
                    ));
                    continue;
                }
            },
        };
        if !(value.is_null() && p.default == Some("null"))
            && let Err(e) = p.ty.check(&value)
        {
            errors.push((p.name.to_string(), format!("parameter `{}`: {e}", p.name)));
            continue;
        }
        out.insert(p.name.to_string(), value);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // Only open ops get here with leftovers (others were rejected by name above).
    out.extend(values);
    Ok(Params(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(src: &str) -> Result<Plan, SpecError> {
        let pipeline = crate::spec::parse(Path::new("p.yaml"), src, &[])?;
        build(&pipeline, Path::new("."), &mut FileHasher::default())
    }

    fn names(p: &Plan) -> Vec<&str> {
        p.stages.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn sweep_members_and_mapping() {
        let p = plan(
            "stages:\n  a: {op: shell, params: {cmd: 'true'}, sweep: {lr: [1, 0.01]}}\n  \
             b: {op: shell, params: {cmd: 'true'}, inputs: {x: a}}\n  \
             c: {op: shell, params: {cmd: 'true'}, inputs: {xs: [a]}}\n",
        )
        .unwrap();
        assert_eq!(
            names(&p),
            ["a[lr=1]", "a[lr=0.01]", "b[lr=1]", "b[lr=0.01]", "c"]
        );
        let c = &p.nodes[p.stages[4].node];
        assert_eq!(c.inputs[0].1.len(), 2);
        assert_eq!(c.deps.len(), 2);
    }

    #[test]
    fn replicates_vary_the_seed_only_and_map_downstream() {
        let head =
            "stages:\n  m: {op: data.synthetic_map}\n  d: {op: data.csv, inputs: {csv: m}}\n";
        let single = plan(&format!(
            "{head}  g: {{op: train.mlp, inputs: {{data: d}}, params: {{seed: 7}}, sweep: {{width: [8, 16]}}}}\n"
        ))
        .unwrap();
        let p = plan(&format!(
            "{head}  g: {{op: train.mlp, inputs: {{data: d}}, params: {{seed: 7}}, sweep: {{width: [8, 16]}}, replicates: 3}}\n  \
             t: {{op: table, inputs: {{runs: g}}, params: {{columns: [width]}}}}\n  \
             b: {{op: shell, params: {{cmd: 'true'}}, inputs: {{x: g}}}}\n"
        ))
        .unwrap();
        let g: Vec<&PlannedStage> = p.stages.iter().filter(|s| s.base == "g").collect();
        assert_eq!(
            g.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            [
                "g[width=8,rep=1]",
                "g[width=8,rep=2]",
                "g[width=8,rep=3]",
                "g[width=16,rep=1]",
                "g[width=16,rep=2]",
                "g[width=16,rep=3]"
            ]
        );
        let seed = |s: &PlannedStage| p.nodes[s.node].params.0["seed"].as_i64().unwrap();
        let seeds: Vec<i64> = g.iter().map(|s| seed(s)).collect();
        assert_eq!(seeds[..3], [7, replicate_seed(7, 2), replicate_seed(7, 3)]);
        assert_eq!(
            seeds[..3],
            seeds[3..],
            "replicate r has the same seed in every configuration"
        );
        // Replicate 1 is the stage as it was: same key, so the earlier run is reused.
        let single_g: Vec<&str> = single
            .stages
            .iter()
            .filter(|s| s.base == "g")
            .map(|s| single.nodes[s.node].key.as_str())
            .collect();
        assert_eq!(p.nodes[g[0].node].key, single_g[0]);
        assert_eq!(p.nodes[g[3].node].key, single_g[1]);
        // Only the seed differs between replicates.
        let mut a = p.nodes[g[0].node].params.0.clone();
        let mut b = p.nodes[g[1].node].params.0.clone();
        a.remove("seed");
        b.remove("seed");
        assert_eq!(a, b);
        // A gathering stage gets all six; a mapped one gets one member per replicate.
        assert_eq!(
            p.nodes[p.stages[p.select("t")[0]].node].inputs[0].1.len(),
            6
        );
        assert_eq!(
            p.select("b")
                .iter()
                .map(|&i| p.stages[i].name.as_str())
                .collect::<Vec<_>>()[1],
            "b[width=8,rep=2]"
        );
    }

    #[test]
    fn replicate_seeds_are_pinned() {
        // The same on every machine and every run: changing them changes every replicate's key.
        assert_eq!(replicate_seed(7, 1), 7);
        assert_eq!(
            [
                replicate_seed(0, 2),
                replicate_seed(0, 3),
                replicate_seed(42, 2)
            ],
            PINNED_SEEDS
        );
        assert!((2..50).all(|r| (0..1 << 31).contains(&replicate_seed(-5, r))));
    }
    const PINNED_SEEDS: [i64; 3] = [2090247809, 1644176110, 1119015448];

    #[test]
    fn replicates_are_refused_where_they_cannot_differ() {
        let head = "stages:\n  m: {op: data.synthetic_map}\n  d: {op: data.csv, inputs: {csv: m}}\n  \
                    g: {op: train.mlp, inputs: {data: d}, replicates: 2}\n";
        let err = plan(&format!(
            "{head}  t: {{op: table, inputs: {{runs: g}}, params: {{columns: [width]}}, replicates: 2}}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("op `table` has no `seed` parameter"), "{err}");
        assert!(err.contains("p.yaml:5"), "{err}");
        let err = plan(&format!(
            "{head}  s: {{op: shell, params: {{cmd: 'true'}}, inputs: {{x: g}}, replicates: 2}}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("maps over the replicates of `g` already"),
            "{err}"
        );
        let err = plan(&format!(
            "{head}  e: {{op: train.mlp, inputs: {{data: d}}, replicates: 0}}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("from 1 to 1000"), "{err}");
    }

    #[test]
    fn devices_resolve_from_the_stage_its_resources_and_the_op_and_stay_out_of_the_key() {
        let head = "stages:\n  m: {op: data.synthetic_map}\n  d: {op: data.csv, inputs: {csv: m}}\n  \
                    f: {op: data.synthetic_faces}\n  i: {op: data.images, inputs: {folder: f}}\n";
        let p = plan(&format!(
            "{head}  cnn: {{op: train.cnn, inputs: {{data: i}}}}\n  \
             native: {{op: train.mlp, inputs: {{data: d}}}}\n  \
             burn: {{op: train.mlp, inputs: {{data: d}}, params: {{engine: burn}}, device: gpu}}\n  \
             pinned: {{op: train.cnn, inputs: {{data: i}}, params: {{lr: 0.1}}, resources: {{gpu: 1}}}}\n  \
             cpu: {{op: train.cnn, inputs: {{data: i}}, params: {{lr: 0.2}}, device: cpu}}\n"
        ))
        .unwrap();
        let node = |name: &str| {
            let stage = p.stages.iter().find(|s| s.name == name).unwrap();
            &p.nodes[stage.node]
        };
        assert_eq!(node("cnn").device, DeviceChoice::Auto);
        assert_eq!(node("native").device, DeviceChoice::Cpu);
        assert_eq!(
            (node("burn").device, node("burn").gpu),
            (DeviceChoice::Gpu, 1)
        );
        assert_eq!(node("pinned").device, DeviceChoice::Gpu);
        assert_eq!(
            (node("cpu").device, node("cpu").gpu),
            (DeviceChoice::Cpu, 0)
        );
        // Where a stage computes is not part of its key.
        let q = plan(&format!(
            "{head}  cnn: {{op: train.cnn, inputs: {{data: i}}, device: cpu}}\n"
        ))
        .unwrap();
        let key = |p: &Plan, name: &str| {
            let stage = p.stages.iter().find(|s| s.name == name).unwrap();
            p.nodes[stage.node].key.clone()
        };
        assert_eq!(key(&p, "cnn"), key(&q, "cnn"));
        let e = plan(&format!(
            "{head}  t: {{op: train.mlp, inputs: {{data: d}}, device: auto}}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("set `engine: burn`") && e.contains("p.yaml:6"),
            "{e}"
        );
    }

    #[test]
    fn identical_stages_share_a_node_and_key_ignores_spelling() {
        let p = plan(
            "stages:\n  a: {op: shell, params: {cmd: 'true', n: 1}}\n  \
             b: {op: shell, params: {n: 1.0, cmd: 'true'}}\n  c: {op: shell, params: {cmd: 'true', n: 2}}\n",
        )
        .unwrap();
        assert_eq!(p.nodes.len(), 2);
        assert_eq!(p.stages[0].node, p.stages[1].node);
    }

    #[test]
    fn member_reference() {
        let p = plan(
            "stages:\n  a: {op: shell, params: {cmd: 'true'}, sweep: {n: [1, 2]}}\n  \
             b: {op: shell, params: {cmd: 'true'}, inputs: {x: 'a[n=2]'}}\n",
        )
        .unwrap();
        assert_eq!(names(&p), ["a[n=1]", "a[n=2]", "b"]);
        let err = plan(
            "stages:\n  a: {op: shell, params: {cmd: 'true'}, sweep: {n: [1, 2]}}\n  \
             b: {op: shell, params: {cmd: 'true'}, inputs: {x: 'a[n=3]'}}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("has no member `a[n=3]`"), "{err}");
    }

    #[test]
    fn cycles_are_named() {
        let err = plan(
            "stages:\n  a: {op: shell, params: {cmd: x}, inputs: {i: c}}\n  \
             b: {op: shell, params: {cmd: x}, inputs: {i: a}}\n  c: {op: shell, params: {cmd: x}, inputs: {i: b}}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("cycle"), "{err}");
        assert!(
            err.contains("a → b → c → a")
                || err.contains("b → c → a → b")
                || err.contains("c → a → b → c"),
            "{err}"
        );
    }

    #[test]
    fn unknown_op_and_param_suggest() {
        let err = plan("stages:\n  a:\n    op: shel\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown op `shel`; did you mean `shell`?"),
            "{err}"
        );
        assert!(err.contains("p.yaml:3:5"), "{err}");
    }
}
