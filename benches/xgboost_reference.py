"""XGBoost reference for the `BENCH_GBDT=1` section of `benches/train.rs`.

Usage: python xgboost_reference.py DIR [--threads N]   (needs `pip install xgboost numpy scikit-learn`)

DIR holds a binary task as the bench writes it: meta.json ({"d": d, "n": [train, val, test]})
and, per split s in train/val/test, s_x.f32 (n × d row-major little-endian float32) and s_y.u32
(n little-endian uint32 labels in {0, 1}). Fits with the same settings as
`pipeline::ml::boosting::BoostConfig::default()` and prints one JSON line:
{"xgboost": version, "fit_s": seconds, "val_acc": ..., "test_acc": ...}.
"""

import argparse
import json
import pathlib
import time

import numpy as np
import xgboost


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", type=pathlib.Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    meta = json.loads((args.dir / "meta.json").read_text())
    d = meta["d"]
    data = {}
    for split, n in zip(["train", "val", "test"], meta["n"]):
        x = np.fromfile(args.dir / f"{split}_x.f32", dtype="<f4").reshape(n, d)
        y = np.fromfile(args.dir / f"{split}_y.u32", dtype="<u4")
        assert y.shape == (n,), f"{split}: {y.shape[0]} labels for {n} rows"
        data[split] = (x, y)

    model = xgboost.XGBClassifier(
        n_estimators=100,
        learning_rate=0.3,
        max_depth=6,
        reg_lambda=1,
        gamma=0,
        min_child_weight=1,
        max_bin=256,
        tree_method="hist",
        base_score=0.5,
        n_jobs=args.threads,
    )
    started = time.perf_counter()
    model.fit(*data["train"])
    fit_s = time.perf_counter() - started

    def acc(split):
        x, y = data[split]
        return float((model.predict(x) == y).mean())

    print(
        json.dumps(
            {
                "xgboost": xgboost.__version__,
                "fit_s": fit_s,
                "val_acc": acc("val"),
                "test_acc": acc("test"),
            }
        )
    )


if __name__ == "__main__":
    main()
