"""The MLP student on unscaled features: with and without its input standardization.

    python benchmarks/standardize.py [--folds 5] [--mnist]

breast_cancer (569 rows, 30 features whose scales range from 1e-3 to 1e3),
5 stratified folds (``StratifiedKFold(shuffle=True, random_state=0)``), the
classifier at its defaults (Adam, lr 1e-3, 40 epochs, ``MLP`` with 128 hidden
units), ``loss="ce"`` (the student alone) and ``loss="kd"`` with an unfitted
``LogisticRegression`` teacher (fitted per fold). Each cell is the mean ± std
of the test-fold accuracies; the four settings of a row share folds and seeds.
``--mnist`` adds MNIST-5k (pixels in [0, 1], ``skd bench``'s split, the
student alone, 40 epochs, one seed), where every feature is already on one scale.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skd import MLP, DistillationClassifier
from skd.bench import machine
from skd.students import MeasureInputs
from skd.training.threads import load_average


def student(loss: str, standardize: bool, seed: int = 0) -> DistillationClassifier:
    teacher = LogisticRegression(max_iter=5000) if loss != "ce" else None
    return DistillationClassifier(MLP, teacher=teacher, loss=loss, module__standardize=standardize,
                                  callbacks=[MeasureInputs()],
                                  verbose=0, random_state=seed, device="cpu")


def cell(scores: np.ndarray) -> str:
    return f"{scores.mean():.4f} ± {scores.std():.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--mnist", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    load_at_start = load_average()
    X, y = load_breast_cancer(return_X_y=True)
    folds = StratifiedKFold(args.folds, shuffle=True, random_state=0)
    print(f"breast_cancer, {args.folds} stratified folds, accuracy mean ± std over the folds\n")
    print("| loss | unscaled X | unscaled X, standardize=True | StandardScaler first "
          "| StandardScaler first, standardize=True |")
    print("|---|---|---|---|---|")
    for loss in ("ce", "kd"):
        cells = []
        for scaled in (False, True):
            for standardize in (False, True):
                model = student(loss, standardize)
                model = make_pipeline(StandardScaler(), model) if scaled else model
                cells.append(cell(cross_val_score(model, X, y, cv=folds)))
        print(f"| {loss} | " + " | ".join(cells) + " |")
    if args.mnist:
        from skd.data import load_split
        split = load_split("mnist5k", 0)
        row = []
        for standardize in (False, True):
            fitted = student("ce", standardize).fit(split.X_train, split.y_train)
            row.append(f"{fitted.score(split.X_test, split.y_test):.4f}")
        print(f"\nMNIST-5k, the student alone, 40 epochs, seed 0: standardize=False {row[0]}, "
              f"standardize=True {row[1]}")
    print(f"\n{machine(load_at_start)} Total {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
