"""Pruning: a pruned teacher as a scikit-learn step, and a student pruned while it learns.

- :class:`PrunedTeacher` (R2KD, Kim et al., 2024): a transformer **and** a
  teacher whose knowledge is ``blend * z_teacher + (1 - blend) * z_pruned``,
  the pruned copy made by ``torch.nn.utils.prune`` without retraining.
- :class:`StudentPruning`: a skorch callback pruning the student at epoch
  ends towards a target sparsity (gradual magnitude pruning, Zhu & Gupta
  2017), unstructured with ``torch.nn.utils.prune`` or structured with
  torch-pruning, so that the final student really is smaller and faster.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from skorch.callbacks import Callback
from skorch.helper import SliceDict
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted
from torch import nn
from torch.nn.utils import prune

from skd.teachers import Teacher, as_teacher

__all__ = ["PrunedTeacher", "StudentPruning", "prunable_layers", "prune_copy"]

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


class PrunedTeacher(TransformerMixin, Teacher, BaseEstimator):
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

    Attributes
    ----------
    pruned_ : torch.nn.Module or None
        The pruned copy (None when ``amount=0`` or ``blend=1``).
    classes_ : ndarray
        Labels of the book's columns (set by ``fit_transform`` or ``setup``).
    """

    def __init__(self, teacher=None, amount: float = 0.1, blend: float = 0.7,
                 method: str = "l1_unstructured", device: str = "auto"):
        self.teacher = teacher
        self.amount = amount
        self.blend = blend
        self.method = method
        self.device = device

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
        from skorch import NeuralNet

        if isinstance(self.teacher, NeuralNet):
            return self.teacher.module_
        if isinstance(self.teacher, nn.Module):
            return self.teacher
        return None

    def fit(self, X=None, y=None):
        """Make the pruned copy (no training; X and y are not used)."""
        self._validate()
        needs_pruning = self.amount > 0 and self.blend < 1
        module = self._torch_module()
        if needs_pruning and module is None:
            raise TypeError(
                f"PrunedTeacher can prune only torch teachers (a torch.nn.Module or a fitted "
                f"skorch net), not {type(self.teacher).__name__}; use amount=0 for it."
            )
        self.pruned_ = prune_copy(module, self.amount, self.method) if needs_pruning else None
        return self

    def transform(self, X):
        """Return X untouched: the teacher never runs at predict time."""
        check_is_fitted(self, "pruned_")
        return X

    def fit_transform(self, X, y=None, **fit_params):
        """Fit, then return the book ``{"X": X, "teacher_logits": logits}``."""
        if y is None:
            raise ValueError("PrunedTeacher.fit_transform needs y to align the teacher to its classes.")
        self.fit(X, y)
        from skd.classifier import BOOK_LOGITS, BOOK_X, resolve_device

        X_np = X.to_numpy() if hasattr(X, "to_numpy") else np.asarray(X)
        X_np = np.ascontiguousarray(X_np, dtype=np.float32)
        classes = np.unique(np.asarray(y))
        device = resolve_device(self.device)
        adapter = copy.copy(self).setup(X_np, np.asarray(y), classes, device)
        logits = adapter.book_logits(X_np)
        self.classes_ = classes
        return SliceDict(**{BOOK_X: X_np, BOOK_LOGITS: logits})

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

    def setup(self, X, y, classes, device):
        if not hasattr(self, "pruned_"):
            self.fit(X, y)
        self.base_ = as_teacher(self.teacher).setup(X, y, classes, device)
        if self.pruned_ is not None:
            self.pruned_adapter_ = as_teacher(_with_classes(self.pruned_, self.base_)).setup(
                X, y, classes, device
            )
        else:
            self.pruned_adapter_ = None
        self.device_ = torch.device(device)
        self.student_classes_ = np.asarray(classes)
        self.n_forward_samples_ = 0
        return self

    def predict_logits(self, X):
        logits = self.base_.predict_logits(X)
        if self.pruned_adapter_ is not None:
            logits = self.blend * logits + (1.0 - self.blend) * self.pruned_adapter_.predict_logits(X)
        self.n_forward_samples_ += X.shape[0]
        return logits


def _with_classes(module, base_adapter):
    """The pruned module, with the original teacher's column labels."""
    from skd.teachers import TorchTeacher

    return TorchTeacher(module, classes=base_adapter.classes_)


