"""Fitted teachers survive ``clone``.

scikit-learn's ``clone`` (in ``cross_val_score``, ``GridSearchCV``) rebuilds
an estimator from its parameters and clones each of them, which turns a
fitted skorch net into an unfitted one. A fitted net handed over as a teacher
is a prefit teacher, like a trained torch module (which ``clone`` deep-copies)
or a ``FrozenEstimator``: the estimators that hold teachers keep it as it is.
An unfitted one is still cloned, and fitted on the training data of each fit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sklearn.base import clone
from skorch import NeuralNet

__all__ = ["KeepsFittedTeachers", "clone_keeping_fitted", "is_fitted_net"]


def is_fitted_net(obj: Any) -> bool:
    """Whether ``obj`` is an initialised (fitted or loaded) skorch net."""
    return isinstance(obj, NeuralNet) and bool(getattr(obj, "initialized_", False)) \
        and hasattr(obj, "module_")


def _clone_teacher(value: Any) -> Any:
    if is_fitted_net(value):
        return value  # shared, never trained: skd only reads its logits
    if isinstance(value, (list, tuple)):
        return type(value)(_clone_teacher(member) for member in value)
    return clone(value, safe=False)


def clone_keeping_fitted(estimator, teacher_params: Iterable[str]):
    """``clone(estimator)``, except that fitted skorch nets in ``teacher_params`` are kept.

    Parameters
    ----------
    estimator : scikit-learn estimator
    teacher_params : iterable of str
        Names of the parameters that hold teachers (or lists of teachers).

    Returns
    -------
    clone : estimator
        Unfitted, with the same parameters.
    """
    names = set(teacher_params)
    params = estimator.get_params(deep=False)
    cloned = {name: _clone_teacher(value) if name in names else clone(value, safe=False)
              for name, value in params.items()}
    return type(estimator)(**cloned)


class KeepsFittedTeachers:
    """Mixin: ``clone`` keeps the fitted skorch nets held in ``teacher_params_``."""

    #: Names of the parameters that hold teachers.
    teacher_params_: tuple[str, ...] = ("teacher",)

    def __sklearn_clone__(self):
        return clone_keeping_fitted(self, self.teacher_params_)
