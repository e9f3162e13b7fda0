//! Section 6 ops through the real binary, at CI-friendly sizes.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::Project;

/// A small generated map plus a dataset stage, shared by the tests below.
const DATA: &str = r#"
params: {seed: 0, rows: 3000}
stages:
  map:
    op: data.synthetic_map
    params: {seed: "${params.seed}", n_train: "${params.rows}", n_validation: 600, n_test: 600}
  europe:
    op: data.csv
    inputs: {csv: map}
"#;

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The output folder of a stage, from `pipeline show`.
fn out_dir(p: &Project, file: &str, stage: &str) -> PathBuf {
    let show = p.run(&["show", file, stage]).ok().stdout;
    let line = show
        .lines()
        .find(|l| l.trim_start().starts_with("output: "))
        .unwrap_or_else(|| panic!("{show}"));
    let file = PathBuf::from(line.trim_start().trim_start_matches("output: "));
    file.ancestors()
        .find(|a| a.ends_with("out"))
        .unwrap()
        .to_path_buf()
}

#[test]
fn generator_writes_the_course_schema_deterministically() {
    let p = Project::new();
    p.write("p.yaml", DATA);
    p.run(&["run", "p.yaml"]).ok();
    let dir = out_dir(&p, "p.yaml", "map");
    let train = std::fs::read_to_string(dir.join("train.csv")).unwrap();
    assert!(train.starts_with(",long,lat,country\n"), "{}", &train[..60]);
    assert_eq!(train.lines().count(), 3001);
    assert_eq!(
        std::fs::read_to_string(dir.join("test.csv"))
            .unwrap()
            .lines()
            .count(),
        601
    );
    let meta = json(&out_dir(&p, "p.yaml", "europe").join("dataset.json"));
    assert_eq!(meta["n_classes"], 33);
    assert_eq!(meta["rows"], serde_json::json!([3000, 600, 600]));

    // Same seed in another cache: byte-identical files; another seed: different.
    let again = p
        .command(&["run", "p.yaml", "--cache", "other"])
        .output()
        .unwrap();
    assert!(again.status.success());
    let key = dir.parent().unwrap().file_name().unwrap();
    let other = p
        .path()
        .join("other/entries")
        .join(key)
        .join("out/train.csv");
    assert_eq!(std::fs::read_to_string(other).unwrap(), train);
    let status = p.run(&["status", "p.yaml", "--set", "seed=1"]).ok().stdout;
    assert!(status.contains("stale   map: seed: 0 → 1"), "{status}");
}

fn train_yaml(extra: &str) -> String {
    format!(
        "{DATA}  model:\n    op: train.mlp\n    inputs: {{data: europe}}\n    params: {{depth: 2, width: 32, epochs: 3, batch_size: 64, lr: 0.01, seed: 3{extra}}}\n"
    )
}

