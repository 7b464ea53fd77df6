"""Feature (hint) distillation on real images: KD, KD + FitNets and KD + attention transfer, 5 seeds.

The teacher is ``skd bench``'s CNN (``SmallCNN(channels=(32, 64))``, cached in ``--cache-dir``);
the student a small CNN, ``SmallCNN(channels=(8, 16), hidden=64)``, 8x fewer parameters on
MNIST. Each (variant, seed) is one fit with the teacher's logits and features in the book.
Prints a Markdown table: test accuracy (mean ± std over seeds), the share of the CE → teacher
gap closed, seconds per epoch, and the seconds of a fit outside its epochs (for the distilled
variants mostly the book's one teacher pass). ``--timing`` instead fits each kind for a few
epochs with the book and then with the teacher online (``book="online"``), one after the other
in one process, so that both see the same machine load.

    python benchmarks/hints.py --dataset digits --epochs 30
    python benchmarks/hints.py --dataset mnist5k --epochs 20
    python benchmarks/hints.py --dataset mnist5k --timing --online-epochs 3   # book against online

On a shared machine the variants can run in several processes (``--variants 0 1 --out a.json``,
...) and their results be printed as one table (``--combine a.json b.json ...``).

Hints (layers of both CNNs, named as in ``SmallCNN.named_modules()``):

- FitNets: ``features.5`` (the second pooled block, 64x7x7 on MNIST) <- the student's
  ``features.5`` (16x7x7) through a 1x1 convolution, weight 100 (mdistiller's FitNet weight
  with the same mean squared error) and weight 1;
- attention transfer: ``features.2`` and ``features.5`` (both pooled blocks), weight 500 each
  (the released code's beta / 2 with beta = 1000) and weight 50 each.

``--timing`` times each kind once (a hint's weight does not change its cost).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from skd import DistillationClassifier, Hint, SmallCNN
from skd.bench import BenchConfig, machine, train_teacher
from skd.data import load_split


def fitnets(weight):
    return [Hint("features.5", "features.5", kind="fitnet", weight=weight)]


def attention(weight):
    return [Hint("features.2", "features.2", kind="at", weight=weight, name="at_1"),
            Hint("features.5", "features.5", kind="at", weight=weight, name="at_2")]


#: (name, loss, hints, timed by --timing)
VARIANTS = [("ce", "ce", None, False), ("kd", "kd", None, False),
            ("kd + FitNets (w=100)", "kd", fitnets(100.0), True),
            ("kd + FitNets (w=1)", "kd", fitnets(1.0), False),
            ("kd + AT (w=500)", "kd", attention(500.0), True),
            ("kd + AT (w=50)", "kd", attention(50.0), False)]


def fit(split, teacher, loss, hints, seed, epochs, hint_book="auto", book="auto"):
    """One student fit; its test accuracy, mean seconds per epoch and seconds outside the epochs."""
    clf = DistillationClassifier(
        SmallCNN, teacher=None if loss == "ce" else teacher, loss=loss, hints=hints, hint_book=hint_book,
        book=book,
        module__channels=(8, 16), module__hidden=64, max_epochs=epochs, lr=1e-3, batch_size=128,
        verbose=0, device="cpu", random_state=seed)
    start = time.perf_counter()
    clf.fit(split.X_train, split.y_train)
    total = time.perf_counter() - start
    durations = [row["dur"] for row in clf.history]
    print(f"{loss} {hints} {hint_book} seed {seed}: {total:.0f} s", file=sys.stderr, flush=True)
    return {"accuracy": float(clf.score(split.X_test, split.y_test)),
            "epoch_s": float(np.mean(durations)), "setup_s": total - float(np.sum(durations))}


def table(result: dict) -> str:
    """The Markdown table of a run (or of several combined)."""
    runs, info, args = result["runs"], result["teacher"], result["args"]
    ce_mean = np.mean([r["accuracy"] for r in runs["ce"]]) if "ce" in runs else float("nan")
    gap = info["accuracy"] - ce_mean
    lines = [f"{args['dataset']}: {result['n_train']} training, {result['n_test']} test images. Teacher "
             f"SmallCNN(32, 64): {info['accuracy']:.4f}; student SmallCNN(8, 16, hidden=64), "
             f"{args['epochs']} epochs, Adam 1e-3, batch 128, {args['seeds']} seeds; gap closed = "
             "(variant − CE) / (teacher − CE).", "",
             "| variant | test accuracy | gap closed | s/epoch | s outside epochs |",
             "|---|---|---|---|---|"]
    for name, _, _, _ in VARIANTS:
        if name not in runs:
            continue
        accs = [r["accuracy"] for r in runs[name]]
        closed = (np.mean(accs) - ce_mean) / gap if gap > 0 else float("nan")
        epoch = np.mean([r["epoch_s"] for r in runs[name]])
        setup = np.mean([r["setup_s"] for r in runs[name]])
        lines.append(f"| {name} | {np.mean(accs):.4f} ± {np.std(accs):.4f} | {closed:.0%} | {epoch:.2f} | "
                     f"{setup:.1f} |")
    lines += ["", " ".join(result["machine"])]
    return "\n".join(lines)


def combine(paths) -> dict:
    """One result from several runs' JSON files (each holding some of the variants)."""
    results = [json.loads(open(path).read()) for path in paths]
    merged = dict(results[0], runs={}, machine=[])
    for result in results:
        merged["runs"].update(result["runs"])
        merged["machine"] += result["machine"]
    return merged


