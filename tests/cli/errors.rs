//! Bad input gets a clear, located message and exit code 2, never a panic.

use crate::Project;

#[track_caller]
fn fails_with(p: &Project, args: &[&str], expected: &[&str]) {
    let run = p.run(args);
    assert_eq!(
        run.code, 2,
        "expected exit 2\nstdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    for e in expected {
        assert!(
            run.stderr.contains(e),
            "stderr lacks `{e}`:\n{}",
            run.stderr
        );
    }
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

fn project(yaml: &str) -> Project {
    let p = Project::new();
    p.write("p.yaml", yaml);
    p
}

#[test]
fn yaml_syntax_error_names_line_and_column() {
    let p = project("stages:\n  a:\n    op: shell\n    params: {cmd: 'x'\n");
    fails_with(
        &p,
        &["run", "p.yaml"],
        &["p.yaml:", "invalid YAML", "line 5"],
    );
}

#[test]
fn unknown_op_suggests_the_closest() {
    let p = project("stages:\n  a:\n    op: shel\n    params: {cmd: x}\n");
    fails_with(
        &p,
        &["run", "p.yaml"],
        &[
            "p.yaml:3:5",
            "unknown op `shel`; did you mean `shell`?",
            "pipeline ops",
        ],
    );
}

#[test]
fn unknown_parameter_suggests_and_lists_the_ops_parameters() {
    let p = project("stages:\n  a:\n    op: shell\n    params: {cmd: 'true', ouputs: [a]}\n");
    // shell accepts extra parameters, so check a typo in a stage key and in a resource instead.
    let run = p.run(&["run", "p.yaml"]);
    assert_eq!(
        run.code, 0,
        "shell exports unknown parameters: {}",
        run.stderr
    );
    let p =
        project("stages:\n  a:\n    op: shell\n    parms: {cmd: x}\n    resources: {thread: 2}\n");
    fails_with(
        &p,
        &["run", "p.yaml"],
        &[
            "p.yaml:4:5",
            "unknown key `parms`; did you mean `params`?",
            "p.yaml:5:17",
            "did you mean `threads`?",
        ],
    );
}

#[test]
fn ill_typed_parameter_names_the_expected_type() {
    let p = project("stages:\n  a:\n    op: shell\n    params: {cmd: 3, outputs: out.txt}\n");
    fails_with(
        &p,
        &["run", "p.yaml"],
        &["stage `a`", "parameter `cmd`: expected string, got int 3"],
    );
    let p = project("stages:\n  a:\n    op: shell\n    params: {cmd: x, outputs: out.txt}\n");
    fails_with(
        &p,
        &["run", "p.yaml"],
        &["parameter `outputs`: expected a list, got string out.txt"],
    );
}

#[test]
fn missing_required_parameter() {
    let p = project("stages:\n  a:\n    op: shell\n");
    fails_with(
        &p,
        &["run", "p.yaml"],
        &["op `shell` needs parameter `cmd`"],
    );
}

#[test]
fn missing_input_stage_suggests() {
    let p = project(
        "stages:\n  data: {op: shell, params: {cmd: x}}\n  b:\n    op: shell\n    inputs: {x: dta}\n    params: {cmd: x}\n",
    );
    fails_with(
        &p,
        &["run", "p.yaml"],
        &[
            "p.yaml:5:14",
            "refers to a missing stage `dta`; did you mean `data`?",
        ],
    );
}

#[test]
fn a_cycle_is_named() {
    let p = project(
        "stages:\n  a: {op: shell, params: {cmd: x}, inputs: {i: b}}\n  b: {op: shell, params: {cmd: x}, inputs: {i: a}}\n",
    );
    fails_with(
        &p,
        &["run", "p.yaml"],
        &["the stages form a cycle:", "a → b → a"],
    );
}

#[test]
fn duplicate_stage_names() {
    let p = project(
        "stages:\n  a: {op: shell, params: {cmd: x}}\n  a: {op: shell, params: {cmd: y}}\n",
    );
    fails_with(
        &p,
        &["run", "p.yaml"],
        &["p.yaml:", "duplicate entry with key \"a\""],
    );
}

#[test]
fn empty_sweep() {
    let p = project("stages:\n  a:\n    op: shell\n    params: {cmd: x}\n    sweep: {lr: []}\n");
    fails_with(
        &p,
        &["run", "p.yaml"],
        &["p.yaml:5:5", "empty sweep: `lr` has no values"],
    );
}

#[test]
fn set_of_an_unknown_key() {
    let p = project("params: {seed: 1}\nstages:\n  a: {op: shell, params: {cmd: x}}\n");
    fails_with(
        &p,
        &["run", "p.yaml", "--set", "sed=2"],
        &[
            "--set sed=2",
            "no pipeline parameter `sed`; did you mean `seed`?",
        ],
    );
    fails_with(&p, &["run", "p.yaml", "--set", "noequals"], &["KEY=VALUE"]);
}

#[test]
fn unreadable_files() {
    let p = Project::new();
    fails_with(
        &p,
        &["run", "missing.yaml"],
        &["missing.yaml", "cannot read pipeline file"],
    );
    let p = project("stages:\n  a: {op: shell, params: {cmd: x, deps: [nothere.csv]}}\n");
    fails_with(
        &p,
        &["run", "p.yaml"],
        &["stage `a`", "cannot read `", "nothere.csv"],
    );
}

#[test]
fn unknown_interpolation_reference() {
    let p = project(
        "params: {seed: 1}\nstages:\n  a: {op: shell, params: {cmd: 'echo ${params.sed}'}}\n",
    );
    fails_with(
        &p,
        &["run", "p.yaml"],
        &["stage `a`", "unknown parameter `sed`; did you mean `seed`?"],
    );
}

#[test]
fn every_error_is_reported_at_once() {
    // Errors of the file's structure are reported together, and so are errors found when
    // planning (ops, parameters, references).
    let p = project(
        "stages:\n  a: {op: shell, sweep: {n: []}}\n  b: {op: shell, params: {cmd: x}, resources: 3}\n",
    );
    fails_with(
        &p,
        &["run", "p.yaml"],
        &[
            "empty sweep",
            "`resources` must be a mapping",
            "2 errors in p.yaml",
        ],
    );
    let p =
        project("stages:\n  a: {op: shel, params: {cmd: x}}\n  b: {op: shell, params: {cmd: 1}}\n");
    fails_with(
        &p,
        &["run", "p.yaml"],
        &[
            "unknown op `shel`",
            "parameter `cmd`: expected string",
            "2 errors in p.yaml",
        ],
    );
}
