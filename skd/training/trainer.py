"""The trainer: a routed component of ``DistillationClassifier`` that runs the epochs of a fit.

Like skorch's optimizer, it is given as a class with options routed by
prefix: ``trainer=Trainer, trainer__step_mode="eager", trainer__precision="bf16"``.
At the start of a fit the classifier calls :meth:`Trainer.start` with a
narrow view of itself (:class:`TrainableNet`) and the step's parts; then,
for each epoch, skorch's ``fit_loop`` reaches :meth:`Trainer.run_epoch`
through the classifier's ``run_single_epoch``.

Per batch the trainer notifies the callbacks, runs the captured step (full
batches of in-memory data on CUDA) or the eager step, and adds the loss
terms to the on-device :class:`~skd.training.ledger.EpochLedger`; per epoch
it reads the ledger once and records the means in ``history``. The
:class:`~skd.state.EpochState` that every step reads is the loss's
(:meth:`~skd.losses.DistillationLoss.fit_state`): the loss is one of the
fit's callbacks and loads each epoch's values in its own ``on_epoch_begin``.

Every step runs :func:`~skd.training.step.batch_loss`, the one function that
computes a batch's terms and their sum: the eager step (then the backward,
``on_grad_computed`` and the optimizer's step, through a closure as
skorch's), validation (the same call under ``no_grad``) and the captured
step. A subclass of the classifier that overrides ``get_loss``,
``train_step_single`` or ``validation_step`` is honoured: the eager step
then goes through skorch's method (``infer``, ``get_loss``, backward), the
terms are recorded from its predictions, and the captured step is refused
with a reason naming the method (on CUDA the fit warns once and runs eagerly).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from dataclasses import replace
from numbers import Integral
from typing import Any, Protocol

import torch
from skorch.dataset import unpack_data
from skorch.utils import TeeGenerator, to_tensor

from skd._constraints import Interval, Options, validate_params
from skd.callbacks.monitor import unscaled_key, unscaled_loss
from skd.callbacks.schedules import Schedules
from skd.losses.compiled import should_compile
from skd.training.batching import DeviceBatches
from skd.training.fallback import body_clipper, fallback_warning, graph_blockers
from skd.training.graph import CapturedStep, prepare_capturable
from skd.training.guard import DEFAULT_CUDA_CHECK_EVERY, NonFiniteGuard
from skd.training.ledger import EpochLedger
from skd.training.step import (
    BatchLoss,
    StepParts,
    batch_loss,
    check_two_passes,
    net_step_blocker,
    sum_terms,
    term_values,
    terms_for,
)

__all__ = ["TrainableNet", "Trainer"]


class TrainableNet(Protocol):
    """What the trainer uses of the net: skorch's public attributes and steps, nothing else."""

    module_: torch.nn.Module
    optimizer_: torch.optim.Optimizer
    history: Any
    callbacks_: Sequence
    loss_: Any

    def notify(self, method_name: str, **cb_kwargs) -> None: ...

    def train_step_single(self, batch, **fit_params) -> dict: ...

    def validation_step(self, batch, **fit_params) -> dict: ...


def _batch_size(batch) -> int:
    X = batch[0] if isinstance(batch, (tuple, list)) else batch
    while isinstance(X, dict):
        X = next(iter(X.values()))
    return len(X)


