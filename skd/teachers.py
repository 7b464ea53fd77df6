"""Teacher adapters: every kind of teacher answers "logits for this X".

Each adapter is made fresh at ``fit`` from the user's object by
:func:`as_teacher`, fitted on the training data if it is an unfitted
scikit-learn or skorch model, and aligned to the student's ``classes_``.
Adapters receive float32 torch tensors on the student's device and return
float32 logits there, aligned column by column to ``classes_``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

__all__ = [
    "Teacher",
    "TorchTeacher",
    "SkorchTeacher",
    "SklearnTeacher",
    "CallableTeacher",
    "EnsembleTeacher",
    "as_teacher",
    "TEACHER_KINDS",
]

TEACHER_KINDS = (
    "a trained torch.nn.Module, a fitted skorch net, a scikit-learn classifier "
    "(prefit inside sklearn.frozen.FrozenEstimator, or unfitted), a callable "
    "X -> logits, or a list of these (an ensemble)"
)

#: Floor for probabilities turned into log-probabilities.
PROBA_FLOOR = 1e-7

#: Rows per teacher call while writing a book.
BOOK_BATCH_SIZE = 1024


def _looks_like_probabilities(out: torch.Tensor) -> bool:
    if out.ndim != 2 or out.shape[1] < 2:
        return False
    return bool(
        (out >= 0).all() and (out <= 1).all() and torch.allclose(out.sum(1), out.new_ones(()), atol=1e-4)
    )


class Teacher:
    """Base adapter. Subclasses implement :meth:`raw_logits`.

    Attributes
    ----------
    classes_ : ndarray or None
        The labels of the teacher's output columns, when the teacher knows
        them (scikit-learn and skorch classifiers). None means the columns are
        in the order of the student's ``classes_``.
    """

    classes_: np.ndarray | None = None
    #: Whether outputs that look like probabilities are expected (no warning).
    outputs_probabilities = False

    def setup(self, X, y, classes, device) -> Teacher:
        """Fit the teacher if needed, place it on ``device`` and align it.

        Parameters
        ----------
        X : ndarray, Tensor or Dataset
            The training inputs of this fit (used only to fit an unfitted
            teacher).
        y : ndarray
            The training labels, original values.
        classes : ndarray
            The student's ``classes_``.
        device : str or torch.device
        """
        self.device_ = torch.device(device)
        self.student_classes_ = np.asarray(classes)
        self._fit_if_needed(X, y)
        self._place(self.device_)
        self.columns_ = self._align(self.classes_)
        self._checked = False
        self.n_forward_samples_ = 0
        return self

    def _fit_if_needed(self, X, y):
        pass

    def _place(self, device):
        pass

    def _align(self, teacher_classes):
        if teacher_classes is None:
            return None
        teacher_classes = np.asarray(teacher_classes)
        index = {label: i for i, label in enumerate(teacher_classes.tolist())}
        missing = [label for label in self.student_classes_.tolist() if label not in index]
        if missing:
            raise ValueError(
                f"The teacher ({self.describe()}) does not know the classes {missing} "
                f"of y; its classes_ are {teacher_classes.tolist()}. Train the teacher on "
                "the same labels as the student."
            )
        columns = [index[label] for label in self.student_classes_.tolist()]
        if columns == list(range(len(teacher_classes))):
            return None
        return torch.as_tensor(columns, dtype=torch.long)

    def describe(self) -> str:
        return type(self).__name__

    def raw_logits(self, X: torch.Tensor) -> torch.Tensor:
        """Teacher outputs for a batch, in the teacher's own column order."""
        raise NotImplementedError

    def predict_logits(self, X: torch.Tensor) -> torch.Tensor:
        """Logits for a batch, aligned to the student's ``classes_``."""
        with torch.no_grad():
            out = self.raw_logits(X)
            out = torch.as_tensor(out).to(device=self.device_, dtype=torch.float32)
            if out.ndim != 2 or out.shape[0] != X.shape[0]:
                raise ValueError(
                    f"The teacher ({self.describe()}) returned an output of shape "
                    f"{tuple(out.shape)} for a batch of {X.shape[0]} samples; it must "
                    f"return logits of shape ({X.shape[0]}, n_classes)."
                )
            out = self._check_output(out)
            if self.columns_ is not None:
                out = out[:, self.columns_.to(out.device)]
        self.n_forward_samples_ += X.shape[0]
        return out

    def book_logits(self, X, batch_size: int = BOOK_BATCH_SIZE) -> np.ndarray:
        """Aligned logits for all of ``X`` (array or tensor), in batches on the device.

        This is how a book is written: one pass of the teacher over the data.
        """
        chunks = [
            self.predict_logits(torch.as_tensor(X[start : start + batch_size]).to(self.device_)).cpu()
            for start in range(0, len(X), batch_size)
        ]
        return torch.cat(chunks).numpy()

    def _check_output(self, out):
        n_classes = len(self.student_classes_)
        expected = n_classes if self.classes_ is None else len(self.classes_)
        if out.shape[1] != expected:
            raise ValueError(
                f"The teacher ({self.describe()}) returns {out.shape[1]} outputs per "
                f"sample, but y has {n_classes} classes {self.student_classes_.tolist()}. "
                "The teacher must output one logit per class, in the order of classes_."
            )
        if self.outputs_probabilities:
            return torch.log(out.clamp_min(PROBA_FLOOR))
        if not torch.isfinite(out).all():
            raise ValueError(
                f"The teacher ({self.describe()}) returned NaN or infinite logits. "
                "Check the teacher on this data before distilling from it."
            )
        if not self._checked:  # decided on the first batch: the teacher is one function
            self._returns_probabilities = _looks_like_probabilities(out)
            self._checked = True
            if self._returns_probabilities:
                warnings.warn(
                    f"The teacher ({self.describe()}) returned probabilities (rows in "
                    "[0, 1] summing to 1), not logits; skd uses their logarithm as "
                    "logits. Return logits (no softmax) to silence this warning.",
                    UserWarning,
                    stacklevel=4,
                )
        if self._returns_probabilities:
            return torch.log(out.clamp_min(PROBA_FLOOR))
        return out


