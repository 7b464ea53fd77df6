"""Pipeline steps that carry a book through feature transformers.

:class:`skd.PrunedTeacher` writes the book ``{"X": features, "teacher_logits":
logits}`` as a pipeline step, so the teacher sees the X that reaches that step.
A prefit teacher trained on raw features must therefore come first; the
feature steps after it are wrapped in :class:`OnFeatures`, which transforms a
book's features and keeps its logits.
"""

from __future__ import annotations

from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils.validation import check_is_fitted
from skorch.helper import SliceDict

from skd.book import BOOK_LOGITS, features_of, is_book, make_book

__all__ = ["OnFeatures"]


class OnFeatures(TransformerMixin, BaseEstimator):
    """Apply a transformer to the features of a book, keeping the teacher's logits.

    At training time a pipeline step after :class:`skd.PrunedTeacher` receives
    a book; ``OnFeatures(step)`` fits and applies ``step`` to its ``"X"`` and
    returns a book with the same logits. At predict time it receives plain X
    and applies ``step`` to it.

    Parameters
    ----------
    transformer : scikit-learn transformer
        Cloned at ``fit``; must keep the rows (no resampling).

    Attributes
    ----------
    transformer_ : transformer
        The fitted clone.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skd import OnFeatures
    >>> book = {"X": np.array([[0.0], [2.0]]), "teacher_logits": np.eye(2)}
    >>> out = OnFeatures(StandardScaler()).fit_transform(book)
    >>> out["X"].ravel().tolist(), out["teacher_logits"].tolist()
    ([-1.0, 1.0], [[1.0, 0.0], [0.0, 1.0]])
    """

    def __init__(self, transformer):
        self.transformer = transformer

    def fit(self, X, y=None, **fit_params):
        """Fit the transformer on the features of ``X`` (a book or plain X).

        Returns
        -------
        self : OnFeatures
        """
        self.transformer_ = clone(self.transformer).fit(features_of(X), y, **fit_params)
        return self

    def transform(self, X):
        """The transformed features; a book stays a book with the same logits."""
        check_is_fitted(self, "transformer_")
        return self._rewrap(X, self.transformer_.transform(features_of(X)))

    def fit_transform(self, X, y=None, **fit_params):
        """Fit, then transform (the transformer's own ``fit_transform``)."""
        self.transformer_ = clone(self.transformer)
        return self._rewrap(X, self.transformer_.fit_transform(features_of(X), y, **fit_params))

    @staticmethod
    def _rewrap(X, features):
        if not is_book(X):
            return features
        return SliceDict(**make_book(features, X[BOOK_LOGITS]))
