"""Equal against quality (CA-MKD) weights for an ensemble of teachers with one deliberately weak teacher.

Three prefit scikit-learn teachers on digits: logistic regression and an MLP (both strong), and a
depth-2 decision tree (weak, about a third right). The same MLP student as ``skd bench`` is
distilled with KD from ``EnsembleTeacher(teachers)`` (equal weights) and from
``EnsembleTeacher(teachers, weights="quality")``, over several seeds; the strong pair alone is
the reference. Prints a Markdown table of test accuracy (mean ± std), each ensemble's own test
accuracy and its weights.

    python benchmarks/ensemble_weights.py                 # digits, 5 seeds, 30 epochs
    python benchmarks/ensemble_weights.py --dataset mnist5k --epochs 100
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.tree import DecisionTreeClassifier

from skd import EnsembleTeacher
from skd.bench import BenchConfig, fit_student, machine
from skd.data import load_split


def teachers(split) -> dict:
    """The prefit teachers, by name."""
    made = {
        "logistic regression": LogisticRegression(max_iter=1000),
        "MLP (64)": MLPClassifier((64,), max_iter=500, random_state=0),
        "decision tree, depth 2 (weak)": DecisionTreeClassifier(max_depth=2, random_state=0),
    }
    return {name: FrozenEstimator(model.fit(split.X_train, split.y_train)) for name, model in made.items()}


def ensemble_accuracy(ensemble: EnsembleTeacher, split) -> float:
    """The set-up ensemble's own test accuracy (arg-max of its combined logits)."""
    logits = ensemble.book_logits(split.X_test, original=split.X_test)
    return float(np.mean(logits.argmax(1) == split.y_test))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    start, load_at_start = time.perf_counter(), os.getloadavg()[0]
    split = load_split(args.dataset, 0)
    config = BenchConfig(dataset=args.dataset, student_epochs=args.epochs, device="cpu")
    prefit = teachers(split)
    lines = [f"Teachers' test accuracy on {args.dataset}: " + ", ".join(
        f"{name} {model.score(split.X_test, split.y_test):.4f}" for name, model in prefit.items()) + ".", ""]
    members = list(prefit.values())
    arms = [("CE (no teacher)", "ce", None),
            ("KD, strong pair, equal weights", "kd", lambda: EnsembleTeacher(members[:2])),
            ("KD, all three, equal weights", "kd", lambda: EnsembleTeacher(members)),
            ("KD, all three, quality weights", "kd", lambda: EnsembleTeacher(members, weights="quality"))]
    lines += ["| student trained with | test accuracy | ensemble's own test accuracy | weights |",
              "|---|---|---|---|"]
    for name, loss, make in arms:
        accuracies = [fit_student(split, loss, seed, None if make is None else make(), config)["accuracy"]
                      for seed in range(args.seeds)]
        own, weights = "—", "—"
        if make is not None:
            ensemble = make().setup(split.X_train, split.y_train, np.unique(split.y_train), "cpu",
                                    original=split.X_train)
            own = f"{ensemble_accuracy(ensemble, split):.4f}"
            weights = ", ".join(f"{w:.3f}" for w in ensemble.weights_.tolist())
        lines.append(f"| {name} | {np.mean(accuracies):.4f} ± {np.std(accuracies):.4f} | {own} | {weights} |")
    lines += ["", f"MLP (128) student, KD at its defaults (T = 4, 0.1 CE + 0.9 KD), {args.epochs} epochs, "
              f"{args.seeds} seeds; {machine(load_at_start)}; {time.perf_counter() - start:.0f} s in all."]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