class TorchTeacher(Teacher):
    """A trained ``torch.nn.Module`` returning logits.

    It is put in ``eval()`` mode, run under ``torch.no_grad()`` on the
    student's device, and never trained, compiled or given to the optimizer.

    Parameters
    ----------
    module : torch.nn.Module
    classes : array-like or None, default=None
        Labels of the module's output columns, if they are not in the order
        of the student's (sorted) ``classes_``.
    """

    def __init__(self, module: torch.nn.Module, classes=None):
        self.module = module
        self.classes_ = None if classes is None else np.asarray(classes)

    def describe(self):
        return f"torch module {type(self.module).__name__}"

    def _place(self, device):
        self.module.to(device)
        self.module.eval()

    def raw_logits(self, X):
        if self.module.training:  # someone switched it back: keep eval semantics
            self.module.eval()
        return self.module(X)


class SkorchTeacher(Teacher):
    """A skorch net; its module's outputs (logits), not probabilities.

    An uninitialised net (for instance after ``clone`` in a grid search) is
    fitted on the training data of the student's ``fit``.
    """

    def __init__(self, net):
        self.net = net

    def describe(self):
        return f"skorch net {type(self.net).__name__}"

    def _fit_if_needed(self, X, y):
        if not getattr(self.net, "initialized_", False) or not hasattr(self.net, "history_"):
            self.net = clone(self.net)
            encoded = np.searchsorted(self.student_classes_, y).astype(np.int64)
            self.net.fit(_to_numpy_input(X), encoded)
            self.classes_ = None  # fitted on encoded labels: columns follow classes_
        else:
            self.classes_ = _skorch_classes(self.net)
        self.outputs_probabilities = isinstance(getattr(self.net, "criterion_", None), torch.nn.NLLLoss)

    def _place(self, device):
        module = getattr(self.net, "module_", None)
        if isinstance(module, torch.nn.Module):
            module.eval()

    def raw_logits(self, X):
        out = self.net.forward(X, training=False, device=self.device_)
        return out[0] if isinstance(out, tuple) else out


def _skorch_classes(net):
    try:
        classes = net.classes_
    except AttributeError:
        return None
    return None if classes is None else np.asarray(classes)


def _to_numpy_input(X):
    if isinstance(X, torch.Tensor):
        return X.detach().cpu().numpy()
    return X


