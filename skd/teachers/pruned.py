"""R2KD's pruned teacher: a teacher blended with its pruned copy, and a pipeline step.

:class:`PrunedTeacher` (Kim et al., 2024) is a composite teacher whose logits
are ``blend * z_teacher + (1 - blend) * z_pruned``, the pruned copy made by
``torch.nn.utils.prune`` without retraining, and a scikit-learn transformer
whose ``fit_transform`` writes the book. :func:`prune_copy` and
:func:`prunable_layers` are the pruning tools it (and
:class:`skd.callbacks.StudentPruning`) uses.
"""

from __future__ import annotations

import copy

import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.frozen import FrozenEstimator
from sklearn.utils.validation import check_is_fitted
from skorch import NeuralNet
from torch import nn
from torch.nn.utils import prune

from skd.teachers.adapters import TorchTeacher
from skd.teachers.base import teacher_classes
from skd.teachers.cloning import KeepsFittedTeachers, is_fitted_net
from skd.teachers.composite import CompositeTeacher
from skd.teachers.fitting import step_book

__all__ = ["PRUNE_METHODS", "PrunedTeacher", "prunable_layers", "prune_copy"]

PRUNE_METHODS = ("l1_unstructured", "ln_structured", "global_unstructured")


def prunable_layers(module: nn.Module) -> list[nn.Module]:
    """The ``Conv*d`` and ``Linear`` layers of ``module``, in order."""
    return [m for m in module.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]


def prune_copy(module: nn.Module, amount: float, method: str = "l1_unstructured") -> nn.Module:
    """A pruned deep copy of ``module``, masks removed (a plain module).

    As the R2KD code: ``l1_unstructured`` prunes ``amount`` of each Conv/Linear
    layer's weights by magnitude; ``ln_structured`` removes whole output
    channels/neurons by L2 norm (zeroed, same shape); ``global_unstructured``
    prunes ``amount`` of all those weights together.

    Parameters
    ----------
    module : torch.nn.Module
        Left untouched.
    amount : float
        Share of weights (or of output channels for ``ln_structured``) pruned.
    method : {"l1_unstructured", "ln_structured", "global_unstructured"}

    Returns
    -------
    pruned : torch.nn.Module
        In ``eval()`` mode.

    Raises
    ------
    ValueError
        If ``module`` has no Conv or Linear layer, or ``method`` is unknown.
    """
    pruned = copy.deepcopy(module)
    layers = prunable_layers(pruned)
    if not layers:
        raise ValueError(
            f"The teacher {type(module).__name__} has no Conv or Linear layer to prune; "
            "use amount=0 or a teacher with such layers."
        )
    if method == "l1_unstructured":
        for layer in layers:
            prune.l1_unstructured(layer, "weight", amount=amount)
    elif method == "ln_structured":
        for layer in layers:
            prune.ln_structured(layer, "weight", amount=amount, n=2, dim=0)
    elif method == "global_unstructured":
        prune.global_unstructured(
            [(layer, "weight") for layer in layers], pruning_method=prune.L1Unstructured, amount=amount
        )
    else:
        raise ValueError(f"method must be one of {PRUNE_METHODS}, got {method!r}.")
    for layer in layers:
        prune.remove(layer, "weight")
    return pruned.eval()


class _ModuleBlueprint:
    """A torch module pickled as a weightless skeleton plus numpy weights.

    ``torch.save`` writes a random serialization id into every tensor's
    pickle, so two equal modules never hash alike and ``Pipeline(memory=...)``
    would miss its cache. Numpy arrays hash by content.
    """

    def __init__(self, module: nn.Module):
        self.skeleton = copy.deepcopy(module).to("meta")
        self.state = {key: value.detach().cpu().numpy() for key, value in module.state_dict().items()}

    def build(self) -> nn.Module:
        module = self.skeleton.to_empty(device="cpu")
        module.load_state_dict({key: torch.from_numpy(value.copy()) for key, value in self.state.items()})
        return module


