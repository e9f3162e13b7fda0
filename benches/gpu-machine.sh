#!/usr/bin/env bash
# Checks on a machine with an NVIDIA GPU, from binaries built on a CPU machine (the GPU machine
# of this project has no network and no Rust toolchain, and takes a carried folder of 64 MiB).
#
#   benches/gpu-machine.sh prepare   # here: stage LLVM, build with `--features cuda`, strip,
#                                    # one tar.xz in gpu-carry/ (44 MB)
#   benches/gpu-machine.sh run       # there (carry gpu-carry/): every check, numbers in $OUT
#
# `run` takes about 8 minutes on one H200 + 16 cores and writes $OUT/gpu-report.txt:
#   1. GPU stages for real: a small section 7 with `--gpus 1`: stages on cuda:0, losses and
#      accuracies against the same pipeline with `--gpus 0`; `device: gpu` out of memory is a
#      clear error, not a crash;
#   2. the ResNet18 training step on the GPU against PyTorch CUDA (widths 16 and 64, batches 32
#      and 128), from `cargo bench --bench train` with BENCH_DEVICE=cuda;
#   3. a section-6 MLP training (burn engine) on the GPU against the CPU;
#   4. the report at its quick sizes with `--gpus 1` and `--gpus 0`: wall time, section-7 numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
carry=gpu-carry

