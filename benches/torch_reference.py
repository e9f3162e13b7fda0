#!/usr/bin/env python3
"""PyTorch reference for the MLP experiments of section 6 (the speed baseline of `benches/train.rs`).

The Rust engine trains the MLPs of the course report (`pipelines/report.yaml`, ops `train.mlp` and
`features.sine`). This script does the same work with PyTorch on the CPU, with the same
hyperparameters, so that our speed can be compared with what a careful Python user gets:

    python benches/torch_reference.py steps
        Median time of one training step (forward, backward, Adam step and the loss read back
        with `.item()`, as a loop that records every batch loss does) of the default MLP
        (2 → 6 hidden layers of 16, ReLU → 33 classes, cross-entropy, Adam lr 1e-3), one thread,
        random data, batch sizes 1, 16, 128, 256 and 1024. One line per batch size:

            torch step batch=<B>: <median µs> us

        `cargo bench --bench train` runs this with the interpreter in `TORCH_PYTHON` (default
        `python3`) and parses those lines; without torch it prints only our numbers.

    python benches/torch_reference.py section6 [--data DIR] [--scale S] [--workers N] [--out FILE]
        Every training run of section 6 on the Europe CSVs (`DIR`/{train,validation,test}.csv,
        header `,long,lat,country`; default `../shared/data/europe` relative to the repository
        root), each run in its own process of a pool of `N` (default 2) workers with one torch
        thread each, identical runs trained once (the default model is a member of the
        learning-rate sweep, the batch-norm comparison, the grid and the sine comparison). Prints
        the total wall time and each run's final validation accuracy; `--out` writes every
        run's per-epoch records (losses, accuracies, training and evaluation wall time, gradient
        norms) and per-step losses as JSON. `--scale S` multiplies every epoch count (rounded up,
        at least 1) for a quick look; the step schedule keeps its period of 10 epochs.
        Compare with `BENCH_SECTION6=1 cargo bench --bench train` or
        `pipeline run pipelines/report.yaml --set data_dir=../shared/data/europe`.

Semantics follow `src/ml/train.rs` and `src/ml/mlp.rs`: "depth d" is d hidden layers (d + 1
linear layers, PyTorch's default initialisation, which is also burn's); batch norm, when on, sits
between a hidden linear layer and its activation; a residual hidden layer (all but the first)
computes x ← act(x + W·x + b). Each epoch shuffles the training rows, trains in batches (stopping
the run at a non-finite loss), then evaluates the train, validation and test splits (per-sample
mean cross-entropy and accuracy, batches of 1024, `model.eval()` under `torch.no_grad()`).
Gradient norms are ‖∇W‖² + ‖∇b‖² per linear layer, before clipping, averaged over an epoch's
batches; clipping is on the global norm of every gradient (`clip_grad_norm_`); weight decay is
Adam's L2 term. Features are used as read (no standardisation), as in the Rust pipeline.

Speed choices, to give PyTorch its best case on the CPU: one intra-op thread per process (the
models are far too small to split), the fused CPU Adam (`--adam fused`, the fastest of PyTorch's
three Adam implementations here; `foreach` and `default` are there for comparison), batches as
contiguous slices of a once-per-epoch permuted copy of the data (no DataLoader), no autograd in
evaluation, and the gradient norms accumulated as a tensor and read back once per epoch.

Only torch, numpy and the standard library.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

N_CLASSES = 33
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT / ".." / "shared" / "data" / "europe"
SINE_ALPHAS = [round(0.1 * k, 1) for k in range(1, 11)]


# ---------------------------------------------------------------------------------------- model


class Mlp(nn.Module):
    """`depth` hidden layers of `width` units and a linear output layer (see the module doc)."""

    def __init__(self, inputs: int, classes: int, depth: int, width: int, batch_norm: bool = False,
                 residual: bool = False):
        super().__init__()
        self.residual = residual
        self.layers = nn.ModuleList(
            nn.Linear(inputs if i == 0 else width, classes if i == depth else width) for i in range(depth + 1)
        )
        self.norms = nn.ModuleList(nn.BatchNorm1d(width) for _ in range(depth)) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *hidden, last = self.layers
        for i, layer in enumerate(hidden):
            z = layer(x)
            if self.norms is not None:
                z = self.norms[i](z)
            x = F.relu(x + z) if self.residual and i > 0 else F.relu(z)
        return last(x)


def make_adam(params, lr: float, weight_decay: float, kind: str) -> torch.optim.Adam:
    extra = {"fused": {"fused": True}, "foreach": {"foreach": True}, "default": {}}[kind]
    return torch.optim.Adam(params, lr=lr, eps=1e-8, weight_decay=weight_decay, **extra)


# ---------------------------------------------------------------------------------------- steps


def bench_steps(adam: str) -> None:
    """Median µs per training step of the default MLP at each batch size, on random data."""
    torch.set_num_threads(1)
    for batch, steps in [(1, 3000), (16, 3000), (128, 2000), (256, 2000), (1024, 500)]:
        torch.manual_seed(0)
        model = Mlp(2, N_CLASSES, depth=6, width=16)
        optim = make_adam(model.parameters(), lr=1e-3, weight_decay=0.0, kind=adam)
        pool = 64  # distinct random batches, cycled, so data generation is not timed
        xs = torch.randn(pool, batch, 2)
        ys = torch.randint(0, N_CLASSES, (pool, batch))
        warmup = max(100, steps // 10)
        times = []
        for step in range(warmup + steps):
            x, y = xs[step % pool], ys[step % pool]
            t0 = time.perf_counter()
            optim.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optim.step()
            loss.item()
            if step >= warmup:
                times.append(time.perf_counter() - t0)
        print(f"torch step batch={batch}: {statistics.median(times) * 1e6:.1f} us", flush=True)


def bench_fix_step(adam: str) -> None:
    """Median ms per training step of the 6.2.1.6 network (100 residual layers of width 40,
    batch 512, clipping, weight decay), one thread, on random data."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Mlp(2, N_CLASSES, depth=100, width=40, residual=True)
    optim = make_adam(model.parameters(), lr=5e-4, weight_decay=1e-4, kind=adam)
    pool = 16
    xs = torch.randn(pool, 512, 2)
    ys = torch.randint(0, N_CLASSES, (pool, 512))
    times = []
    for step in range(20 + 100):
        x, y = xs[step % pool], ys[step % pool]
        t0 = time.perf_counter()
        optim.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 8.0)
        optim.step()
        loss.item()
        if step >= 20:
            times.append(time.perf_counter() - t0)
    print(f"torch fix step: {statistics.median(times) * 1e3:.3f} ms", flush=True)


