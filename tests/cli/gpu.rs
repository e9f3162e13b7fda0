//! The GPU slot through the real binary. Every build checks the planning rules and the runs
//! without GPUs; a `wgpu` build (CI: Mesa's software Vulkan) runs GPU stages on a real wgpu
//! device beside CPU stages; a `cuda` build on a machine without the NVIDIA driver shows the
//! fallback of `device: auto` stages and the refusal of `device: gpu` ones.

use std::path::Path;

use serde_json::Value;

use crate::Project;

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// `meta.json` of every cache entry of `op`.
fn metas(p: &Project, op: &str) -> Vec<Value> {
    p.entries()
        .iter()
        .map(|e| json(&e.join("meta.json")))
        .filter(|m| m["op"] == op)
        .collect()
}

const IMAGES: &str = r#"
stages:
  faces: {op: data.synthetic_faces, params: {n_train: 32, n_val: 16, n_test: 16, size: 16}}
  images: {op: data.images, inputs: {folder: faces}, params: {size: 16}}
"#;

#[test]
fn devices_are_checked_when_planning_and_located() {
    let p = Project::new();
    p.write(
        "plot.yaml",
        "stages:\n  a: {op: data.synthetic_map, device: gpu}\n",
    );
    let run = p.run(&["run", "plot.yaml"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("op `data.synthetic_map` does not compute on a GPU")
            && run.stderr.contains("plot.yaml:2"),
        "{}",
        run.stderr
    );
    p.write(
        "native.yaml",
        "stages:\n  m: {op: data.synthetic_map, params: {n_train: 100, n_validation: 20, n_test: 20}}\n  d: {op: data.csv, inputs: {csv: m}}\n  t: {op: train.mlp, inputs: {data: d}, resources: {gpu: 1}}\n",
    );
    let run = p.run(&["run", "native.yaml"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("set `engine: burn`"), "{}", run.stderr);
    p.write(
        "both.yaml",
        &format!("{IMAGES}  cnn: {{op: train.cnn, inputs: {{data: images}}, device: cpu, resources: {{gpu: 1}}}}\n"),
    );
    let run = p.run(&["run", "both.yaml"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("`device: cpu` contradicts `resources: {gpu: 1}`"),
        "{}",
        run.stderr
    );
    p.write(
        "typo.yaml",
        &format!("{IMAGES}  cnn: {{op: train.cnn, inputs: {{data: images}}, device: tpu}}\n"),
    );
    let run = p.run(&["run", "typo.yaml"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("`device` must be cpu, gpu or auto"),
        "{}",
        run.stderr
    );
    assert!(p.entries().is_empty(), "nothing may run after a plan error");
}

#[test]
fn a_gpu_stage_without_a_gpu_stops_the_run_before_anything_runs() {
    let p = Project::new();
    p.write(
        "p.yaml",
        &format!(
            "{IMAGES}  first: {{op: shell, params: {{cmd: 'echo first >> ran.log'}}}}\n  cnn: {{op: train.cnn, inputs: {{data: images}}, params: {{width: 4, batch_size: 8}}, device: gpu}}\n"
        ),
    );
    let run = p.run(&["run", "p.yaml", "--gpus", "0"]);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("`cnn` needs a GPU")
            && run.stderr.contains("--gpus 0")
            && run.stderr.contains("`device: auto` runs it on the CPU"),
        "{}",
        run.stderr
    );
    assert!(p.ran().is_empty(), "{:?}", p.ran());
}

#[test]
fn auto_stages_run_on_the_cpu_when_the_run_has_no_gpu() {
    let p = Project::new();
    p.write(
        "p.yaml",
        &format!(
            "{IMAGES}  cnn: {{op: train.cnn, inputs: {{data: images}}, params: {{width: 4, batch_size: 8}}}}\n"
        ),
    );
    let run = p.run(&["run", "p.yaml", "--gpus", "0"]).ok();
    assert!(
        run.stdout
            .contains("gpus 0 (--gpus 0: every stage on the CPU)"),
        "{}",
        run.stdout
    );
    let cnn = &metas(&p, "train.cnn")[0];
    assert_eq!(cnn["device"], "cpu");
}

/// CPU and GPU stages side by side on a real wgpu device; the numbers agree with a CPU run.
#[cfg(feature = "wgpu")]
#[test]
fn gpu_stages_run_on_the_wgpu_device_beside_cpu_stages() {
    let yaml = format!(
        "{IMAGES}  cnn: {{op: train.cnn, inputs: {{data: images}}, params: {{width: 4, batch_size: 8, epochs: 2, lr: 1.0e-7}}}}\n  \
         m: {{op: data.synthetic_map, params: {{n_train: 2000, n_validation: 200, n_test: 200}}}}\n  \
         d: {{op: data.csv, inputs: {{csv: m}}}}\n  \
         mlp: {{op: train.mlp, inputs: {{data: d}}, params: {{epochs: 3}}, sweep: {{width: [8, 16]}}}}\n"
    );
    let gpu = Project::new();
    gpu.write("p.yaml", &yaml);
    let run = gpu
        .run(&["run", "p.yaml", "--gpu-backend", "wgpu", "--jobs", "2"])
        .ok();
    assert!(run.stdout.contains("gpus 1 (wgpu:0)"), "{}", run.stdout);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.contains("ran cnn") && l.contains("on wgpu:0")),
        "{}",
        run.stdout
    );
    let cnn = &metas(&gpu, "train.cnn")[0];
    assert_eq!(cnn["device"], "wgpu:0", "{cnn}");
    assert_eq!(cnn["threads"], 1, "a GPU stage holds one thread");
    let mlps = metas(&gpu, "train.mlp");
    assert_eq!(mlps.len(), 2);
    assert!(mlps.iter().all(|m| m["device"] == "cpu"));
    // The MLPs ran while the CNN held the GPU.
    let span = |m: &Value| {
        (
            m["started_at"].as_f64().unwrap(),
            m["started_at"].as_f64().unwrap() + m["duration_s"].as_f64().unwrap(),
        )
    };
    let (c0, c1) = span(cnn);
    assert!(
        mlps.iter().any(|m| {
            let (m0, m1) = span(m);
            m0 < c1 && c0 < m1
        }),
        "no CPU stage overlapped the GPU stage: {cnn} {mlps:?}"
    );

    let cpu = Project::new();
    cpu.write("p.yaml", &yaml);
    cpu.run(&["run", "p.yaml", "--gpus", "0", "--only", "cnn"])
        .ok();
    let losses = |p: &Project| -> Vec<f64> {
        let entry = p
            .entries()
            .into_iter()
            .find(|e| json(&e.join("meta.json"))["op"] == "train.cnn")
            .unwrap();
        let run = json(&entry.join("out/run.json"));
        run["epochs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["train_loss"].as_f64().unwrap())
            .collect()
    };
    let (on_gpu, on_cpu) = (losses(&gpu), losses(&cpu));
    assert_eq!(on_gpu.len(), 2);
    // A tiny learning rate keeps this little network's trajectory well conditioned (see
    // `ml::cnn`'s wgpu test): then the devices agree to float order.
    for (g, c) in on_gpu.iter().zip(&on_cpu) {
        assert!((g - c).abs() < 1e-4, "train loss wgpu {g} vs cpu {c}");
    }
}

/// A `cuda` build on a machine without the NVIDIA driver: `--gpus 1` is trusted, the stage
/// fails on the device, and `device: auto` reruns it on the CPU; `device: gpu` fails by name.
#[cfg(feature = "cuda")]
#[test]
fn without_a_driver_auto_falls_back_to_the_cpu_and_gpu_fails_clearly() {
    if Path::new("/proc/driver/nvidia").exists() {
        eprintln!("skipped: this machine has an NVIDIA driver");
        return;
    }
    let p = Project::new();
    p.write(
        "p.yaml",
        &format!(
            "{IMAGES}  cnn: {{op: train.cnn, inputs: {{data: images}}, params: {{width: 4, batch_size: 8}}}}\n"
        ),
    );
    let run = p.run(&["run", "p.yaml", "--gpus", "1"]).ok();
    assert!(
        run.stdout
            .contains("on the CPU instead of the GPU: cnn: cuda:0:"),
        "{}",
        run.stdout
    );
    assert_eq!(metas(&p, "train.cnn")[0]["device"], "cpu");

    let q = Project::new();
    q.write(
        "p.yaml",
        &format!(
            "{IMAGES}  cnn: {{op: train.cnn, inputs: {{data: images}}, params: {{width: 4, batch_size: 8}}, device: gpu}}\n"
        ),
    );
    let run = q.run(&["run", "p.yaml", "--gpus", "1"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("failed: cnn") && run.stdout.contains("cuda:0"),
        "{}",
        run.stdout
    );
    assert!(metas(&q, "train.cnn").is_empty(), "nothing cached");
}
