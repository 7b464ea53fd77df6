"""Non-finite loss handling without a host sync per batch.

The promises (also in ``DistillationClassifier``'s docstring):

- ``on_nonfinite="raise"``: the fit stops with a ``RuntimeError`` naming the
  epoch, the first bad batch and its non-finite terms, and the student is left
  at good weights. With ``check_every=1`` (the default on the CPU) the check
  runs before the optimizer step, so the student keeps its weights from
  before the bad batch. With ``check_every=N`` (the default on CUDA: every
  epoch end and every N batches) the weights, buffers and optimizer state are
  snapshotted on the device at each passing check and restored from the last
  one, at most N batches before the bad batch.
- ``on_nonfinite="skip"``: a batch with a non-finite term changes nothing: its
  update is undone on the device (no host check), its terms count as 0 in the
  epoch means, and it is counted in ``history[:, "skipped_batches"]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

__all__ = ["NonFiniteGuard", "DEFAULT_CUDA_CHECK_EVERY"]

#: Batches between two host checks of the non-finite flag on CUDA.
DEFAULT_CUDA_CHECK_EVERY = 64


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [value for state in optimizer.state.values() for value in state.values()
            if isinstance(value, torch.Tensor)]


class NonFiniteGuard:
    """Watches the loss terms of every training batch, on the device.

    The device work per batch is a few ops: one "all finite" reduction of
    the batch's term values (3 ops), then ``"skip"``: the count of skipped
    batches (2 ops); ``"raise"``: the first bad batch's values, the flag and
    the count of good batches (3 ops). Everything is counted on the device,
    since a replayed step runs no Python. In
    ``"skip"`` mode the undo costs four ops whatever the number of tensors:
    one flat copy of the parameters and optimizer state before the step, and
    after it one flat copy, one ``where`` and one ``torch._foreach_copy_``.

    Parameters
    ----------
    mode : {"raise", "skip"}
    check_every : int
        Batches between host checks in ``"raise"`` mode (1: before each step).
    module : torch.nn.Module
        The student (its parameters and buffers are snapshotted).
    optimizer : callable
        Returns the current optimizer.
    device : torch.device
    """

    def __init__(self, mode: str, check_every: int, module: torch.nn.Module,
                 optimizer: Callable[[], torch.optim.Optimizer], device):
        self.mode = mode
        self.check_every = check_every
        self.module = module
        self.get_optimizer = optimizer
        self.ok = torch.ones((), dtype=torch.bool, device=device)
        # batches before the first bad one, this epoch: its index, once ok is False
        self.good_batches = torch.zeros((), dtype=torch.long, device=device)
        self.skipped = torch.zeros((), dtype=torch.long, device=device)
        self.bad_values: torch.Tensor | None = None
        self._snapshot: list[torch.Tensor] | None = None
        self._undo: _FlatUndo | None = None
        self._since_check = 0
        self._host_batch = 0

    @property
    def checks_on_host(self) -> bool:
        """Whether every batch is checked on the host before its step (``"raise"``, every 1)."""
        return self.mode == "raise" and self.check_every == 1

    def check_now(self, values: torch.Tensor, epoch: int, names: Sequence[str]) -> None:
        """The per-batch host check: raise before the step if a term is not finite.

        One device-to-host copy of the batch's values and no device work: on
        the CPU this costs less than the device-side flag.
        """
        host = values.tolist()
        if not all(math.isfinite(value) for value in host):
            details = _nonfinite_details(names, host)
            raise RuntimeError(
                f"Non-finite loss at epoch {epoch}, batch {self._host_batch}: {details}. The student "
                "keeps its weights from before this batch, and history is kept. " + _ADVICE
            )

    # -- device work (capturable: no host reads) -------------------------------
    def observe(self, values: torch.Tensor, total: torch.Tensor | None = None) -> torch.Tensor | None:
        """Record one batch's term values; return whether they are all finite.

        ``total``, the sum of the terms, is finite exactly when every term is
        (a NaN or an infinity, even two of opposite signs, makes the sum
        non-finite; a sum that overflows is a non-finite loss too): checking
        it costs 2 ops instead of 3.

        With :attr:`checks_on_host` the check happens in :meth:`check_now`
        instead, and this only counts the batch.
        """
        if self.checks_on_host:
            self._host_batch += 1
            return None
        finite = _all_finite(values if total is None else total.detach())
        if self.mode == "skip":  # counted on the device: a replayed step runs no Python
            self.skipped.add_(~finite)
            return finite
        if self.bad_values is None:
            self.bad_values = torch.zeros_like(values)
        # while every batch so far was finite, keep this one's values: the first bad batch's stay
        torch.where(self.ok, values, self.bad_values, out=self.bad_values)
        self.ok.logical_and_(finite)
        self.good_batches.add_(self.ok)
        return finite

    def step(self, step: Callable[[], object], finite: Callable[[], torch.Tensor]) -> torch.Tensor | None:
        """Run the optimizer ``step``; in ``"skip"`` mode undo it where not ``finite()``.

        Returns whether the step was kept (a device flag) in ``"skip"`` mode, else None.

        ``finite`` is called after the step (a closure-driven optimizer
        computes the batch's terms inside its step). Optimizer state created
        by this very step (the first one) is reset to zeros, its initial value
        for Adam, AdamW, RMSprop and SGD's momentum, when the batch is skipped.
        """
        if self.mode != "skip":
            step()
            return None
        tensors = [*self.module.parameters(), *_optimizer_tensors(self.get_optimizer())]
        if self._undo is None or not self._undo.fits(tensors):
            self._undo = _FlatUndo(tensors)
        with torch.no_grad():
            self._undo.save(tensors)
        step()
        kept = finite()
        with torch.no_grad():
            self._undo.restore_unless(kept, tensors)
            known = {id(t) for t in tensors}
            for tensor in _optimizer_tensors(self.get_optimizer()):
                if id(tensor) not in known:  # created by this step: back to its initial zeros
                    tensor.copy_(torch.where(kept, tensor, torch.zeros_like(tensor)))
        return kept

    # -- host checks ----------------------------------------------------------
    def after_step(self, epoch: int, names: Sequence[str], end_of_epoch: bool = False) -> None:
        """Every ``check_every`` batches and at the epoch's end: check, then snapshot."""
        if self.mode != "raise" or self.check_every == 1:
            return
        self._since_check += 1
        if self._since_check < self.check_every and not end_of_epoch:
            return
        self._since_check = 0
        self._raise_if_bad(epoch, names)
        self.take_snapshot()

    def take_snapshot(self) -> None:
        """Copy the student's state and the optimizer's state on the device."""
        if self.mode != "raise" or self.check_every == 1:
            return
        tensors = self._state_tensors()
        if self._snapshot is None or len(self._snapshot) != len(tensors):
            self._snapshot = [t.detach().clone() for t in tensors]
        else:
            torch._foreach_copy_(self._snapshot, [t.detach() for t in tensors])

    def _state_tensors(self) -> list[torch.Tensor]:
        return [*self.module.parameters(), *self.module.buffers(), *_optimizer_tensors(self.get_optimizer())]

    def _raise_if_bad(self, epoch: int, names: Sequence[str]) -> None:
        if bool(self.ok):  # the one host read of a check
            return
        batch = int(self.good_batches) + 1
        values = self.bad_values.tolist()
        details = _nonfinite_details(names, values)
        with torch.no_grad():
            for tensor, old in zip(self._state_tensors(), self._snapshot, strict=True):
                tensor.copy_(old)
        kept = ("The student, its buffers and the optimizer state are restored to the "
                f"last check before that batch (at most {self.check_every} batches earlier)")
        raise RuntimeError(
            f"Non-finite loss at epoch {epoch}, batch {batch}: {details}. {kept}, and history "
            "is kept. " + _ADVICE
        )

    def reset_epoch(self) -> None:
        """Start an epoch: batch numbers count from 1 again."""
        self.good_batches.zero_()
        self.skipped.zero_()
        self._since_check = 0
        self._host_batch = 0


def _all_finite(values: torch.Tensor) -> torch.Tensor:
    """Whether every value is finite, in 3 ops (``isfinite(values).all()`` takes 5), 2 for a scalar.

    ``v - v`` is exactly 0 for a finite ``v`` and NaN for NaN and for +-inf.
    """
    same = (values - values) == 0
    return same if same.dim() == 0 else same.all()


_ADVICE = ("Lower the learning rate, check X and the teacher's logits, or pass "
           "on_nonfinite='skip' to drop such batches.")


def _nonfinite_details(names: Sequence[str], values: Sequence[float]) -> str:
    """``"name=value, ..."`` for the terms that are not finite."""
    return ", ".join(f"{n}={v}" for n, v in zip(names, values, strict=True) if not math.isfinite(v))


class _FlatUndo:
    """A flat copy of many tensors, restored with a few ops instead of a few per tensor.

    Tensors are grouped by device and dtype; per group, :meth:`save` is one
    ``cat`` into a saved buffer, and :meth:`restore_unless` one ``cat`` of the
    current values, one ``where`` and one ``torch._foreach_copy_`` back.
    """

    def __init__(self, tensors: Sequence[torch.Tensor]):
        self.ids = [id(t) for t in tensors]
        self.groups: dict[tuple, list[int]] = {}
        for position, tensor in enumerate(tensors):
            self.groups.setdefault((tensor.device, tensor.dtype), []).append(position)
        self.saved = {}
        self.current = {}
        for key, positions in self.groups.items():
            size = sum(tensors[i].numel() for i in positions)
            self.saved[key] = torch.empty(size, device=key[0], dtype=key[1])
            self.current[key] = torch.empty(size, device=key[0], dtype=key[1])

    def fits(self, tensors: Sequence[torch.Tensor]) -> bool:
        return len(tensors) == len(self.ids) and all(
            id(t) == i for t, i in zip(tensors, self.ids, strict=True))

    def save(self, tensors: Sequence[torch.Tensor]) -> None:
        for key, positions in self.groups.items():
            torch.cat([tensors[i].detach().reshape(-1) for i in positions], out=self.saved[key])

    def restore_unless(self, kept: torch.Tensor, tensors: Sequence[torch.Tensor]) -> None:
        for key, positions in self.groups.items():
            group = [tensors[i] for i in positions]
            torch.cat([t.detach().reshape(-1) for t in group], out=self.current[key])
            # state kept on another device (Adam's step counts on the CPU when not capturable)
            flag = kept if kept.device == key[0] else kept.to(key[0])
            torch.where(flag, self.current[key], self.saved[key], out=self.saved[key])
            chunks = self.saved[key].split([t.numel() for t in group])
            torch._foreach_copy_([t.detach() for t in group],
                                 [chunk.view(t.shape) for chunk, t in zip(chunks, group, strict=True)])