# ---------------------------------------------------------------------------------------- data


def read_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features (long, lat) as float32 and the country label as int64, by header name."""
    with open(path) as f:
        header = f.readline().rstrip("\n").split(",")
    cols = [header.index("long"), header.index("lat"), header.index("country")]
    table = np.loadtxt(path, delimiter=",", skiprows=1, usecols=cols, dtype=np.float64, ndmin=2)
    return table[:, :2].astype(np.float32), table[:, 2].astype(np.int64)


def read_europe(data_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {s: read_split(data_dir / f"{s}.csv") for s in ("train", "validation", "test")}


def sine_features(x: np.ndarray) -> np.ndarray:
    """x → sin(αx), feature-major like `features.sine`: sin(α₁x₁), …, sin(α₁₀x₁), sin(α₁x₂), …"""
    alphas = np.asarray(SINE_ALPHAS, dtype=np.float32)
    return np.sin(x[:, :, None] * alphas[None, None, :]).reshape(len(x), -1).astype(np.float32)


# ---------------------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Run:
    """One training run; two runs with equal fields (other than `name`) are the same run."""

    name: str
    depth: int = 6
    width: int = 16
    lr: float = 1e-3
    batch_size: int = 256
    epochs: int = 50
    batch_norm: bool = False
    residual: bool = False
    grad_clip: float | None = None
    weight_decay: float = 0.0
    step_every: int | None = None  # StepLR period in epochs (gamma 0.1), None: constant lr
    record_grad_norms: bool = False
    sine: bool = False
    eval_batch_size: int = 1024
    seed: int = 0

    def key(self) -> tuple:
        return tuple(v for k, v in asdict(self).items() if k != "name")


def section6_runs(scale: float) -> list[Run]:
    """The experiments of section 6, deduplicated: the default model is trained once."""

    def ep(n: int) -> int:
        return max(1, math.ceil(n * scale - 1e-9))

    base = Run("default", epochs=ep(50))
    wanted = [
        *(replace(base, name=f"lr={lr:g}", lr=lr) for lr in (1.0, 0.01, 0.001, 0.00001)),
        replace(base, name="long_run", epochs=ep(100)),
        replace(base, name="plain"),
        replace(base, name="batch_norm", batch_norm=True),
        *(replace(base, name=f"batch={b}", batch_size=b, epochs=ep(e)) for b, e in ((1, 1), (16, 10), (128, 50), (1024, 50))),
        *(replace(base, name=f"grid depth={d} width={w}", depth=d, width=w)
          for d, w in ((1, 16), (2, 16), (6, 16), (10, 16), (6, 8), (6, 32), (6, 64))),
        replace(base, name="deep 100x4", depth=100, width=4, epochs=ep(10), record_grad_norms=True),
        replace(base, name="deep_fix 100x40 residual", depth=100, width=40, residual=True, grad_clip=8.0, lr=5e-4,
                batch_size=512, epochs=ep(50), step_every=10, weight_decay=1e-4, record_grad_norms=True),
        replace(base, name="sine", sine=True),
    ]
    unique: dict[tuple, Run] = {}
    aliases: dict[tuple, list[str]] = {}
    for run in wanted:
        unique.setdefault(run.key(), run)
        aliases.setdefault(run.key(), []).append(run.name)
    return [replace(run, name=" = ".join(aliases[k])) for k, run in unique.items()]


def evaluate(model: Mlp, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Per-sample mean cross-entropy and accuracy."""
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size])
            yb = y[start:start + batch_size]
            loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += (logits.argmax(1) == yb).sum().item()
    return loss_sum / len(x), correct / len(x)


