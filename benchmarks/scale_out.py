"""Wall time of one grid search on joblib's loky, a Dask LocalCluster and one process.

    python benchmarks/scale_out.py [--epochs 10] [--write]

A 12-candidate grid (``loss`` in kd/dkd x ``loss__temperature`` in 1/2/4 x
``lr`` in 1e-3/1e-2) with 3-fold CV on MNIST-5k's 4000 training images
(3 x 12 = 36 fits):
an MLP student (784-128-10), ``--epochs`` epochs, batch 128, on the CPU,
``refit=False``. The teacher is an MLP (784-256-10) trained in this process
with CE. Its class is defined here, in ``__main__`` (the notebook case), and
it appends to a file on each call, so its calls are counted in every worker.
Each run uses a fresh ``book_dir``, except the last, which has none.
``--write`` puts the table in docs/scale-out.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import joblib
import torch
from sklearn.model_selection import GridSearchCV, StratifiedKFold

import skd
from skd import MLP, DistillationClassifier
from skd.data import load_split

DOC = Path(__file__).resolve().parent.parent / "docs" / "scale-out.md"
GRID = {"loss": ["kd", "dkd"], "loss__temperature": [1.0, 2.0, 4.0], "lr": [1e-3, 1e-2]}


class LoggedTeacher(torch.nn.Module):
    """A trained module that appends the rows of each call to ``log``."""

    def __init__(self, module, log):
        super().__init__()
        self.module = module
        self.log = log

    def forward(self, X):
        with open(self.log, "a") as calls:
            calls.write(f"{X.shape[0]}\n")
        return self.module(X)


def warm_up():
    """Import skd and torch in a worker, so that the timings leave out worker start-up."""
    return skd.__version__


def timed_fit(search, X, y) -> float:
    start = time.perf_counter()
    search.fit(X, y)
    return time.perf_counter() - start


def run(name, backend, n_jobs, X, y, teacher_module, epochs, cache: bool):
    with tempfile.TemporaryDirectory() as workdir:
        log = os.path.join(workdir, "calls.txt")
        clf = DistillationClassifier(
            MLP, teacher=LoggedTeacher(teacher_module, log), module__hidden_units=(128,), max_epochs=epochs,
            batch_size=128, optimizer=torch.optim.Adam, device="cpu", verbose=0, random_state=0,
            book_dir=os.path.join(workdir, "books") if cache else None)
        search = GridSearchCV(clf, GRID, cv=StratifiedKFold(3), n_jobs=n_jobs, refit=False)
        if backend == "dask":
            from distributed import Client, LocalCluster  # optional: pip install 'skd[dask]'

            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster, Client(cluster) as client, \
                    joblib.parallel_config(backend="dask"):
                client.run(warm_up)
                seconds = timed_fit(search, X, y)
        else:
            with joblib.parallel_config(backend=backend):
                joblib.Parallel(n_jobs=n_jobs)(joblib.delayed(warm_up)() for _ in range(2))
                seconds = timed_fit(search, X, y)
        rows = [int(line) for line in Path(log).read_text().split()]
    passes = sum(rows) / (len(X) * 2 / 3)  # a pass: the teacher over one fold's training rows
    n_candidates = len(search.cv_results_["params"])
    best = search.cv_results_["mean_test_score"].max()
    return (f"| {name} | {seconds:.0f} | {passes:.0f} | {passes / n_candidates:.2f} | {best:.3f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--write", action="store_true", help="write the table into docs/scale-out.md")
    args = parser.parse_args()
    split = load_split("mnist5k")
    X, y = split.X_train, split.y_train
    teacher = DistillationClassifier(
        MLP, loss="ce", module__hidden_units=(256,), max_epochs=5, batch_size=128,
                                     optimizer=torch.optim.Adam, device="cpu", verbose=0,
                                     random_state=0).fit(X, y).module_
    lines = [
        "| run | wall time (s) | teacher passes | passes per candidate | best mean CV accuracy |",
        "|---|---:|---:|---:|---:|",
        run("one process (`n_jobs=1`), `book_dir`", "loky", 1, X, y, teacher, args.epochs, True),
        run("loky, `n_jobs=2`, `book_dir`", "loky", 2, X, y, teacher, args.epochs, True),
        run("Dask `LocalCluster` (2 worker processes), `book_dir`", "dask", -1, X, y, teacher,
            args.epochs, True),
        run("loky, `n_jobs=2`, no `book_dir`", "loky", 2, X, y, teacher, args.epochs, False),
    ]
    table = "\n".join(lines) + (
        f"\n\n12 candidates x 3 folds, MNIST-5k (4000 training images), {args.epochs} epochs, "
        f"CPU ({os.cpu_count()} cores, shared), torch {torch.__version__}, Python "
        f"{platform.python_version()}. Wall time of `search.fit` with warm workers (worker "
        "start-up, a few seconds, is left out). A teacher pass is one run over a fold's "
        "training rows.")
    print(table)
    if args.write:
        from _report import update_section  # a sibling script, run from benchmarks/

        update_section("scale-out-timings", table, DOC)
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
