"""Teachers made of teachers, and :func:`as_teacher`, which makes any of them.

:class:`CompositeTeacher` owns what every composite shares: it sets up its
members with the student's data, classes and device, and counts the samples
it is asked about. A subclass says only how its members are made
(``_make_members``) and how their aligned logits are combined (``_combine``).

:func:`as_teacher` lives here because the two are one recursion: a list
becomes an :class:`EnsembleTeacher`, whose members go through
:func:`as_teacher` again.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.frozen import FrozenEstimator
from skorch import NeuralNet

from skd.book.rows import n_rows
from skd.losses.functional import confidence_aware_weights, teacher_quality
from skd.teachers.adapters import CallableTeacher, SklearnTeacher, SkorchTeacher, TorchTeacher
from skd.teachers.base import TEACHER_KINDS, Teacher

__all__ = ["MEASURED_WEIGHTS", "CompositeTeacher", "EnsembleTeacher", "as_teacher", "register_teacher"]


class CompositeTeacher(Teacher):
    """Base of teachers whose logits combine those of member teachers.

    Subclasses implement ``_make_members(X, y)``, which checks their
    parameters and returns the members (anything :func:`as_teacher`
    accepts), and ``_combine(logits)``, which turns the members' aligned
    logits, in the same order, into one tensor.

    Attributes
    ----------
    members_ : list of Teacher
        The set-up member adapters (set by :meth:`setup`).
    """

    def _prepare(self, X, y):
        self.members_ = [
            as_teacher(member).setup(X, y, self.student_classes_, self.device_, other=self.other_label_)
            for member in self._make_members(X, y)
        ]
        self.fitted_in_setup_ = any(member.fitted_in_setup_ for member in self.members_)

    def _make_members(self, X, y) -> list:
        raise NotImplementedError

    def _combine(self, logits: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def content(self):
        """The members' tokens (a subclass adds the parameters of ``_combine``)."""
        return [member.cache_token() for member in self.members_]

    def predict_logits(self, X) -> torch.Tensor:
        """The members' aligned logits for a batch, combined.

        Parameters
        ----------
        X : array-like, DataFrame, sparse matrix or Tensor of shape (n_samples, ...)
            The rows; each member makes them what it takes.

        Returns
        -------
        logits : Tensor of shape (n_samples, n_classes)
        """
        logits = self._combine([member.predict_logits(X) for member in self.members_])
        self.n_forward_samples_ += n_rows(X)
        return logits


#: ``EnsembleTeacher(weights=...)`` values measured at setup rather than given.
MEASURED_WEIGHTS = ("quality",)