_DATA: dict[str, tuple[np.ndarray, np.ndarray]] = {}
_ADAM = "fused"


def _init_worker(data, adam: str) -> None:
    global _DATA, _ADAM
    torch.set_num_threads(1)
    _DATA, _ADAM = data, adam


def train(run: Run) -> dict:
    """Trains one run in this process; returns its per-epoch records."""
    started = time.perf_counter()
    splits = {}
    for s, (x, y) in _DATA.items():
        splits[s] = (torch.from_numpy(sine_features(x) if run.sine else x), torch.from_numpy(y))
    x_train, y_train = splits["train"]
    n = len(x_train)

    torch.manual_seed(run.seed)
    model = Mlp(x_train.shape[1], N_CLASSES, run.depth, run.width, run.batch_norm, run.residual)
    optim = make_adam(model.parameters(), run.lr, run.weight_decay, _ADAM)
    sched = torch.optim.lr_scheduler.StepLR(optim, step_size=run.step_every, gamma=0.1) if run.step_every else None
    shuffle = torch.Generator().manual_seed(run.seed ^ 0x5EEDDA7A)
    linears = list(model.layers)

    epochs, step_losses, diverged = [], [], False
    for epoch in range(run.epochs):
        lr = optim.param_groups[0]["lr"]
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=shuffle)
        xs, ys = x_train[perm], y_train[perm]
        grad_sums = torch.zeros(len(linears)) if run.record_grad_norms else None
        batches = 0
        for start in range(0, n, run.batch_size):
            optim.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xs[start:start + run.batch_size]), ys[start:start + run.batch_size])
            value = loss.item()
            step_losses.append(value)
            if not math.isfinite(value):
                diverged = True
                break
            loss.backward()
            if grad_sums is not None:
                with torch.no_grad():
                    grad_sums += torch.stack([l.weight.grad.square().sum() + l.bias.grad.square().sum() for l in linears])
            if run.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), run.grad_clip)
            optim.step()
            batches += 1
        train_time = time.perf_counter() - t0

        t0 = time.perf_counter()
        model.eval()
        record = {"epoch": epoch + 1, "lr": lr}
        for s, (x, y) in splits.items():
            record[f"{s}_loss"], record[f"{s}_acc"] = evaluate(model, x, y, run.eval_batch_size)
        record["eval_time_s"] = time.perf_counter() - t0
        record["train_time_s"] = train_time
        if grad_sums is not None:
            record["grad_norms"] = (grad_sums / max(batches, 1)).tolist()
        epochs.append(record)
        if sched is not None:
            sched.step()
        if diverged:
            break

    return {"run": asdict(run), "steps_per_epoch": math.ceil(n / run.batch_size), "diverged": diverged,
            "n_parameters": sum(p.numel() for p in model.parameters()), "wall_s": time.perf_counter() - started,
            "epochs": epochs, "step_losses": step_losses}


def cost_estimate(run: Run) -> float:
    """Rough relative cost, to start the longest runs first (better packing on the pool)."""
    steps = run.epochs * math.ceil(106_897 / run.batch_size)
    per_step = 40 + 12 * (run.depth + 1) + 0.002 * run.batch_size * (run.depth + 1) * run.width
    return steps * per_step


