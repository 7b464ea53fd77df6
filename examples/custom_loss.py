"""Writing your own loss: subclass DistillationLoss, return named terms, tune it.

Run:  python examples/custom_loss.py              (docs/custom-loss.md is the same code)
      SKD_QUICK=1 python examples/custom_loss.py  (a smoke test)
"""

import os

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV

from skd import MLP, DistillationClassifier
from skd.losses import DistillationLoss

#: SKD_QUICK=1 cuts epochs and seeds so that the script runs in seconds (the tests use it).
QUICK = os.environ.get("SKD_QUICK") == "1"


class LogitMatching(DistillationLoss):
    """CE plus the mean squared difference of logits (Ba & Caruana, 2014)."""

    terms = ("ce", "mse")

    def __init__(self, weight=1.0, ce_weight=1.0):
        self.weight = weight
        self.ce_weight = ce_weight

    def compute_terms(self, student_logits, teacher_logits, y, temperature):
        # the soft terms only, unweighted: the base class adds "ce" (with ce_weight)
        return {"mse": (student_logits - teacher_logits).pow(2).mean()}

    def term_weights(self, temperature):
        return {"mse": self.weight}


def main():
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    # an unfitted teacher: each fit fits it on its own training rows
    clf = DistillationClassifier(MLP, teacher=LogisticRegression(max_iter=1000), loss=LogitMatching(),
                                 max_epochs=2 if QUICK else 30, verbose=0, random_state=0)
    search = GridSearchCV(clf, {"loss__weight": [0.1, 1.0]}, cv=2).fit(X, y)
    print("best", search.best_params_, f"cv accuracy {search.best_score_:.4f}")
    best = search.best_estimator_
    print("mse term per epoch:", np.round(best.history[:, "mse"], 4).tolist())


if __name__ == "__main__":
    main()
