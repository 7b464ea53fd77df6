"""Where a captured fit spends its time: the device's replay against the host's Python per step.

    python benchmarks/host_work.py [--device cuda] [--batch 256] [--epochs 6]

On CUDA a captured step costs the larger of the GPU's time for one replay and
the host's Python around it (the batch loop, callbacks, bookkeeping). This
script prints, in one run, side by side:

* µs per step of a whole skd fit (marginal: the difference of an ``epochs``-
  and a 1-epoch fit, over the extra steps, so fixed costs drop out);
* µs per replay of skd's graph alone and of the hand-written KD graph alone
  (``graph.replay()`` in a loop, device-bound);
* the top functions of a cProfile of the fit, by own time (host work).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import numpy as np
import torch
from gpu import fit_seconds, hand_loop, sync

from skd import MLP, DistillationClassifier
from skd.training import trainer as trainer_module
from skd.training.graph import CapturedStep


class Keep(CapturedStep):
    made: list = []

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        Keep.made.append(self)


def make(args, epochs):
    return DistillationClassifier(MLP, loss="kd", max_epochs=epochs, batch_size=args.batch,
                                  optimizer=torch.optim.Adam, lr=1e-3, verbose=0, device=args.device,
                                  train_split=None)


def timed_fit(args, epochs, book, y):
    clf = make(args, epochs)
    return fit_seconds(clf, book, y, args.device), clf


def replay_us(graph, device, n=500):
    for _ in range(20):
        graph.replay()
    sync(device)
    start = time.perf_counter()
    for _ in range(n):
        graph.replay()
    sync(device)
    return (time.perf_counter() - start) / n * 1e6


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rows", type=int, default=50_000)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.rows, 100)).astype(np.float32)
    y = rng.integers(0, 10, args.rows).astype(np.int64)
    logits = rng.standard_normal((args.rows, 10)).astype(np.float32) * 3
    book = {"X": X, "teacher_logits": logits}
    trainer_module.CapturedStep = Keep
    timed_fit(args, 1, book, y)  # warm: CUDA context, cuBLAS, allocator
    one, _ = timed_fit(args, 1, book, y)
    many, clf = timed_fit(args, args.epochs, book, y)
    steps = (args.epochs - 1) * (args.rows // args.batch)
    print(f"skd fit, marginal µs per step (batch {args.batch}): {(many - one) / steps * 1e6:.0f} "
          f"(1 epoch {one:.2f} s, {args.epochs} epochs {many:.2f} s)")
    on_cuda = torch.device(args.device).type == "cuda"
    if on_cuda:
        graph = Keep.made[-1].graph
        print(f"skd graph.replay() alone: {replay_us(graph, args.device):.1f} µs")
        Xt, yt, lt = (torch.as_tensor(a, device=args.device) for a in (X, y, logits))
        hand = hand_loop(lambda: MLP(100, 10), Xt, yt, lt, args.batch, 2000, args.device, True)
        print(f"hand graph loop (index copy + replay): {hand:.1f} µs per step")
    profiler = cProfile.Profile()
    clf = make(args, 2)
    profiler.enable()
    clf.fit(book, y)
    sync(args.device)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    print(f"cProfile of a 2-epoch fit ({2 * (args.rows // args.batch)} steps), by own time:")
    print("\n".join(out.getvalue().splitlines()[:45]))


if __name__ == "__main__":
    main()