class StudentPruning(Callback):
    """Prune the student during distillation, gradually, towards ``amount``.

    At the end of epochs ``start`` to ``end`` (default: the first epoch to
    three quarters of ``max_epochs``), the sparsity follows the cubic schedule of Zhu & Gupta
    (2017), ``s = amount * (1 - (1 - progress)**3)``; the remaining epochs
    fine-tune the pruned student under the same distillation loss (the KDDP
    idea: prune what distillation leaves inactive). The output layer is never
    pruned.

    - ``structured=False``: global L1 magnitude pruning of Conv/Linear weights
      with ``torch.nn.utils.prune``; the masks are removed at the end of
      ``fit``, leaving zeros in dense tensors (smaller when compressed, not
      faster).
    - ``structured=True``: torch-pruning removes whole neurons/channels by L2
      magnitude, respecting layer dependencies; ``net.module_`` really has
      fewer parameters and runs faster. The optimizer is re-created after each
      step (its state for removed parameters is meaningless).

    Parameters
    ----------
    amount : float, default=0.5
        Target share of weights (unstructured) or of channels (structured), in [0, 1).
    structured : bool, default=False
    schedule : {"gradual", "once"}, default="gradual"
        "once" prunes everything at the end of epoch ``start``.
    start, end : int or None
        Epochs (1-based) where pruning begins and reaches ``amount``.
    """

    def __init__(self, amount: float = 0.5, structured: bool = False, schedule: str = "gradual",
                 start: int | None = None, end: int | None = None):
        self.amount = amount
        self.structured = structured
        self.schedule = schedule
        self.start = start
        self.end = end

    def initialize(self):
        if not isinstance(self.amount, (int, float)) or not 0.0 <= self.amount < 1.0:
            raise ValueError(f"StudentPruning amount must be in [0, 1), got {self.amount!r}.")
        if self.schedule not in ("gradual", "once"):
            raise ValueError(f"StudentPruning schedule must be 'gradual' or 'once', got {self.schedule!r}.")
        self.sparsity_ = 0.0
        return self

    def _window(self, net):
        start = self.start or 1
        end = self.end or max(start, int(0.75 * net.max_epochs))
        if self.schedule == "once":
            end = start
        return start, end

    def _target(self, net, epoch):
        start, end = self._window(net)
        if epoch < start:
            return 0.0
        progress = 1.0 if end <= start else min((epoch - start) / (end - start), 1.0)
        return self.amount * (1.0 - (1.0 - progress) ** 3)

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.sparsity_ = 0.0
        self.example_ = None
        self.widths_ = None

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if self.structured and self.example_ is None and training:
            from skd.classifier import BOOK_X

            Xi = batch[0]
            Xi = Xi[BOOK_X] if isinstance(Xi, dict) else Xi
            self.example_ = torch.as_tensor(Xi[:2]).to(next(net.module_.parameters()).device)

    def on_epoch_end(self, net, **kwargs):
        epoch = len(net.history)
        target = self._target(net, epoch)
        if target > self.sparsity_ + 1e-9:
            if self.structured:
                self._prune_structured(net, target)
            else:
                self._prune_unstructured(net, target)
            self.sparsity_ = target
        net.history.record("sparsity", self.sparsity_)

    def _layers(self, net):
        layers = prunable_layers(net.module_)
        return layers[:-1]  # never the output layer

    def _prune_unstructured(self, net, target):
        layers = self._layers(net)
        if not layers:
            return
        # the share of weights to remove now, so that the total reaches target
        done = self.sparsity_
        step = (target - done) / (1.0 - done)
        prune.global_unstructured(
            [(layer, "weight") for layer in layers], pruning_method=prune.L1Unstructured, amount=step
        )

    def _prune_structured(self, net, target):
        import torch_pruning as tp

        if self.example_ is None:
            return
        module = net.module_
        output_layer = prunable_layers(module)[-1]
        hidden = self._layers(net)
        if not hasattr(self, "widths_") or self.widths_ is None:
            self.widths_ = {id(layer): _width(layer) for layer in hidden}
        # per layer, the share of its current width that leaves the final width
        # at round(original * (1 - target)): no drift from compounded rounding
        ratios = {}
        for layer in hidden:
            current = _width(layer)
            keep = max(1, round(self.widths_[id(layer)] * (1.0 - target)))
            if current > keep:
                # torch-pruning keeps int(width * (1 - ratio)) channels
                ratios[layer] = (current - keep - 1e-6) / current
        if not ratios:
            return
        pruner = tp.pruner.MetaPruner(
            module,
            self.example_,
            importance=tp.importance.MagnitudeImportance(p=2),
            pruning_ratio=0.0,
            pruning_ratio_dict=ratios,
            ignored_layers=[output_layer],
        )
        pruner.step()
        net._initialize_optimizer()

    def on_train_end(self, net, **kwargs):
        if not self.structured:
            for layer in self._layers(net):
                if prune.is_pruned(layer) and hasattr(layer, "weight_orig"):
                    prune.remove(layer, "weight")
        self.example_ = None
        self.widths_ = None


def _width(layer):
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