class Trainer:
    """Runs the epochs of a fit: the step (eager or captured), the guard, the records.

    Parameters
    ----------
    step_mode : {"auto", "eager", "graph"}, default="auto"
        ``"auto"`` captures the whole training step in a CUDA graph and
        replays it for full batches of in-memory data on CUDA when nothing
        needs Python on every batch, else runs the eager step (with a
        warning naming why, once per fit); ``"graph"`` insists (an error
        names what prevents it). ``train_step_path_`` and ``eager_reasons_``
        on the classifier say what ran and why; see "GPU and scale".
    precision : {"32", "bf16"}, default="32"
        ``"bf16"`` runs the student's forward under bfloat16 autocast (for
        CNN students on GPUs); the loss terms are always computed in float32.
    on_nonfinite : {"raise", "skip"}, default="raise"
        A NaN or infinite loss term: ``"raise"`` stops with a ``RuntimeError``
        naming the epoch, the first bad batch and the term, leaving the
        student at good weights and ``history`` kept; ``"skip"`` undoes the
        bad batch's update on the device and counts it in ``"skipped_batches"``.
    check_every : "auto" or int, default="auto"
        Batches between host checks in ``"raise"`` mode (and at each epoch's
        end); ``"auto"``: 1 on the CPU, 64 on CUDA and in the captured step.
    record_batches : "auto" or bool, default="auto"
        Also record the loss and every term per batch in
        ``history[..., "batches"]`` (one device-to-host copy per batch);
        ``"auto"``: on the CPU yes, on CUDA no. Epoch means are always recorded.
    batching : {"auto", "loader"}, default="auto"
        ``"auto"`` batches in-memory data by slicing tensors kept on the
        device (the DataLoader's batches, without per-sample collation) when
        the iterators are skorch's default; ``"loader"`` always uses skorch's
        ``DataLoader``.
    compile_loss : bool, default=False
        Run the loss's forward and backward in training steps as a
        ``torch.compile`` d graph: a few fused kernels instead of one per op
        (:mod:`skd.losses.compiled`). It costs one compilation per loss class
        and process, 10-25 s on a 2-core CPU, and saves launches: worth it
        for long fits on a GPU with a loss of many ops (DIST, R2KD). A loss
        that cannot be compiled runs eagerly, with a warning.
    """

    _parameter_constraints = {
        "step_mode": [Options(("auto", "eager", "graph"))],
        "precision": [Options(("32", "bf16"))],
        "on_nonfinite": [Options(("raise", "skip"))],
        "check_every": [Options(("auto",)), Interval(Integral, 1, None)],
        "record_batches": [Options(("auto", True, False))],
        "batching": [Options(("auto", "loader"))],
        "compile_loss": [Options((True, False))],
    }

    def __init__(self, step_mode: str = "auto", precision: str = "32", on_nonfinite: str = "raise",
                 check_every: str | int = "auto", record_batches: str | bool = "auto",
                 batching: str = "auto", compile_loss: bool = False):
        self.step_mode = step_mode
        self.precision = precision
        self.on_nonfinite = on_nonfinite
        self.check_every = check_every
        self.record_batches = record_batches
        self.batching = batching
        self.compile_loss = compile_loss

    def get_params(self, deep: bool = True) -> dict:
        """The options, as scikit-learn's ``get_params``."""
        return {name: getattr(self, name) for name in self._parameter_constraints}

    def validate(self) -> Trainer:
        """Raise a clear error naming ``trainer__<option>`` for a bad value."""
        validate_params(self._parameter_constraints, self.get_params(), "trainer__", "Trainer")
        return self

    # ------------------------------------------------------------ the fit
    def start(self, net: TrainableNet, parts: StepParts, schedules: Schedules) -> Trainer:
        """Prepare a fit: the guard, the ledgers, the epoch state, the capturable optimizer."""
        check_two_passes(parts, net.module_)
        blocker = net_step_blocker(parts)
        if blocker:
            raise ValueError(blocker)
        device = torch.device(parts.device)
        on_cuda = device.type == "cuda"
        self.net = net
        self.parts = replace(parts, compiled=should_compile(parts.loss, self.compile_loss))
        self.record_batches_ = (not on_cuda) if self.record_batches == "auto" else bool(self.record_batches)
        graph_wanted = self.step_mode == "graph" or (self.step_mode == "auto" and on_cuda)
        self.optimizer_blocker = prepare_capturable(net.optimizer_, on_cuda) if graph_wanted else None
        check_every = self.check_every
        if check_every == "auto":
            check_every = DEFAULT_CUDA_CHECK_EVERY if (on_cuda or self.step_mode == "graph") else 1
        trained = parts.trained if parts.trained is not None else net.module_
        self.guard = NonFiniteGuard(self.on_nonfinite, int(check_every), trained,
                                    lambda: self.net.optimizer_, device)
        self.ledgers = {
            True: EpochLedger("", "train_loss", device, self.record_batches_),
            False: EpochLedger("valid_", "valid_loss", device, self.record_batches_),
        }
        # the loss owns the fit's state and loads each epoch's values in its on_epoch_begin (a callback)
        self.state = parts.loss.fit_state(len(net.history) + 1, schedules, device, parts.labelled_only)
        self.captured: CapturedStep | None = None
        self.n_captures = 0
        self.blockers: list[str] | None = None
        self.warned = False
        self._in_epoch = False
        return self

    def finish(self) -> None:
        """Release what the fit held on the device (graphs, snapshots, data) and the hints' hooks."""
        if self.parts.hints is not None:
            self.parts.hints.close()
        self.captured = None
        self.guard = None
        self.net = None

    def autocast(self):
        """The context of the student's forward: bf16 autocast inside an epoch, if asked."""
        if self.precision == "bf16" and self._in_epoch:
            return torch.autocast(device_type=torch.device(self.parts.device).type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def loss_of(self, y_pred: torch.Tensor, y: torch.Tensor, X) -> torch.Tensor:
        """The sum of a batch's loss terms at this epoch's state (the classifier's ``get_loss``)."""
        return sum_terms(terms_for(self.parts, y_pred, to_tensor(y, device=self.parts.device).long(), X,
                                   self.state))

    # ------------------------------------------------------------- choosing
    def _graph_for(self, iterator) -> CapturedStep | None:
        """The captured step for this iterator, or None (and the reasons) for eager."""
        if self.step_mode == "eager":
            self.blockers = ["trainer__step_mode='eager'"]
            return None
        data = iterator if isinstance(iterator, DeviceBatches) else None
        blockers = graph_blockers(self.parts, data, self.net.callbacks_, self.optimizer_blocker,
                                  optimizer=self.net.optimizer_)
        if self.guard.checks_on_host:
            blockers.append("trainer__check_every=1 checks every batch on the host")
        if self.step_mode == "graph":
            blockers = [b for b in blockers if b != "the device is not CUDA"]
        if blockers:
            if self.step_mode == "graph":
                raise ValueError(
                    "trainer__step_mode='graph' cannot capture this fit: " + "; ".join(blockers)
                    + ". Use trainer__step_mode='auto' to fall back to the eager step."
                )
            self.blockers = blockers
            self._warn_fallback(blockers)
            return None
        self.blockers = []
        if self.captured is None or self.captured.take != data.take:
            if self.captured is not None:
                self.n_captures += self.captured.n_captures
            self.captured = CapturedStep(self.parts, lambda: self.net.optimizer_, self.net.module_,
                                         self.guard, self.ledgers[True], data.take, data.batch_size,
                                         state=self.state, clip=body_clipper(self.net.callbacks_))
        return self.captured

    def _warn_fallback(self, blockers: list[str]) -> None:
        """Warn once per fit when a graph was wanted (CUDA, ``step_mode="auto"``) but the eager step runs."""
        if self.warned or torch.device(self.parts.device).type != "cuda" or self.step_mode != "auto":
            return
        self.warned = True
        warnings.warn(fallback_warning(blockers), RuntimeWarning, stacklevel=2)

    @property
    def captures(self) -> int:
        """CUDA graphs recorded in this fit (on the CPU, the simulated path's count)."""
        return self.n_captures + (self.captured.n_captures if self.captured is not None else 0)

    # ---------------------------------------------------------------- epoch
    def run_epoch(self, iterator, training: bool, prefix: str, **fit_params) -> None:
        """One pass over ``iterator``: skorch's ``run_single_epoch``, without per-batch syncs."""
        if iterator is None:
            return
        net = self.net
        history = net.history
        ledger = self.ledgers[training]
        ledger.reset()
        epoch = len(history)
        captured = self._graph_for(iterator) if training else None
        if training:
            self.guard.reset_epoch()
            self.guard.take_snapshot()
        counts = {"graph": 0, "eager": 0}
        if self.parts.set_training is not None:  # once per epoch, not per batch as skorch's steps
            self.parts.set_training(training)
        self._in_epoch = True
        try:
            for graph_step, batch in self._batches(iterator, captured):
                net.notify("on_batch_begin", batch=batch, training=training)
                if graph_step:
                    replayed = captured.run(**fit_params)  # False: an eager warm-up step
                    row, n = captured.last_row, captured.batch_size
                    step = {"loss": captured.last_loss, "y_pred": captured.last_pred}
                    counts["graph" if replayed else "eager"] += 1
                else:
                    step, row = (self._train_step(batch, epoch, **fit_params) if training
                                 else self._validation_step(batch, **fit_params))
                    n = _batch_size(batch)
                    counts["eager"] += 1
                ledger.count(n)
                history.record_batch(prefix + "_batch_size", n)
                if self.record_batches_:
                    for key, value in ledger.batch_record(row).items():
                        history.record_batch(key, value)
                net.notify("on_batch_end", batch=batch, training=training, **step)
                if training:
                    self.guard.after_step(epoch, ledger.names or ())
            if training:
                self.guard.after_step(epoch, ledger.names or (), end_of_epoch=True)
        except BaseException:
            if training:  # a history row is an epoch that finished: drop the unfinished one
                history.pop()
            raise
        finally:
            self._in_epoch = False
        history.record(prefix + "_batch_count", counts["graph"] + counts["eager"])
        self._record_epoch(ledger, training, counts)

    def _batches(self, iterator, captured):
        """``(graph_step, batch)`` pairs: True for the full batches the captured step takes in order."""
        if captured is None:
            for batch in iterator:
                yield False, batch
            return
        full, rest = iterator.epoch_batches()
        captured.load_epoch(full)  # one copy per epoch; each step advances a counter on the device
        for _ in range(len(full)):
            yield True, None  # callbacks see batch=None: the batch lives in the graph (or warms it up)
        if rest is not None:
            yield False, iterator.take(rest)

    def _record_epoch(self, ledger: EpochLedger, training: bool, counts: dict) -> None:
        history = self.net.history
        means = ledger.means()  # the epoch's one device-to-host copy
        if ledger.loss_name in means:
            means[unscaled_key(ledger.loss_name)] = unscaled_loss(means, ledger.names, ledger.prefix,
                                                                  self.state.values)
        for key, value in means.items():
            history.record(key, value)
        for key in (ledger.loss_name, unscaled_key(ledger.loss_name)):
            if key in means:
                earlier = [row[key] for row in history[:-1] if key in row]
                history.record(key + "_best", not earlier or means[key] < min(earlier))
        if not training:
            return
        if self.guard.mode == "skip":
            history.record("skipped_batches", int(self.guard.skipped))
        history.record("graph_steps", counts["graph"])
        history.record("eager_steps", counts["eager"])

    # ---------------------------------------------------------------- steps
    def _evaluate(self, batch, training: bool, **fit_params) -> BatchLoss:
        """The batch's :class:`~skd.training.step.BatchLoss`, with the backward when ``training``.

        Through :func:`batch_loss`; when the net overrides a step method
        (``parts.net_steps``), through skorch's ``train_step_single`` or
        ``validation_step`` instead, the terms then recorded from its
        predictions (``total`` is what its ``get_loss`` returned).
        """
        Xi, yi = unpack_data(batch)
        if not self.parts.net_steps:
            result = batch_loss(self.parts, Xi, yi, self.state, **fit_params)
            if training:
                result.total.backward()
            return result
        net = self.net
        step = (net.train_step_single(batch, **fit_params) if training
                else net.validation_step(batch, **fit_params))
        with torch.no_grad():
            y = to_tensor(yi, device=self.parts.device).long()
            terms = terms_for(self.parts, step["y_pred"].detach(), y, Xi, self.state)
        return BatchLoss(terms, term_values(terms), step["loss"], step["y_pred"])

    def _train_step(self, batch, epoch: int, **fit_params):
        """The eager step, through a closure as skorch's (so LBFGS works).

        Returns skorch's step dict ``{"loss", "y_pred"}`` and the batch's
        ledger row (device tensor).
        """
        net, ledger, guard = self.net, self.ledgers[True], self.guard
        first: dict = {}

        def closure():
            net.optimizer_.zero_grad()
            result = self._evaluate(batch, True, **fit_params)
            if not first:  # the batch's first evaluation is the one recorded and guarded
                ledger.start(result.terms)
                first.update(result=result, finite=guard.observe(result.values, result.total))
                if guard.checks_on_host:
                    guard.check_now(result.values, epoch, ledger.names)
            net.notify("on_grad_computed", named_parameters=TeeGenerator(net.module_.named_parameters()),
                       batch=batch, training=True)
            return result.total

        kept = guard.step(lambda: net.optimizer_.step(closure), lambda: first["finite"])
        result = first["result"]
        total = result.total.detach()
        row = ledger.row(total, result.values, kept)
        ledger.add(row, _batch_size(batch))
        loss = total if kept is None else torch.where(kept, total, 0.0)
        return {"loss": loss, "y_pred": result.y_pred}, row

    def _validation_step(self, batch, **fit_params):
        ledger = self.ledgers[False]
        with torch.no_grad():
            result = self._evaluate(batch, False, **fit_params)
        ledger.start(result.terms)
        row = ledger.row(result.total.detach(), result.values, None)
        ledger.add(row, _batch_size(batch))
        return {"loss": result.total, "y_pred": result.y_pred}, row

    @property
    def path(self) -> str:
        """Which step ran: ``"graph"``, ``"eager"`` or ``"graph+eager"`` (ragged batches, warm-up)."""
        history = self.net.history
        graph = sum(row.get("graph_steps", 0) for row in history)
        eager = sum(row.get("eager_steps", 0) for row in history)
        return "graph+eager" if graph and eager else ("graph" if graph else "eager")
