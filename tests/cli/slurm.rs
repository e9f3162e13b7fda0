//! The Slurm executor against a real Slurm cluster (`.ci/slurm-cluster up`, which `.ci/run`
//! starts). Without one (no `SLURM_CONF`, or `squeue` does not answer) every test here returns
//! early with a printed reason.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Project, sorted};

/// Why the Slurm tests cannot run here, if they cannot.
fn no_cluster() -> Option<String> {
    if std::env::var_os("SLURM_CONF").is_none() {
        return Some("SLURM_CONF is not set (start one with `.ci/slurm-cluster up`)".into());
    }
    match Command::new("sinfo").args(["-h", "-o", "%T"]).output() {
        Ok(out) if out.status.success() && !out.stdout.is_empty() => None,
        Ok(out) => Some(format!(
            "sinfo fails: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("sinfo cannot run: {e}")),
    }
}

macro_rules! need_cluster {
    () => {
        if let Some(why) = no_cluster() {
            eprintln!("skipped: no Slurm cluster: {why}");
            return;
        }
    };
}

/// Names of this user's jobs that Slurm still has queued or running.
fn live_jobs() -> Vec<String> {
    let out = Command::new("squeue")
        .args([
            "-h",
            "-t",
            "PENDING,RUNNING,COMPLETING,SUSPENDED",
            "-o",
            "%j",
        ])
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn slurm_run(p: &Project, args: &[&str]) -> super::Run {
    let mut all = vec!["run"];
    all.extend(args);
    all.extend(["--executor", "slurm", "--poll-interval", "0.2"]);
    p.run(&all)
}

#[test]
fn a_sweep_runs_as_jobs_and_cheap_stages_run_here() {
    need_cluster!();
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
stages:
  sq:
    op: shell
    params:
      cmd: 'echo $((x * x)) > sq.txt; echo "${SLURM_JOB_ID:-local} $SLURM_CPUS_PER_TASK" > where.txt; echo "$STAGE" >> "$ROOT/ran.log"'
      outputs: [sq.txt, where.txt]
    resources: {threads: 2, mem: 300M, time: 10m}
    sweep: {x: [1, 2, 3, 4, 5]}
  total:
    op: shell
    inputs: {parts: [sq]}
    params:
      cmd: 'for d in $INPUT_PARTS; do cat $d/sq.txt; done | paste -sd+ | bc > total.txt; echo "${SLURM_JOB_ID:-local}" > where.txt'
      outputs: [total.txt, where.txt]
  here:
    op: shell
    resources: {local: true}
    inputs: {total: total}
    params:
      cmd: 'cp $INPUT_TOTAL/total.txt copy.txt; echo "${SLURM_JOB_ID:-local}" > where.txt'
      outputs: [copy.txt, where.txt]
    publish: true
"#,
    );
    let run = slurm_run(&p, &["p.yaml"]).ok();
    assert!(run.stdout.contains("executor slurm"), "{}", run.stdout);
    assert!(run.stdout.contains("7 ran, 0 cached"), "{}", run.stdout);
    assert_eq!(p.read("results/here/copy.txt").trim(), "55");
    assert_eq!(p.read("results/here/where.txt").trim(), "local");
    // Where each stage ran: sweep members and the gatherer in jobs (with the threads they
    // asked for), the local stage here.
    let mut places: Vec<String> = p
        .entries()
        .iter()
        .filter_map(|e| std::fs::read_to_string(e.join("out/where.txt")).ok())
        .map(|w| {
            let mut f = w.split_whitespace();
            let place = match f.next().unwrap_or_default() {
                "local" => "local".to_string(),
                id => {
                    assert!(id.parse::<u64>().is_ok(), "a job id: {w}");
                    "job".to_string()
                }
            };
            match f.next() {
                Some(cpus) => format!("{place} {cpus}"),
                None => place,
            }
        })
        .collect();
    places.sort();
    assert_eq!(
        places,
        ["job", "job 2", "job 2", "job 2", "job 2", "job 2", "local"]
    );
    assert_eq!(sorted(p.ran()).len(), 5);
    // Every entry's log keeps what its job printed; the pending folders are gone.
    let tmp: Vec<_> = std::fs::read_dir(p.path().join("cache/tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "{tmp:?}");
    let again = slurm_run(&p, &["p.yaml"]).ok();
    assert!(again.stdout.contains("0 ran, 7 cached"), "{}", again.stdout);
}

#[test]
fn a_failing_job_is_reported_with_its_state_and_log_tail() {
    need_cluster!();
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
stages:
  broken_job:
    op: shell
    params: {cmd: 'echo "reading the input"; echo "disk quota exceeded" >&2; exit 3'}
  after:
    op: shell
    inputs: {x: broken_job}
    params: {cmd: 'true'}
  too_big:
    op: shell
    resources: {mem: 900G}
    params: {cmd: 'true'}
"#,
    );
    let run = slurm_run(&p, &["p.yaml"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(
        out.contains("FAILED broken_job: command exited with status 3"),
        "{out}"
    );
    assert!(out.contains("FAILED (NonZeroExitCode)"), "{out}");
    assert!(
        out.contains("| disk quota exceeded") && out.contains("| reading the input"),
        "{out}"
    );
    assert!(out.contains("skipped after: `broken_job` failed"), "{out}");
    assert!(
        out.contains("FAILED too_big: sbatch refused the job") && out.contains("Memory"),
        "{out}"
    );
}

#[test]
fn a_stage_over_its_time_is_reported_as_timeout() {
    need_cluster!();
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
stages:
  over_time:
    op: shell
    resources: {time: 1m}
    params: {cmd: 'echo started; sleep 600'}
"#,
    );
    let started = Instant::now();
    let run = slurm_run(&p, &["p.yaml"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stdout.contains("TIMEOUT"), "{}", run.stdout);
    assert!(run.stdout.contains("DUE TO TIME LIMIT"), "{}", run.stdout);
    assert!(
        started.elapsed() < Duration::from_secs(300),
        "Slurm enforces limits within a minute or two"
    );
}

#[test]
fn ctrl_c_cancels_every_job_of_the_run_and_a_rerun_resumes() {
    need_cluster!();
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
stages:
  quick_ctrlc:
    op: shell
    params: {cmd: 'echo done > q.txt', outputs: [q.txt]}
  sleepy_ctrlc:
    op: shell
    inputs: {q: quick_ctrlc}
    params: {cmd: 'sleep 120; echo $i > s.txt', outputs: [s.txt]}
    sweep: {i: [1, 2, 3, 4]}
"#,
    );
    let child = p
        .command(&[
            "run",
            "p.yaml",
            "--executor",
            "slurm",
            "--poll-interval",
            "0.2",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while live_jobs()
        .iter()
        .filter(|j| j.contains("sleepy_ctrlc"))
        .count()
        < 4
    {
        assert!(start.elapsed() < Duration::from_secs(60), "jobs not queued");
        std::thread::sleep(Duration::from_millis(100));
    }
    let sent = Instant::now();
    // SAFETY: sending SIGINT to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}");
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "{:?}",
        sent.elapsed()
    );
    // scancel is asynchronous: the jobs leave the queue within Slurm's KillWait.
    let start = Instant::now();
    while live_jobs().iter().any(|j| j.contains("sleepy_ctrlc")) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "jobs left running: {:?}",
            live_jobs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The rerun keeps what finished and starts the cancelled stages afresh.
    let rerun = p
        .command(&["run", "p.yaml", "--executor", "slurm", "--dry-run"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&rerun.stdout);
    assert!(text.contains("1 cached, 4 to run"), "{text}");
}

#[test]
fn a_preempted_job_is_resubmitted_with_retries() {
    need_cluster!();
    // The test cluster preempts jobs of partition `second` for jobs of `urgent` (see
    // `.ci/slurm-cluster`); a cluster without that partition skips this test.
    let partitions = Command::new("sinfo")
        .args(["-h", "-o", "%P"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !partitions.lines().any(|l| l.trim() == "urgent") {
        eprintln!("skipped: the cluster has no `urgent` partition to preempt with");
        return;
    }
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
stages:
  preempted_once:
    op: shell
    params: {cmd: 'echo "start $SLURM_JOB_ID" >> "$ROOT/ran.log"; sleep 6; echo done > d.txt', outputs: [d.txt]}
    resources: {threads: 16, mem: 200M}
"#,
    );
    let child = p
        .command(&[
            "run",
            "p.yaml",
            "--executor",
            "slurm",
            "--poll-interval",
            "0.2",
            "--partition",
            "second",
            "--retries",
            "1",
            "--jobs",
            "16",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while p.ran().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the job never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Ours holds every CPU; a one-CPU job of a higher tier makes Slurm cancel it, then runs at
    // once and is gone before the resubmitted job is scheduled.
    let urgent = Command::new("sbatch")
        .args([
            "--parsable",
            "--partition",
            "urgent",
            "--cpus-per-task",
            "1",
            "--mem",
            "100M",
            "--job-name",
            "urgent_preemptor",
            "--output",
            "/dev/null",
            "--wrap",
            "sleep 1",
        ])
        .output()
        .unwrap();
    assert!(
        urgent.status.success(),
        "{}",
        String::from_utf8_lossy(&urgent.stderr)
    );
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Started twice, under two job ids; the second attempt's output was committed.
    let ran = p.ran();
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert_ne!(ran[0], ran[1]);
    let log: String = p
        .entries()
        .iter()
        .map(|e| std::fs::read_to_string(e.join("log.txt")).unwrap_or_default())
        .collect();
    assert!(
        log.contains("PREEMPTED") && log.contains("resubmitted (1/1)"),
        "{log}"
    );
}

#[test]
fn gpu_stages_queue_one_per_gpu() {
    need_cluster!();
    let p = Project::new();
    // The test cluster declares two (fake) GPUs: four one-GPU stages run two at a time.
    p.write(
        "p.yaml",
        r#"
stages:
  on_gpu:
    op: shell
    resources: {gpu: 1}
    params:
      cmd: 'echo "$CUDA_VISIBLE_DEVICES $(date +%s.%N)" > span.txt; sleep 3; date +%s.%N >> span.txt'
      outputs: [span.txt]
    sweep: {i: [1, 2, 3, 4]}
  gather:
    op: shell
    publish: true
    inputs: {spans: [on_gpu]}
    params:
      cmd: 'for d in $INPUT_SPANS; do tr "\n" " " < $d/span.txt; echo; done > spans.txt'
      outputs: [spans.txt]
"#,
    );
    let run = slurm_run(&p, &["p.yaml"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let spans: Vec<(String, f64, f64)> = p
        .read("results/gather/spans.txt")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(spans.len(), 4);
    for (device, _, _) in &spans {
        assert!(
            device == "0" || device == "1",
            "CUDA_VISIBLE_DEVICES={device}"
        );
    }
    // At no moment do more than two stages run.
    for (_, start, _) in &spans {
        let overlapping = spans
            .iter()
            .filter(|(_, s, e)| s <= start && start < e)
            .count();
        assert!(overlapping <= 2, "{spans:?}");
    }
}

#[test]
fn two_drivers_on_one_cache_compute_each_stage_once() {
    need_cluster!();
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
stages:
  once:
    op: shell
    params:
      cmd: 'sleep 1; echo "once $i" >> "$ROOT/ran.log"; echo $i > v.txt'
      outputs: [v.txt]
    sweep: {i: [1, 2, 3, 4, 5, 6]}
"#,
    );
    let spawn = || {
        p.command(&[
            "run",
            "p.yaml",
            "--executor",
            "slurm",
            "--poll-interval",
            "0.2",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    assert_eq!(
        sorted(p.ran()),
        (1..=6).map(|i| format!("once {i}")).collect::<Vec<_>>()
    );
    let texts = format!(
        "{}{}",
        String::from_utf8_lossy(&a.stdout),
        String::from_utf8_lossy(&b.stdout)
    );
    assert!(texts.contains("(computed by another run)"), "{texts}");
}

#[test]
fn a_new_driver_adopts_the_jobs_of_a_killed_one() {
    need_cluster!();
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
stages:
  adopted:
    op: shell
    params:
      cmd: 'sleep 4; echo "adopted $i" >> "$ROOT/ran.log"; echo $i > v.txt'
      outputs: [v.txt]
    sweep: {i: [1, 2]}
"#,
    );
    let mut child = p
        .command(&["run", "p.yaml", "--executor", "slurm"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while live_jobs().iter().filter(|j| j.contains("adopted")).count() < 2 {
        assert!(start.elapsed() < Duration::from_secs(60), "jobs not queued");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Kill the driver and its watchdog (as a lost login session would): the jobs go on.
    let _ = Command::new("pkill")
        .args(["-9", "-P", &child.id().to_string()])
        .status();
    child.kill().unwrap();
    child.wait().unwrap();
    let run = slurm_run(&p, &["p.yaml"]).ok();
    assert!(run.stdout.contains("2 ran"), "{}", run.stdout);
    assert_eq!(sorted(p.ran()), ["adopted 1", "adopted 2"], "each ran once");
}

#[test]
fn the_report_through_slurm_is_byte_identical_to_a_local_run() {
    need_cluster!();
    let yaml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/report.yaml"),
    )
    .unwrap();
    let quick: Vec<&str> = [
        "train_rows=600",
        "eval_rows=200",
        "epochs=1",
        "long_epochs=2",
        "batch_epochs=[1,1,1,1]",
        "deep_epochs=1",
        "fix_epochs=1",
        "faces_rows=[24,12,12]",
        "image_size=16",
        "cnn_width=4",
        "pretrain_images=32",
        "pretrain_epochs=1",
    ]
    .iter()
    .flat_map(|set| ["--set", set])
    .collect();
    let local = Project::new();
    let remote = Project::new();
    for p in [&local, &remote] {
        p.write("pipelines/report.yaml", &yaml);
    }
    let mut args = vec!["run", "pipelines/report.yaml", "-j", "2"];
    args.extend(&quick);
    local.run(&args).ok();
    args.extend(["--executor", "slurm", "--poll-interval", "0.2"]);
    let run = remote.run(&args).ok();
    assert!(run.stdout.contains("0 failed, 0 skipped"), "{}", run.stdout);
    let files = |p: &Project| {
        let mut out = Vec::new();
        let mut stack = vec![p.path().join("results")];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(".pipeline") {
                    continue;
                }
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    let rel = e.path().strip_prefix(p.path()).unwrap().to_path_buf();
                    out.push((rel, std::fs::read(e.path()).unwrap()));
                }
            }
        }
        out.sort();
        out
    };
    let (a, b) = (files(&local), files(&remote));
    assert!(a.len() > 30, "{} files", a.len());
    assert_eq!(
        a.iter().map(|f| &f.0).collect::<Vec<_>>(),
        b.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    let differing: Vec<String> = a
        .iter()
        .zip(&b)
        .filter(|((_, x), (_, y))| x != y)
        .map(|((path, _), _)| path.display().to_string())
        .collect();
    // Training and evaluation times are measurements of the machine, not results: the one
    // figure that plots them (and the report that embeds it) differs between any two runs.
    let timing = [
        "results/batch_time/plot.png",
        "results/batch_time/plot.svg",
        "results/batch_time/summary.json",
        "results/figures/batch_time/plot.png",
        "results/figures/batch_time/plot.svg",
        "results/report.html",
        "results/report.md",
    ];
    let unexpected: Vec<&String> = differing
        .iter()
        .filter(|d| !timing.contains(&d.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "differ between local and Slurm: {unexpected:?}"
    );
    // The report's text agrees apart from the figures and time lines.
    let text = |p: &Project| -> Vec<String> {
        p.read("results/report.md")
            .lines()
            .filter(|l| !l.contains("time") && !l.contains("data:image"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(text(&local), text(&remote));
}
