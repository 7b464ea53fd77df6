"""Does a fit collapse on a busy machine? Idle against busy, torch's default threads against fit_threads.

    python benchmarks/busy.py [--busy N] [--repeats 3] [--epochs 8] [--write]

A KD fit on scikit-learn's digits (MLP student 64 -> 128 -> 10, batch 64, a
logistic-regression teacher, CPU) is timed alone and beside ``--busy``
processes that each keep one core busy (default: the usable cores, so the
machine is full before the fit starts), with torch's default intra-op thread
count (``choose_threads`` patched to leave it alone) and with
:func:`skd.training.threads.fit_threads`. Each cell is the **worst** of
``--repeats`` runs, the figure a user waits for.

The fair share of a fit beside N busy processes on C usable cores is
``max(1, (N + 1) / C)`` times its idle time (every runnable process gets the
same share of the cores); the target is at most about 2x the fair share.
Runs in under 3 minutes with the defaults on an idle machine; on a loaded
one the default-threads cells are the ones that take long.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from skd import MLP, DistillationClassifier
from skd.training import threads

from _report import add_write_flag, update_section

SPIN = "while True: pass"


def make_fit(epochs):
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    teacher = LogisticRegression(max_iter=300).fit(X, y)

    def fit():
        clf = DistillationClassifier(MLP, teacher=teacher, loss="kd", max_epochs=epochs, batch_size=64,
                                     optimizer=torch.optim.Adam, lr=1e-3, verbose=0, device="cpu",
                                     random_state=0, train_split=None)
        start = time.perf_counter()
        clf.fit(X, y)
        return time.perf_counter() - start

    return fit


def timed(fit, variant, repeats):
    """The worst of ``repeats`` fits with the variant's thread policy."""
    default = torch.get_num_threads()
    times = []
    for _ in range(repeats):
        if variant == "default threads":
            original = threads.choose_threads
            threads.choose_threads = lambda current=None: (None, "benchmark: torch's default")
            try:
                times.append(fit())
            finally:
                threads.choose_threads = original
        else:
            with threads.fit_threads():
                times.append(fit())
        torch.set_num_threads(default)
    return max(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cores = threads.usable_cores()
    parser.add_argument("--busy", type=int, default=cores, help="busy processes beside the fit")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    add_write_flag(parser)
    args = parser.parse_args(argv)
    load_before = threads._load()
    fit = make_fit(args.epochs)
    fit()  # warm-up: imports, allocator
    variants = ["default threads", "fit_threads"]
    idle = {v: timed(fit, v, args.repeats) for v in variants}
    # this process's own fits raised the load average: they are not a competitor of the next fit
    after_own = threads.load_average(), threads.choose_threads()
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(args.busy)]
    try:
        time.sleep(1.0)  # the spinners are running
        chosen = threads.choose_threads()
        busy = {v: timed(fit, v, args.repeats) for v in variants}
    finally:
        for process in spinners:
            process.kill()
            process.wait()
    fair = max(1.0, (args.busy + 1) / cores)
    lines = [f"KD fit on digits ({args.epochs} epochs, batch 64), CPU with {cores} usable cores, torch "
             f"{torch.__version__} default {torch.get_num_threads()} threads; worst of {args.repeats} runs, "
             f"beside {args.busy} busy processes (fair share {fair:.2f}x idle); runnable processes before "
             f"the run: {load_before:.1f} (idle only if about 1). fit_threads chose: "
             f"{chosen[0] if chosen[0] is not None else 'no change'} ({chosen[1]}). On the idle machine, "
             f"after this process's own {2 * args.repeats + 1} fits (1-minute load average "
             f"{after_own[0] or 0:.1f}), it chose {after_own[1][0] or 'no change'} ({after_own[1][1]}).", "",
             "| threads | idle s | busy s | busy / idle | busy / fair share |", "|---|---|---|---|---|"]
    for v in variants:
        ratio = busy[v] / idle[v]
        lines.append(f"| {v} | {idle[v]:.2f} | {busy[v]:.2f} | {ratio:.2f} | {ratio / fair:.2f} |")
    table = "\n".join(lines)
    print(table)
    print(f"saved to {update_section('busy', table, write=args.write)}")


if __name__ == "__main__":
    main()