def section6(data_dir: Path, scale: float, workers: int, adam: str, out: Path | None) -> None:
    torch.set_num_threads(1)
    wall0 = time.perf_counter()
    data = read_europe(data_dir)
    runs = sorted(section6_runs(scale), key=cost_estimate, reverse=True)
    print(f"section 6 on {data_dir} (scale {scale:g}): {len(runs)} distinct runs, {workers} processes × 1 thread, "
          f"Adam {adam}", flush=True)
    results = []
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(data, adam), maxtasksperchild=None) as pool:
        for res in pool.imap_unordered(train, runs):
            last = res["epochs"][-1]
            print(f"  done {res['run']['name']:<48} {res['wall_s']:7.1f} s  "
                  f"val acc {last['validation_acc']:.4f}{'  (diverged)' if res['diverged'] else ''}", flush=True)
            results.append(res)
    wall = time.perf_counter() - wall0

    print(f"\nsection 6 total wall time: {wall:.1f} s")
    print(f"{'run':<48} {'epochs':>6} {'train s':>8} {'eval s':>7} {'val acc':>8}")
    order = {run.name: i for i, run in enumerate(section6_runs(scale))}
    for res in sorted(results, key=lambda r: order[r["run"]["name"]]):
        eps = res["epochs"]
        print(f"{res['run']['name']:<48} {len(eps):>6} {sum(e['train_time_s'] for e in eps):8.1f} "
              f"{sum(e['eval_time_s'] for e in eps):7.1f} {eps[-1]['validation_acc']:8.4f}"
              f"{'  (diverged)' if res['diverged'] else ''}")
    if out is not None:
        out.write_text(json.dumps({"wall_s": wall, "scale": scale, "workers": workers, "adam": adam,
                                   "torch": torch.__version__, "runs": results}))
        print(f"records written to {out}")


class BasicBlock(nn.Module):
    """torchvision's BasicBlock."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    """torchvision's ResNet18 with a configurable base width and a one-logit head."""

    def __init__(self, width: int):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, c_in = [], w
        for c_out, stride in [(w, 1), (2 * w, 2), (4 * w, 2), (8 * w, 2)]:
            stages.append(nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)))
            c_in = c_out
        self.layers = nn.Sequential(*stages)
        self.fc = nn.Linear(8 * w, 1)

    def forward(self, x):
        h = self.layers(self.maxpool(torch.relu(self.bn1(self.conv1(x)))))
        return self.fc(h.mean(dim=(2, 3))).squeeze(1)


def bench_cnn_steps(threads: int, device: str, batches: list[int]) -> None:
    """Median time of a ResNet18 training step (64×64, Adam, BCE on one logit)."""
    torch.set_num_threads(threads)
    for width in (16, 64):
        for batch in batches:
            torch.manual_seed(0)
            model = ResNet18(width).to(device)
            adam = torch.optim.Adam(model.parameters(), lr=1e-3)
            loss_fn = nn.BCEWithLogitsLoss()
            x = torch.randn(batch, 3, 64, 64, device=device)
            y = (torch.rand(batch, device=device) > 0.5).float()
            times = []
            for i in range(25):
                start = time.perf_counter()
                adam.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), y)
                loss.backward()
                adam.step()
                loss.item()  # waits for the device
                if i >= 5:
                    times.append(time.perf_counter() - start)
            print(f"torch cnn step width={width} batch={batch}: {statistics.median(times) * 1e3:.2f} ms")
            # Feature extraction: the pooled backbone features in evaluation mode.
            model.eval()
            times = []
            with torch.no_grad():
                for i in range(25):
                    start = time.perf_counter()
                    features = model.layers(model.maxpool(torch.relu(model.bn1(model.conv1(x))))).mean(dim=(2, 3))
                    features.sum().item()
                    if i >= 5:
                        times.append(time.perf_counter() - start)
            print(f"torch cnn features width={width} batch={batch}: {statistics.median(times) * 1e3:.2f} ms")


def main(argv: list[str]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--adam", choices=["fused", "foreach", "default"], default="fused",
                        help="PyTorch's Adam implementation (fused: the fastest on the CPU)")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("steps", parents=[common], help="median time per training step at batch sizes 1 to 1024")
    sub.add_parser("fix-step", parents=[common], help="median time per step of the 100-layer network of 6.2.1.6")
    cnn = sub.add_parser("cnn-steps", help="median time per ResNet18 training step (64×64, batch 32)")
    cnn.add_argument("--threads", type=int, default=2)
    cnn.add_argument("--device", default="cpu", help="cpu or cuda")
    cnn.add_argument("--batches", default="32", help="comma-separated batch sizes")
    s6 = sub.add_parser("section6", parents=[common], help="every section-6 training run on the Europe CSVs")
    s6.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of train/validation/test.csv")
    s6.add_argument("--scale", type=float, default=1.0, help="multiplies every epoch count (rounded up, ≥ 1)")
    s6.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes, 1 thread each")
    s6.add_argument("--out", type=Path, help="write every run's records as JSON")
    args = parser.parse_args(argv)
    if args.command == "steps":
        bench_steps(args.adam)
    elif args.command == "fix-step":
        bench_fix_step(args.adam)
    elif args.command == "cnn-steps":
        bench_cnn_steps(args.threads, args.device, [int(b) for b in args.batches.split(",")])
    else:
        section6(args.data, args.scale, args.workers, args.adam, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