prepare() {
    .ci/stage-llvm
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pipeline-target}-cuda"
    # Without `nvcc` here, cudarc would generate bindings for the newest CUDA it knows (13.4);
    # the GPU machine's driver is CUDA 13.0, so bind to exactly that API.
    export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"
    cargo build --release --features cuda
    local bench
    bench=$(cargo bench --bench train --features cuda --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "train" and m.get("executable"):
        print(m["executable"])')
    rm -rf "$carry"
    mkdir -p "$carry"
    strip -o "$carry/pipeline" "$CARGO_TARGET_DIR/release/pipeline"
    strip -o "$carry/train-bench" "$bench"
    # One archive with a dictionary larger than either binary (~170 MB each, stripped): they
    # share burn and cubecl, so xz stores that once. Two separate `xz -6` files came to 72 MB,
    # over the 64 MiB carry limit; this is 44 MB (5½ min on 2 cores; unpacking takes seconds).
    tar -C "$carry" -cf - pipeline train-bench |
        xz -T1 --lzma2=preset=9e,dict=256MiB >"$carry/binaries.tar.xz"
    rm "$carry/pipeline" "$carry/train-bench"
    du -sh "$carry"/*
}

run() {
    local out="${OUT:-/tmp/gpu-out}"
    mkdir -p "$out"
    local report="$out/gpu-report.txt"
    local work
    work=$(mktemp -d)
    tar -C "$work" -xJf "$carry/binaries.tar.xz"
    chmod +x "$work/pipeline" "$work/train-bench"
    local pipeline="$work/pipeline"
    {
        echo "# GPU checks $(date -u +%FT%TZ)"
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
        python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' || true
    } | tee "$report"

    section "1. GPU stages against the CPU (small section 7)"
    cat >"$work/s7.yaml" <<'EOF'
stages:
  faces: {op: data.synthetic_faces, params: {n_train: 256, n_val: 64, n_test: 64, size: 32}}
  images: {op: data.images, inputs: {folder: faces}, params: {size: 32}}
  shapes: {op: data.synthetic_pretrain, params: {n_train: 512, n_val: 64, classes: 4, size: 32}}
  pretrained: {op: train.pretrain, inputs: {data: shapes}, params: {width: 16, epochs: 2, batch_size: 32}}
  features: {op: features.backbone, inputs: {data: images, backbone: pretrained}}
  scratch: {op: train.cnn, inputs: {data: images}, params: {mode: scratch, width: 16, batch_size: 32, epochs: 2}}
  finetune: {op: train.cnn, inputs: {data: images, backbone: pretrained}, params: {mode: finetune, batch_size: 32, epochs: 2}}
EOF
    for gpus in 1 0; do
        mkdir -p "$work/s7-$gpus"
        cp "$work/s7.yaml" "$work/s7-$gpus/p.yaml"
        (cd "$work/s7-$gpus" && /usr/bin/time -f "%e s wall" "$pipeline" run p.yaml --gpus "$gpus") 2>&1 |
            tail -n 12 | tee -a "$report"
    done
    python3 - "$work" <<'EOF' | tee -a "$report"
import json, pathlib, sys
work = pathlib.Path(sys.argv[1])
def runs(d):
    found = {}
    for meta in (work / d / "cache" / "entries").glob("*/meta.json"):
        m = json.loads(meta.read_text())
        run = meta.parent / "out" / "run.json"
        if run.exists():
            found[m["stages"][0]] = (m["device"], json.loads(run.read_text())["epochs"])
    return found
gpu, cpu = runs("s7-1"), runs("s7-0")
for name in sorted(gpu):
    dg, eg = gpu[name]
    dc, ec = cpu.get(name, ("?", []))
    for a, b in zip(eg, ec):
        print(f"{name} epoch {a['epoch']}: {dg} loss {a['train_loss']:.5f} val {a['validation_acc']:.3f} "
              f"train {a['train_time_s']:.2f}s | {dc} loss {b['train_loss']:.5f} val {b['validation_acc']:.3f} "
              f"train {b['train_time_s']:.2f}s | loss diff {abs(a['train_loss'] - b['train_loss']):.2e}")
EOF
    mkdir -p "$work/oom"
    cat >"$work/oom/p.yaml" <<'EOF'
stages:
  faces: {op: data.synthetic_faces, params: {n_train: 512, n_val: 16, n_test: 16, size: 256}}
  images: {op: data.images, inputs: {folder: faces}, params: {size: 256}}
  huge: {op: train.cnn, inputs: {data: images}, params: {mode: scratch, width: 512, batch_size: 512, epochs: 1}, device: gpu}
EOF
    (cd "$work/oom" && timeout 300 "$pipeline" run p.yaml --gpus 1; echo "exit code $?") 2>&1 |
        tail -n 6 | tee -a "$report"

    section "2. ResNet18 training step: GPU vs PyTorch CUDA"
    BENCH_ONLY_CNN=1 BENCH_CNN=1 BENCH_DEVICE=cuda BENCH_BATCHES=32,128 TORCH_PYTHON=python3 \
        TORCH_REFERENCE="$PWD/benches/torch_reference.py" timeout 300 "$work/train-bench" 2>&1 |
        tee -a "$report" || true

    section "3. Section-6 MLP (burn engine, batch 512, width 40, depth 20): GPU vs CPU"
    mkdir -p "$work/mlp"
    cat >"$work/mlp/p.yaml" <<'EOF'
stages:
  map: {op: data.synthetic_map, params: {n_train: 100000, n_validation: 10000, n_test: 10000}}
  data: {op: data.csv, inputs: {csv: map}}
  gpu: {op: train.mlp, inputs: {data: data}, params: {engine: burn, depth: 20, width: 40, batch_size: 512, epochs: 2, residual: true}, device: gpu}
  cpu: {op: train.mlp, inputs: {data: data}, params: {engine: burn, depth: 20, width: 40, batch_size: 512, epochs: 2, residual: true, seed: 0}, device: cpu, resources: {threads: 1}}
EOF
    (cd "$work/mlp" && "$pipeline" run p.yaml --gpus 1 && "$pipeline" show p.yaml gpu && "$pipeline" show p.yaml cpu) 2>&1 |
        grep -E "ran |train_time_s|validation_acc|device" | tee -a "$report" || true

    section "4. The report at quick sizes: --gpus 1 vs --gpus 0"
    local quick=(--set epochs=2 --set long_epochs=2 --set 'batch_epochs=[1,1,1,1]' --set deep_epochs=1
        --set fix_epochs=1 --set pretrain_epochs=1)
    for gpus in 1 0; do
        mkdir -p "$work/report-$gpus"
        cp -r pipelines "$work/report-$gpus/"
        (cd "$work/report-$gpus" &&
            /usr/bin/time -f "report --gpus $gpus: %e s wall" "$pipeline" run pipelines/report.yaml --quiet \
                --gpus "$gpus" "${quick[@]}") 2>&1 | tail -n 4 | tee -a "$report"
        find "$work/report-$gpus/results" -name "*.csv" -path "*7*" -exec head -n 12 {} + 2>/dev/null |
            tee -a "$report" || true
    done
    echo "done" | tee -a "$report"
}

section() {
    printf '\n## %s\n' "$1" | tee -a "$OUT/gpu-report.txt"
}

case "${1:-}" in
prepare) prepare ;;
run)
    export OUT="${OUT:-/tmp/gpu-out}"
    run
    ;;
*)
    echo "usage: $0 prepare|run" >&2
    exit 2
    ;;
esac
