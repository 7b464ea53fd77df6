"""Training callbacks: skorch callbacks that act on the student while it learns.

- :class:`StudentPruning`: prunes the student at epoch ends towards a target
  sparsity (gradual magnitude pruning, Zhu & Gupta 2017), unstructured with
  ``torch.nn.utils.prune`` or structured with torch-pruning, so that the
  final student really is smaller and faster.

Callbacks use skorch's public API only (``net.initialize_optimizer``,
``skorch.dataset.unpack_data``) and :mod:`skd.book` for the batch layout.
"""

from __future__ import annotations

import torch
from skorch.callbacks import Callback
from skorch.dataset import unpack_data
from torch import nn
from torch.nn.utils import prune

from skd.book import features_of
from skd.teachers import prunable_layers

__all__ = ["StudentPruning"]


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
        # torch-pruning traces the module's graph on an example input; keep two rows of the first batch
        if self.structured and self.example_ is None and training:
            Xi, _ = unpack_data(batch)
            features = features_of(Xi)
            self.example_ = torch.as_tensor(features[:2]).to(next(net.module_.parameters()).device)

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
        # deferred: torch-pruning is needed only for structured pruning
        import torch_pruning as tp

        if self.example_ is None:
            return
        module = net.module_
        output_layer = prunable_layers(module)[-1]
        hidden = self._layers(net)
        if self.widths_ is None:
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
        # The pruned layers hold new, smaller parameters, while the optimizer (and
        # its state) still holds the old ones: build a fresh one from the net's
        # settings with skorch's public initialize_optimizer. The virtual params
        # (lr, optimizer__*) registered at initialize find it by attribute name.
        # Limits: it starts at net.lr, and an LRScheduler callback keeps the
        # optimizer it built on at on_train_begin; skorch has no public hook to
        # re-attach a scheduler mid-fit.
        net.initialize_optimizer()

    def on_train_end(self, net, **kwargs):
        if not self.structured:
            for layer in self._layers(net):
                if prune.is_pruned(layer) and hasattr(layer, "weight_orig"):
                    prune.remove(layer, "weight")
        self.example_ = None
        self.widths_ = None


def _width(layer):
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