class PrunedTeacher(KeepsFittedTeachers, TransformerMixin, CompositeTeacher, BaseEstimator):
    """A teacher blended with its pruned copy; a transformer that writes the book.

    R2KD (Kim, Ham, Cho & Kim, IEEE TKDE 2024) distils from
    ``blend * z_teacher + (1 - blend) * z_pruned``, where the pruned copy is
    the teacher with ``amount`` of its weights pruned by magnitude and **not
    retrained**. ``amount=0`` or ``blend=1`` is the plain teacher.

    Use it as ``DistillationClassifier(teacher=PrunedTeacher(...))``, or as a
    pipeline step before the classifier::

        make_pipeline(StandardScaler(), PrunedTeacher(net, amount=0.1),
                      DistillationClassifier(Student, loss="r2kd"))

    **fit_transform differs from fit().transform()**, as in
    :class:`sklearn.preprocessing.TargetEncoder`: ``fit_transform(X, y)``
    returns the book ``{"X": X, "teacher_logits": logits}`` (a
    :class:`skorch.helper.SliceDict`) that the classifier learns from, while
    ``transform(X)`` returns ``X`` untouched, so that no teacher runs at
    predict time. With ``Pipeline(memory=...)`` the book is cached and reused
    by candidates that differ only in the classifier's parameters.

    Parameters
    ----------
    teacher : torch.nn.Module, skorch net, or any teacher when ``amount=0``
    amount : float, default=0.1
        Share of weights pruned, in [0, 1). The R2KD code uses 0.1.
    blend : float, default=0.7
        Weight of the original teacher's logits, in [0, 1].
    method : {"l1_unstructured", "ln_structured", "global_unstructured"}
    device : str, default="auto"
    hint_layers : sequence of str or None, default=None
        Layers of the (unpruned) teacher whose outputs ``fit_transform``
        writes in the book with the logits, for a classifier's ``hints``.

    Attributes
    ----------
    pruned_ : torch.nn.Module or None
        The pruned copy (None when ``amount=0`` or ``blend=1``).
    classes_ : ndarray
        Labels of the book's columns (set by ``fit_transform`` or ``setup``).
    teacher_score_ : float
        Accuracy of the book's logits on the rows of ``fit_transform``.

    Notes
    -----
    In a pipeline the teacher sees the X that reaches this step. A prefit
    teacher that was trained on raw features must come first, before any
    scaler; wrap the later feature steps in :class:`skd.OnFeatures` so that
    they transform the book's features and keep its logits. ``clone`` keeps a
    fitted skorch net (or a ``FrozenEstimator``) as it is.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.ensemble import RandomForestClassifier
    >>> from sklearn.frozen import FrozenEstimator
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skd import MLP, DistillationClassifier, OnFeatures, PrunedTeacher
    >>> X, y = load_digits(return_X_y=True)
    >>> forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y)
    >>> pipe = make_pipeline(
    ...     PrunedTeacher(FrozenEstimator(forest), amount=0),  # the book, on raw X
    ...     OnFeatures(StandardScaler()),                       # the student's X, scaled
    ...     DistillationClassifier(MLP, loss="kd", max_epochs=2, verbose=0, device="cpu"))
    >>> pipe.fit(X, y).predict(X[:3]).shape
    (3,)
    >>> pipe[0].teacher_score_ > 0.9  # the forest saw the raw pixels it was trained on
    True

    Pruning needs a torch teacher (a module or a fitted skorch net):
    ``PrunedTeacher(net, amount=0.1, blend=0.7)`` blends it with a copy that
    has 10% of its weights pruned.
    """

    def __init__(self, teacher=None, amount: float = 0.1, blend: float = 0.7,
                 method: str = "l1_unstructured", device: str = "auto", hint_layers=None):
        self.teacher = teacher
        self.amount = amount
        self.blend = blend
        self.method = method
        self.device = device
        self.hint_layers = hint_layers

    # ---------------------------------------------------------------- sklearn
    def _validate(self):
        if self.teacher is None:
            raise ValueError("PrunedTeacher needs a teacher: PrunedTeacher(teacher=...).")
        if not isinstance(self.amount, (int, float)) or not 0.0 <= self.amount < 1.0:
            raise ValueError(f"amount must be in [0, 1), got {self.amount!r}.")
        if not isinstance(self.blend, (int, float)) or not 0.0 <= self.blend <= 1.0:
            raise ValueError(f"blend must be in [0, 1], got {self.blend!r}.")
        if self.method not in PRUNE_METHODS:
            raise ValueError(f"method must be one of {PRUNE_METHODS}, got {self.method!r}.")

    def _torch_module(self):
        teacher = _unfrozen(self.teacher)
        if isinstance(teacher, NeuralNet):
            if not is_fitted_net(teacher):
                raise ValueError(
                    f"PrunedTeacher prunes a fitted skorch net, but the {type(teacher).__name__} "
                    "it was given is not fitted (or not initialised); fit it first, or use "
                    "amount=0 to have it fitted on the training data."
                )
            return teacher.module_
        if isinstance(teacher, nn.Module):
            return teacher
        return None

    def fit(self, X=None, y=None) -> PrunedTeacher:
        """Make the pruned copy (no training; X and y are not used).

        Returns
        -------
        self : PrunedTeacher
        """
        self._validate()
        needs_pruning = self.amount > 0 and self.blend < 1
        module = self._torch_module() if needs_pruning else None
        if needs_pruning and module is None:
            raise TypeError(
                f"PrunedTeacher can prune only torch teachers (a torch.nn.Module or a fitted "
                f"skorch net, bare or in a FrozenEstimator), not {_kind(self.teacher)}; use "
                "amount=0 for it."
            )
        self.pruned_ = prune_copy(module, self.amount, self.method) if needs_pruning else None
        return self

    def transform(self, X):
        """Return X untouched: the teacher never runs at predict time."""
        check_is_fitted(self, "pruned_")
        return X

    def fit_transform(self, X, y=None, **fit_params):
        """Fit, then return the book ``{"X": X, "teacher_logits": logits}``.

        A shortcut for ``WriteBook(PrunedTeacher(...))`` (:class:`skd.pipeline.WriteBook`,
        the book-writing step for any teacher); both write through
        :func:`skd.teachers.fitting.step_book` and :func:`skd.book.write_book`.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
        y : array-like of shape (n_samples,)
            Needed to align the teacher's columns to the sorted labels.

        Returns
        -------
        book : skorch.helper.SliceDict
            X as given and the blended teacher logits, one column per label.
        """
        if y is None:
            raise ValueError("PrunedTeacher.fit_transform needs y to align the teacher to its classes.")
        self.fit(X, y)
        written = step_book(self, X, y, self.device, self.hint_layers)
        self.classes_, self.teacher_score_ = written.classes, written.score
        return written.book

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: object.__getstate__ may return __dict__
        for key in ("teacher", "pruned_"):
            if isinstance(state.get(key), nn.Module):
                state[key] = _ModuleBlueprint(state[key])
        return state

    def __setstate__(self, state):
        for key, value in state.items():
            if isinstance(value, _ModuleBlueprint):
                state[key] = value.build()
        super().__setstate__(state)

    # ---------------------------------------------------------------- teacher
    def describe(self):
        return f"PrunedTeacher(amount={self.amount}, blend={self.blend})"

    def content(self):
        return super().content(), self.blend

    def hooked_module(self):
        """The original (unpruned) teacher's module: hints distil its features."""
        members = getattr(self, "members_", None)
        return members[0].hooked_module() if members else None

    def _make_members(self, X, y):
        if not hasattr(self, "pruned_"):
            self.fit(X, y)
        if self.pruned_ is None:
            return [self.teacher]
        # the pruned copy's output columns are the original teacher's
        return [self.teacher, TorchTeacher(self.pruned_, classes=teacher_classes(_unfrozen(self.teacher)))]

    def _combine(self, logits):
        if len(logits) == 1:
            return logits[0]
        teacher_logits, pruned_logits = logits
        return self.blend * teacher_logits + (1.0 - self.blend) * pruned_logits


def _unfrozen(teacher):
    """The estimator inside a ``FrozenEstimator``, else ``teacher``."""
    return teacher.estimator if isinstance(teacher, FrozenEstimator) else teacher


def _kind(teacher) -> str:
    if isinstance(teacher, FrozenEstimator):
        return f"FrozenEstimator({type(teacher.estimator).__name__})"
    return type(teacher).__name__