class EnsembleTeacher(CompositeTeacher):
    """Several teachers: the (weighted) mean of their aligned logits.

    Parameters
    ----------
    teachers : sequence
        Any teachers accepted by :func:`as_teacher`.
    weights : sequence of float, "quality" or None, default=None
        One non-negative weight per teacher (normalised to sum to 1); None
        means equal weights. ``"quality"`` measures them once, at setup:
        each teacher's mean cross-entropy ``L_k`` on the labelled training
        rows, turned into weights as CA-MKD does (Zhang, Chen & Wang, ICASSP
        2022): ``w_k = (1 - softmax_k(L)) / (K - 1)``
        (:func:`skd.losses.functional.confidence_aware_weights`). A teacher
        that fits the labels worse weighs less. The teachers run once more
        over the training rows for this (before the book is written); no
        work is added to the training steps.

    Attributes
    ----------
    weights_ : Tensor of shape (n_teachers,)
        The weights used, summing to 1.
    teacher_losses_ : ndarray of shape (n_teachers,) or None
        With ``weights="quality"``: each teacher's mean cross-entropy on the
        labelled training rows; else None.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.ensemble import RandomForestClassifier
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skd import MLP, DistillationClassifier, EnsembleTeacher
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16
    >>> teacher = EnsembleTeacher([LogisticRegression(max_iter=500),
    ...                            RandomForestClassifier(n_estimators=20, random_state=0)],
    ...                           weights=[2, 1])
    >>> clf = DistillationClassifier(MLP, teacher=teacher, max_epochs=2, verbose=0, device="cpu")
    >>> clf.fit(X, y).predict(X[:3]).shape
    (3,)
    >>> clf.teacher_score_ > 0.9  # the ensemble's accuracy on the training rows
    True

    Unfitted members are fitted on the training data of each ``fit``; a
    plain list, ``teacher=[a, b]``, is an ensemble with equal weights.
    The quality of a member fitted in that ``fit`` is measured on the rows
    it was fitted on, which flatters a member that overfits them.
    """

    def __init__(self, teachers: Sequence[Any], weights: Sequence[float] | str | None = None):
        self.teachers = teachers
        self.weights = weights

    def describe(self):
        return f"ensemble of {len(self.teachers)} teachers"

    def _make_members(self, X, y):
        if len(self.teachers) == 0:
            raise ValueError("teacher is an empty list; give at least one teacher.")
        if isinstance(self.weights, str):
            if self.weights not in MEASURED_WEIGHTS:
                raise ValueError(
                    f"teacher weights={self.weights!r} is not a known scheme: give "
                    f"{' or '.join(map(repr, MEASURED_WEIGHTS))}, one number per teacher, or None "
                    "(equal weights)."
                )
            self.weights_ = None  # measured in _prepare, once the members are set up
            return list(self.teachers)
        weights = np.ones(len(self.teachers)) if self.weights is None else np.asarray(self.weights, float)
        if weights.shape != (len(self.teachers),) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(
                f"Ensemble weights must be {len(self.teachers)} non-negative numbers with a "
                f"positive sum, or 'quality', got {self.weights!r}."
            )
        self.weights_ = torch.as_tensor(weights / weights.sum(), dtype=torch.float32)
        return list(self.teachers)

    def content(self):
        return super().content(), self.weights_

    def _prepare(self, X, y):
        super()._prepare(X, y)
        self.teacher_losses_ = None
        if self.weights_ is None:
            self.teacher_losses_ = self._teacher_losses(X, y)
            weights = confidence_aware_weights(torch.as_tensor(self.teacher_losses_, dtype=torch.float64))
            self.weights_ = weights.to(torch.float32)

    def _teacher_losses(self, X, y) -> np.ndarray:
        """Each member's mean cross-entropy on the rows of ``X`` labelled with a student class."""
        if y is None or isinstance(X, torch.utils.data.Dataset):
            raise ValueError(
                "teacher weights='quality' measures each teacher on the labelled training rows, "
                "which needs X as an array, tensor or sparse matrix and y; got "
                f"{type(X).__name__}. Give the weights as numbers instead."
            )
        index = {label: column for column, label in enumerate(self.student_classes_.tolist())}
        encoded = torch.as_tensor([index.get(label, -1) for label in np.asarray(y).tolist()],
                                  dtype=torch.long)
        if not (encoded >= 0).any():
            raise ValueError(
                "teacher weights='quality' found no labelled training rows to measure the teachers "
                "on. Give the weights as numbers instead."
            )
        stack = torch.stack([torch.as_tensor(member.book_logits(X), dtype=torch.float64)
                             for member in self.members_])
        return (-teacher_quality(stack, encoded, "ce")).numpy()

    def _combine(self, logits):
        stacked = torch.stack(logits)
        return torch.tensordot(self.weights_.to(stacked.device), stacked, dims=1)


@functools.singledispatch
def as_teacher(teacher: Any) -> Teacher:
    """Wrap any accepted kind of teacher in a fresh :class:`Teacher` adapter.

    Parameters
    ----------
    teacher : object
        A trained ``torch.nn.Module``, a skorch net, a scikit-learn
        classifier, a callable ``X -> logits``, a list or tuple of these (an
        ensemble), or a :class:`Teacher`, which is copied (shallowly) so that
        ``setup`` never changes the user's object.

    Returns
    -------
    adapter : Teacher
        Not yet set up: call ``adapter.setup(X, y, classes, device)``.

    Raises
    ------
    TypeError
        If ``teacher`` is none of the accepted kinds.

    Notes
    -----
    A registry (``functools.singledispatch``) keyed by the teacher's type:
    a new kind of teacher is supported by registering an adapter factory,
    ``@skd.teachers.register_teacher(MyModel)`` on a function
    ``MyModel -> Teacher``; the most specific registered type wins.
    """
    if isinstance(teacher, BaseEstimator) and (
        hasattr(teacher, "predict_proba") or hasattr(teacher, "decision_function")
    ):
        return SklearnTeacher(teacher)
    if callable(teacher) and not isinstance(teacher, type):
        return CallableTeacher(teacher)
    raise TypeError(
        f"teacher must be {TEACHER_KINDS}; got {type(teacher).__name__}: {teacher!r:.80}."
    )


#: Register an adapter factory for a new kind of teacher (``as_teacher.register``).
register_teacher = as_teacher.register


@as_teacher.register
def _(teacher: Teacher) -> Teacher:
    return copy.copy(teacher)


@as_teacher.register
def _(teacher: NeuralNet) -> Teacher:
    return SkorchTeacher(teacher)


@as_teacher.register
def _(teacher: FrozenEstimator) -> Teacher:
    if isinstance(teacher.estimator, NeuralNet):
        return SkorchTeacher(teacher.estimator)  # its logits, not its probabilities
    return SklearnTeacher(teacher)


@as_teacher.register
def _(teacher: torch.nn.Module) -> Teacher:
    return TorchTeacher(teacher)


@as_teacher.register(list)
@as_teacher.register(tuple)
def _(teacher) -> Teacher:
    return EnsembleTeacher(list(teacher))
