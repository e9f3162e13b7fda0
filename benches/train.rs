//! Training speed against PyTorch (`cargo bench --bench train`). Prints medians and ratios.
//!
//! - per training step (forward, backward, Adam, loss read back) of the default MLP (2 → 6×16 →
//!   33) at batch sizes 1, 16, 128, 256, 1024, one thread, for both engines (native and burn);
//! - per step of the 6.2.1.6 network (100 residual layers of width 40, batch 512, clipping,
//!   weight decay, gradient norms recorded), native engine, one thread: its achieved GFLOPS
//!   against the rate of its three matrix products timed alone (the GEMM limit for its shapes)
//!   and against a large product (the core's rate), and PyTorch's step;
//! - with `BENCH_CNN=1`: a ResNet18 training step (64×64, batch 32, 2 threads), widths 16 and 64,
//!   on burn, and on the CPU also on the native CNN engine, with the feature extraction of both;
//!   `BENCH_DEVICE=cuda|wgpu` trains on that device instead (a build with the feature; PyTorch
//!   then runs on CUDA), `BENCH_BATCHES=32,128` sets the batch sizes and `BENCH_ONLY_CNN=1`
//!   skips everything else (`benches/gpu-machine.sh`);
//! - with `BENCH_SKIP_STEPS=1`: no MLP or 6.2.1.6 step timings, only the parts chosen below;
//! - with `BENCH_SECTION6=1`: section 6 end to end on the course's Europe CSVs (`BENCH_EUROPE`,
//!   default `../shared/data/europe`): `pipeline run pipelines/report.yaml --only` its stages,
//!   one replicate (PyTorch's script trains each run once), fresh cache, all cores; then
//!   PyTorch's script on the same data (`torch_reference.py section6`, one process per core)
//!   and the ratio;
//! - with `BENCH_REPORT=1`: the whole report end to end, sections 6 and 7 (generated data,
//!   fresh cache, all cores);
//! - with `BENCH_GBDT=1`: gradient-boosted trees (`train.gbdt`'s defaults, 2 threads) on the
//!   report's generated faces (raw pixels, 1,400 × 12,288), fit time (one run) and validation and
//!   test accuracy, against XGBoost (`hist`) on the same data.
//!
//! The PyTorch side is `benches/torch_reference.py`, run with the interpreter in `TORCH_PYTHON`
//! (default `python3`); without torch only our numbers are printed. The XGBoost side is
//! `benches/xgboost_reference.py`, run with the interpreter in `XGB_PYTHON` (skipped if unset).

use std::process::Command;
use std::time::Instant;

use pipeline::datasets::{MapConfig, Table, synthetic_map};
use pipeline::ml::mlp::{Activation, MlpConfig};
use pipeline::ml::train::{Hooks, Optimizer, Schedule, Splits, TrainConfig, train};

struct Quiet;

impl Hooks for Quiet {
    fn progress(&self, _message: String) {}
    fn cancelled(&self) -> bool {
        false
    }
}

/// The generated map with `rows` training rows (33 classes) and small evaluation splits.
fn bench_map(rows: usize) -> (Table, Table, Table) {
    synthetic_map(&MapConfig {
        seed: 1,
        n_train: rows,
        n_val: 64,
        n_test: 64,
        n_classes: 33,
    })
}