class SklearnTeacher(Teacher):
    """A scikit-learn classifier.

    Logits are ``decision_function`` where it gives one column per class
    (multi-class), else ``log(predict_proba)`` with a floor of 1e-7. An
    unfitted estimator is cloned and fitted on the training data of the
    student's ``fit`` (honest cross-validation); wrap a prefit one in
    ``sklearn.frozen.FrozenEstimator`` to keep it through ``clone``.
    """

    def __init__(self, estimator):
        self.estimator = estimator

    def describe(self):
        return f"scikit-learn {type(self.estimator).__name__}"

    def _fit_if_needed(self, X, y):
        try:
            check_is_fitted(self.estimator)
            self.estimator_ = self.estimator
        except NotFittedError:
            from torch.utils.data import Dataset

            if isinstance(X, Dataset):
                raise ValueError(
                    f"The teacher ({self.describe()}) is unfitted and X is a torch Dataset; "
                    "an unfitted scikit-learn teacher is fitted on in-memory X only. Fit it "
                    "first and wrap it in sklearn.frozen.FrozenEstimator."
                ) from None
            self.estimator_ = clone(self.estimator).fit(_to_numpy_input(X), y)
        self.classes_ = np.asarray(self.estimator_.classes_)
        self._use_decision = False
        if hasattr(self.estimator_, "decision_function") and len(self.classes_) > 2:
            self._use_decision = True
        elif not hasattr(self.estimator_, "predict_proba"):
            raise TypeError(
                f"The teacher ({self.describe()}) has neither predict_proba nor a "
                "multi-class decision_function, so skd cannot get logits from it."
            )

    def raw_logits(self, X):
        X_np = X.detach().cpu().numpy()
        if self._use_decision:
            return torch.as_tensor(np.asarray(self.estimator_.decision_function(X_np), dtype=np.float32))
        proba = np.asarray(self.estimator_.predict_proba(X_np), dtype=np.float32)
        return torch.log(torch.as_tensor(proba).clamp_min(PROBA_FLOOR))


class CallableTeacher(Teacher):
    """A callable ``X -> logits``; X is a float32 tensor on the student's device.

    Parameters
    ----------
    fn : callable
    classes : array-like or None, default=None
        Labels of the output columns, if not the student's ``classes_`` order.
    """

    def __init__(self, fn: Callable, classes=None):
        self.fn = fn
        self.classes_ = None if classes is None else np.asarray(classes)

    def describe(self):
        return f"callable {getattr(self.fn, '__name__', type(self.fn).__name__)}"

    def raw_logits(self, X):
        out = self.fn(X)
        if isinstance(out, np.ndarray):
            out = torch.from_numpy(np.ascontiguousarray(out))
        return out


class EnsembleTeacher(Teacher):
    """Several teachers: the (weighted) mean of their aligned logits.

    Parameters
    ----------
    teachers : sequence
        Any teachers accepted by :func:`as_teacher`.
    weights : sequence of float or None, default=None
        One non-negative weight per teacher (normalised to sum to 1);
        None means equal weights.
    """

    def __init__(self, teachers: Sequence[Any], weights: Sequence[float] | None = None):
        self.teachers = teachers
        self.weights = weights

    def describe(self):
        return f"ensemble of {len(self.teachers)} teachers"

    def setup(self, X, y, classes, device):
        if len(self.teachers) == 0:
            raise ValueError("teacher is an empty list; give at least one teacher.")
        weights = np.ones(len(self.teachers)) if self.weights is None else np.asarray(self.weights, float)
        if weights.shape != (len(self.teachers),) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(
                f"Ensemble weights must be {len(self.teachers)} non-negative numbers with a "
                f"positive sum, got {self.weights!r}."
            )
        self.weights_ = torch.as_tensor(weights / weights.sum(), dtype=torch.float32)
        self.members_ = [as_teacher(t).setup(X, y, classes, device) for t in self.teachers]
        self.device_ = torch.device(device)
        self.student_classes_ = np.asarray(classes)
        self.n_forward_samples_ = 0
        return self

    def predict_logits(self, X):
        stacked = torch.stack([member.predict_logits(X) for member in self.members_])
        self.n_forward_samples_ += X.shape[0]
        return torch.tensordot(self.weights_.to(stacked.device), stacked, dims=1)


def as_teacher(teacher) -> Teacher:
    """Wrap any accepted kind of teacher in a fresh :class:`Teacher` adapter.

    Raises
    ------
    TypeError
        If ``teacher`` is none of the accepted kinds.
    """
    from skorch import NeuralNet

    if isinstance(teacher, Teacher):
        return clone_adapter(teacher)
    if isinstance(teacher, NeuralNet):
        return SkorchTeacher(teacher)
    if isinstance(teacher, torch.nn.Module):
        return TorchTeacher(teacher)
    if isinstance(teacher, (list, tuple)):
        return EnsembleTeacher(list(teacher))
    if isinstance(teacher, BaseEstimator) and (
        hasattr(teacher, "predict_proba") or hasattr(teacher, "decision_function")
    ):
        return SklearnTeacher(teacher)
    if callable(teacher) and not isinstance(teacher, type):
        return CallableTeacher(teacher)
    raise TypeError(
        f"teacher must be {TEACHER_KINDS}; got {type(teacher).__name__}: {teacher!r:.80}."
    )


def clone_adapter(adapter: Teacher) -> Teacher:
    """A shallow copy of an adapter, so that ``setup`` never changes the user's."""
    import copy

    return copy.copy(adapter)
