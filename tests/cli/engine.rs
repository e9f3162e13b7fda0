//! Running, caching, sweeps, scheduling, concurrency, failures and interruption.

use std::time::{Duration, Instant};

use crate::{Project, sorted};

/// A sweep of three members, a mapped stage over it and a gatherer.
const SWEEP: &str = r#"
params:
  greeting: hello
x-log: &log 'echo "$STAGE" >> "$ROOT/ran.log"'
stages:
  gen:
    op: shell
    params:
      cmd: 'echo "${params.greeting} $n" > out.txt; echo "$STAGE" >> "$ROOT/ran.log"'
      outputs: [out.txt]
    sweep: {n: [1, 2, 3]}
  up:
    op: shell
    inputs: {src: gen}
    params:
      cmd: 'tr a-z A-Z < "$INPUT_SRC/out.txt" > up.txt; echo "$STAGE" >> "$ROOT/ran.log"'
      outputs: [up.txt]
  all:
    op: shell
    inputs: {parts: [up]}
    publish: true
    params:
      cmd: 'for d in $INPUT_PARTS; do cat "$d/up.txt"; done > all.txt; echo "$STAGE" >> "$ROOT/ran.log"'
      outputs: [all.txt]
"#;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn sweep_map_and_gather_then_noop_rerun() {
    let p = Project::new();
    p.write("p.yaml", SWEEP);
    let run = p.run(&["run", "p.yaml"]).ok();
    assert!(
        run.stdout.contains("7 ran, 0 cached, 0 failed, 0 skipped"),
        "{}",
        run.stdout
    );
    assert_eq!(p.read("results/all/all.txt"), "HELLO 1\nHELLO 2\nHELLO 3\n");
    assert_eq!(
        sorted(p.ran()),
        strings(&[
            "all", "gen[n=1]", "gen[n=2]", "gen[n=3]", "up[n=1]", "up[n=2]", "up[n=3]"
        ])
    );
    // Each member ran after what it reads.
    let order = p.ran();
    let pos = |s: &str| order.iter().position(|x| x == s).unwrap();
    assert!(pos("gen[n=2]") < pos("up[n=2]") && pos("up[n=3]") < pos("all"));

    p.clear_ran();
    let again = p.run(&["run", "p.yaml"]).ok();
    assert!(again.stdout.contains("0 ran, 7 cached"), "{}", again.stdout);
    assert!(p.ran().is_empty(), "a rerun executes nothing");
    assert_eq!(p.read("results/all/all.txt"), "HELLO 1\nHELLO 2\nHELLO 3\n");
}