/// Median µs per step of one engine's loop, from `repeats` one-epoch runs over `rows` rows.
fn our_step_us(native: bool, batch: usize, rows: usize, repeats: usize) -> f64 {
    let (train_split, validation, test) = bench_map(rows);
    let splits = Splits {
        train: &train_split,
        validation: &validation,
        test: &test,
    };
    let cfg = TrainConfig {
        model: MlpConfig {
            inputs: 2,
            classes: 33,
            depth: 6,
            width: 16,
            activation: Activation::Relu,
            batch_norm: false,
            residual: false,
        },
        optimizer: Optimizer::Adam,
        lr: 1e-3,
        schedule: Schedule::Constant,
        weight_decay: 0.0,
        grad_clip: None,
        batch_size: batch,
        epochs: 1,
        eval_batch_size: 1024,
        seed: 0,
        record_grad_norms: false,
    };
    let mut samples: Vec<f64> = (0..repeats)
        .map(|_| {
            let out = if native {
                pipeline::ml::native::train(&splits, &cfg, &Quiet).expect("train")
            } else {
                pipeline::ml::with_threads(1, || train(&splits, &cfg, &Quiet))
                    .expect("pool")
                    .expect("train")
            };
            out.epochs[0].train_time_s / out.steps_per_epoch as f64 * 1e6
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// The 6.2.1.6 network's step: (median ms, GFLOP per step) over one epoch of 20,480 rows.
fn fix_step() -> (f64, f64) {
    let (train_split, validation, test) = bench_map(20_480);
    let splits = Splits {
        train: &train_split,
        validation: &validation,
        test: &test,
    };
    let (depth, width, batch) = (100, 40, 512);
    let cfg = TrainConfig {
        model: MlpConfig {
            inputs: 2,
            classes: 33,
            depth,
            width,
            activation: Activation::Relu,
            batch_norm: false,
            residual: true,
        },
        optimizer: Optimizer::Adam,
        lr: 5e-4,
        schedule: Schedule::Constant,
        weight_decay: 1e-4,
        grad_clip: Some(8.0),
        batch_size: batch,
        epochs: 1,
        eval_batch_size: 1024,
        seed: 0,
        record_grad_norms: true,
    };
    let mut samples: Vec<f64> = (0..3)
        .map(|_| {
            let out = pipeline::ml::native::train(&splits, &cfg, &Quiet).expect("train");
            out.epochs[0].train_time_s / out.steps_per_epoch as f64 * 1e3
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    // Forward, dW and dL/dh: three products of 2·batch·width² per hidden layer (the first and
    // last layers are narrower and left out).
    let gflop = 3.0 * 2.0 * (batch * width * width * (depth - 1)) as f64 / 1e9;
    (samples[1], gflop)
}

/// GFLOPS of `gemm` on c = a·b, one thread, with a's and b's strides as given (median of 5).
fn gemm_rate(m: usize, k: usize, n: usize, a_t: bool, b_t: bool, repeats: usize) -> f64 {
    let a: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 / 17.0).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 / 13.0).collect();
    let mut c = vec![0.0f32; m * n];
    let (a_rs, a_cs) = if a_t {
        (1, m as isize)
    } else {
        (k as isize, 1)
    };
    let (b_rs, b_cs) = if b_t {
        (1, k as isize)
    } else {
        (n as isize, 1)
    };
    let mut samples: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..repeats {
                // SAFETY: a is m×k and b k×n under these strides, c m×n row-major.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        c.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        a.as_ptr(),
                        a_cs,
                        a_rs,
                        b.as_ptr(),
                        b_cs,
                        b_rs,
                        0.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
            2.0 * (m * k * n * repeats) as f64 / start.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[2]
}

/// `torch fix step: X ms` from the reference script.
fn torch_fix_step() -> Option<f64> {
    let out = Command::new(torch_python())
        .arg(torch_reference())
        .arg("fix-step")
        .output()
        .ok()?;
    number_after(&out.stdout, "torch fix step:", "ms")
}

/// The number on the first line of `output` that starts with `prefix`, before `unit`.
fn number_after(output: &[u8], prefix: &str, unit: &str) -> Option<f64> {
    String::from_utf8_lossy(output).lines().find_map(|l| {
        l.strip_prefix(prefix)?
            .trim()
            .trim_end_matches(unit)
            .trim()
            .parse()
            .ok()
    })
}

/// The reference script: `TORCH_REFERENCE`, else this checkout's (a bench binary carried to
/// another machine points it at that machine's copy).
fn torch_reference() -> String {
    std::env::var("TORCH_REFERENCE").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_reference.py").to_string()
    })
}

fn torch_python() -> String {
    std::env::var("TORCH_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// `torch step batch=B: X us` lines from the reference script, if torch is there.
fn torch_steps() -> Vec<(usize, f64)> {
    let script = torch_reference();
    let Ok(out) = Command::new(torch_python())
        .arg(script)
        .arg("steps")
        .output()
    else {
        return Vec::new();
    };
    if !out.status.success() {
        eprintln!(
            "(PyTorch reference unavailable: {})",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("torch step batch=")?;
            let (b, us) = rest.split_once(':')?;
            Some((
                b.trim().parse().ok()?,
                us.trim().trim_end_matches("us").trim().parse().ok()?,
            ))
        })
        .collect()
}

/// The device of the CNN benchmark (`BENCH_DEVICE`: cpu, cuda or wgpu) and its batch sizes
/// (`BENCH_BATCHES`, comma-separated; default 32).
fn cnn_bench_setup() -> (pipeline::ml::device::Compute, Vec<usize>) {
    use pipeline::ml::device::Compute;
    let device = match std::env::var("BENCH_DEVICE").as_deref() {
        Ok("cuda") => Compute::Cuda(0),
        Ok("wgpu") => Compute::Wgpu(0),
        _ => Compute::Cpu,
    };
    let batches = std::env::var("BENCH_BATCHES")
        .ok()
        .map(|b| b.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .filter(|b: &Vec<usize>| !b.is_empty())
        .unwrap_or_else(|| vec![32]);
    (device, batches)
}

/// `torch cnn step|features width=W batch=B: X ms` lines of the reference script, on the same
/// device kind (PyTorch's CUDA for `cuda`).
fn torch_cnn_steps() -> Vec<(String, usize, usize, f64)> {
    let script = torch_reference();
    let (device, batches) = cnn_bench_setup();
    let device = if matches!(device, pipeline::ml::device::Compute::Cuda(_)) {
        "cuda"
    } else {
        "cpu"
    };
    let batches: Vec<String> = batches.iter().map(usize::to_string).collect();
    let Ok(out) = Command::new(torch_python())
        .args([
            script.as_str(),
            "cnn-steps",
            "--threads",
            "2",
            "--device",
            device,
        ])
        .args(["--batches", &batches.join(",")])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("torch cnn ")?;
            let (kind, rest) = rest.split_once(" width=")?;
            let (w, rest) = rest.split_once(" batch=")?;
            let (b, ms) = rest.split_once(':')?;
            Some((
                kind.to_string(),
                w.trim().parse().ok()?,
                b.trim().parse().ok()?,
                ms.trim().trim_end_matches("ms").trim().parse().ok()?,
            ))
        })
        .collect()
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The native engine's training step and feature extraction (median ms), 2 threads.
fn native_cnn_ms(width: usize, batch: usize, pixels: &[f32], size: usize) -> (f64, f64) {
    use pipeline::ml::native_cnn::{Adam, Maps, NativeResNet, Targets, Workspace};
    use pipeline::ml::resnet::{ResNet, ResNetConfig};
    let config = ResNetConfig { width, outputs: 1 };
    let device = burn::tensor::Device::flex().autodiff();
    let model = pipeline::ml::seeded(&device, 0, |d| ResNet::new(&config, d));
    pipeline::ml::with_threads(2, || {
        let mut net = NativeResNet::from_burn(&model, &config).expect("convert");
        let mut adam = Adam::new(&net);
        let mut work = Workspace::default();
        let mut grads = Vec::new();
        let indices: Vec<usize> = (0..batch).collect();
        let labels: Vec<u32> = (0..batch as u32).map(|i| i % 2).collect();
        let x = Maps::from_chw(pixels, &indices, size);
        let mut steps = Vec::new();
        for i in 0..15 {
            let start = Instant::now();
            net.loss_and_gradients(x.clone(), Targets::Binary(&labels), &mut work, &mut grads)
                .expect("step");
            adam.step(&mut net, &grads, 1e-3);
            if i >= 5 {
                steps.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        let mut features = Vec::new();
        for i in 0..15 {
            let start = Instant::now();
            std::hint::black_box(net.features(&x, &mut work));
            if i >= 5 {
                features.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        (median(steps), median(features))
    })
    .expect("pool")
}

/// burn's feature extraction (evaluation mode), median ms, 2 threads.
fn burn_features_ms(width: usize, batch: usize, pixels: &[f32], size: usize) -> f64 {
    use burn::tensor::{Device, Tensor, TensorData};
    use pipeline::ml::resnet::{ResNet, ResNetConfig};
    let config = ResNetConfig { width, outputs: 1 };
    let model = pipeline::ml::seeded(&Device::flex(), 0, |d| ResNet::new(&config, d));
    pipeline::ml::with_threads(2, || {
        let x = Tensor::<4>::from_data(
            TensorData::new(
                pixels[..batch * 3 * size * size].to_vec(),
                [batch, 3, size, size],
            ),
            &Device::flex(),
        );
        let mut times = Vec::new();
        for i in 0..8 {
            let start = Instant::now();
            let f = model.features(x.clone()).into_data();
            std::hint::black_box(f);
            if i >= 3 {
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        median(times)
    })
    .expect("pool")
}

/// ResNet18 training step (64×64, Adam, BCE) from scratch, 2 threads, on `BENCH_DEVICE`, and
/// on the CPU the native engine's step and the feature extraction of all three.
/// On a GPU the second epoch is timed (the first pays for kernel compilation and autotuning).
fn cnn_steps(torch: &[(String, usize, usize, f64)]) {
    use pipeline::ml::cnn::{CnnConfig, CnnEngine, Images, Mode, train_binary};
    use pipeline::ml::resnet::ResNetConfig;
    let (device, batches) = cnn_bench_setup();
    let size = 64;
    let theirs = |kind: &str, width: usize, batch: usize| {
        torch
            .iter()
            .find(|(k, w, b, _)| k == kind && *w == width && *b == batch)
            .map(|t| t.3)
    };
    let versus = |ours: f64, theirs: Option<f64>| match theirs {
        Some(t) => format!(", PyTorch {t:.2} ms → {:.2}× PyTorch's speed", t / ours),
        None => String::new(),
    };
    println!(
        "ResNet18, 64×64, 2 threads, on {device}: training step (Adam, BCE) and feature extraction (evaluation mode), median"
    );
    for width in [16, 64] {
        for &batch in &batches {
            let n = batch * 12;
            let pixels: Vec<f32> = (0..n * 3 * size * size)
                .map(|i| ((i * 2_654_435_761) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            let labels: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
            let images = Images {
                pixels: &pixels,
                labels: &labels,
                size,
            };
            let few = Images {
                pixels: &pixels[..3 * size * size * 2],
                labels: &labels[..2],
                size,
            };
            let cfg = CnnConfig {
                resnet: ResNetConfig { width, outputs: 1 },
                mode: Mode::Scratch,
                lr: 1e-3,
                batch_size: batch,
                epochs: if device.is_gpu() { 2 } else { 1 },
                eval_batch_size: 64,
                seed: 0,
                device,
                engine: CnnEngine::Burn,
            };
            let out = pipeline::ml::with_threads(2, || {
                train_binary(&images, &few, &few, &cfg, None, &Quiet)
            })
            .expect("pool")
            .expect("train");
            let timed = out.epochs.last().expect("an epoch");
            let burn_ms = timed.train_time_s / out.steps_per_epoch as f64 * 1e3;
            let torch_step = theirs("step", width, batch);
            println!(
                "  width {width:>2} batch {batch:>3} step: burn {burn_ms:.2} ms{}",
                versus(burn_ms, torch_step)
            );
            if device.is_gpu() {
                continue;
            }
            let (step_ms, features_ms) = native_cnn_ms(width, batch, &pixels, size);
            println!(
                "  width {width:>2} batch {batch:>3} step: native {step_ms:.2} ms{} ({:.2}× burn)",
                versus(step_ms, torch_step),
                burn_ms / step_ms
            );
            let burn_features = burn_features_ms(width, batch, &pixels, size);
            println!(
                "  width {width:>2} batch {batch:>3} features: native {features_ms:.2} ms{} (burn {burn_features:.2} ms, {:.2}× burn)",
                versus(features_ms, theirs("features", width, batch)),
                burn_features / features_ms
            );
        }
    }
}

/// Boosted trees against XGBoost on the report's faces: one fit each (about 40 s on 2 threads).
fn gbdt() {
    use pipeline::datasets::faces::{FacesConfig, write_synthetic_faces};
    use pipeline::datasets::images::{LoadOptions, read_image_folder};
    use pipeline::ml::boosting::{BoostConfig, BoostedTrees};
    use pipeline::ml::metrics::accuracy;

    // The report's `faces` → `images` stages: generated PNGs read back as 0–255 bytes (CHW).
    let dir = tempfile::tempdir().expect("temp dir");
    let faces = FacesConfig::default();
    write_synthetic_faces(dir.path(), &faces).expect("faces");
    let options = LoadOptions {
        size: faces.size,
        mean: [0.0; 3],
        std: [1.0; 3],
        skip_unreadable: false,
    };
    let splits = ["train", "val", "test"].map(|split| {
        let (set, _) = read_image_folder(&dir.path().join(split), &options).expect("images");
        let x: Vec<f32> = set
            .pixels
            .iter()
            .map(|&v| (v * 255.0).round().clamp(0.0, 255.0))
            .collect();
        (x, set.labels)
    });
    let d = 3 * faces.size as usize * faces.size as usize;
    let n = splits.each_ref().map(|(_, y)| y.len());
    println!(
        "boosted trees, 100 rounds, depth 6, 256 bins, 2 threads, faces {} / {} / {} × {d} pixels (1 run):",
        n[0], n[1], n[2]
    );

    let cfg = BoostConfig {
        threads: 2,
        ..Default::default()
    };
    let start = Instant::now();
    let model = BoostedTrees::fit(&splits[0].0, &splits[0].1, d, &cfg).expect("fit");
    let ours_s = start.elapsed().as_secs_f64();
    let acc = |s: usize| {
        accuracy(
            &model.predict_proba(&splits[s].0).expect("predict"),
            &splits[s].1,
        )
    };
    let (val, test) = (acc(1), acc(2));
    println!("  forust  {ours_s:>6.1} s   val {val:.4}   test {test:.4}");

    let Some(python) = std::env::var_os("XGB_PYTHON") else {
        println!("  (XGBoost skipped: set XGB_PYTHON to a python with xgboost and scikit-learn)");
        return;
    };
    // benches/xgboost_reference.py's format: raw little-endian files and meta.json.
    let data = tempfile::tempdir().expect("temp dir");
    for (name, (x, y)) in ["train", "val", "test"].iter().zip(&splits) {
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(data.path().join(format!("{name}_x.f32")), bytes).expect("write");
        let bytes: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(data.path().join(format!("{name}_y.u32")), bytes).expect("write");
    }
    let meta = serde_json::json!({ "d": d, "n": n });
    std::fs::write(data.path().join("meta.json"), meta.to_string()).expect("write");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/xgboost_reference.py");
    let out = match Command::new(&python)
        .arg(script)
        .arg(data.path())
        .args(["--threads", "2"])
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            println!("  (XGBoost skipped: cannot run {}: {e})", python.display());
            return;
        }
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        println!("  (XGBoost failed: {})", err.lines().last().unwrap_or(""));
        return;
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(theirs) = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    else {
        println!("  (XGBoost printed no JSON line)");
        return;
    };
    let field = |k: &str| theirs[k].as_f64().unwrap_or(f64::NAN);
    let xgb_s = field("fit_s");
    println!(
        "  xgboost {xgb_s:>6.1} s   val {:.4}   test {:.4}   (version {})",
        field("val_acc"),
        field("test_acc"),
        theirs["xgboost"].as_str().unwrap_or("?")
    );
    println!("  time xgboost / forust: {:.2}×", xgb_s / ours_s);
}

fn main() {
    // `BENCH_ONLY_CNN=1`: only the CNN step (the GPU machine's time is short).
    if std::env::var_os("BENCH_ONLY_CNN").is_some() {
        cnn_steps(&torch_cnn_steps());
        return;
    }
    // `BENCH_SKIP_STEPS=1`: only the parts chosen by the other variables.
    if std::env::var_os("BENCH_SKIP_STEPS").is_none() {
        mlp_steps();
    }
    if std::env::var_os("BENCH_CNN").is_some() {
        cnn_steps(&torch_cnn_steps());
    }
    if std::env::var_os("BENCH_SECTION6").is_some() {
        section6();
    }
    if std::env::var_os("BENCH_REPORT").is_some() {
        let seconds = run_report(&[]);
        println!(
            "the whole report, sections 6 and 7 (generated data, fresh cache, all cores): {seconds:.1} s"
        );
    }
    if std::env::var_os("BENCH_GBDT").is_some() {
        gbdt();
    }
}

/// Per-step MLP timings and the 6.2.1.6 network's step against its GEMM limit and PyTorch.
fn mlp_steps() {
    let torch = torch_steps();
    println!(
        "per training step, MLP 2→6×16→33, Adam, 1 thread (median): native engine, burn engine, PyTorch"
    );
    for (batch, rows, repeats) in [
        (1, 3_000, 3),
        (16, 20_000, 3),
        (128, 60_000, 3),
        (256, 100_000, 3),
        (1024, 200_000, 3),
    ] {
        let native = our_step_us(true, batch, rows, repeats);
        let burn = our_step_us(false, batch, rows, repeats);
        let line = format!("  batch {batch:>4}: native {native:>7.1} us, burn {burn:>7.1} us");
        match torch.iter().find(|(b, _)| *b == batch) {
            Some((_, theirs)) => println!(
                "{line}, PyTorch {theirs:>7.1} us → native {:.1}×, burn {:.1}× (target ≥ {}×)",
                theirs / native,
                theirs / burn,
                if batch <= 128 { 8 } else { 2 }
            ),
            None => println!("{line}"),
        }
    }
    let (ms, gflop) = fix_step();
    let achieved = gflop / (ms / 1e3);
    // The step's three product shapes, each timed alone: the limit for these shapes.
    let (forward, weights, inputs) = (
        gemm_rate(512, 40, 40, false, true, 2000),
        gemm_rate(40, 512, 40, true, false, 2000),
        gemm_rate(512, 40, 40, false, false, 2000),
    );
    let shapes_limit = 3.0 / (1.0 / forward + 1.0 / weights + 1.0 / inputs);
    let large = gemm_rate(768, 768, 768, false, false, 3);
    println!(
        "6.2.1.6 network step (100×40 residual, batch 512), native, 1 thread: {ms:.2} ms, \
         {gflop:.3} GFLOP → {achieved:.1} GFLOPS; its products alone {shapes_limit:.1} GFLOPS \
         (forward {forward:.1}, dW {weights:.1}, dL/dh {inputs:.1}) = {:.0}% of that limit; \
         a 768³ product {large:.1} GFLOPS",
        100.0 * achieved / shapes_limit
    );
    if let Some(theirs) = torch_fix_step() {
        println!(
            "  PyTorch {theirs:.2} ms per step (1 thread) → native {:.2}× PyTorch's speed (target ≥ 5×)",
            theirs / ms
        );
    }
}

const REPORT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/report.yaml");

/// Seconds of `pipeline run pipelines/report.yaml ARGS --quiet` on a fresh cache.
fn run_report(args: &[String]) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let start = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(["run", REPORT, "--quiet"])
        .args(args)
        .current_dir(dir.path())
        .status()
        .expect("pipeline");
    assert!(status.success());
    start.elapsed().as_secs_f64()
}

/// The report's section-6 stages: those before the first of section 7 (`faces`).
fn section6_stages() -> Vec<String> {
    let text = std::fs::read_to_string(REPORT).expect("report.yaml");
    let yaml: yaml_serde::Value = yaml_serde::from_str(&text).expect("report.yaml parses");
    let stages = yaml["stages"].as_mapping().expect("a stages mapping");
    stages
        .keys()
        .filter_map(|k| k.as_str().map(str::to_string))
        .take_while(|name| name != "faces")
        .collect()
}

/// Section 6 end to end on the Europe CSVs, ours then PyTorch's script, in one run.
fn section6() {
    let data = std::env::var("BENCH_EUROPE").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/europe").to_string()
    });
    let data = std::fs::canonicalize(&data).expect("the Europe CSVs (BENCH_EUROPE)");
    let mut args = vec![
        "--set".to_string(),
        format!("data_dir={}", data.display()),
        "--set".into(),
        "replicates=1".into(),
    ];
    for stage in section6_stages() {
        args.extend(["--only".to_string(), stage]);
    }
    let ours = run_report(&args);
    println!(
        "section 6 end to end ({}, one replicate, fresh cache, all cores): {ours:.1} s",
        data.display()
    );
    let out = Command::new(torch_python())
        .arg(torch_reference())
        .args(["section6", "--data"])
        .arg(&data)
        .output();
    let theirs = out
        .ok()
        .and_then(|out| number_after(&out.stdout, "section 6 total wall time:", "s"));
    if let Some(theirs) = theirs {
        println!(
            "  PyTorch's script {theirs:.1} s (one process per core) → ours {:.2}× PyTorch's speed (target ≥ 8×)",
            theirs / ours
        );
    }
}
