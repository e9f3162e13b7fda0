//! Bounded fuzzing of YAML → plan, inside `cargo test` (proptest, a fixed number of cases so that
//! CI time is predictable; `PROPTEST_CASES=100000 cargo test --release --test plan_fuzz` runs
//! longer). Two sources of input: pipelines built from a grammar of hostile pieces, and byte-level
//! mutations of the committed seed corpus (`tests/corpus/`).
//!
//! Properties: parsing and planning never panic; every error carries a line and column (except
//! the few that concern the document as a whole); an accepted pipeline round-trips through
//! `pipeline dag` (the rendered graph has exactly the plan's nodes and edges).

use std::collections::BTreeSet;
use std::path::Path;

use pipeline::cli::dag::{Format, render};
use pipeline::plan::{FileHasher, build_limited};
use proptest::prelude::*;

/// Errors about the whole file, which have no better place to point at.
const DOCUMENT_LEVEL: &[&str] = &[
    "the pipeline file is empty",
    "a pipeline file must be a mapping",
    "the pipeline has no stages",
    "invalid merge key",
    "invalid YAML",
    "mapping keys must be strings",
    "YAML tags like",
];

fn check(source: &str) -> Result<(), TestCaseError> {
    let outcome = std::panic::catch_unwind(|| {
        let pipeline = pipeline::spec::parse(Path::new("f.yaml"), source, &[])?;
        let mut hasher = FileHasher::default();
        build_limited(
            &pipeline,
            Path::new("/nonexistent-root"),
            &mut hasher,
            20_000,
        )
    });
    let result = match outcome {
        Ok(r) => r,
        Err(_) => return Err(TestCaseError::fail(format!("panicked on:\n{source}"))),
    };
    match result {
        Err(e) => {
            prop_assert!(!e.items.is_empty());
            for d in &e.items {
                prop_assert!(
                    d.location.is_some() || DOCUMENT_LEVEL.iter().any(|m| d.message.contains(m)),
                    "unlocated error `{}` for:\n{source}",
                    d.message
                );
            }
        }
        Ok(plan) => {
            let dot = render(&plan, Format::Dot);
            let mut edges = BTreeSet::new();
            let mut nodes = 0;
            for line in dot.lines().map(str::trim) {
                if let Some((from, to)) = line.strip_suffix(';').and_then(|l| l.split_once(" -> "))
                {
                    let parse = |s: &str| s.trim_start_matches('n').parse::<usize>().unwrap();
                    edges.insert((parse(from), parse(to)));
                } else if line.starts_with('n') && line.contains("[label=") {
                    nodes += 1;
                }
            }
            prop_assert_eq!(nodes, plan.nodes.len());
            let expected: BTreeSet<(usize, usize)> = plan
                .nodes
                .iter()
                .enumerate()
                .flat_map(|(i, n)| n.deps.iter().map(move |&d| (d, i)))
                .collect();
            prop_assert_eq!(edges, expected);
            for (i, node) in plan.nodes.iter().enumerate() {
                prop_assert!(node.deps.iter().all(|&d| d < i), "nodes are topological");
            }
        }
    }
    Ok(())
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("0".to_string()),
        1 => Just("-1".to_string()),
        1 => Just("1.0".to_string()),
        1 => Just("1e-5".to_string()),
        1 => Just(".nan".to_string()),
        1 => Just("-.inf".to_string()),
        1 => Just("4294967295".to_string()),
        1 => Just("18446744073709551616".to_string()),
        1 => Just("true".to_string()),
        1 => Just("null".to_string()),
        1 => Just("\"/../../tmp/x\"".to_string()),
        1 => Just("\"..\"".to_string()),
        1 => Just("\"${params.p}\"".to_string()),
        1 => Just("\"${params.missing}\"".to_string()),
        1 => Just("\"é∂\\u0000\"".to_string()),
        1 => Just("[1, 2]".to_string()),
        1 => Just("{a: 1}".to_string()),
        1 => Just("!!binary aGk=".to_string()),
        12 => "[a-z]{0,6}".prop_map(|s| format!("\"{s}\"")),
        12 => (-1000i64..1000).prop_map(|n| n.to_string()),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("a".to_string()),
        3 => Just("b".to_string()),
        3 => Just("c".to_string()),
        1 => Just("d-1".to_string()),
        1 => Just("1x".to_string()),
        1 => Just("a[n=1]".to_string()),
        1 => Just("b[k=0]".to_string()),
    ]
}