#[test]
fn editing_one_sweep_value_reruns_that_member_and_its_dependents_only() {
    let p = Project::new();
    p.write("p.yaml", SWEEP);
    p.run(&["run", "p.yaml"]).ok();
    p.write("p.yaml", &SWEEP.replace("[1, 2, 3]", "[1, 2, 4]"));
    let status = p.run(&["status", "p.yaml"]).ok();
    assert!(
        status.stdout.contains("cached  gen[n=1]"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("stale   gen[n=4]: new"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("stale   all: input parts changed"),
        "{}",
        status.stdout
    );
    p.clear_ran();
    p.run(&["run", "p.yaml"]).ok();
    assert_eq!(sorted(p.ran()), strings(&["all", "gen[n=4]", "up[n=4]"]));
    assert_eq!(p.read("results/all/all.txt"), "HELLO 1\nHELLO 2\nHELLO 4\n");
}

#[test]
fn status_explains_a_parameter_change_old_to_new() {
    let p = Project::new();
    p.write("p.yaml", SWEEP);
    p.run(&["run", "p.yaml"]).ok();
    let status = p.run(&["status", "p.yaml", "--set", "greeting=bye"]).ok();
    assert!(
        status
            .stdout
            .contains(r#"stale   gen[n=1]: cmd: echo "hello $n""#)
            && status.stdout.contains(r#"→ echo "bye $n""#),
        "{}",
        status.stdout
    );
    assert!(
        status
            .stdout
            .contains("stale   up[n=1]: input src changed (gen[n=1])"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("7 stages: 0 cached, 7 stale"),
        "{}",
        status.stdout
    );
    // `--set` applies to runs too, and the original value stays cached.
    p.clear_ran();
    p.run(&["run", "p.yaml", "--set", "greeting=bye"]).ok();
    assert_eq!(p.read("results/all/all.txt"), "BYE 1\nBYE 2\nBYE 3\n");
    p.clear_ran();
    p.run(&["run", "p.yaml"]).ok();
    assert!(p.ran().is_empty());
    assert_eq!(p.read("results/all/all.txt"), "HELLO 1\nHELLO 2\nHELLO 3\n");
}

#[test]
fn identical_stages_run_once_and_share_the_entry() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
x-train: &train
  op: shell
  params: {cmd: 'echo trained > model.txt; echo x >> "$ROOT/ran.log"', outputs: [model.txt], lr: 0.001}
stages:
  default_model: *train
  same_again:
    <<: *train
  same_spelled_differently:
    op: shell
    params: {lr: 1.0e-3, outputs: [model.txt], cmd: 'echo trained > model.txt; echo x >> "$ROOT/ran.log"'}
  report:
    op: shell
    publish: true
    inputs: {a: default_model, b: same_again}
    params: {cmd: 'cat "$INPUT_A/model.txt" "$INPUT_B/model.txt" > both.txt'}
"#,
    );
    let run = p.run(&["run", "p.yaml"]).ok();
    assert!(run.stdout.contains("4 stages (2 unique)"), "{}", run.stdout);
    assert_eq!(p.ran(), strings(&["x"]), "the shared stage trained once");
    assert_eq!(p.entries().len(), 2);
    assert_eq!(p.read("results/report/both.txt"), "trained\ntrained\n");
}

#[test]
fn a_failure_skips_dependents_and_independent_stages_go_on() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
stages:
  bad:
    op: shell
    params: {cmd: 'echo "about to fail"; exit 3'}
  after_bad:
    op: shell
    inputs: {x: bad}
    params: {cmd: 'echo after >> "$ROOT/ran.log"'}
  fine:
    op: shell
    params: {cmd: 'echo fine >> "$ROOT/ran.log"'}
"#,
    );
    let run = p.run(&["run", "p.yaml", "--jobs", "1"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(p.ran(), strings(&["fine"]));
    assert!(
        run.stdout
            .contains("FAILED bad: command exited with status 3"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("| about to fail"),
        "the log tail is shown: {}",
        run.stdout
    );
    assert!(
        run.stdout.contains("skipped after_bad: `bad` failed"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("1 ran, 0 cached, 1 failed, 1 skipped"),
        "{}",
        run.stdout
    );
    assert_eq!(p.entries().len(), 1, "a failed stage is never cached");
    // The failure is not remembered as success: it runs again next time.
    p.clear_ran();
    assert_eq!(p.run(&["run", "p.yaml"]).code, 1);
    assert!(p.ran().is_empty());
}

#[test]
fn declared_outputs_must_exist() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "stages:\n  s: {op: shell, params: {cmd: 'true', outputs: [model.bin]}}\n",
    );
    let run = p.run(&["run", "p.yaml"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .contains("declared output(s) not created: model.bin"),
        "{}",
        run.stdout
    );
    assert!(p.entries().is_empty());
}

#[test]
fn declared_input_files_are_part_of_the_key() {
    let p = Project::new();
    p.write("data.txt", "one\n");
    p.write(
        "p.yaml",
        "stages:\n  s:\n    op: shell\n    publish: true\n    params: {cmd: 'cat $DEPS > copy.txt; echo s >> \"$ROOT/ran.log\"', deps: [data.txt]}\n",
    );
    p.run(&["run", "p.yaml"]).ok();
    p.run(&["run", "p.yaml"]).ok();
    assert_eq!(p.ran().len(), 1);
    p.write("data.txt", "two\n");
    let status = p.run(&["status", "p.yaml"]).ok();
    assert!(
        status.stdout.contains("stale   s: file data.txt changed"),
        "{}",
        status.stdout
    );
    p.run(&["run", "p.yaml"]).ok();
    assert_eq!(p.ran().len(), 2);
    assert_eq!(p.read("results/s/copy.txt"), "two\n");
}

#[test]
fn jobs_bound_the_threads_in_use() {
    let p = Project::new();
    // Each stage records how many stages are running when it starts.
    let stage = r#"
    op: shell
    params:
      cmd: 'mkdir -p "$ROOT/running"; touch "$ROOT/running/$STAGE"; ls "$ROOT/running" | wc -l >> "$ROOT/ran.log"; sleep 0.3; rm "$ROOT/running/$STAGE"'
"#;
    p.write(
        "p.yaml",
        &format!("stages:\n  s:{stage}    sweep: {{n: [1, 2, 3, 4, 5, 6]}}\n"),
    );
    p.run(&["run", "p.yaml", "--jobs", "2"]).ok();
    let most = p
        .ran()
        .iter()
        .map(|l| l.trim().parse::<usize>().unwrap())
        .max()
        .unwrap();
    assert_eq!(most, 2, "--jobs 2 runs two stages at once");

    let p = Project::new();
    p.write(
        "p.yaml",
        &format!(
            "stages:\n  s:{stage}    resources: {{threads: 2}}\n    sweep: {{n: [1, 2, 3]}}\n"
        ),
    );
    p.run(&["run", "p.yaml", "--jobs", "2"]).ok();
    let most = p
        .ran()
        .iter()
        .map(|l| l.trim().parse::<usize>().unwrap())
        .max()
        .unwrap();
    assert_eq!(
        most, 1,
        "two-thread stages on two threads run one at a time"
    );
}

#[test]
fn a_gpu_stage_in_a_build_without_gpu_backends_is_refused_with_the_reason() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "stages:\n  s: {op: shell, resources: {gpu: 1}, params: {cmd: 'echo $STAGE >> \"$ROOT/ran.log\"'}}\n",
    );
    if pipeline::ml::device::GpuBackend::preferred().is_some() {
        return; // a GPU build: tests/cli/gpu.rs covers it
    }
    // This build has no GPU backend: even `--gpus 1` gives the run no GPU, and a stage that
    // must have one stops the run before anything runs.
    let run = p.run(&["run", "p.yaml", "--gpus", "1"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("gpus 0 (--gpus 1 ignored: this build has no GPU backend"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("`s` needs a GPU"), "{}", run.stderr);
    assert!(p.ran().is_empty());
}

#[test]
fn only_and_force_select_stages() {
    let p = Project::new();
    p.write("p.yaml", SWEEP);
    p.run(&["run", "p.yaml", "--only", "up[n=2]"]).ok();
    assert_eq!(sorted(p.ran()), strings(&["gen[n=2]", "up[n=2]"]));
    p.clear_ran();
    p.run(&["run", "p.yaml", "--force", "gen[n=1]", "--only", "gen"])
        .ok();
    assert_eq!(sorted(p.ran()), strings(&["gen[n=1]", "gen[n=3]"]));
    let run = p.run(&["run", "p.yaml", "--only", "upp"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("no stage `upp`") && run.stderr.contains("did you mean `up`?"),
        "{}",
        run.stderr
    );
}

#[test]
fn dry_run_executes_nothing() {
    let p = Project::new();
    p.write("p.yaml", SWEEP);
    let run = p.run(&["run", "p.yaml", "--dry-run"]).ok();
    assert!(
        run.stdout.contains("would run gen[n=1]") && run.stdout.contains("would run all"),
        "{}",
        run.stdout
    );
    assert!(p.ran().is_empty());
    assert!(p.entries().is_empty());
}

#[test]
fn two_concurrent_runs_on_one_cache_compute_each_stage_once() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
stages:
  slow:
    op: shell
    params: {cmd: 'sleep 0.3; echo "$STAGE" >> "$ROOT/ran.log"; echo $n > n.txt'}
    sweep: {n: [1, 2, 3, 4]}
  gather:
    op: shell
    inputs: {all: [slow]}
    params: {cmd: 'echo "$STAGE" >> "$ROOT/ran.log"'}
"#,
    );
    let quiet = |args: &[&str]| {
        p.command(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = quiet(&["run", "p.yaml", "--jobs", "2"]);
    let second = quiet(&["run", "p.yaml", "--jobs", "2"]);
    let (a, b) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    assert!(a.status.success() && b.status.success());
    assert_eq!(
        sorted(p.ran()),
        strings(&["gather", "slow[n=1]", "slow[n=2]", "slow[n=3]", "slow[n=4]"]),
        "each stage computed once across both runs"
    );
    assert_eq!(p.entries().len(), 5);
}

fn wait_for(mut done: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const LONG: &str = r#"
stages:
  quick:
    op: shell
    params: {cmd: 'echo "$STAGE" >> "$ROOT/ran.log"; echo done > q.txt'}
  long:
    op: shell
    inputs: {q: quick}
    params:
      cmd: 'echo partial > part.txt; echo started >> "$ROOT/started.log"; sleep ${params.sleep}; echo "$STAGE" >> "$ROOT/ran.log"'
params: {sleep: 30}
"#;

#[test]
fn sigkill_mid_stage_leaves_no_partial_entry_and_the_rerun_completes() {
    let p = Project::new();
    p.write("p.yaml", LONG);
    let mut child = p
        .command(&["run", "p.yaml"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        || !p.read("started.log").is_empty(),
        "the long stage to start",
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(p.entries().len(), 1, "only the finished stage is an entry");
    p.clear_ran();
    let run = p.run(&["run", "p.yaml", "--set", "sleep=0"]).ok();
    assert!(run.stdout.contains("1 ran, 1 cached"), "{}", run.stdout);
    assert_eq!(p.ran(), vec!["long".to_string()]);
    assert_eq!(p.entries().len(), 2);
}

#[test]
fn ctrl_c_stops_running_stages_promptly_and_the_rerun_resumes() {
    let p = Project::new();
    p.write("p.yaml", LONG);
    let child = p
        .command(&["run", "p.yaml"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        || !p.read("started.log").is_empty(),
        "the long stage to start",
    );
    let start = Instant::now();
    // SAFETY: sending SIGINT to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "Ctrl-C took {:?}",
        start.elapsed()
    );
    assert_eq!(out.status.code(), Some(130));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("interrupted"), "{stdout}");
    assert_eq!(p.entries().len(), 1);
    assert!(
        std::fs::read_dir(p.path().join("cache/tmp"))
            .unwrap()
            .next()
            .is_none(),
        "the interrupted attempt was cleaned up"
    );
    p.clear_ran();
    let run = p.run(&["run", "p.yaml", "--set", "sleep=0"]).ok();
    assert!(run.stdout.contains("1 ran, 1 cached"), "{}", run.stdout);
}

#[test]
fn gc_deletes_entries_no_listed_pipeline_reaches() {
    let p = Project::new();
    p.write("p.yaml", SWEEP);
    p.run(&["run", "p.yaml"]).ok();
    p.write("p.yaml", &SWEEP.replace("[1, 2, 3]", "[1, 2]"));
    let gc = p.run(&["gc", "p.yaml"]).ok();
    // gen[n=3], up[n=3] and the old `all` are unreachable now.
    assert!(gc.stdout.contains("in 3 entries"), "{}", gc.stdout);
    assert!(gc.stdout.contains("kept 4 entries"), "{}", gc.stdout);
    assert_eq!(p.entries().len(), 4);
    p.clear_ran();
    p.run(&["run", "p.yaml"]).ok();
    assert_eq!(p.ran(), vec!["all".to_string()]);
}

#[test]
fn dag_ops_and_show_describe_the_pipeline() {
    let p = Project::new();
    p.write("p.yaml", SWEEP);
    let text = p.run(&["dag", "p.yaml"]).ok().stdout;
    assert!(text.contains("up[n=2] (shell) ← gen[n=2]"), "{text}");
    assert!(
        text.contains("all (shell) ← up[n=1], up[n=2], up[n=3]"),
        "{text}"
    );
    let dot = p.run(&["dag", "p.yaml", "--format", "dot"]).ok().stdout;
    assert!(
        dot.starts_with("digraph pipeline {") && dot.matches(" -> ").count() == 6,
        "{dot}"
    );
    let mermaid = p.run(&["dag", "p.yaml", "--format", "mermaid"]).ok().stdout;
    assert!(
        mermaid.starts_with("graph LR") && mermaid.matches(" --> ").count() == 6,
        "{mermaid}"
    );

    let ops = p.run(&["ops"]).ok().stdout;
    assert!(
        ops.contains("shell (version 1)") && ops.contains("cmd: string (required)"),
        "{ops}"
    );

    let before = p.run(&["show", "p.yaml", "gen[n=2]"]).ok().stdout;
    assert!(
        before.contains("param n: 2") && before.contains("not computed"),
        "{before}"
    );
    p.run(&["run", "p.yaml"]).ok();
    let after = p.run(&["show", "p.yaml", "all"]).ok().stdout;
    assert!(
        after.contains("status: cached") && after.contains("out/all.txt"),
        "{after}"
    );
    assert!(
        after.contains("input parts: up[n=1], up[n=2], up[n=3]"),
        "{after}"
    );
}

#[test]
fn cache_location_can_be_shared_through_the_environment() {
    let p = Project::new();
    p.write("p.yaml", SWEEP);
    let shared = p.path().join("team-cache");
    let run = p
        .command(&["run", "p.yaml"])
        .env("PIPELINE_CACHE", &shared)
        .output()
        .unwrap();
    assert!(run.status.success());
    assert!(shared.join("entries").read_dir().unwrap().count() == 7);
    let run = p
        .run(&["run", "p.yaml", "--cache", shared.to_str().unwrap()])
        .ok();
    assert!(run.stdout.contains("0 ran, 7 cached"), "{}", run.stdout);
}
