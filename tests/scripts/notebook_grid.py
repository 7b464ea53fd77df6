"""A grid search whose student and teacher classes live in ``__main__``, as in a notebook.

Run as a script by ``tests/test_scale_out.py`` (never imported): ``MLP`` and
``LoggingTeacher`` must reach joblib's and Dask's workers by value. Prints one
JSON line per search: the teacher kind, the backend, the mean test scores and
the teacher's calls (rows per call), read back from a file every process
appends to.
"""

import argparse
import json
from pathlib import Path

import joblib
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from skd import DistillationClassifier


class MLP(torch.nn.Module):
    def __init__(self, n_features, n_classes, hidden=32):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(n_features, hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, n_classes))

    def forward(self, X):
        return self.net(X)


class LoggingTeacher(torch.nn.Module):
    """A seeded linear teacher that appends each call's row count to ``log``.

    An attribute counter would stay in the worker that ran it; a file is
    shared by every process on the machine.
    """

    def __init__(self, log):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(64, 10)
        self.log = log

    def forward(self, X):
        with open(self.log, "a") as calls:
            calls.write(f"{X.shape[0]}\n")
        return self.net(X)


def make_teacher(kind, log):
    module = LoggingTeacher(log)
    if kind == "module":
        return module
    if kind == "closure":
        scale = 2.0
        return lambda X: module(X) * scale
    return LogisticRegression(max_iter=200)


def search(kind, backend, n_jobs, log, book_dir):
    X, y = load_digits(return_X_y=True)
    X, y = (X[:600] / 16.0).astype(np.float32), y[:600]
    clf = DistillationClassifier(MLP, teacher=make_teacher(kind, log), max_epochs=2, lr=1e-2,
                                 optimizer=torch.optim.Adam, batch_size=64, verbose=0, device="cpu",
                                 random_state=0, book_dir=book_dir)
    grid = {"loss": ["kd", "dkd"], "loss__temperature": [2.0, 4.0]}
    gs = GridSearchCV(clf, grid, cv=StratifiedKFold(3), n_jobs=n_jobs, refit=False)
    if backend == "dask":
        from distributed import Client, LocalCluster  # the optional extra skd[dask]

        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) \
                as cluster, Client(cluster), joblib.parallel_config(backend="dask"):
            gs.fit(X, y)
    else:
        with joblib.parallel_config(backend=backend):
            gs.fit(X, y)
    calls = Path(log).read_text().split() if Path(log).exists() else []
    return {"kind": kind, "backend": backend, "scores": gs.cv_results_["mean_test_score"].tolist(),
            "teacher_calls": [int(rows) for rows in calls], "candidates": len(gs.cv_results_["params"])}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--kinds", default="module,closure,sklearn")
    parser.add_argument("--backends", default="loky")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--book-dir", action="store_true")
    args = parser.parse_args()
    for backend in args.backends.split(","):
        for kind in args.kinds.split(","):
            run = Path(args.workdir) / f"{backend}-{kind}"
            cache = str(run / "books") if args.book_dir else None
            run.mkdir(parents=True)
            result = search(kind, backend, args.n_jobs, str(run / "teacher_calls.txt"), cache)
            print(json.dumps(result), flush=True)
