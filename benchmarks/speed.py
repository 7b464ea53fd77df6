"""Is distillation free? Fit time and memory of skd against plain loops.

    python benchmarks/speed.py [--samples 50000] [--epochs 5] [--write]

On a tabular task (sklearn ``make_classification``, 50k x 100, 10 classes),
an MLP student (100 -> 128 -> 10) is fitted for 5 epochs, side by side in one
process, at batch sizes 32 and 256:

  (a) a hand-written pure-PyTorch KD loop (teacher logits computed once);
  (b) ``DistillationClassifier`` with the book (KD);
  (c) stock skorch ``NeuralNetClassifier`` with cross-entropy only;
  (d) ``DistillationClassifier`` with the book turned off (teacher online).

The teacher is an MLP (100 -> 512 -> 512 -> 10) trained for 2 epochs. Each
variant runs ``--repeats`` times; the median is reported. Peak memory is the
growth of ru_maxrss of a fresh subprocess per variant. Prints the table and
saves it under bench-out/; ``--write`` puts it into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import make_classification
from skorch import NeuralNetClassifier

from skd import MLP, DistillationClassifier

from _report import add_write_flag, update_section


class CountingTeacher(torch.nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module
        self.samples = 0

    def forward(self, X):
        self.samples += X.shape[0]
        return self.module(X)


def make_data(samples, seed=0):
    X, y = make_classification(
        n_samples=samples, n_features=100, n_informative=60, n_classes=10, n_clusters_per_class=2,
        random_state=seed,
    )
    return X.astype(np.float32), y.astype(np.int64)


def make_teacher(X, y, seed=0):
    torch.manual_seed(seed)
    teacher = MLP(100, 10, hidden_units=(512, 512))
    opt = torch.optim.Adam(teacher.parameters(), 1e-3)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    for _ in range(2):
        for idx in torch.randperm(len(Xt)).split(256):
            opt.zero_grad()
            F.cross_entropy(teacher(Xt[idx]), yt[idx]).backward()
            opt.step()
    return teacher.eval()


def pure_kd(X, y, teacher, batch_size, epochs, temperature=4.0):
    """(a) the hand-written loop a PyTorch user would write."""
    torch.manual_seed(0)
    student = MLP(100, 10)
    opt = torch.optim.Adam(student.parameters(), 1e-3)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    with torch.no_grad():
        teacher_logits = teacher(Xt)
    for _ in range(epochs):
        for idx in torch.randperm(len(Xt)).split(batch_size):
            out = student(Xt[idx])
            kl = F.kl_div(
                F.log_softmax(out / temperature, 1), F.log_softmax(teacher_logits[idx] / temperature, 1),
                log_target=True, reduction="batchmean",
            )
            loss = 0.1 * F.cross_entropy(out, yt[idx]) + 0.9 * temperature**2 * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
    return student


def skd_fit(X, y, teacher, batch_size, epochs, cache):
    clf = DistillationClassifier(
        MLP, teacher=teacher, loss="kd", book="memory" if cache else "online",
        optimizer=torch.optim.Adam, lr=1e-3,
        batch_size=batch_size, max_epochs=epochs, verbose=0, device="cpu", random_state=0,
    )
    return clf.fit(X, y)


def skorch_ce(X, y, batch_size, epochs):
    torch.manual_seed(0)
    net = NeuralNetClassifier(
        MLP, module__n_features=100, module__n_classes=10, criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam, lr=1e-3, batch_size=batch_size, max_epochs=epochs, verbose=0,
        train_split=None, iterator_train__shuffle=True, device="cpu",
    )
    return net.fit(X, y)


VARIANTS = {
    "a": "pure PyTorch KD loop",
    "b": "skd, book",
    "c": "stock skorch, CE only",
    "d": "skd, book off",
}


def run_variant(name, X, y, teacher, batch_size, epochs):
    if name == "a":
        return pure_kd(X, y, teacher, batch_size, epochs)
    if name == "b":
        return skd_fit(X, y, teacher, batch_size, epochs, cache=True)
    if name == "c":
        return skorch_ce(X, y, batch_size, epochs)
    return skd_fit(X, y, teacher, batch_size, epochs, cache=False)


def peak_memory(name, samples, batch_size, epochs, teacher_path):
    """Peak RSS (bytes) of a fresh process that loads the data and teacher and
    runs one variant once; ``name=None`` runs nothing (the baseline)."""
    code = (
        "import resource, sys, torch; sys.path.insert(0, 'benchmarks')\n"
        "import speed\n"
        f"X, y = speed.make_data({samples})\n"
        "teacher = speed.MLP(100, 10, hidden_units=(512, 512))\n"
        f"teacher.load_state_dict(torch.load({str(teacher_path)!r}, weights_only=True)); teacher.eval()\n"
        f"name = {name!r}\n"
        f"if name: speed.run_variant(name, X, y, teacher, {batch_size}, {epochs})\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", default="32,256", help="comma-separated batch sizes")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads for every variant (default: torch's)")
    add_write_flag(parser)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    X, y = make_data(args.samples)
    teacher = make_teacher(X, y)
    import tempfile
    from pathlib import Path

    teacher_path = Path(tempfile.mkdtemp()) / "teacher.pt"
    torch.save(teacher.state_dict(), teacher_path)
    lines = [
        f"Command: `python benchmarks/speed.py` ({args.samples} x 100 make_classification, 10 classes, "
        f"MLP student 100-128-10, {args.epochs} epochs, Adam, CPU with {torch.get_num_threads()} threads, "
        f"median of {args.repeats} runs; memory: peak RSS of a fresh process per variant, and its growth "
        "over a process that only loads the data and the teacher).",
        "",
        "| batch | (a) pure KD s | (b) skd book s | (c) skorch CE s | (d) skd online s "
        "| (b)/(a) | (b)/(c) | (d)/(b) "
        "| teacher samples (b) | teacher samples (d) | peak MiB (a) | peak MiB (b) | growth MiB (a) "
        "| growth MiB (b) |",
        "|" + "---|" * 14,
    ]
    results = {}
    targets = {32: (1.1, 1.0), 256: (1.0, 1.0)}  # issue 18: (b)/(a) and (b)/(c)
    for batch_size in (int(b) for b in args.batches.split(",")):
        times = {name: [] for name in VARIANTS}
        counts = {}
        for _ in range(args.repeats):
            for name in VARIANTS:  # interleaved, so drift hits every variant alike
                counting = CountingTeacher(teacher)
                start = time.perf_counter()
                run_variant(name, X, y, counting, batch_size, args.epochs)
                times[name].append(time.perf_counter() - start)
                counts[name] = counting.samples
        med = {name: statistics.median(t) for name, t in times.items()}
        mem = {
            name: peak_memory(name, args.samples, batch_size, args.epochs, teacher_path) / 2**20
            for name in (None, "a", "b")
        }
        results[batch_size] = {"seconds": med, "teacher_samples": counts,
                               "peak_mib": {str(k): v for k, v in mem.items()}}
        lines.append(
            f"| {batch_size} | {med['a']:.2f} | {med['b']:.2f} | {med['c']:.2f} | {med['d']:.2f} "
            f"| {med['b'] / med['a']:.2f} | {med['b'] / med['c']:.2f} | {med['d'] / med['b']:.2f} "
            f"| {counts['b']} | {counts['d']} | {mem['a']:.0f} | {mem['b']:.0f} | {mem['a'] - mem[None]:.0f} "
            f"| {mem['b'] - mem[None]:.0f} |"
        )
        print(lines[-1], flush=True)
    lines += [
        "",
        "Targets (issue 18): " + "; ".join(f"batch {b}: (b)/(a) <= {t[0]}, (b)/(c) <= {t[1]}"
                                           for b, t in targets.items()) + ".",
        f"Teacher forwards per fit: n_samples = {args.samples} with the book, "
        f"n_samples x epochs = {args.samples * args.epochs} without it.",
    ]
    table = "\n".join(lines)
    print(table)
    print(json.dumps(results, indent=1))
    print(f"wrote {update_section('speed', table, write=args.write)}")


if __name__ == "__main__":
    main()
