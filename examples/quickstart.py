"""Quickstart: distil a teacher into a small student on scikit-learn's digits.

Run:  python examples/quickstart.py          (about 20 s on 2 CPU cores)
      SKD_QUICK=1 python examples/quickstart.py   (a smoke test)

A wide MLP teacher is trained on 8x8 digit images; a 32-unit MLP student is
then trained alone (cross-entropy) and by distillation (KD), and all three
accuracies on a held-out test set are printed. On digits, distillation gives
no reliable gain (see ../shared/data.md): this shows the workflow, not a gain.
"""

import os

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from skd import MLP, DistillationClassifier

QUICK = os.environ.get("SKD_QUICK") == "1"
EPOCHS = 3 if QUICK else 40


def main(seed: int = 0) -> dict:
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=seed
    )
    common = dict(optimizer=torch.optim.Adam, lr=3e-3, batch_size=64, max_epochs=EPOCHS,
                  verbose=0, random_state=seed)

    teacher = DistillationClassifier(MLP, loss="ce", module__hidden_units=(512, 512), **common)
    teacher.fit(X_train, y_train)

    student_ce = DistillationClassifier(MLP, loss="ce", module__hidden_units=(32,), **common)
    student_ce.fit(X_train, y_train)

    student_kd = DistillationClassifier(
        MLP, teacher=teacher, loss="kd", module__hidden_units=(32,), **common
    )
    student_kd.fit(X_train, y_train)

    scores = {
        "teacher (512-512 MLP)": teacher.score(X_test, y_test),
        "student alone (32 MLP, CE)": student_ce.score(X_test, y_test),
        "student distilled (32 MLP, KD)": student_kd.score(X_test, y_test),
    }
    for name, score in scores.items():
        print(f"{name:32s} test accuracy {score:.4f}")
    return scores


if __name__ == "__main__":
    main()
