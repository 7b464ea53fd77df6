"""Online views on MNIST-5k: per-sample Affine views labelled by the teacher online, against the book.

The setting of ``skd bench`` (skd.bench): MNIST-5k's stratified 4000/1000
split, its cached CNN teacher (15 epochs), the MLP-128 student, Adam 1e-3,
batch 128. Per seed, interleaved:

- ``ce``: the student alone;
- ``kd book`` / ``dist book``: the teacher's logits of the training rows, written once;
- ``kd affine online`` / ``dist affine online``: ``augment=Affine(image_shape=(1, 28, 28))``
  (±10°, ±10% shift, per sample), ``augment_mode="replace"``: the teacher labels each view online.

Then the cost of one batch of 128 views (µs, median of interleaved repeats):
``Affine`` online, ``Affine.views`` (the counter-based draw, for booked
views) and ``BatchAugment(v2.RandomAffine(...))`` (one draw per batch).

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/views.py --epochs 30``;
``--write`` updates docs/views.md's table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from skd import MLP, DistillationClassifier
from skd.augment import Affine, BatchAugment
from skd.bench import BenchConfig, machine, train_teacher
from skd.data import load_split
from skd.training.threads import load_average

from _report import add_write_flag, update_section

DOC = Path(__file__).resolve().parent.parent / "docs" / "views.md"
IMAGE = (1, 28, 28)

#: name -> (loss, augment factory or None)
RUNS = {
    "ce": ("ce", None),
    "kd book": ("kd", None),
    "dist book": ("dist", None),
    "kd affine online": ("kd", lambda: Affine(image_shape=IMAGE)),
    "dist affine online": ("dist", lambda: Affine(image_shape=IMAGE)),
}


def fit_one(split, teacher, name: str, epochs: int, seed: int) -> dict:
    loss, augment = RUNS[name]
    views = {} if augment is None else {"augment": augment(), "augment_mode": "replace"}
    clf = DistillationClassifier(
        MLP, teacher=None if loss == "ce" else teacher, loss=loss, module__hidden_units=(128,),
        optimizer=torch.optim.Adam, lr=1e-3, batch_size=128, max_epochs=epochs, verbose=0,
        device="cpu", random_state=seed, **views,
    )
    start = time.perf_counter()
    clf.fit(split.X_train, split.y_train)
    seconds = time.perf_counter() - start
    return {"accuracy": float(clf.score(split.X_test, split.y_test)), "seconds": seconds}


def view_costs(X: torch.Tensor, repeats: int) -> dict[str, tuple[float, float]]:
    """Median µs per batch of 128 views, and the median ratio to v2.RandomAffine's time in the same round."""
    batch = X[:128].contiguous()
    rows = torch.arange(128)
    view_ids = torch.full((128,), 3)
    affine = Affine(image_shape=IMAGE)
    makers = {
        "Affine online (per sample)": lambda: affine(batch, None),
        "Affine online, nearest": lambda: Affine(image_shape=IMAGE, interpolation="nearest")(batch, None),
        "Affine.views (booked, counter draws)": lambda: affine.views(X, rows, 3, 0),
        "Affine.view_batch (the same, unchecked)": lambda: affine.view_batch(X, rows, view_ids, 0),
        "BatchAugment(v2.RandomAffine) (per batch)": lambda: BatchAugment(
            v2.RandomAffine(degrees=10, translate=(0.1, 0.1)), image_shape=IMAGE)(batch, None),
    }
    times = {name: [] for name in makers}
    for make in makers.values():  # warm-up
        make()
    for _ in range(repeats):
        for name, make in makers.items():
            start = time.perf_counter()
            make()
            times[name].append(1e6 * (time.perf_counter() - start))
    reference = times["BatchAugment(v2.RandomAffine) (per batch)"]
    return {name: (statistics.median(values),
                   statistics.median(v / r for v, r in zip(values, reference, strict=True)))
            for name, values in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS),
                        help="fits to run (none: only the cost of a view batch)")
    parser.add_argument("--repeats", type=int, default=200, help="timed batches per view maker")
    add_write_flag(parser)
    args = parser.parse_args(argv)

    load_start = load_average()
    split = load_split("mnist5k", 0)
    teacher, info = train_teacher(split, BenchConfig(dataset="mnist5k", device="cpu"))
    print(f"teacher: test accuracy {info['accuracy']:.4f} ({'cached' if info['cached'] else 'trained'})",
          flush=True)
    results = {name: [] for name in args.runs}
    for seed in range(args.seeds):
        for name in args.runs:  # interleaved: every run of a seed before the next seed
            result = fit_one(split, teacher, name, args.epochs, seed)
            results[name].append(result)
            print(f"{name} seed {seed}: {result['accuracy']:.4f} in {result['seconds']:.1f} s "
                  f"(load {load_average() or float('nan'):.1f})", flush=True)
    costs = view_costs(torch.as_tensor(split.X_train), args.repeats)

    lines = []
    if results:
        ce = np.mean([r["accuracy"] for r in results["ce"]]) if "ce" in results else float("nan")
        gap = info["accuracy"] - ce
        lines += [
            f"MNIST-5k (4000/1000 split), CNN teacher {info['accuracy']:.4f}, MLP-128 student, Adam 1e-3, "
            f"batch 128, {args.epochs} epochs, {args.seeds} seed(s); views: "
            "`Affine(image_shape=(1, 28, 28))` (±10°, ±10% shift, per sample), `augment_mode=\"replace\"`, "
            "teacher online.",
            "",
            "| run | accuracy | gap closed | seconds per fit |",
            "|---|---|---|---|",
        ]
    for name, runs in results.items():
        accs = [r["accuracy"] for r in runs]
        acc = f"{np.mean(accs):.4f}" if len(accs) == 1 else f"{np.mean(accs):.4f} ± {np.std(accs):.4f}"
        closed = "—" if name == "ce" else f"{(np.mean(accs) - ce) / gap:+.0%}"
        lines.append(f"| {name} | {acc} | {closed} | {np.mean([r['seconds'] for r in runs]):.1f} |")
    lines += ["", "| 128 MNIST views, CPU | µs (median) | × v2.RandomAffine (median per round) |"]
    lines += ["|---|---|---|"]
    lines += [f"| {name} | {value:.0f} | {ratio:.2f} |" for name, (value, ratio) in costs.items()]
    lines += ["", machine(load_start)]
    table = "\n".join(lines)
    print(table)
    path = update_section("views-mnist5k", table, args.write, doc=DOC if args.write else None)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
