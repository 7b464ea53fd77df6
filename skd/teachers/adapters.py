"""Leaf adapters: one per kind of teacher object a user hands over.

Each wraps one object (a torch module, a skorch net, a scikit-learn
classifier, a callable) and says how to fit, place and ask it; the checks and
the alignment to ``classes_`` are :class:`skd.teachers.Teacher`'s.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import cross_val_predict
from sklearn.utils.validation import check_is_fitted
from skorch import NeuralNet
from torch.utils.data import Dataset

from skd.teachers.base import PROBA_FLOOR, Teacher, as_float_tensor, teacher_classes
from skd.teachers.subset import subset_logits

__all__ = ["CallableTeacher", "SklearnTeacher", "SkorchTeacher", "TorchTeacher"]


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
        if not isinstance(module, torch.nn.Module):
            hint = (" For a function X -> logits use skd.teachers.CallableTeacher(fn, classes=...)"
                    if callable(module) else "")
            raise TypeError(f"TorchTeacher takes a torch.nn.Module, got {type(module).__name__}.{hint}")
        self.module = module
        self.classes_ = None if classes is None else np.asarray(classes)

    def describe(self):
        return f"torch module {type(self.module).__name__}"

    def content(self):
        return self.module, self.classes_

    def hooked_module(self):
        return self.module

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

    Parameters
    ----------
    net : skorch.NeuralNet
    """

    trained_classifier = True

    def __init__(self, net: NeuralNet):
        self.net = net

    def describe(self):
        return f"skorch net {type(self.net).__name__}"

    def content(self):
        return self.net, self.classes_

    def hooked_module(self):
        module = getattr(self.net, "module_", None)
        return module if isinstance(module, torch.nn.Module) else None

    def _fit_if_needed(self, X, y):
        if not getattr(self.net, "initialized_", False) or not hasattr(self.net, "history_"):
            self.net = clone(self.net)
            encoded = np.searchsorted(self.student_classes_, y).astype(np.int64)
            self.net.fit(X if isinstance(X, Dataset) else as_float_tensor(X, "cpu").numpy(), encoded)
            self.classes_ = None  # fitted on encoded labels: columns follow classes_
            self.fitted_in_setup_ = True
        else:
            self.classes_ = teacher_classes(self.net)
        self.outputs_probabilities = isinstance(getattr(self.net, "criterion_", None), torch.nn.NLLLoss)

    def _place(self, device):
        module = getattr(self.net, "module_", None)
        if isinstance(module, torch.nn.Module):
            module.eval()

    def raw_logits(self, X):
        out = self.net.forward(X, training=False, device=self.device_)
        return out[0] if isinstance(out, tuple) else out


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
    ``sklearn.frozen.FrozenEstimator`` to keep it through ``clone``. It is
    given X as the user gave it: a DataFrame keeps its column names, dtypes
    and categoricals (e.g. ``HistGradientBoostingClassifier(categorical_features="from_dtype")``).

    Parameters
    ----------
    estimator : scikit-learn classifier
        With ``predict_proba`` or a multi-class ``decision_function``.
    """

    trained_classifier = True

    def __init__(self, estimator: BaseEstimator):
        self.estimator = estimator

    def describe(self):
        return f"scikit-learn {type(self.estimator).__name__}"

    def content(self):
        return self.estimator_, self.classes_

    def _fit_if_needed(self, X, y):
        try:
            check_is_fitted(self.estimator)
            self.estimator_ = self.estimator
        except NotFittedError:
            # a ValueError: a Dataset is a valid X, only not for fitting this teacher
            if isinstance(X, Dataset):
                raise ValueError(  # noqa: TRY004
                    f"The teacher ({self.describe()}) is unfitted and X is a torch Dataset; "
                    "an unfitted scikit-learn teacher is fitted on in-memory X only. Fit it "
                    "first and wrap it in sklearn.frozen.FrozenEstimator."
                ) from None
            self.estimator_ = clone(self.estimator).fit(_to_numpy_input(X), y)
            self.fitted_in_setup_ = True
        self.classes_ = np.asarray(self.estimator_.classes_)
        self._use_decision = False
        if hasattr(self.estimator_, "decision_function") and len(self.classes_) > 2:
            self._use_decision = True
        elif not hasattr(self.estimator_, "predict_proba"):
            raise TypeError(
                f"The teacher ({self.describe()}) has neither predict_proba nor a "
                "multi-class decision_function, so skd cannot get logits from it."
            )

    def _as_input(self, X):
        # the rows as the user gave them (a DataFrame keeps its columns and dtypes, sparse rows
        # stay sparse); a tensor (an online batch of the student's features) becomes numpy, with
        # the column names of a teacher fitted on a DataFrame
        X = _to_numpy_input(X)
        names = getattr(self.estimator_, "feature_names_in_", None)
        if names is not None and isinstance(X, np.ndarray) and X.ndim == 2 and X.shape[1] == len(names):
            import pandas as pd  # deferred: optional; installed where a teacher was fitted on a DataFrame

            X = pd.DataFrame(X, columns=names)
        return X

    def out_of_fold_logits(self, X, y, cv) -> torch.Tensor:
        """Out-of-fold logits of the rows ``(X, y)`` this teacher was fitted on, aligned to ``classes_``.

        ``sklearn.model_selection.cross_val_predict`` of the unfitted
        ``estimator`` with ``cv`` (an int is stratified, as in
        ``StackingClassifier``), by the method :meth:`raw_logits` uses
        (``decision_function`` or ``predict_proba``, whose log is taken with
        the floor :data:`~skd.teachers.base.PROBA_FLOOR`); the columns follow
        ``estimator_.classes_``, then the student's ``classes_`` as every batch does.

        Parameters
        ----------
        X : array-like, DataFrame or sparse matrix of shape (n_samples, ...)
            The labelled training rows as the user gave them.
        y : ndarray of shape (n_samples,)
            Their labels, original values.
        cv : int, cross-validation splitter or iterable
            Checked by ``sklearn.model_selection.check_cv`` (``classifier=True``).

        Returns
        -------
        logits : Tensor of shape (n_samples, n_classes)
            float32, on the device.
        """
        method = "decision_function" if self._use_decision else "predict_proba"
        out = np.asarray(cross_val_predict(self.estimator, _to_numpy_input(X), y, cv=cv, method=method),
                         dtype=np.float64)
        if self._use_decision:  # a class missing from a training fold gets the lowest float: a floor
            missing = out < np.finfo(np.float32).min
            if missing.any():
                present = np.where(missing, np.inf, out).min(axis=1, keepdims=True)
                out = np.where(missing, present + np.log(PROBA_FLOOR), out)
            out = torch.as_tensor(out, dtype=torch.float32)
        else:
            out = torch.log(torch.as_tensor(out, dtype=torch.float32).clamp_min(PROBA_FLOOR))
        with torch.no_grad():
            out = self._check_output(out.to(self.device_))
            return subset_logits(out, self.columns_, getattr(self, "other_columns_", None))

    def raw_logits(self, rows):
        if self._use_decision:
            return torch.as_tensor(np.asarray(self.estimator_.decision_function(rows), dtype=np.float32))
        proba = np.asarray(self.estimator_.predict_proba(rows), dtype=np.float32)
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

    def content(self):
        return self.fn, self.classes_

    def raw_logits(self, X):
        out = self.fn(X)
        if isinstance(out, np.ndarray):
            out = torch.from_numpy(np.ascontiguousarray(out))
        return out