#[test]
fn training_learns_and_records_every_epoch_and_step() {
    let p = Project::new();
    p.write("p.yaml", &train_yaml(""));
    let log = p.run(&["run", "p.yaml"]).ok().stdout;
    assert!(
        log.contains("  … model: epoch 1/3"),
        "progress names the stage: {log}"
    );
    let dir = out_dir(&p, "p.yaml", "model");
    let run = json(&dir.join("run.json"));
    let epochs = run["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 3);
    assert_eq!(run["steps_per_epoch"], 47); // ceil(3000 / 64)
    let first = epochs[0]["validation_acc"].as_f64().unwrap();
    let last = epochs[2]["validation_acc"].as_f64().unwrap();
    assert!(
        last > 3.0 / 33.0 && last >= first - 0.05,
        "accuracy {first} → {last}"
    );
    assert!(epochs[2]["train_loss"].as_f64().unwrap() < epochs[0]["train_loss"].as_f64().unwrap());
    for e in epochs {
        assert!(
            e["train_time_s"].as_f64().unwrap() > 0.0 && e["eval_time_s"].as_f64().unwrap() > 0.0
        );
    }
    let steps = json(&dir.join("steps.json"));
    assert_eq!(steps.as_array().unwrap().len(), 3 * 47);
    assert!(dir.join("model.safetensors").metadata().unwrap().len() > 1000);
    let show = p.run(&["show", "p.yaml", "model"]).ok().stdout;
    let acc_line = show
        .lines()
        .find(|l| l.contains("metric validation_acc: "))
        .unwrap_or_else(|| panic!("{show}"));
    let shown = acc_line.rsplit(' ').next().unwrap();
    let digits = shown.trim_start_matches("0.").trim_start_matches('0').len();
    assert!(digits <= 4, "4 significant digits for people: {acc_line}");
    let tools: Value =
        serde_json::from_str(&p.run(&["show", "p.yaml", "model", "--json"]).ok().stdout).unwrap();
    assert_eq!(
        tools[0]["metrics"]["validation_acc"], epochs[2]["validation_acc"],
        "--json keeps full precision"
    );
    assert_eq!(tools[0]["status"], "cached");
}

#[test]
fn same_seed_same_numbers_other_seed_other_numbers() {
    let p = Project::new();
    p.write("p.yaml", &train_yaml(""));
    p.run(&["run", "p.yaml"]).ok();
    let a = json(&out_dir(&p, "p.yaml", "model").join("steps.json"));
    p.run(&["run", "p.yaml", "--force", "model"]).ok();
    let b = json(&out_dir(&p, "p.yaml", "model").join("steps.json"));
    assert_eq!(
        a, b,
        "a forced rerun with the same seed gives the same losses"
    );
    p.write("q.yaml", &train_yaml("").replace("seed: 3", "seed: 4"));
    p.run(&["run", "q.yaml"]).ok();
    let c = json(&out_dir(&p, "q.yaml", "model").join("steps.json"));
    assert_ne!(a, c);
}

#[test]
fn a_diverging_run_finishes_and_is_recorded() {
    let p = Project::new();
    p.write(
        "p.yaml",
        &train_yaml(", lr: 1.0e30").replace("lr: 0.01, ", ""),
    );
    let run = p.run(&["run", "p.yaml"]).ok();
    assert!(
        run.stdout.contains("1 ran") || run.stdout.contains("3 ran"),
        "{}",
        run.stdout
    );
    let record = json(&out_dir(&p, "p.yaml", "model").join("run.json"));
    assert_eq!(record["diverged"], true);
}

#[test]
fn batch_norm_and_sine_features_change_what_they_should() {
    let p = Project::new();
    let yaml = format!(
        "{}  bn:\n    op: train.mlp\n    inputs: {{data: europe}}\n    params: {{depth: 2, width: 32, epochs: 1, batch_size: 64, batch_norm: true}}\n  \
         sine:\n    op: features.sine\n    inputs: {{data: europe}}\n  \
         on_sine:\n    op: train.mlp\n    inputs: {{data: sine}}\n    params: {{depth: 2, width: 32, epochs: 1, batch_size: 64}}\n",
        train_yaml("")
    );
    p.write("p.yaml", &yaml);
    p.run(&["run", "p.yaml"]).ok();
    let plain = json(&out_dir(&p, "p.yaml", "model").join("run.json"));
    let bn = json(&out_dir(&p, "p.yaml", "bn").join("run.json"));
    // Batch norm adds a scale and a shift per hidden unit: 2 layers × 32 × 2 trainable values.
    assert_eq!(
        bn["n_parameters"].as_u64().unwrap(),
        plain["n_parameters"].as_u64().unwrap() + 128
    );
    let header = safetensors_keys(&out_dir(&p, "p.yaml", "bn").join("model.safetensors"));
    assert!(
        header.contains("norms.0.running_mean") && header.contains("layers.2.weight"),
        "{header}"
    );

    let sine = json(&out_dir(&p, "p.yaml", "sine").join("dataset.json"));
    assert_eq!(sine["features"].as_array().unwrap().len(), 20);
    assert_eq!(sine["features"][1], "sin(0.2*long)");
    assert_eq!(sine["raw_features"], serde_json::json!(["long", "lat"]));
    let model = json(&out_dir(&p, "p.yaml", "on_sine").join("model.json"));
    assert_eq!(model["config"]["inputs"], 20);
}

fn safetensors_keys(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    String::from_utf8_lossy(&bytes[8..8 + len]).into_owned()
}

#[test]
fn gradients_vanish_in_a_deep_narrow_relu_net_and_not_with_the_fix() {
    let p = Project::new();
    let yaml = format!(
        "{DATA}  deep:\n    op: train.mlp\n    inputs: {{data: europe}}\n    params: {{depth: 100, width: 4, epochs: 1, batch_size: 256, record_grad_norms: true}}\n  \
         fixed:\n    op: train.mlp\n    inputs: {{data: europe}}\n    params: {{depth: 100, width: 40, residual: true, grad_clip: 8, lr: 0.0005, batch_size: 512, epochs: 1, weight_decay: 0.0001, record_grad_norms: true}}\n  \
         deep_plot:\n    op: plot.grad_norms\n    inputs: {{run: deep}}\n    params: {{layers: [0, 30, 60, 90, 95, 99]}}\n"
    );
    p.write("p.yaml", &yaml);
    p.run(&["run", "p.yaml"]).ok();
    let grads = |stage: &str| -> Vec<f64> {
        let run = json(&out_dir(&p, "p.yaml", stage).join("run.json"));
        run["epochs"][0]["grad_norms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    // The output layer (100) always gets a gradient; in the plain net almost none reaches layer 0.
    let deep = grads("deep");
    assert_eq!(deep.len(), 101);
    assert!(
        deep[100] > 0.0 && deep[0] < 1e-6 * deep[100],
        "layer 0 {:e} vs output {:e}",
        deep[0],
        deep[100]
    );
    let fixed = grads("fixed");
    assert!(
        fixed[0] > 1e-3 * fixed[100],
        "layer 0 {:e} vs output {:e}",
        fixed[0],
        fixed[100]
    );
    assert!(p.path().join("results/deep_plot/plot.png").exists());
}

#[test]
fn training_on_the_real_csvs_reaches_a_sane_accuracy() {
    let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/europe");
    if !real.join("train.csv").exists() {
        eprintln!("skipped: {} is absent", real.display());
        return;
    }
    let p = Project::new();
    p.write(
        "p.yaml",
        &format!(
            "stages:\n  europe:\n    op: data.csv\n    params: {{dir: {}}}\n  model:\n    op: train.mlp\n    inputs: {{data: europe}}\n    params: {{depth: 3, width: 32, epochs: 2, batch_size: 128, lr: 0.01}}\n",
            real.display()
        ),
    );
    p.run(&["run", "p.yaml"]).ok();
    let data = json(&out_dir(&p, "p.yaml", "europe").join("dataset.json"));
    assert_eq!(data["rows"], serde_json::json!([106897, 13363, 13363]));
    assert_eq!(data["n_classes"], 33);
    let run = json(&out_dir(&p, "p.yaml", "model").join("run.json"));
    let acc = run["epochs"][1]["validation_acc"].as_f64().unwrap();
    assert!(acc > 0.7, "validation accuracy after 2 epochs: {acc}");
}

#[test]
fn bad_csvs_fail_with_file_and_line() {
    let p = Project::new();
    let header = ",long,lat,country\n";
    p.write(
        "d/train.csv",
        &format!("{header}0,1.0,2.0,0\n1,1.5,2.5,1\n"),
    );
    p.write("d/validation.csv", &format!("{header}0,1.0,2.0,0\n1,1.5\n"));
    p.write("d/test.csv", &format!("{header}0,1.0,abc,0\n"));
    p.write(
        "p.yaml",
        "stages:\n  europe: {op: data.csv, params: {dir: d}}\n",
    );
    let run = p.run(&["run", "p.yaml"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("validation.csv") && run.stdout.contains(":3"),
        "{}",
        run.stdout
    );

    p.write("d/validation.csv", &format!("{header}0,1.0,2.0,0\n"));
    let run = p.run(&["run", "p.yaml"]);
    assert!(
        run.stdout.contains("test.csv") && run.stdout.contains("abc"),
        "{}",
        run.stdout
    );

    p.write("d/test.csv", &format!("{header}0,1.0,2.0,7\n"));
    let run = p.run(&["run", "p.yaml"]);
    assert!(
        run.stdout
            .contains("test.csv:2: label 7 does not occur in the training file"),
        "{}",
        run.stdout
    );

    p.write(
        "p.yaml",
        "stages:\n  europe: {op: data.csv, params: {dir: d, label: contry}}\n",
    );
    p.write("d/test.csv", &format!("{header}0,1.0,2.0,1\n"));
    let run = p.run(&["run", "p.yaml"]);
    assert!(
        run.stdout.contains("contry") && run.stdout.contains("country"),
        "{}",
        run.stdout
    );

    p.write(
        "p.yaml",
        "stages:\n  europe: {op: data.csv, params: {dir: nowhere}}\n",
    );
    let run = p.run(&["run", "p.yaml"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("nowhere/train.csv"), "{}", run.stderr);
}

#[test]
fn unknown_op_parameter_suggests_and_lists_the_parameters() {
    let p = Project::new();
    p.write("p.yaml", &train_yaml(", widht: 8"));
    let run = p.run(&["run", "p.yaml"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("op `train.mlp` has no parameter `widht`; did you mean `width`?"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("parameters of `train.mlp`: depth, width"),
        "{}",
        run.stderr
    );
    p.write("p.yaml", &train_yaml(", optimizer: adma"));
    let run = p.run(&["run", "p.yaml"]);
    assert!(
        run.stderr
            .contains("`adma` is not one of adam, sgd; did you mean `adam`?"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_report_pipeline_runs_end_to_end_at_small_scale() {
    let p = Project::new();
    let yaml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/report.yaml"),
    )
    .unwrap();
    p.write("pipelines/report.yaml", &yaml);
    let quick: Vec<&str> = [
        "train_rows=1500",
        "eval_rows=300",
        "epochs=2",
        "long_epochs=3",
        "batch_epochs=[1,1,2,2]",
        "deep_epochs=1",
        "fix_epochs=2",
        "faces_rows=[40,16,16]",
        "image_size=16",
        "cnn_width=4",
        "pretrain_images=64",
        "pretrain_epochs=1",
    ]
    .iter()
    .flat_map(|set| ["--set", set])
    .collect();
    let mut args = vec!["run", "pipelines/report.yaml"];
    args.extend(quick);
    let run = p.run(&args).ok();
    // The default model is shared by five stages and trains once per replicate.
    let show = p.run(&["dag", "pipelines/report.yaml"]).ok().stdout;
    for rep in 1..=3 {
        assert!(
            show.contains(&format!(
                "plain[rep={rep}] = lr[lr=0.001,rep={rep}] = grid[depth=6,width=16,rep={rep}] = \
                 depth[depth=6,rep={rep}] = width[width=16,rep={rep}]"
            )),
            "{show}"
        );
    }
    assert!(run.stdout.contains("0 failed, 0 skipped"), "{}", run.stdout);

    let report = p.read("results/report.md");
    for id in [
        "6.1.2.1", "6.1.2.2", "6.1.2.3", "6.1.2.4", "6.2.1.1", "6.2.1.2", "6.2.1.3", "6.2.1.4",
        "6.2.1.5", "6.2.1.6", "6.2.1.7", "7.6.1", "7.6.2",
    ] {
        assert!(
            report.contains(&format!("## {id} ")),
            "report lacks {id}:\n{report}"
        );
    }
    assert!(
        report.contains("(best)") && report.contains("(worst)"),
        "{report}"
    );
    let html = p.read("results/report.html");
    assert!(
        html.matches("data:image/png;base64,").count() >= 14,
        "figures are embedded"
    );
    for stage in [
        "lr_plot",
        "grid_boundaries",
        "deep_grads",
        "sine_boundaries",
        "batch_steps",
    ] {
        let png = p.path().join(format!("results/{stage}/plot.png"));
        assert!(
            png.metadata().map(|m| m.len() > 5000).unwrap_or(false),
            "{stage} has no figure"
        );
        assert!(p.path().join(format!("results/{stage}/plot.svg")).exists());
    }
    // One row per configuration, summarised over its 3 replicates.
    let grid = p.read("results/grid_table/table.csv");
    assert_eq!(grid.lines().count(), 8, "{grid}");
    assert!(grid.lines().skip(1).all(|l| l.ends_with(",3")), "{grid}");
    assert!(p.read("results/grid_table/table.md").contains(" ± "));
    let baselines = p.read("results/baselines_table/table.csv");
    assert_eq!(
        baselines.lines().count(),
        18,
        "boosting, logistic, 3 × 5 learning rates: {baselines}"
    );
    assert_eq!(
        baselines.lines().filter(|l| l.ends_with(",1")).count(),
        2,
        "the seedless baselines run once: {baselines}"
    );

    // A second run executes nothing.
    let again = p.run(&args).ok();
    assert!(again.stdout.contains("\n0 ran, "), "{}", again.stdout);
}

#[test]
fn ctrl_c_stops_a_training_in_its_own_process_promptly() {
    let p = Project::new();
    p.write(
        "p.yaml",
        &train_yaml("").replace("epochs: 3", "epochs: 100000"),
    );
    let child = p
        .command(&["run", "p.yaml"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the training stage has started (its temporary folder exists).
    let start = std::time::Instant::now();
    while p.entries().len() < 2
        || std::fs::read_dir(p.path().join("cache/tmp"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0
    {
        assert!(start.elapsed().as_secs() < 20, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let sent = std::time::Instant::now();
    // SAFETY: sending SIGINT to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        sent.elapsed().as_secs() < 5,
        "Ctrl-C took {:?}",
        sent.elapsed()
    );
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(p.entries().len(), 2, "only the data stages are entries");
    let leftovers: Vec<_> = std::fs::read_dir(p.path().join("cache/tmp"))
        .unwrap()
        .collect();
    assert!(
        leftovers.is_empty(),
        "the interrupted attempt was cleaned up"
    );
}

#[test]
fn the_burn_engine_trains_too_and_its_model_feeds_a_decision_boundary() {
    let p = Project::new();
    let yaml = format!(
        "{}  boundary:\n    op: plot.decision_boundary\n    inputs: {{models: [model], data: europe}}\n    params: {{resolution: 40}}\n",
        train_yaml(", engine: burn")
    );
    p.write("p.yaml", &yaml);
    p.run(&["run", "p.yaml"]).ok();
    let run = json(&out_dir(&p, "p.yaml", "model").join("run.json"));
    let epochs = run["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 3);
    assert!(epochs[2]["train_loss"].as_f64().unwrap() < epochs[0]["train_loss"].as_f64().unwrap());
    assert_eq!(run["params"]["engine"], "burn");
    assert!(p.path().join("results/boundary/plot.png").exists());
}

#[test]
fn section_7_runs_end_to_end_at_small_scale() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
stages:
  faces: {op: data.synthetic_faces, params: {n_train: 40, n_val: 16, n_test: 16, size: 16}}
  images: {op: data.images, inputs: {folder: faces}, params: {size: 16}}
  shapes: {op: data.synthetic_pretrain, params: {n_train: 64, n_val: 16, classes: 4, size: 16}}
  pretrained: {op: train.pretrain, inputs: {data: shapes}, params: {width: 4, epochs: 1, batch_size: 16}}
  features: {op: features.backbone, inputs: {data: images, backbone: pretrained}}
  boosting: {op: train.gbdt, inputs: {data: images}, params: {n_estimators: 5}}
  logistic: {op: train.logistic, inputs: {data: features}}
  scratch:
    op: train.cnn
    inputs: {data: images}
    params: {mode: scratch, width: 4, batch_size: 8}
    sweep: {lr: [0.01, 0.001]}
  probe: {op: train.cnn, inputs: {data: images, backbone: pretrained}, params: {mode: probe, batch_size: 8}}
  finetune: {op: train.cnn, inputs: {data: images, backbone: pretrained}, params: {mode: finetune, batch_size: 8}}
  table:
    op: table
    inputs: {runs: [boosting, logistic, scratch, probe, finetune]}
    params: {columns: [baseline, lr, train_loss, validation_acc, test_acc], group_by: baseline, best_per_group: 2}
  best: {op: select, inputs: {runs: [boosting, logistic, scratch, probe, finetune]}}
  worst: {op: select, inputs: {runs: [boosting, logistic, scratch, probe, finetune]}, params: {pick: worst}}
  grid: {op: plot.images, inputs: {right: best, wrong: worst, data: images}}
"#,
    );
    let run = p.run(&["run", "p.yaml"]).ok();
    assert!(run.stdout.contains("0 failed, 0 skipped"), "{}", run.stdout);
    let faces = out_dir(&p, "p.yaml", "faces");
    assert_eq!(
        std::fs::read_dir(faces.join("train/1_fake"))
            .unwrap()
            .count(),
        20
    );
    let meta = json(&out_dir(&p, "p.yaml", "images").join("images.json"));
    assert_eq!(meta["classes"], serde_json::json!(["0_real", "1_fake"]));
    let table = p.read("results/table/table.csv");
    assert_eq!(table.lines().count(), 7, "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("boosting,—,")),
        "{table}"
    );
    assert!(
        p.read("results/table/table.md")
            .contains("(best of scratch)")
    );
    // Torchvision's names, so that converted torchvision weights load.
    let header = safetensors_keys(&out_dir(&p, "p.yaml", "finetune").join("model.safetensors"));
    assert!(
        header.contains("\"layer4.1.bn2.running_var\"")
            && header.contains("\"layer3.0.downsample.0.weight\""),
        "{header}"
    );
    let predictions = json(&out_dir(&p, "p.yaml", "probe").join("predictions.json"));
    assert_eq!(predictions["probabilities"].as_array().unwrap().len(), 16);
    // Backbone features: 8 × width per image, the test images named for the predictions.
    let features = json(&out_dir(&p, "p.yaml", "features").join("dataset.json"));
    assert_eq!(features["features"].as_array().unwrap().len(), 32);
    assert_eq!(features["rows"], serde_json::json!([40, 16, 16]));
    let logistic = json(&out_dir(&p, "p.yaml", "logistic").join("predictions.json"));
    assert_eq!(logistic["files"], predictions["files"]);
    let pretrain = json(&out_dir(&p, "p.yaml", "pretrained").join("run.json"));
    let held_out = pretrain["epochs"][0]["validation_acc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&held_out), "{pretrain}");
    let summary = json(&out_dir(&p, "p.yaml", "grid").join("summary.json"));
    assert!(
        summary["reading"].as_str().unwrap().contains("test images")
            || summary["reading"]
                .as_str()
                .unwrap()
                .starts_with("no test image")
    );
}

#[test]
fn a_corrupt_image_is_named_or_skipped_and_counted() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "stages:\n  faces: {op: data.synthetic_faces, params: {n_train: 4, n_val: 2, n_test: 2, size: 16}}\n",
    );
    p.run(&["run", "p.yaml"]).ok();
    let faces = out_dir(&p, "p.yaml", "faces");
    for split in ["train", "val", "test"] {
        for class in ["0_real", "1_fake"] {
            let dir = p.path().join("imgs").join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for f in std::fs::read_dir(faces.join(split).join(class))
                .unwrap()
                .flatten()
            {
                std::fs::copy(f.path(), dir.join(f.file_name())).unwrap();
            }
        }
    }
    p.write("imgs/train/1_fake/broken.png", "not a png");
    p.write(
        "q.yaml",
        "stages:\n  images: {op: data.images, params: {dir: imgs, size: 16}}\n",
    );
    let run = p.run(&["run", "q.yaml"]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("broken.png"), "{}", run.stdout);
    p.write("q.yaml", "stages:\n  images: {op: data.images, params: {dir: imgs, size: 16, skip_unreadable: true}}\n");
    p.run(&["run", "q.yaml"]).ok();
    let meta = json(&out_dir(&p, "q.yaml", "images").join("images.json"));
    assert_eq!(meta["skipped"], 1);
}

#[test]
fn training_children_start_even_after_the_binary_is_replaced() {
    // A rebuild during a long run replaces the binary on disk: children must still start from
    // the running one. A shell stage deletes this run's own copy of the binary before training.
    let p = Project::new();
    let bin = p.path().join("bin/pipeline");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_pipeline"), &bin).unwrap();
    let yaml = train_yaml("").replace(
        "  europe:\n    op: data.csv\n    inputs: {csv: map}\n",
        &format!(
            "  csvs:\n    op: shell\n    inputs: {{map: map}}\n    params: {{cmd: 'cp \"$INPUT_MAP\"/*.csv . && rm \"$doomed\"', doomed: '{}', outputs: [train.csv]}}\n  europe:\n    op: data.csv\n    inputs: {{csv: csvs}}\n",
            bin.display()
        ),
    );
    assert!(yaml.contains("csvs"), "{yaml}");
    p.write("p.yaml", &yaml);
    let out = std::process::Command::new(&bin)
        .args(["run", "p.yaml"])
        .current_dir(p.path())
        .env_remove("PIPELINE_CACHE")
        .env_remove("PIPELINE_RESULTS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!bin.exists(), "the shell stage deleted the binary");
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("0 failed"), "{stdout}");
    let run = json(&out_dir(&p, "p.yaml", "model").join("run.json"));
    assert_eq!(run["epochs"].as_array().unwrap().len(), 3);
}

/// `meta.json` of the one cache entry computed by `op`.
fn entry_meta(p: &Project, op: &str) -> Value {
    let metas: Vec<Value> = p
        .entries()
        .iter()
        .map(|e| json(&e.join("meta.json")))
        .filter(|m| m["op"] == op)
        .collect();
    assert_eq!(metas.len(), 1, "{op}: {metas:?}");
    metas[0].clone()
}

#[test]
fn an_all_threads_stage_starts_on_the_free_thread_instead_of_waiting() {
    // Two threads; a one-thread stage holds one of them for 3 s. The shapes generator asks for
    // all threads: it starts at once on the other one rather than waiting for both.
    let p = Project::new();
    p.write(
        "p.yaml",
        "stages:\n  sleeper: {op: shell, params: {cmd: 'sleep 3'}}\n  shapes: {op: data.synthetic_pretrain, params: {n_train: 16, n_val: 4, classes: 2, size: 16}}\n",
    );
    p.run(&["run", "p.yaml", "--jobs", "2"]).ok();
    let (sleeper, shapes) = (
        entry_meta(&p, "shell"),
        entry_meta(&p, "data.synthetic_pretrain"),
    );
    assert_eq!(sleeper["threads"], 1);
    assert_eq!(shapes["threads"], 1, "{shapes}");
    let started = |m: &Value| m["started_at"].as_f64().unwrap();
    assert!(
        started(&shapes) < started(&sleeper) + 2.0,
        "the shapes waited for the sleeper: {shapes} {sleeper}"
    );
    // Alone, it gets both threads.
    let q = Project::new();
    q.write(
        "p.yaml",
        "stages:\n  shapes: {op: data.synthetic_pretrain, params: {n_train: 16, n_val: 4, classes: 2, size: 16}}\n",
    );
    q.run(&["run", "p.yaml", "--jobs", "2"]).ok();
    assert_eq!(entry_meta(&q, "data.synthetic_pretrain")["threads"], 2);
}

#[test]
fn thread_counts_do_not_change_the_numbers() {
    // The scheduler may start an all-threads stage on fewer threads: results must not depend on it.
    let yaml = r#"
stages:
  faces: {op: data.synthetic_faces, params: {n_train: 48, n_val: 16, n_test: 16, size: 16}}
  images: {op: data.images, inputs: {folder: faces}, params: {size: 16}}
  shapes: {op: data.synthetic_pretrain, params: {n_train: 64, n_val: 16, classes: 3, size: 16}}
  pretrained: {op: train.pretrain, inputs: {data: shapes}, params: {width: 4, epochs: 1, batch_size: 16}}
  finetune: {op: train.cnn, inputs: {data: images, backbone: pretrained}, params: {mode: finetune, batch_size: 8}}
  boosting: {op: train.gbdt, inputs: {data: images}, params: {n_estimators: 5}}
"#;
    let numbers = |jobs: &str| -> Vec<Value> {
        let p = Project::new();
        p.write("p.yaml", yaml);
        p.run(&["run", "p.yaml", "--jobs", jobs]).ok();
        ["pretrained", "finetune", "boosting"]
            .iter()
            .flat_map(|stage| {
                let run = json(&out_dir(&p, "p.yaml", stage).join("run.json"));
                let epochs = run["epochs"].as_array().unwrap().clone();
                epochs.into_iter().map(|mut e| {
                    let e = e.as_object_mut().unwrap();
                    e.retain(|k, _| !k.ends_with("time_s"));
                    Value::Object(e.clone())
                })
            })
            .collect()
    };
    let (one, two) = (numbers("1"), numbers("2"));
    assert_eq!(one.len(), 3);
    assert_eq!(one, two);
}

/// What an elastic-threads test compares of `stage`'s run: its epoch records without their
/// times, its weights file's bytes, and its log.
fn elastic_outcome(p: &Project, stage: &str) -> (Value, Vec<u8>, String) {
    let dir = out_dir(p, "p.yaml", stage);
    let log = std::fs::read_to_string(dir.parent().unwrap().join("log.txt")).unwrap_or_default();
    let mut run = json(&dir.join("run.json"));
    for e in run["epochs"].as_array_mut().unwrap() {
        e.as_object_mut()
            .unwrap()
            .retain(|k, _| !k.ends_with("time_s"));
    }
    (
        run["epochs"].clone(),
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        log,
    )
}

#[test]
fn an_elastic_stage_is_lent_idle_threads_and_its_numbers_do_not_change() {
    // One native training alone on two threads: the scheduler lends it the idle one (its log
    // says so); the same training on one thread gives the same bits.
    let yaml = format!(
        "{DATA}  net:\n    op: train.mlp\n    inputs: {{data: europe}}\n    params: {{depth: 3, width: 8, residual: true, batch_size: 512, epochs: 20}}\n"
    );
    let run = |jobs: &str| {
        let p = Project::new();
        p.write("p.yaml", &yaml);
        p.run(&["run", "p.yaml", "--jobs", jobs]).ok();
        elastic_outcome(&p, "net")
    };
    let (one, two) = (run("1"), run("2"));
    assert!(!one.2.contains("now uses"), "{}", one.2);
    assert!(
        two.2.contains("the stage now uses 2 thread(s)"),
        "{}",
        two.2
    );
    assert_eq!(one.0, two.0);
    assert!(one.1 == two.1, "the weights differ");
}

#[test]
fn a_native_cnn_stage_is_lent_idle_threads_and_its_numbers_do_not_change() {
    // Pretraining (pinned to one thread) runs beside a one-thread stage; when that ends and
    // nothing else is ready, the idle thread is lent to it (its log says so). The same
    // pretraining with no thread to lend gives the same bits.
    let yaml = "stages:
  sleeper: {op: shell, params: {cmd: 'sleep 0.5'}}
  shapes: {op: data.synthetic_pretrain, params: {n_train: 768, n_val: 32, classes: 3, size: 32}}
  pretrained:
    op: train.pretrain
    inputs: {data: shapes}
    params: {width: 8, epochs: 10, batch_size: 32}
    resources: {threads: 1}
";
    let run = |jobs: &str| {
        let p = Project::new();
        p.write("p.yaml", yaml);
        p.run(&["run", "p.yaml", "--jobs", jobs]).ok();
        (
            elastic_outcome(&p, "pretrained"),
            entry_meta(&p, "train.pretrain")["threads"].clone(),
        )
    };
    let ((one, _), (two, two_threads)) = (run("1"), run("2"));
    assert!(!one.2.contains("now uses"), "{}", one.2);
    assert_eq!(two_threads, 1);
    assert!(
        two.2.contains("the stage now uses 2 thread(s)"),
        "{}",
        two.2
    );
    assert_eq!(one.0.as_array().unwrap().len(), 10);
    assert_eq!(one.0, two.0);
    assert!(one.1 == two.1, "the weights differ");
}

#[test]
fn binary_learners_reject_a_multi_class_dataset_by_name() {
    let p = Project::new();
    p.write(
        "p.yaml",
        &format!("{DATA}  trees:\n    op: train.gbdt\n    inputs: {{data: europe}}\n"),
    );
    let run = p.run(&["run", "p.yaml"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("`europe` has 33 classes: this learner is binary"),
        "{}",
        run.stdout
    );
}

/// The CNN ops on both CPU engines, through the binary: from the same weights the native engine
/// extracts the same features as burn (1e-4), and at a learning rate too small for float
/// noise to steer Adam apart, fine-tuning and pretraining record the same losses and
/// predictions (1e-4). The engine is a parameter, so each is its own cache entry.
#[test]
fn the_native_and_burn_cnn_engines_agree_through_the_binary() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
stages:
  faces: {op: data.synthetic_faces, params: {n_train: 32, n_val: 16, n_test: 16, size: 16}}
  images: {op: data.images, inputs: {folder: faces}, params: {size: 16}}
  shapes: {op: data.synthetic_pretrain, params: {n_train: 48, n_val: 16, classes: 3, size: 16}}
  pretrained: {op: train.pretrain, inputs: {data: shapes}, params: {width: 4, epochs: 1, batch_size: 16}}
  pre:
    op: train.pretrain
    inputs: {data: shapes}
    params: {width: 4, epochs: 2, batch_size: 16, lr: 1.0e-7}
    sweep: {engine: [native, burn]}
  features:
    op: features.backbone
    inputs: {data: images, backbone: pretrained}
    params: {batch_size: 8}
    sweep: {engine: [native, burn]}
  finetune:
    op: train.cnn
    inputs: {data: images, backbone: pretrained}
    params: {mode: finetune, batch_size: 8, epochs: 2, lr: 1.0e-7}
    sweep: {engine: [native, burn]}
"#,
    );
    let run = p.run(&["run", "p.yaml"]).ok();
    assert!(run.stdout.contains("0 failed"), "{}", run.stdout);
    let floats = |dir: &Path, split: &str| -> Vec<f32> {
        std::fs::read(dir.join(format!("{split}.bin")))
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let native = out_dir(&p, "p.yaml", "features[engine=native]");
    let burn = out_dir(&p, "p.yaml", "features[engine=burn]");
    for split in ["train", "validation", "test"] {
        let (a, b) = (floats(&native, split), floats(&burn, split));
        assert_eq!(a.len(), b.len());
        assert!(
            a.len() >= 16 * 32,
            "{split}: 8 × width 4 features per image"
        );
        let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 1e-4 * scale,
                "{split}: native {x} vs burn {y}"
            );
        }
    }
    for stage in ["finetune", "pre"] {
        let run_of = |engine: &str| {
            json(&out_dir(&p, "p.yaml", &format!("{stage}[engine={engine}]")).join("run.json"))
        };
        let (a, b) = (run_of("native"), run_of("burn"));
        let epochs = |r: &Value| r["epochs"].as_array().unwrap().clone();
        assert_eq!(epochs(&a).len(), 2, "{stage}");
        for (x, y) in epochs(&a).iter().zip(&epochs(&b)) {
            let (x, y) = (
                x["train_loss"].as_f64().unwrap(),
                y["train_loss"].as_f64().unwrap(),
            );
            assert!(
                (x - y).abs() < 1e-4,
                "{stage}: train loss native {x} vs burn {y}"
            );
        }
    }
    let probabilities = |engine: &str| -> Vec<f64> {
        json(&out_dir(&p, "p.yaml", &format!("finetune[engine={engine}]")).join("predictions.json"))
            ["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let (a, b) = (probabilities("native"), probabilities("burn"));
    assert_eq!(a.len(), 16);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-4, "P(fake) native {x} vs burn {y}");
    }
}
