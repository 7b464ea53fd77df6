"""Writing your own loss: subclass DistillationLoss, return named terms, tune it.

Run:  python examples/custom_loss.py              (about 20 s)
      SKD_QUICK=1 python examples/custom_loss.py  (a smoke test)
"""

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV

from skd import MLP, DistillationClassifier
from skd.losses import DistillationLoss

from _common import QUICK


class LogitMatching(DistillationLoss):
    """CE plus the mean squared difference of logits (Ba & Caruana, 2014)."""

    terms = ("ce", "mse")

    def __init__(self, weight=1.0, ce_weight=1.0):
        self.weight = weight
        self.ce_weight = ce_weight

    def validate(self):
        super().validate()  # checks every *weight parameter is >= 0

    def compute_terms(self, student_logits, teacher_logits, y):
        return {
            "ce": self.ce_weight * self.cross_entropy(student_logits, y),
            "mse": self.weight * (student_logits - teacher_logits).pow(2).mean(),
        }


def main():
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    clf = DistillationClassifier(MLP, teacher=LogisticRegression(max_iter=500), loss=LogitMatching(),
                                 optimizer=torch.optim.Adam, lr=3e-3, max_epochs=2 if QUICK else 20,
                                 verbose=0, random_state=0)
    search = GridSearchCV(clf, {"loss__weight": [0.01, 0.1, 1.0]}, cv=3).fit(X, y)
    print("best", search.best_params_, f"cv accuracy {search.best_score_:.4f}")
    best = search.best_estimator_
    print("mse term per epoch:", np.round(best.history[:, "mse"], 4).tolist())


if __name__ == "__main__":
    main()
