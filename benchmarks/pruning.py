"""A compact student: structured pruning during distillation on MNIST-5k.

    python benchmarks/pruning.py [--seeds 2] [--epochs 60] [--amount 0.5] [--write]

Distils the bench's SmallCNN teacher into an MLP student (784-512-256-10)
with KD, once unpruned and once with ``StudentPruning(amount, structured=True)``
(torch-pruning removes whole neurons), and reports parameter count, on-disk
size of the state dict, predict latency on the 1000 test images (median of
50 calls, side by side in one process) and test accuracy.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
import torch

from skd import MLP, DistillationClassifier
from skd.bench import BenchConfig, train_teacher
from skd.callbacks import StudentPruning
from skd.data import load_split

from _report import add_write_flag, update_section


def fit(split, teacher, seed, epochs, amount):
    callbacks = [StudentPruning(amount=amount, structured=True)] if amount else None
    clf = DistillationClassifier(
        MLP, teacher=teacher, loss="kd", module__hidden_units=(512, 256), optimizer=torch.optim.Adam,
        lr=1e-3, batch_size=128, max_epochs=epochs, verbose=0, random_state=seed, callbacks=callbacks,
    )
    return clf.fit(split.X_train, split.y_train)


def size_bytes(module):
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def latency(clf, X, repeats=50):
    clf.predict_proba(X)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        clf.predict_proba(X)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--amount", type=float, default=0.5)
    add_write_flag(parser)
    args = parser.parse_args(argv)
    split = load_split("mnist5k", 0)
    teacher, info = train_teacher(split, BenchConfig(dataset="mnist5k"))
    rows = {"unpruned": [], "pruned": []}
    for seed in range(args.seeds):
        dense = fit(split, teacher, seed, args.epochs, 0.0)
        sparse = fit(split, teacher, seed, args.epochs, args.amount)
        for name, clf in (("unpruned", dense), ("pruned", sparse)):
            rows[name].append({
                "accuracy": clf.score(split.X_test, split.y_test),
                "params": sum(p.numel() for p in clf.module_.parameters()),
                "bytes": size_bytes(clf.module_),
            })
        # latency side by side, interleaved
        lat_dense, lat_sparse = [], []
        for _ in range(3):
            lat_dense.append(latency(dense, split.X_test))
            lat_sparse.append(latency(sparse, split.X_test))
        rows["unpruned"][-1]["latency"] = min(lat_dense)
        rows["pruned"][-1]["latency"] = min(lat_sparse)

    def mean(name, key):
        return float(np.mean([r[key] for r in rows[name]]))

    acc_ratio = mean("pruned", "accuracy") / mean("unpruned", "accuracy")
    speedup = mean("unpruned", "latency") / mean("pruned", "latency")
    lines = [
        f"Command: `python benchmarks/pruning.py --seeds {args.seeds} --epochs {args.epochs} "
        f"--amount {args.amount}` (MNIST-5k, teacher SmallCNN {info['accuracy']:.4f}, KD, "
        f"student MLP 784-512-256-10, structured pruning with torch-pruning; latency: "
        f"predict_proba on 1000 images, CPU, {torch.get_num_threads()} threads).",
        "",
        "| student | test accuracy | parameters | state dict (KiB) | predict latency (ms) |",
        "|---|---|---|---|---|",
    ]
    for name in ("unpruned", "pruned"):
        accs = [r["accuracy"] for r in rows[name]]
        lines.append(
            f"| {name} | {np.mean(accs):.4f} ± {np.std(accs):.4f} | {mean(name, 'params'):.0f} "
            f"| {mean(name, 'bytes') / 1024:.0f} | {1000 * mean(name, 'latency'):.2f} |"
        )
    lines += [
        "",
        f"Pruned / unpruned accuracy: {acc_ratio:.3f} "
        f"(goal ≥ 0.98: {'met' if acc_ratio >= 0.98 else 'missed'}); "
        f"predict speed-up: {speedup:.2f}× (goal ≥ 1.5×: {'met' if speedup >= 1.5 else 'missed'}).",
    ]
    table = "\n".join(lines)
    print(table)
    print(f"wrote {update_section('pruning', table, write=args.write)}")


if __name__ == "__main__":
    main()