def timing(split, teacher, epochs: int) -> str:
    """Seconds per epoch with the book and with the teacher online (``book="online"``), one process.

    Each distilled variant is fitted twice, book then online, one after the other, so both see
    the same machine load.
    """
    lines = ["| variant | s/epoch, book | s/epoch, online | s outside epochs, book | online / book |",
             "|---|---|---|---|---|"]
    for name, loss, hints, timed in VARIANTS:
        if name != "kd" and not timed:
            continue
        book = fit(split, teacher, loss, hints, 0, epochs)
        online = fit(split, teacher, loss, hints, 0, epochs, book="online")
        lines.append(f"| {name.split(' (')[0]} | {book['epoch_s']:.2f} | {online['epoch_s']:.2f} | "
                     f"{book['setup_s']:.1f} | {online['epoch_s'] / book['epoch_s']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--online-epochs", type=int, default=3)
    parser.add_argument("--cache-dir", default=".skd_cache")
    parser.add_argument("--variants", nargs="*", type=int, default=None, help="positions in VARIANTS")
    parser.add_argument("--out", default=None, help="also write the results as JSON")
    parser.add_argument("--combine", nargs="*", default=None, help="print the table of these JSON files")
    parser.add_argument("--timing", action="store_true",
                        help="only time --online-epochs epochs of each kind, with the book and online")
    args = parser.parse_args()
    if args.combine:
        print(table(combine(args.combine)))
        return
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    split = load_split(args.dataset, 0)
    teacher, info = train_teacher(split, BenchConfig(dataset=args.dataset, cache_dir=args.cache_dir))
    teacher.eval()
    if args.timing:
        print(f"{args.dataset}, {args.online_epochs} epochs per fit, seed 0:\n")
        print(timing(split, teacher, args.online_epochs))
        print(f"\n{machine(load_start)} {time.perf_counter() - start:.0f} s.")
        return
    chosen = [VARIANTS[i] for i in args.variants] if args.variants is not None else VARIANTS
    runs = {name: [fit(split, teacher, loss, hints, seed, args.epochs) for seed in range(args.seeds)]
            for name, loss, hints, _ in chosen}
    names = ", ".join(name for name, _, _, _ in chosen)
    result = {"runs": runs, "teacher": {"accuracy": info["accuracy"]}, "args": vars(args),
              "n_train": len(split.X_train), "n_test": len(split.X_test),
              "machine": [f"[{names}] {machine(load_start)} {time.perf_counter() - start:.0f} s."]}
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle)
    print(table(result))


if __name__ == "__main__":
    main()