fn op() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => Just("shell".to_string()),
        1 => Just("table".to_string()),
        1 => Just("select".to_string()),
        1 => Just("plot.curves".to_string()),
        1 => Just("train.mlp".to_string()),
        1 => Just("data.synthetic_map".to_string()),
        1 => Just("report".to_string()),
        1 => Just("shel".to_string()),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("epochs".to_string()),
        Just("lr".to_string()),
        Just("n".to_string()),
        Just("k".to_string()),
        Just("deps".to_string()),
        Just("outputs".to_string()),
        Just("metric".to_string()),
    ]
}

fn sweep() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::btree_map(key(), prop::collection::vec(scalar(), 1..4), 1..4).prop_map(
            |axes| {
                let axes: Vec<String> = axes
                    .iter()
                    .map(|(k, vs)| format!("{k}: [{}]", vs.join(", ")))
                    .collect();
                format!("{{{}}}", axes.join(", "))
            }
        ),
        1 => (
            prop::collection::vec(scalar(), 0..3),
            prop::collection::vec(scalar(), 0..3)
        )
            .prop_map(|(a, b)| format!(
                "{{zip: {{n: [{}], k: [{}]}}}}",
                a.join(", "),
                b.join(", ")
            )),
        1 => prop::collection::vec(scalar(), 0..3).prop_map(|v| format!(
            "{{points: [{}]}}",
            v.iter()
                .map(|x| format!("{{n: {x}}}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        1 => Just("[1, 2]".to_string()),
        1 => (1u32..4, scalar(), scalar(), scalar()).prop_map(|(n, seed, lo, hi)| format!(
            "{{random: {{n: {n}, seed: {seed}, params: {{lr: {{log_uniform: [{lo}, {hi}]}}, k: {{choice: [{lo}, {hi}]}}, n: {{uniform: [{lo}, {hi}]}}}}}}, epochs: [1, 2]}}"
        )),
        1 => (scalar(), scalar()).prop_map(|(n, d)| format!(
            "{{random: {{n: {n}, params: {{k: {{int_uniform: [{d}, 5]}}, n: {{normal: [0, 1]}}}}}}}}"
        )),
    ]
}

fn stage() -> impl Strategy<Value = String> {
    (
        name(),
        op(),
        prop::collection::btree_map(key(), scalar(), 0..4),
        prop::option::weighted(0.4, sweep()),
        prop::collection::vec((0usize..6, prop::bool::ANY, name()), 0..2),
        prop::option::weighted(
            0.2,
            prop_oneof![
                Just("true".to_string()),
                Just("false".to_string()),
                Just("\"\"".to_string()),
                Just("\"./\"".to_string()),
                Just("\"../x\"".to_string()),
                Just("\"/abs\"".to_string()),
                Just("\"a//b/./\"".to_string()),
                Just("\".pipeline-published.json\"".to_string()),
                Just("3".to_string()),
            ],
        ),
        prop::option::weighted(
            0.2,
            prop_oneof![
                4 => Just("2".to_string()),
                1 => Just("0".to_string()),
                1 => Just("1001".to_string()),
                1 => Just("\"3\"".to_string()),
                1 => scalar(),
            ],
        ),
        prop::option::weighted(
            0.1,
            prop_oneof![
                Just("{threads: 2}".to_string()),
                Just("{threads: 0}".to_string()),
                Just("{gpu: 2}".to_string()),
                Just("{mem: 1}".to_string()),
            ],
        ),
    )
        .prop_map(
            |(_, op, params, sweep, inputs, publish, replicates, resources)| {
                let mut params: Vec<String> =
                    params.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                // Most shell stages are valid, so that planning goes deep (sweeps, mapping, keys).
                if op == "shell" && !params.iter().any(|p| p.starts_with("cmd:")) {
                    params.insert(0, "cmd: 'true'".into());
                }
                let mut text = format!(
                    "  __NAME__:\n    op: {op}\n    params: {{{}}}\n",
                    params.join(", ")
                );
                if let Some(s) = sweep {
                    text.push_str(&format!("    sweep: {s}\n"));
                }
                if let Some(r) = replicates {
                    text.push_str(&format!("    replicates: {r}\n"));
                }
                if !inputs.is_empty() {
                    let inputs: Vec<String> = inputs
                        .iter()
                        .enumerate()
                        .map(|(i, (upstream, many, odd))| {
                            let input = ["data", "runs", "x"][i % 3];
                            // Mostly an earlier stage (resolved later); sometimes any odd name.
                            let n = if upstream % 5 == 4 {
                                odd.clone()
                            } else {
                                format!("__IN{upstream}__")
                            };
                            if *many {
                                format!("{input}: [\"{n}\"]")
                            } else {
                                format!("{input}: \"{n}\"")
                            }
                        })
                        .collect();
                    text.push_str(&format!("    inputs: {{{}}}\n", inputs.join(", ")));
                }
                if let Some(p) = publish {
                    text.push_str(&format!("    publish: {p}\n"));
                }
                if let Some(r) = resources {
                    text.push_str(&format!("    resources: {r}\n"));
                }
                text
            },
        )
}

fn pipeline_text() -> impl Strategy<Value = String> {
    (prop::collection::vec((stage(), 0u8..60), 1..6), scalar()).prop_map(|(stages, p)| {
        // Unique names mostly (a repeated key is a YAML error), hostile ones sometimes.
        let mut text = format!("params: {{p: {p}}}\nstages:\n");
        for (i, (body, roll)) in stages.iter().enumerate() {
            let fresh = ["a", "b", "c", "d", "e", "f"][i];
            let body = match roll {
                0 => body.replacen("  __NAME__:", "  1x:", 1),
                _ => body.replacen("  __NAME__:", &format!("  {fresh}:"), 1),
            };
            let mut body = if i == 0 {
                // The first stage has nothing upstream to name.
                body.lines()
                    .filter(|l| !l.contains("__IN"))
                    .map(|l| format!("{l}\n"))
                    .collect()
            } else {
                body
            };
            for k in 0..6 {
                let upstream = if i == 0 {
                    "zz"
                } else {
                    ["a", "b", "c", "d", "e", "f"][k % i]
                };
                body = body.replace(&format!("__IN{k}__"), upstream);
            }
            text.push_str(&body);
        }
        text
    })
}

fn corpus() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/corpus")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).expect("corpus file"))
        .collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    Insert(usize, char),
    Delete(usize, usize),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            prop_oneof![
                Just(':'),
                Just('['),
                Just('{'),
                Just('"'),
                Just('\n'),
                Just(' '),
                Just('&'),
                Just('*'),
                Just('$'),
                Just('-'),
                Just('\t'),
                Just('\u{0}'),
                Just('é')
            ]
        )
            .prop_map(|(i, c)| Mutation::Insert(i, c)),
        (any::<usize>(), 1usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), 1usize..200).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn apply(text: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for m in mutations {
        let len = chars.len().max(1);
        match *m {
            Mutation::Truncate(i) => chars.truncate(i % len),
            Mutation::Insert(i, c) => chars.insert(i % len.min(chars.len() + 1), c),
            Mutation::Delete(i, n) => {
                let start = i % len;
                let end = (start + n).min(chars.len());
                if start < end {
                    chars.drain(start..end);
                }
            }
            Mutation::Duplicate(i, n) => {
                let start = i % len;
                let end = (start + n).min(chars.len());
                if start < end {
                    let piece: Vec<char> = chars[start..end].to_vec();
                    chars.splice(end..end, piece);
                }
            }
        }
    }
    chars.into_iter().collect()
}

/// 400 cases per property in CI; `PROPTEST_CASES` asks for more.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

#[test]
fn the_seed_corpus_plans_or_fails_with_locations() {
    for text in corpus() {
        check(&text).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn generated_pipelines_never_panic(text in pipeline_text()) {
        check(&text)?;
    }

    #[test]
    fn mutated_corpus_files_never_panic(which in 0usize..16, mutations in prop::collection::vec(mutation(), 1..5)) {
        let corpus = corpus();
        let text = apply(&corpus[which % corpus.len()], &mutations);
        check(&text)?;
    }
}
