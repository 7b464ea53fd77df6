"""The compressed book against the full book at C = 1000 classes: memory and student accuracy.

    python benchmarks/compressed_book.py [--seeds 2] [--epochs 15] [--ks 5 20 100] [--temperature 4]
                                         [--book-temperature 1] [--write]

No 1000-class data set is available offline here, so the data are synthetic: scikit-learn's
``make_classification`` with 1000 classes (one Gaussian cluster per class in a 48-dimensional
informative subspace of 64 features). A teacher MLP (64-512-1000) is trained on the training rows
with cross-entropy; its logits on them are the full book (float32, C values per row). The
compressed book keeps, per row, the teacher's top-k log-probabilities (float32), their class
indices (int16, enough for C < 32768) and the log-mass of the other C - k classes (float32),
written at ``--book-temperature`` (by default the training temperature, where its buckets are
exact; a book written at another temperature is re-softened with a uniform tail).

Students (MLP 64-128-1000, Adam, the same seed and batches for every arm) are trained with
cross-entropy alone, with KD from the full book, and with KD from each compressed book
(``skd.losses.functional.topk_kd_divergence``), all with ``0.1 CE + 0.9 T^2 soft`` at the same T.
The loop is plain torch on skd's loss functions: ``DistillationClassifier`` does not read a
compressed book yet. Test accuracy is mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split

from skd.losses import functional as Fn

from _report import add_write_flag, update_section

N_CLASSES = 1000


def make_data(n_samples: int, seed: int):
    X, y = make_classification(
        n_samples=n_samples, n_features=64, n_informative=48, n_redundant=8, n_classes=N_CLASSES,
        n_clusters_per_class=1, class_sep=3.0, flip_y=0.0, random_state=seed,
    )
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, stratify=y, random_state=seed)
    return [torch.as_tensor(a) for a in (X_train, X_test, y_train, y_test)]


def mlp(hidden: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, N_CLASSES)]
    return torch.nn.Sequential(*layers)


def train(model, X, y, epochs, seed, soft=None, batch_size=256, lr=2e-3):
    """Adam; ``soft(student_logits, rows)`` gives the per-batch soft term (None: CE alone)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=generator)
        for start in range(0, len(X), batch_size):
            rows = order[start:start + batch_size]
            logits = model(X[rows])
            ce = F.cross_entropy(logits, y[rows])
            loss = ce if soft is None else 0.1 * ce + 0.9 * soft(logits, rows)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model


@torch.no_grad()
def accuracy(model, X, y) -> float:
    return float((model(X).argmax(1) == y).float().mean())


def nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def run(seeds, epochs, ks, temperature, n_samples, book_temperature):
    rows = {"CE only": [], "KD, full book": []}
    rows.update({f"KD, top-{k} + tail": [] for k in ks})
    memory, tail_mass, teacher_acc = {}, {}, []
    for seed in range(seeds):
        X_train, X_test, y_train, y_test = make_data(n_samples, seed)
        teacher = train(mlp(512, seed + 100), X_train, y_train, epochs, seed + 100)
        teacher_acc.append(accuracy(teacher, X_test, y_test))
        with torch.no_grad():
            book = teacher(X_train).float()
        memory["KD, full book"] = nbytes(book)
        alone = train(mlp(128, seed), X_train, y_train, epochs, seed)
        rows["CE only"].append(accuracy(alone, X_test, y_test))

        def full_soft(logits, batch_rows, book=book):
            return temperature**2 * Fn.kd_divergence(logits, book[batch_rows], temperature).mean()

        student = train(mlp(128, seed), X_train, y_train, epochs, seed, full_soft)
        rows["KD, full book"].append(accuracy(student, X_test, y_test))
        for k in ks:
            compressed = Fn.compress_teacher(book, k, book_temperature)
            indices16 = compressed.indices.to(torch.int16)  # what is stored
            name = f"KD, top-{k} + tail"
            memory[name] = nbytes(compressed.log_probs, indices16, compressed.log_tail)
            tail_mass[name] = float(compressed.log_tail.exp().mean())

            def topk_soft(logits, batch_rows, compressed=compressed, indices16=indices16):
                part = Fn.TopKBook(compressed.log_probs[batch_rows], indices16[batch_rows].long(),
                                   compressed.log_tail[batch_rows], N_CLASSES, book_temperature)
                return temperature**2 * Fn.topk_kd_divergence(logits, part, temperature).mean()

            student = train(mlp(128, seed), X_train, y_train, epochs, seed, topk_soft)
            rows[name].append(accuracy(student, X_test, y_test))
    return rows, memory, tail_mass, teacher_acc, len(X_train), len(X_test)


def table(rows, memory, tail_mass, teacher_acc, n_train, n_test, seeds, epochs, temperature,
          book_temperature):
    full = memory["KD, full book"]
    mean_std = statistics.mean(teacher_acc), (statistics.stdev(teacher_acc) if len(teacher_acc) > 1 else 0.0)
    lines = [
        f"C = {N_CLASSES} synthetic classes, {n_train} training / {n_test} test rows, {seeds} seeds, "
        f"{epochs} epochs, T = {temperature}, compressed books written at T = {book_temperature}; "
        f"teacher test accuracy "
        f"{100 * mean_std[0]:.1f} ± {100 * mean_std[1]:.1f}%.",
        "",
        "| student trained with | book size | share of the full book | mean teacher tail mass (book's T) "
        "| test accuracy (%) |",
        "|---|---|---|---|---|",
    ]
    for name, accs in rows.items():
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        size = memory.get(name)
        size_text = f"{size / 2**20:.2f} MiB" if size else "-"
        share = f"{100 * size / full:.1f}%" if size else "-"
        tail = f"{tail_mass[name]:.4f}" if name in tail_mass else "-"
        acc = f"{100 * statistics.mean(accs):.2f} ± {100 * std:.2f}"
        lines.append(f"| {name} | {size_text} | {share} | {tail} | {acc} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--ks", type=int, nargs="+", default=[5, 20, 100])
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--n-samples", type=int, default=25000)
    parser.add_argument("--book-temperature", type=float, default=None,
                        help="temperature the compressed books are written at (default: --temperature)")
    add_write_flag(parser)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    book_temperature = args.temperature if args.book_temperature is None else args.book_temperature
    result = run(args.seeds, args.epochs, args.ks, args.temperature, args.n_samples, book_temperature)
    text = table(*result, args.seeds, args.epochs, args.temperature, book_temperature)
    flags = argv if argv is not None else sys.argv[1:]
    command = " ".join(["python benchmarks/compressed_book.py", *flags])
    text += f"\n\n(whole run {time.perf_counter() - start:.0f} s on one CPU thread; `{command}`)"
    print(text)
    path = update_section("compressed-book", text, write=args.write)
    print(f"\nsaved to {path}")


if __name__ == "__main__":
    main()
