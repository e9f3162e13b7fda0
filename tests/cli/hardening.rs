//! A hostile or careless user: links and `..` in results/, concurrent publishers, edited and
//! damaged cache entries, a killed engine, huge inputs, a full disk.

use std::fs;
use std::os::unix::fs::symlink;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::{Project, sorted};

const PUBLISHED: &str = r#"
stages:
  v:
    op: shell
    publish: true
    params: {cmd: 'echo "$STAGE" >> "$ROOT/ran.log"; echo value > o.txt; echo keep > k.txt'}
  w:
    op: shell
    inputs: {v: v}
    params: {cmd: 'cat "$INPUT_V/o.txt" > copy.txt; echo "$STAGE" >> "$ROOT/ran.log"'}
"#;

/// Every file under `dir` (recursively) with its content, sorted.
fn tree(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = pipeline::cache::list_files(dir)
        .into_iter()
        .map(|rel| {
            let text = fs::read_to_string(dir.join(&rel)).unwrap_or_default();
            (rel, text)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn publishing_never_writes_through_a_link_nor_prunes_its_target() {
    let p = Project::new();
    p.write("p.yaml", PUBLISHED);
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("o.txt"), "precious").unwrap();
    fs::write(outside.path().join("stray.txt"), "mine").unwrap();
    fs::create_dir_all(p.path().join("results")).unwrap();
    symlink(outside.path(), p.path().join("results/v")).unwrap();
    let run = p.run(&["run", "p.yaml"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("results/v is a symbolic link"),
        "{}",
        run.stderr
    );
    assert_eq!(
        tree(outside.path()),
        [
            ("o.txt".to_string(), "precious".to_string()),
            ("stray.txt".to_string(), "mine".to_string())
        ],
        "the link's target is untouched"
    );
    // The computation itself was cached; removing the link lets the next run publish.
    fs::remove_file(p.path().join("results/v")).unwrap();
    p.clear_ran();
    let run = p.run(&["run", "p.yaml"]).ok();
    assert!(run.stdout.contains("0 ran, 2 cached"), "{}", run.stdout);
    assert_eq!(p.read("results/v/o.txt"), "value\n");

    // A link in place of a published file is replaced, not written through.
    fs::remove_file(p.path().join("results/v/o.txt")).unwrap();
    symlink(
        outside.path().join("o.txt"),
        p.path().join("results/v/o.txt"),
    )
    .unwrap();
    p.run(&["run", "p.yaml"]).ok();
    assert_eq!(
        fs::read_to_string(outside.path().join("o.txt")).unwrap(),
        "precious"
    );
    assert!(
        !fs::symlink_metadata(p.path().join("results/v/o.txt"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(p.read("results/v/o.txt"), "value\n");
}

#[test]
fn hostile_member_names_become_safe_folders_and_still_select() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
params: {x: ok}
stages:
  s:
    op: shell
    publish: true
    params: {cmd: 'echo "$x" > o.txt; echo "$STAGE" >> "$ROOT/ran.log"'}
    sweep: {x: ["${params.x}", "/../../escape", "..", "a%2Fb"]}
  t:
    op: shell
    publish: "sub/dir"
    params: {cmd: 'echo "$y" > t.txt'}
    sweep: {y: ["../up", "b"]}
"#,
    );
    let run = p.run(&["run", "p.yaml"]).ok();
    assert!(run.stdout.contains("6 ran"), "{}", run.stdout);
    let results = p.path().join("results");
    let mut folders: Vec<String> = fs::read_dir(&results)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    assert_eq!(
        folders,
        [
            "s[x=%2F..%2F..%2Fescape]",
            "s[x=..]",
            "s[x=a%252Fb]",
            "s[x=ok]",
            "sub"
        ]
    );
    assert_eq!(
        p.read("results/s[x=%2F..%2F..%2Fescape]/o.txt"),
        "/../../escape\n"
    );
    assert_eq!(p.read("results/sub/dir/t[y=..%2Fup]/t.txt"), "../up\n");
    assert!(!p.path().join("escape").exists() && !p.path().join("up").exists());
    // Member names keep working on the command line.
    p.clear_ran();
    p.run(&["run", "p.yaml", "--force", "s[x=/../../escape]"])
        .ok();
    assert_eq!(p.ran(), ["s[x=/../../escape]"]);
}

#[test]
fn publish_folders_are_checked_and_only_published_files_are_pruned() {
    let p = Project::new();
    for (bad, why) in [
        ("../outside", "leaves the results folder"),
        ("/tmp/x", "absolute path"),
    ] {
        p.write(
            "p.yaml",
            &format!("stages:\n  r:\n    op: shell\n    publish: \"{bad}\"\n    params: {{cmd: 'true'}}\n"),
        );
        let run = p.run(&["dag", "p.yaml"]);
        assert_eq!(run.code, 2);
        assert!(
            run.stderr.contains("p.yaml:4:5: stage `r`") && run.stderr.contains(why),
            "{}",
            run.stderr
        );
    }
    // "" and "./" are the results folder itself; a user's own file there survives pruning.
    let yaml = |files: &str, dir: &str| {
        format!(
            "params: {{files: \"{files}\"}}\nstages:\n  r:\n    op: shell\n    publish: \"{dir}\"\n    params: {{cmd: 'for f in ${{params.files}}; do echo $f > $f; done'}}\n"
        )
    };
    p.write("results/NOTES.txt", "my notes");
    p.write("p.yaml", &yaml("a.txt b.txt NOTES2.txt", "./"));
    p.run(&["run", "p.yaml"]).ok();
    assert_eq!(p.read("results/a.txt"), "a.txt\n");
    p.write("p.yaml", &yaml("a.txt", ""));
    p.run(&["run", "p.yaml"]).ok();
    assert!(
        !p.path().join("results/b.txt").exists(),
        "pruned: published before"
    );
    assert!(!p.path().join("results/NOTES2.txt").exists());
    assert_eq!(p.read("results/NOTES.txt"), "my notes", "never pruned");
    assert_eq!(p.read("results/a.txt"), "a.txt\n");
}

#[test]
fn concurrent_runs_publish_whole_files_and_never_empty_an_entry() {
    let yaml = r#"
stages:
  a: {op: shell, publish: true, params: {cmd: 'seq 1 20000 > big.txt; echo a > a.txt'}}
  b: {op: shell, publish: ".", params: {cmd: 'seq 1 5000 > b.txt'}}
  c: {op: shell, publish: true, params: {cmd: 'echo $n > c.txt'}, sweep: {n: [1, 2, 3]}}
"#;
    let expected_big: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    for round in 0..6 {
        let p = Project::new();
        p.write("p.yaml", yaml);
        // The second half of the rounds starts from a warm cache: publishing only.
        if round >= 3 {
            p.run(&["run", "p.yaml", "--results", "warm"]).ok();
        }
        let children: Vec<_> = (0..3)
            .map(|_| {
                p.command(&["run", "p.yaml", "-q"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_eq!(p.read("results/a/big.txt"), expected_big, "round {round}");
        assert_eq!(p.read("results/a/a.txt"), "a\n");
        assert_eq!(p.read("results/b.txt").lines().count(), 5000);
        assert_eq!(p.read("results/c[n=2]/c.txt"), "2\n");
        let verify = p.run(&["verify"]).ok();
        assert!(
            verify.stdout.contains("5 ok, 0 damaged"),
            "round {round}: {}",
            verify.stdout
        );
        let leftovers: Vec<_> = fs::read_dir(p.path().join("results/a"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".pipeline-tmp"))
            .collect();
        assert!(leftovers.is_empty(), "no temporary files left behind");
    }
}

#[test]
fn editing_a_published_file_never_changes_the_cache() {
    let p = Project::new();
    p.write("p.yaml", PUBLISHED);
    p.run(&["run", "p.yaml"]).ok();
    let published = p.path().join("results/v/o.txt");
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&published)
        .unwrap();
    std::io::Write::write_all(&mut f, b"edited\n").unwrap();
    drop(f);
    p.clear_ran();
    let run = p.run(&["run", "p.yaml", "--force", "w", "--verify"]).ok();
    assert!(run.stdout.contains("1 ran, 1 cached"), "{}", run.stdout);
    assert_eq!(p.ran(), ["w"], "the entry was not damaged by the edit");
    let entries = p.entries();
    let copy = entries
        .iter()
        .map(|e| e.join("out/copy.txt"))
        .find(|f| f.exists())
        .unwrap();
    assert_eq!(fs::read_to_string(copy).unwrap(), "value\n");
    assert_eq!(
        p.read("results/v/o.txt"),
        "value\n",
        "restored from the entry"
    );
    // Entry files are read-only.
    use std::os::unix::fs::PermissionsExt;
    for entry in entries {
        for rel in pipeline::cache::list_files(&entry.join("out")) {
            let mode = fs::metadata(entry.join("out").join(rel))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o222, 0, "entry files are read-only");
        }
    }
}

fn entry_with(p: &Project, file: &str) -> std::path::PathBuf {
    p.entries()
        .into_iter()
        .map(|e| e.join("out").join(file))
        .find(|f| f.exists())
        .unwrap()
}

fn overwrite(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(path, text).unwrap();
}

#[test]
fn a_damaged_entry_is_named_moved_aside_and_recomputed() {
    let p = Project::new();
    p.write("p.yaml", PUBLISHED);
    p.run(&["run", "p.yaml"]).ok();

    // Truncated: the cheap check (sizes) catches it on the next run.
    overwrite(&entry_with(&p, "o.txt"), "");
    let status = p.run(&["status", "p.yaml"]).ok();
    assert!(
        status
            .stdout
            .contains("damaged v: `o.txt` has 0 bytes, 6 were committed"),
        "{}",
        status.stdout
    );
    p.clear_ran();
    let run = p.run(&["run", "p.yaml"]).ok();
    assert!(
        run.stdout.contains("the cached entry of `v` is damaged")
            || run.stderr.contains("the cached entry of `v` is damaged"),
        "{}{}",
        run.stdout,
        run.stderr
    );
    assert_eq!(
        p.ran(),
        ["v"],
        "recomputed; its dependent's key is unchanged"
    );
    assert_eq!(
        fs::read_to_string(entry_with(&p, "o.txt")).unwrap(),
        "value\n"
    );
    assert_eq!(
        fs::read_dir(p.path().join("cache/damaged"))
            .unwrap()
            .count(),
        1,
        "the damaged entry was moved aside, not deleted"
    );

    // Same size, other bytes: only hashes tell; `verify` finds it by stage name.
    overwrite(&entry_with(&p, "o.txt"), "VALUE\n");
    let cheap = p.run(&["status", "p.yaml"]).ok();
    assert!(cheap.stdout.contains("cached  v"), "{}", cheap.stdout);
    let verify = p.run(&["verify", "p.yaml"]);
    assert_eq!(verify.code, 1, "{}", verify.stdout);
    assert!(
        verify
            .stdout
            .contains("damaged  v: `o.txt` changed since it was committed"),
        "{}",
        verify.stdout
    );
    assert!(
        verify.stdout.contains("1 ok, 1 damaged"),
        "{}",
        verify.stdout
    );
    p.clear_ran();
    p.run(&["run", "p.yaml"]).ok();
    assert_eq!(p.ran(), ["v"]);
    assert_eq!(p.read("results/v/o.txt"), "value\n");

    // `run --verify` checks hashes itself.
    overwrite(&entry_with(&p, "k.txt"), "KEEP\n");
    p.clear_ran();
    p.run(&["run", "p.yaml", "--verify"]).ok();
    assert_eq!(p.ran(), ["v"]);
    assert_eq!(p.read("results/v/k.txt"), "keep\n");
}

#[test]
fn an_output_that_is_a_symbolic_link_fails_the_stage() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "stages:\n  l: {op: shell, publish: true, params: {cmd: 'ln -s /etc/hostname h'}}\n",
    );
    let run = p.run(&["run", "p.yaml"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("output `h` is a symbolic link"),
        "{}",
        run.stdout
    );
    assert!(p.entries().is_empty());
    assert!(!p.path().join("results/l").exists());
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn stage_processes_die_with_a_killed_engine_and_never_run_twice() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
params: {sleep: 30}
stages:
  long:
    op: shell
    params:
      cmd: 'sleep ${params.sleep} & echo $! > "$ROOT/sleep.pid"; echo started >> "$ROOT/started.log"; wait; echo "$STAGE" >> "$ROOT/ran.log"'
"#,
    );
    let mut engine = p
        .command(&["run", "p.yaml"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while p.read("sleep.pid").trim().is_empty() || p.read("started.log").is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "stage never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let sleep_pid: i32 = p.read("sleep.pid").trim().parse().unwrap();
    assert!(alive(sleep_pid));
    engine.kill().unwrap(); // SIGKILL: no cleanup in the engine itself
    engine.wait().unwrap();
    let start = Instant::now();
    while alive(sleep_pid) {
        // A zombie counts as gone: its parent `sh` was killed too and init reaps it.
        let state = fs::read_to_string(format!("/proc/{sleep_pid}/stat")).unwrap_or_default();
        if state.split_whitespace().nth(2) == Some("Z") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the stage's process outlived the engine"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(p.entries().is_empty());
    let run = p.run(&["run", "p.yaml", "--set", "sleep=0"]).ok();
    assert!(run.stdout.contains("1 ran"), "{}", run.stdout);
    assert_eq!(p.read("started.log").lines().count(), 2);
    assert_eq!(p.ran(), ["long"]);
}

#[test]
fn the_key_lock_is_held_by_the_stage_processes_themselves() {
    // A process a stage leaves behind keeps its key locked: another run waits for it instead of
    // computing the same key beside it.
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
stages:
  s:
    op: shell
    params: {cmd: '(sleep 1; echo late >> "$ROOT/bg.log") & echo "$STAGE" >> "$ROOT/ran.log"'}
"#,
    );
    p.run(&["run", "p.yaml"]).ok();
    assert!(
        p.read("bg.log").is_empty(),
        "the first run ended before its background job"
    );
    let run = p.run(&["run", "p.yaml", "--force", "s"]).ok();
    assert!(run.stdout.contains("1 ran"), "{}", run.stdout);
    assert!(
        p.read("bg.log").contains("late"),
        "the second run waited for the first run's background process"
    );
    assert_eq!(sorted(p.ran()), ["s", "s"]);
}

#[test]
fn planning_errors_never_panic() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "stages:\n  a: {op: nope}\n  b: {op: shell, params: {cmd: x}, inputs: {x: a}}\n  c: {op: shell, params: {cmd: x}, inputs: {x: 'a[n=1]'}}\n",
    );
    let run = p.run(&["run", "p.yaml"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("unknown op `nope`"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("p.yaml:3:36: input `x`: stage `a` could not be planned"),
        "{}",
        run.stderr
    );
}

#[test]
fn huge_grids_and_bad_numbers_are_refused_before_anything_runs() {
    let p = Project::new();
    let axes: Vec<String> = (0..12)
        .map(|i| format!("k{i}: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"))
        .collect();
    p.write(
        "p.yaml",
        &format!(
            "stages:\n  g:\n    op: shell\n    params: {{cmd: 'true'}}\n    sweep: {{{}}}\n",
            axes.join(", ")
        ),
    );
    let start = Instant::now();
    let run = p.run(&["run", "p.yaml"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("p.yaml:5:5: stage `g` expands to 1000000000000 members"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--max-stages"), "{}", run.stderr);
    assert!(start.elapsed() < Duration::from_secs(5));
    p.write(
        "q.yaml",
        "stages:\n  g: {op: shell, params: {cmd: 'true'}, sweep: {a: [1, 2, 3], b: [1, 2]}}\n",
    );
    let small = p.run(&["dag", "q.yaml", "--max-stages", "5"]);
    assert_eq!(small.code, 2);
    assert!(
        small
            .stderr
            .contains("expands to 6 members, beyond the limit of 5")
    );
    p.run(&["dag", "q.yaml", "--max-stages", "6"]).ok();

    for (value, message) in [
        (
            "epochs: 0",
            "stage `t`: parameter `epochs`: 0 is below the minimum 1",
        ),
        (
            "epochs: -5",
            "parameter `epochs`: -5 is below the minimum 1",
        ),
        ("lr: 0", "parameter `lr`: 0 must be > 0"),
        (
            "lr: .nan",
            "stage `t`, key `params.lr`: the number .nan is not finite",
        ),
        ("lr: -.inf", "is not finite"),
        ("batch_size: 4294967296", "above the maximum"),
    ] {
        p.write(
            "m.yaml",
            &format!(
                "stages:\n  d: {{op: data.synthetic_map}}\n  t:\n    op: train.mlp\n    inputs: {{data: d}}\n    params: {{{value}}}\n"
            ),
        );
        let run = p.run(&["run", "m.yaml"]);
        assert_eq!(run.code, 2, "{value}");
        assert!(
            run.stderr.contains("m.yaml:6:") && run.stderr.contains(message),
            "{value}: {}",
            run.stderr
        );
        assert!(p.entries().is_empty(), "nothing ran");
    }
    // Every bad parameter of a stage is reported at once.
    p.write(
        "m.yaml",
        "stages:\n  d: {op: data.synthetic_map}\n  t:\n    op: train.mlp\n    inputs: {data: d}\n    params: {epochs: 0, lr: -1, width: 0}\n",
    );
    let run = p.run(&["run", "m.yaml"]);
    assert!(
        run.stderr
            .contains("m.yaml:6:14: stage `t`: parameter `epochs`")
            && run
                .stderr
                .contains("m.yaml:6:25: stage `t`: parameter `lr`")
            && run
                .stderr
                .contains("m.yaml:6:33: stage `t`: parameter `width`")
            && run.stderr.contains("3 errors in m.yaml"),
        "{}",
        run.stderr
    );
    let long = "s".repeat(101);
    p.write(
        "n.yaml",
        &format!("stages:\n  {long}: {{op: shell, params: {{cmd: 'true'}}}}\n"),
    );
    let run = p.run(&["dag", "n.yaml"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("at most 100"), "{}", run.stderr);
}

#[test]
fn a_huge_label_is_an_error_with_file_and_line_not_an_allocation() {
    let p = Project::new();
    let head = "long,lat,country\n";
    p.write("d/train.csv", &format!("{head}1,2,0\n3,4,4294967295\n"));
    p.write("d/validation.csv", &format!("{head}1,2,0\n"));
    p.write("d/test.csv", &format!("{head}1,2,0\n"));
    p.write(
        "p.yaml",
        "stages:\n  d: {op: data.csv, params: {dir: d, features: [long, lat], label: country}}\n",
    );
    let run = p.run(&["run", "p.yaml"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .contains("train.csv:3: column `country`: label \"4294967295\" is too large"),
        "{}",
        run.stdout
    );
}

/// A small filesystem for the cache, in a user and mount namespace of the test's own.
fn unshare_works() -> bool {
    std::process::Command::new("unshare")
        .args(["-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /tmp"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_full_disk_fails_the_stage_not_the_run() {
    if !unshare_works() {
        eprintln!("skipped: cannot create a user/mount namespace with a small tmpfs here");
        return;
    }
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
params: {mb: 4}
stages:
  big: {op: shell, params: {cmd: 'head -c ${params.mb}000000 /dev/zero > big.bin'}}
  small: {op: shell, params: {cmd: 'echo ok > small.txt'}}
  after: {op: shell, inputs: {b: big}, params: {cmd: 'true'}}
"#,
    );
    fs::create_dir_all(p.path().join("small-cache")).unwrap();
    let bin = env!("CARGO_BIN_EXE_pipeline");
    let out = std::process::Command::new("unshare")
        .args(["-rm", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size=2m tmpfs small-cache && {bin} --cache small-cache run p.yaml --jobs 1; \
             echo \"exit=$?\"; ls small-cache/failed/*/; ls small-cache/entries | wc -l"
        ))
        .current_dir(p.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("exit=1"), "{stdout}");
    assert!(stdout.contains("failed: big"), "{stdout}");
    assert!(
        stdout.contains("1 ran, 0 cached, 1 failed, 1 skipped"),
        "{stdout}"
    );
    let after_listing: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("exit="))
        .skip(1)
        .collect();
    assert_eq!(after_listing, ["log.txt", "1"], "{stdout}");
    // A roomier disk: the next run computes what failed.
    let run = p
        .run(&["--cache", "roomy", "run", "p.yaml", "--set", "mb=1"])
        .ok();
    assert!(run.stdout.contains("3 ran"), "{}", run.stdout);
}

/// A PNG whose header declares `side` × `side` pixels, with almost no data behind it.
fn png_declaring(side: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend(kind);
        out.extend(data);
        let crc = crc32(&out[start..]);
        out.extend(crc.to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::new();
    header.extend(side.to_be_bytes());
    header.extend(side.to_be_bytes());
    header.extend([8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(&mut png, b"IHDR", &header);
    chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn an_image_declaring_huge_dimensions_is_refused_before_decoding() {
    let p = Project::new();
    for split in ["train", "val", "test"] {
        for class in ["0_real", "1_fake"] {
            let dir = p.path().join("imgs").join(split).join(class);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("huge.png"), png_declaring(100_000)).unwrap();
        }
    }
    p.write(
        "p.yaml",
        "stages:\n  images: {op: data.images, params: {dir: imgs, size: 16}}\n",
    );
    let run = p.run(&["run", "p.yaml"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("huge.png: larger than 16384 × 16384 pixels"),
        "{}",
        run.stdout
    );
}
