"""Quickstart: distil a teacher into a small student on scikit-learn's digits.

Run:  python examples/quickstart.py              (docs/quickstart.md is the same code)
      SKD_QUICK=1 python examples/quickstart.py  (a smoke test)

Two teachers, two ways: a random forest (prefit, kept through ``clone`` by
``FrozenEstimator``) and a torch MLP. Each is distilled into a 32-unit MLP
student with skd's default optimizer; the student alone (cross-entropy) is
the baseline. The script
prints every test accuracy and round-trips the student through pickle. On
digits distillation does not help this student (docs/quickstart.md shows the
printed accuracies: the KD students score about 2 points below the student
alone): this shows the workflow, not a gain; ``skd bench`` shows the gain on
MNIST-5k.
"""

import os
import pickle

from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split

from skd import MLP, DistillationClassifier

#: SKD_QUICK=1 cuts epochs and seeds so that the script runs in seconds (the tests use it).
QUICK = os.environ.get("SKD_QUICK") == "1"

EPOCHS = 3 if QUICK else 40


def main(seed: int = 0) -> dict:
    X, y = load_digits(return_X_y=True)
    X = X / 16.0  # pixels in [0, 1]
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=seed
    )
    # teacher 1: a torch MLP, itself trained with skd's plain cross-entropy
    mlp_teacher = DistillationClassifier(MLP, loss="ce", module__hidden_units=(256, 256),
                                         max_epochs=3 if QUICK else 30, random_state=seed)
    mlp_teacher.fit(X_train, y_train)
    # teacher 2: a random forest, fitted once and frozen
    forest = RandomForestClassifier(n_estimators=300, random_state=seed).fit(X_train, y_train)
    forest = FrozenEstimator(forest)

    # the student: a 32-unit MLP, alone (CE) and from each teacher (KD)
    student = dict(module__hidden_units=(32,), max_epochs=3 if QUICK else 60, random_state=seed)
    alone = DistillationClassifier(MLP, loss="ce", **student).fit(X_train, y_train)
    from_mlp = DistillationClassifier(MLP, teacher=mlp_teacher, loss="kd", **student).fit(X_train, y_train)
    from_forest = DistillationClassifier(MLP, teacher=forest, loss="kd", **student).fit(X_train, y_train)

    scores = {
        "teacher: MLP 256-256": mlp_teacher.score(X_test, y_test),
        "teacher: random forest": forest.score(X_test, y_test),
        "student alone (CE)": alone.score(X_test, y_test),
        "student from the MLP (KD)": from_mlp.score(X_test, y_test),
        "student from the forest (KD)": from_forest.score(X_test, y_test),
    }
    for name, score in scores.items():
        print(f"{name:30s} test accuracy {score:.4f}")

    lean = pickle.loads(pickle.dumps(from_forest.export_student()))  # no teacher inside
    assert (lean.predict(X_test) == from_forest.predict(X_test)).all()
    print(f"pickled lean student: {len(pickle.dumps(lean)) / 1024:.0f} KiB "
          f"(with the forest: {len(pickle.dumps(from_forest)) / 1024:.0f} KiB)")
    return scores


if __name__ == "__main__":
    main()
