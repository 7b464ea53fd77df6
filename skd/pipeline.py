"""Pipeline steps that write a book and carry it through feature transformers.

:class:`WriteBook` runs a teacher once and hands on the book ``{"X":
features, "teacher_logits": logits}`` (``PrunedTeacher`` is a shortcut for
``WriteBook(PrunedTeacher(...))``), so the teacher sees the X that reaches
that step. A prefit teacher trained on raw features must therefore come
first; the feature steps after it are wrapped in :class:`OnFeatures`, which
transforms a book's features and keeps its logits.
"""

from __future__ import annotations

from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils.validation import check_is_fitted
from skorch.helper import SliceDict

from skd.book import Book, features_of, is_book
from skd.teachers.cloning import KeepsFittedTeachers
from skd.teachers.fitting import step_book

__all__ = ["OnFeatures", "WriteBook"]


class WriteBook(KeepsFittedTeachers, TransformerMixin, BaseEstimator):
    """A pipeline step that runs a teacher once and hands the student its book.

    **fit_transform differs from fit().transform()**, as in
    :class:`sklearn.preprocessing.TargetEncoder`: ``fit_transform(X, y)``
    returns the book ``{"X": X, "teacher_logits": logits}`` (a
    :class:`skorch.helper.SliceDict`) that the classifier learns from, while
    ``transform(X)`` returns ``X`` untouched, so that no teacher runs at
    predict time. With ``Pipeline(memory=...)`` the book is reused by
    candidates that differ only in later steps.

    Parameters
    ----------
    teacher : object
        Any teacher :class:`skd.DistillationClassifier` accepts (an unfitted
        scikit-learn one is fitted on the step's ``X, y``), e.g. a
        :class:`skd.PrunedTeacher`.
    device : str, default="auto"
    hint_layers : sequence of str or None, default=None
        Teacher layers whose outputs are written in the book with the logits,
        for a classifier's ``hints`` (see the "Feature distillation" page).
    topk : int or None, default=None
        Write a compressed book instead: per row the teacher's ``topk`` most
        likely classes and the mass of the others (see
        :func:`skd.book.compress_book`), for a loss that reads one
        (``loss="kd_topk"``).
    topk_temperature : float, default=1.0
        The temperature a compressed book is written at: the loss's, for
        exact buckets.

    Attributes
    ----------
    classes_ : ndarray
        Labels of the book's columns.
    teacher_score_ : float
        Accuracy of the book's logits on the rows of ``fit_transform``.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skd.pipeline import WriteBook
    >>> X, y = load_digits(return_X_y=True)
    >>> book = WriteBook(LogisticRegression(max_iter=500)).fit_transform(X, y)
    >>> sorted(book.keys()), book["teacher_logits"].shape
    (['X', 'teacher_logits'], (1797, 10))
    """

    def __init__(self, teacher=None, device: str = "auto", hint_layers=None, topk: int | None = None,
                 topk_temperature: float = 1.0):
        self.teacher = teacher
        self.device = device
        self.hint_layers = hint_layers
        self.topk = topk
        self.topk_temperature = topk_temperature

    def fit(self, X, y=None):
        """Run the teacher once (as ``fit_transform``) and keep its classes and score."""
        self.fit_transform(X, y)
        return self

    def fit_transform(self, X, y=None, **fit_params):
        """Return the book ``{"X": X as given, "teacher_logits": logits}``.

        The teacher sees ``X`` exactly as given (a DataFrame with its dtypes
        and categoricals), and the book keeps it for the next step.
        """
        if self.teacher is None:
            raise ValueError("WriteBook needs a teacher: WriteBook(teacher=...).")
        topk = None if self.topk is None else (self.topk, self.topk_temperature)
        written = step_book(self.teacher, X, y, self.device, self.hint_layers, topk=topk)
        self.classes_, self.teacher_score_ = written.classes, written.score
        return written.book

    def transform(self, X):
        """Return X untouched: the teacher never runs at predict time."""
        check_is_fitted(self, "classes_")
        return X


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
        return SliceDict(**Book.of(X).with_features(features).as_dict())
