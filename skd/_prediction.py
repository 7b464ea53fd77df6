"""Prediction, export and pickling of a fitted classifier: the student alone answers.

A mixin of :class:`skd.DistillationClassifier`; the teacher is never called here.
"""

from __future__ import annotations

import torch
from sklearn.exceptions import NotFittedError

from skd._device import resolve_device, resolved_device
from skd._validation import validate_X
from skd.book import features_of
from skd.metrics import labelled_accuracy_score
from skd.persist import cpu_portable, lean_copy

__all__ = ["StudentPrediction"]


def _softmax(logits):
    return torch.softmax(logits, dim=-1)


class StudentPrediction:
    """``predict``/``predict_proba``/``score``, ``export_student`` and CPU-portable pickles."""

    def _check_fitted(self):
        if not getattr(self, "initialized_", False) or (
                not hasattr(self, "classes_inferred_") and self.classes is None):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            )

    def forward_iter(self, X, training=False, device="cpu"):
        with resolved_device(self):
            yield from super().forward_iter(X, training=training, device=device)

    def predict_proba(self, X):
        """Class probabilities of the student, columns in ``classes_`` order.

        The teacher is never called. A book may be passed; its logits are ignored.
        """
        self._check_fitted()
        return super().predict_proba(features_of(validate_X(self, X, reset=False)))

    def score(self, X, y, sample_weight=None):
        """Accuracy on the labelled rows of ``y`` (rows labelled ``unlabelled`` are skipped)."""
        return labelled_accuracy_score(y, self.predict(X), unlabelled=self.unlabelled,
                                       sample_weight=sample_weight)

    def predict(self, X):
        """Predicted labels, values from ``classes_``."""
        indices = self.predict_proba(X).argmax(axis=1)
        return self.classes_[indices]

    def export_student(self):
        """A lean copy for prediction: no teacher, no book, no optimizer.

        The copy predicts exactly as this estimator; its pickle holds the
        student and ``classes_`` only (plus ``history``), however large the
        teacher. It cannot be trained further.
        """
        self._check_fitted()
        return lean_copy(self, _softmax)

    def load_params(self, *args, **kwargs):
        with resolved_device(self):
            return super().load_params(*args, **kwargs)

    def __getstate__(self):
        state = super().__getstate__()
        for key in [key for key in state if key.startswith("teacher")]:
            state[key] = cpu_portable(state[key])
        return state

    def __setstate__(self, state):
        requested = state.get("device")
        if requested == "auto":
            state["device"] = resolve_device("auto")
        super().__setstate__(state)
        if requested == "auto":
            self.device = "auto"
