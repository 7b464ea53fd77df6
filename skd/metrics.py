"""Scores that skip unlabelled rows (scikit-learn's semi-supervised convention)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score
from sklearn.utils.validation import column_or_1d

from skd.labels import marker_rows

__all__ = ["labelled_accuracy", "labelled_accuracy_score"]


def labelled_accuracy_score(y_true, y_pred, *, unlabelled=-1, sample_weight=None) -> float:
    """Accuracy over the rows of ``y_true`` that have a label.

    Rows labelled ``unlabelled`` (default -1, as in
    ``sklearn.semi_supervised``) are left out. With no labelled row the score
    is NaN (scikit-learn's ``GridSearchCV`` then reports the fold as NaN
    rather than as a perfect or a zero score).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
    unlabelled : object, default=-1
    sample_weight : array-like of shape (n_samples,) or None
    """
    y_true = column_or_1d(y_true)
    y_pred = column_or_1d(y_pred)
    labelled = ~marker_rows(y_true, unlabelled)
    if not labelled.any():
        return float("nan")
    weight = None if sample_weight is None else np.asarray(sample_weight)[labelled]
    return float(accuracy_score(y_true[labelled], y_pred[labelled], sample_weight=weight))


def labelled_accuracy(estimator, X, y) -> float:
    """A scorer, ``scoring=labelled_accuracy``: accuracy on the labelled rows of ``y``.

    Uses the estimator's ``unlabelled`` marker when it has one (the last step
    of a Pipeline included), else -1. ``DistillationClassifier.score`` does
    the same, so ``GridSearchCV``'s default scoring already skips unlabelled
    rows; pass this scorer when the default would be another estimator's.
    """
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    marker = getattr(final, "unlabelled", -1)
    return labelled_accuracy_score(y, estimator.predict(X), unlabelled=marker)
