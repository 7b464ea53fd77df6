"""The epoch loop of one fit: which step runs, what history gets, when the guard checks.

:class:`Trainer` is made by ``DistillationClassifier`` at the start of each
fit and replaces skorch's ``run_single_epoch``. Per batch it notifies the
callbacks, runs the captured step (full batches of in-memory data on CUDA)
or the eager step (everything else), and adds the loss terms to the
on-device :class:`~skd.training.ledger.EpochLedger`; per epoch it reads the
ledger once and records the means in ``history``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from skorch.dataset import unpack_data
from skorch.utils import TeeGenerator

from skd._batching import DeviceBatches
from skd.training.graph import WARMUP_STEPS, CapturedStep, graph_blockers, prepare_capturable
from skd.training.guard import DEFAULT_CUDA_CHECK_EVERY, NonFiniteGuard
from skd.training.ledger import EpochLedger
from skd.training.monitor import unscaled_key, unscaled_loss
from skd.training.step import StepParts, batch_terms, stack_terms

__all__ = ["Trainer"]


def _batch_size(batch) -> int:
    X = batch[0] if isinstance(batch, (tuple, list)) else batch
    while isinstance(X, dict):
        X = next(iter(X.values()))
    return len(X)


class Trainer:
    """Runs the epochs of one fit.

    Parameters
    ----------
    parts : StepParts
    module : torch.nn.Module
        The student.
    optimizer : callable
        Returns the net's current optimizer (a callback may re-create it).
    history : callable
        Returns the net's ``History`` (``LoadInitState`` may replace it), where
        epoch means (and, if asked, per-batch values) are recorded.
    notify : callable
        The net's ``notify`` (callbacks' ``on_batch_*`` and ``on_grad_computed``).
    callbacks : sequence of (name, callback)
        The net's initialised callbacks (a per-batch one forces the eager step).
    set_training : callable
        ``training -> None``: puts the student in train or eval mode.
    on_nonfinite : {"raise", "skip"}
    check_every : "auto" or int
    record_batches : "auto" or bool
    step_mode : {"auto", "eager", "graph"}
    """

    def __init__(self, parts: StepParts, module: torch.nn.Module,
                 optimizer: Callable[[], torch.optim.Optimizer], history: Callable, notify: Callable,
                 callbacks: Sequence, set_training: Callable,
                 on_nonfinite: str, check_every, record_batches, step_mode: str):
        self.parts = parts
        self.module = module
        self.get_optimizer = optimizer
        self.get_history = history
        self.notify = notify
        self.callbacks = list(callbacks)
        self.set_training = set_training
        self.step_mode = step_mode
        on_cuda = torch.device(parts.device).type == "cuda"
        self.record_batches = (not on_cuda) if record_batches == "auto" else bool(record_batches)
        graph_wanted = step_mode == "graph" or (step_mode == "auto" and on_cuda)
        self.optimizer_blocker = prepare_capturable(optimizer(), on_cuda) if graph_wanted else None
        if check_every == "auto":
            check_every = DEFAULT_CUDA_CHECK_EVERY if (on_cuda or step_mode == "graph") else 1
        self.guard = NonFiniteGuard(on_nonfinite, int(check_every), module, optimizer, parts.device)
        self.ledgers = {
            True: EpochLedger("", "train_loss", parts.device, self.record_batches),
            False: EpochLedger("valid_", "valid_loss", parts.device, self.record_batches),
        }
        self.captured: CapturedStep | None = None
        self.blockers: list[str] | None = None
        self.full_steps = 0

    @property
    def history(self):
        return self.get_history()

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.get_optimizer()

    # ------------------------------------------------------------- choosing
    def _graph_for(self, iterator) -> CapturedStep | None:
        """The captured step for this iterator, or None (and the reasons) for eager."""
        if self.step_mode == "eager":
            self.blockers = ["step_mode='eager'"]
            return None
        data = iterator if isinstance(iterator, DeviceBatches) else None
        blockers = graph_blockers(self.parts, data, self.callbacks, self.optimizer_blocker)
        if self.guard.checks_on_host:
            blockers.append("nonfinite_check_every=1 checks every batch on the host")
        if self.step_mode == "graph":
            blockers = [b for b in blockers if b != "the device is not CUDA"]
        if blockers:
            if self.step_mode == "graph":
                raise ValueError(
                    "step_mode='graph' cannot capture this fit: " + "; ".join(blockers)
                    + ". Use step_mode='auto' to fall back to the eager step."
                )
            self.blockers = blockers
            return None
        self.blockers = []
        if self.captured is None or self.captured.take != data.take:
            self.captured = CapturedStep(self.parts, self.get_optimizer, self.module, self.guard,
                                         self.ledgers[True], data.take, data.batch_size)
        return self.captured

    # ---------------------------------------------------------------- epoch
    def run_epoch(self, iterator, training: bool, prefix: str, **fit_params) -> None:
        """One pass over ``iterator``: skorch's ``run_single_epoch``, without per-batch syncs."""
        if iterator is None:
            return
        ledger = self.ledgers[training]
        ledger.reset()
        epoch = len(self.history)
        captured = self._graph_for(iterator) if training else None
        if training:
            self.guard.reset_epoch()
            self.guard.take_snapshot()
        self.set_training(training)
        counts = {"graph": 0, "eager": 0}
        batches = self._batches(iterator, captured)
        for index, batch in batches:
            self.notify("on_batch_begin", batch=batch, training=training)
            if index is not None:
                captured.run(index)
                row, n = captured.last_row, captured.batch_size
                step = {"loss": row[0], "y_pred": captured.last_pred}
                counts["graph"] += 1
            else:
                step, row = (self.train_step(batch, epoch, **fit_params) if training
                             else self._validate(batch, **fit_params))
                n = _batch_size(batch)
                counts["eager"] += 1
            if training and n == getattr(captured, "batch_size", n):
                self.full_steps += 1
            ledger.count(n)
            self.history.record_batch(prefix + "_batch_size", n)
            if self.record_batches:
                for key, value in ledger.batch_record(row).items():
                    self.history.record_batch(key, value)
            self.notify("on_batch_end", batch=batch, training=training, **step)
            if training:
                self.guard.after_step(epoch, ledger.names or ())
        self.history.record(prefix + "_batch_count", counts["graph"] + counts["eager"])
        if training:
            self.guard.after_step(epoch, ledger.names or (), end_of_epoch=True)
        self._record_epoch(ledger, training, counts)

    def _batches(self, iterator, captured):
        """``(index, batch)`` pairs: an index for full batches the graph can take, else None."""
        if captured is None:
            for batch in iterator:
                yield None, batch
            return
        for index in iterator.indices():
            if isinstance(index, slice):
                index = torch.arange(index.start, index.stop, device=self.parts.device)
            if len(index) == captured.batch_size and self.full_steps >= WARMUP_STEPS:
                yield index, None  # callbacks see batch=None: the batch lives in the graph
            else:
                yield None, iterator.take(index)

    def _record_epoch(self, ledger: EpochLedger, training: bool, counts: dict) -> None:
        means = ledger.means()  # the epoch's one device-to-host copy
        if ledger.loss_name in means:
            means[unscaled_key(ledger.loss_name)] = unscaled_loss(means, ledger.names, ledger.prefix,
                                                                  self.parts.loss)
        for key, value in means.items():
            self.history.record(key, value)
        for key in (ledger.loss_name, unscaled_key(ledger.loss_name)):
            if key in means:
                earlier = [row[key] for row in self.history[:-1] if key in row]
                self.history.record(key + "_best", not earlier or means[key] < min(earlier))
        if not training:
            return
        if self.guard.mode == "skip":
            self.history.record("skipped_batches", int(self.guard.skipped))
        self.history.record("graph_steps", counts["graph"])
        self.history.record("eager_steps", counts["eager"])

    # ---------------------------------------------------------------- steps
    def train_step(self, batch, epoch: int, **fit_params):
        """The eager step, through a closure as skorch's (so LBFGS works).

        Returns skorch's step dict ``{"loss", "y_pred"}`` and the batch's
        ledger row (device tensor).
        """
        Xi, yi = unpack_data(batch)
        ledger, guard = self.ledgers[True], self.guard
        first: dict = {}

        def closure():
            self.optimizer.zero_grad()
            terms, y_pred = batch_terms(self.parts, Xi, yi, **fit_params)
            values, total = stack_terms(terms)
            if not first:  # the batch's first evaluation is the one recorded and guarded
                ledger.start(terms)
                first.update(values=values, total=total, y_pred=y_pred, finite=guard.observe(values))
                if guard.checks_on_host:
                    guard.check_now(values, epoch, ledger.names)
            total.backward()
            self.notify("on_grad_computed", named_parameters=TeeGenerator(self.module.named_parameters()),
                        batch=batch, training=True)
            return total

        guard.step(lambda: self.optimizer.step(closure), lambda: first["finite"])
        kept = first["finite"] if guard.mode == "skip" else None
        row = ledger.row(first["total"], first["values"], kept)
        ledger.add(row, _batch_size(batch))
        loss = first["total"].detach()
        loss = loss if kept is None else torch.where(kept, loss, 0.0)
        return {"loss": loss, "y_pred": first["y_pred"]}, row

    def _validate(self, batch, **fit_params):
        Xi, yi = unpack_data(batch)
        ledger = self.ledgers[False]
        with torch.no_grad():
            terms, y_pred = batch_terms(self.parts, Xi, yi, **fit_params)
            values, total = stack_terms(terms)
            ledger.start(terms)
            row = ledger.row(total, values, None)
            ledger.add(row, _batch_size(batch))
        return {"loss": total, "y_pred": y_pred}, row

    @property
    def path(self) -> str:
        """Which step ran: ``"graph"``, ``"eager"`` or ``"graph+eager"`` (ragged batches, warm-up)."""
        steps = [row.get("graph_steps", 0) for row in self.history], [
            row.get("eager_steps", 0) for row in self.history]
        graph, eager = sum(steps[0]), sum(steps[1])
        return "graph+eager" if graph and eager else ("graph" if graph else "eager")
