"""Non-finite losses and updates, handled without a host sync per batch.

The guard checks what it protects: a batch's loss terms before its update,
and the student's weights and the optimizer state after it (a finite loss
can still make them NaN, e.g. with ``lr=float("inf")``). The promises (also
in ``DistillationClassifier``'s docstring):

- ``on_nonfinite="raise"``: the fit stops with a ``RuntimeError`` naming the
  epoch, the first bad batch and the cause: its non-finite terms, or the
  update that made the weights non-finite (with the learning rate). With
  ``check_every=1`` (the default on the CPU) the loss is checked before the
  optimizer step, so the student keeps its weights from before a batch with
  a non-finite loss, and the weights after it: an update that made them
  non-finite restores the student, its buffers and the optimizer state
  from the snapshot taken at the epoch's start. With ``check_every=N`` (the
  default on CUDA: every epoch end and every N batches) that snapshot is
  taken on the device at each passing check and restored from the last
  one, at most N batches before the bad batch.
- ``on_nonfinite="skip"``: a batch with a non-finite term, or whose update
  leaves a non-finite weight or optimizer state, changes nothing: its update
  is undone on the device (no host check), it is left out of the epoch
  means and counted in ``history[:, "skipped_batches"]``. An epoch that ends
  with no step of the fit kept raises, naming the cause: the student would
  be returned untrained.
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
    """Watches every training batch's loss terms and update, on the device.

    The device work per batch: :meth:`observe`, one "all finite" reduction
    of the batch's loss (2 ops), then ``"skip"``: the count of non-finite
    losses (2 ops); ``"raise"``: the first bad batch's values, the flag and
    the count of good batches (3 ops). :meth:`step` then checks what the
    update left. ``"raise"``: the parameters, with one
    ``torch._foreach_norm`` (infinity norms), a ``stack`` and a 3-op
    reduction (plus one op folding it into the flag, or one host read with
    ``check_every=1``). ``"skip"``: the parameters and the optimizer state,
    from one flat copy of them taken before the step and one after it (an
    infinity norm and a 2-op check per dtype); the undo is one ``where``
    and one ``torch._foreach_copy_``, and the count of undone updates 2
    ops, whatever the number of tensors. Everything is counted on the
    device, since a replayed step runs no Python.

    Parameters
    ----------
    mode : {"raise", "skip"}
    check_every : int
        Batches between host checks in ``"raise"`` mode (1: every batch, the
        loss before its step and the weights after it).
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
        # "skip": batches of this epoch with a non-finite loss, and with a finite loss but a bad update
        self.bad_losses = torch.zeros((), dtype=torch.long, device=device)
        self.bad_updates = torch.zeros((), dtype=torch.long, device=device)
        self.bad_values: torch.Tensor | None = None
        self._snapshot: list[torch.Tensor] | None = None
        self._had_state: set = set()
        self._flat: _Flat | None = None
        self._since_check = 0
        self._host_batch = 0
        self._epoch_batches = 0  # host count of this epoch's training batches (after_step calls)
        self._kept_any = False  # host: whether an epoch of this fit kept a step ("skip")
        self._last_values: list[float] = []
        self._last_names: Sequence[str] = ()
        self._epoch = 0

    @property
    def checks_on_host(self) -> bool:
        """Whether every batch is checked on the host (``"raise"``, every 1): loss before, weights after."""
        return self.mode == "raise" and self.check_every == 1

    @property
    def skipped(self) -> torch.Tensor:
        """Batches skipped this epoch (a device count): a non-finite loss or update."""
        return self.bad_losses + self.bad_updates

    def check_now(self, values: torch.Tensor, epoch: int, names: Sequence[str]) -> None:
        """The per-batch host check: raise before the step if a term is not finite.

        One device-to-host copy of the batch's values and no device work: on
        the CPU this costs less than the device-side flag.
        """
        host = values.tolist()
        self._last_values, self._last_names, self._epoch = host, names, epoch
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
            self.bad_losses.add_(~finite)
            return finite
        if self.bad_values is None:
            self.bad_values = torch.zeros_like(values)
        # while every batch so far was finite, keep this one's values: the first bad batch's stay
        torch.where(self.ok, values, self.bad_values, out=self.bad_values)
        self.ok.logical_and_(finite)
        self.good_batches.add_(self.ok)
        return finite

    def step(self, step: Callable[[], object],
             finite: Callable[[], torch.Tensor | None]) -> torch.Tensor | None:
        """Run the optimizer ``step``, then check the weights and optimizer state it left.

        Returns whether the step was kept (a device flag) in ``"skip"`` mode, else None.

        ``"skip"``: the step is undone where ``finite()`` is False or where it
        left a non-finite weight or optimizer state. Optimizer state created
        by this very step (the first one) is reset to zeros, its initial
        value for Adam, AdamW, RMSprop and SGD's momentum, when the batch is
        skipped. ``"raise"``: non-finite parameters are a failure, checked
        on the host now (``check_every=1``: the epoch's start is restored and
        the error raised here) or folded into the device flag of the next
        check.
        ``finite`` is called after the step (a closure-driven optimizer
        computes the batch's terms inside its step).
        """
        optimizer = self.get_optimizer()
        if self.mode == "raise":
            step()
            with torch.no_grad():
                sound = _params_finite(self.module, self.ok.device)
            if self.checks_on_host:
                self._raise_if_update_bad(sound, optimizer)
            else:
                self.ok.logical_and_(sound)  # good_batches counted it: see _raise_if_bad
            return None
        tensors = [*self.module.parameters(), *_optimizer_tensors(optimizer)]
        if self._flat is None or not self._flat.fits(tensors):
            self._flat = _Flat(tensors)
        with torch.no_grad():
            self._flat.save(tensors)
        step()
        known = {id(t) for t in tensors}
        new = [t for t in _optimizer_tensors(optimizer) if id(t) not in known]
        with torch.no_grad():
            sound = self._flat.finite(tensors, new, self.ok.device)
            loss_finite = finite()
            kept = loss_finite.logical_and(sound)
            self.bad_updates.add_(loss_finite.logical_xor(kept))  # a finite loss, a bad update
            self._flat.restore_unless(kept, tensors)
            for tensor in new:  # created by this step: back to its initial zeros
                tensor.copy_(torch.where(kept, tensor, torch.zeros_like(tensor)))
        return kept

    def _raise_if_update_bad(self, sound: torch.Tensor, optimizer) -> None:
        """``check_every=1``: if the update left a non-finite weight, restore the epoch's start and raise."""
        if bool(sound):  # the host read of the per-batch check
            return
        bad = _nonfinite_names(self.module, optimizer)
        self._restore_snapshot(optimizer)
        raise RuntimeError(
            f"Non-finite weights at epoch {self._epoch}, batch {self._host_batch}: the update made "
            f"{bad} non-finite, though the loss was finite ({_terms(self._last_values, self._last_names)}). "
            "The student, its buffers and the optimizer state are restored to the start of this epoch, "
            "and history is kept. " + _update_advice(optimizer)
        )

    # -- host checks ----------------------------------------------------------
    def after_step(self, epoch: int, names: Sequence[str], end_of_epoch: bool = False) -> None:
        """After each training batch and at the epoch's end: the host checks that are due.

        ``"raise"`` with ``check_every=N``: every N batches and at the
        epoch's end, check the device flag, then snapshot. ``"skip"``: at the
        epoch's end, raise if no step of the fit has been kept.
        """
        if not end_of_epoch:
            self._epoch_batches += 1
        if self.mode == "skip":
            if end_of_epoch:
                self._raise_if_nothing_kept(epoch)
            return
        if self.check_every == 1:
            return
        self._since_check += 1
        if self._since_check < self.check_every and not end_of_epoch:
            return
        self._since_check = 0
        self._raise_if_bad(epoch, names)
        self.take_snapshot()

    def take_snapshot(self) -> None:
        """Copy the student's state and the optimizer's state on the device (``"raise"``: the restore point).

        With ``check_every=1`` it is taken at each epoch's start only: the
        loss is checked before each step, and an update that makes the
        weights non-finite (rare: a learning rate far too large) restores
        the epoch's start.
        """
        if self.mode != "raise":
            return
        tensors = self._state_tensors()
        self._had_state = set(self.get_optimizer().state)  # state created later is dropped on restore
        if (self._snapshot is None or len(self._snapshot) != len(tensors)
                or any(old.shape != new.shape for old, new in zip(self._snapshot, tensors, strict=True))):
            # a first snapshot, or the module changed shape (structured pruning): new buffers
            self._snapshot = [t.detach().clone() for t in tensors]
        else:
            torch._foreach_copy_(self._snapshot, [t.detach() for t in tensors])

    def _state_tensors(self) -> list[torch.Tensor]:
        return [*self.module.parameters(), *self.module.buffers(), *_optimizer_tensors(self.get_optimizer())]

    def _raise_if_bad(self, epoch: int, names: Sequence[str]) -> None:
        if bool(self.ok):  # the one host read of a check
            return
        values = self.bad_values.tolist()
        # observe counted the batch as good when its loss was finite: then its update was the bad part
        update = all(math.isfinite(value) for value in values)
        batch = int(self.good_batches) + (0 if update else 1)
        optimizer = self.get_optimizer()
        cause = (f"the update made {_nonfinite_names(self.module, optimizer)} non-finite, though the "
                 f"loss was finite ({_terms(values, names)})" if update
                 else _nonfinite_details(names, values))
        self._restore_snapshot(optimizer)
        kept = ("The student, its buffers and the optimizer state are restored to the "
                f"last check before that batch (at most {self.check_every} batches earlier)")
        kind = "weights" if update else "loss"
        raise RuntimeError(
            f"Non-finite {kind} at epoch {epoch}, batch {batch}: {cause}. {kept}, and history "
            "is kept. " + (_update_advice(None) if update else _ADVICE)
        )

    def _restore_snapshot(self, optimizer) -> None:
        for param in [p for p in optimizer.state if p not in self._had_state]:
            del optimizer.state[param]  # created after the snapshot (the fit's first steps)
        with torch.no_grad():
            for tensor, old in zip(self._state_tensors(), self._snapshot, strict=True):
                tensor.copy_(old)

    def _raise_if_nothing_kept(self, epoch: int) -> None:
        """``"skip"``: an epoch ended and no step of the fit was kept: raise, naming the cause."""
        batches, self._epoch_batches = self._epoch_batches, 0
        if self._kept_any or batches == 0:
            return
        bad_losses, bad_updates = int(self.bad_losses), int(self.bad_updates)
        if bad_losses + bad_updates < batches:
            self._kept_any = True
            return
        causes = []
        if bad_updates:
            causes.append(f"In {bad_updates} of them the loss was finite but the update made the weights or "
                          "the optimizer state non-finite. " + _update_advice(self.get_optimizer()))
        if bad_losses:
            causes.append(f"In {bad_losses} of them the loss was not finite: check X and the teacher's "
                          "logits for NaN or infinite values, or lower the learning rate.")
        raise RuntimeError(
            f"Every batch of epoch {epoch} was skipped ({batches} of {batches}), so no step of this fit "
            f"was kept and the student did not train (trainer__on_nonfinite='skip'). {' '.join(causes)}"
        )

    def reset_epoch(self) -> None:
        """Start an epoch: batch numbers and counts start again."""
        self.good_batches.zero_()
        self.bad_losses.zero_()
        self.bad_updates.zero_()
        self._since_check = 0
        self._host_batch = 0
        self._epoch_batches = 0


def _all_finite(values: torch.Tensor) -> torch.Tensor:
    """Whether every value is finite, in 3 ops (``isfinite(values).all()`` takes 5), 2 for a scalar.

    ``v - v`` is exactly 0 for a finite ``v`` and NaN for NaN and for +-inf.
    """
    same = (values - values) == 0
    return same if same.dim() == 0 else same.all()


def _finite_norms(norms: list[torch.Tensor], device) -> torch.Tensor:
    if not norms:
        return torch.ones((), dtype=torch.bool, device=device)
    return _all_finite(norms[0] if len(norms) == 1 else torch.stack(norms))


def _params_finite(module: torch.nn.Module, device) -> torch.Tensor:
    """Whether the student's floating parameters on ``device`` are finite: one ``torch._foreach_norm``.

    ``"raise"`` checks the parameters only: a non-finite optimizer state
    makes them non-finite at the next step, where the check sees it.
    """
    params = [p.detach() for p in module.parameters() if p.is_floating_point() and p.device == device]
    return _finite_norms(list(torch._foreach_norm(params, math.inf)) if params else [], device)


_ADVICE = ("Lower the learning rate, check X and the teacher's logits, or pass "
           "trainer__on_nonfinite='skip' to drop such batches.")


def _update_advice(optimizer: torch.optim.Optimizer | None) -> str:
    """What to do about an update that made the weights non-finite: it names the learning rate.

    ``None``: the check came batches after the update, when the rate may have changed: no value.
    """
    groups = optimizer.param_groups if optimizer is not None else ()
    lrs = sorted({float(group["lr"]) for group in groups if "lr" in group})
    lr = f" (lr={lrs[0]!r})" if len(lrs) == 1 else (f" (lr={lrs})" if lrs else "")
    return (f"The learning rate{lr} or another optimizer setting is too large for this student: lower "
            "lr (e.g. by 10x).")


def _nonfinite_details(names: Sequence[str], values: Sequence[float]) -> str:
    """``"name=value, ..."`` for the terms that are not finite."""
    return ", ".join(f"{n}={v}" for n, v in zip(names, values, strict=True) if not math.isfinite(v))


def _terms(values: Sequence[float], names: Sequence[str] | None = None) -> str:
    names = names or [f"term {i}" for i in range(len(values))]
    return ", ".join(f"{n}={v:.4g}" for n, v in zip(names, values, strict=False))


def _nonfinite_names(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> str:
    """The weights (and optimizer state) that are not finite, by name (a host read: errors only)."""
    names = {id(p): name for name, p in module.named_parameters()}
    bad = [name for name, p in module.named_parameters() if not bool(torch.isfinite(p).all())]
    bad += [f"the optimizer's {key} of {names.get(id(p), 'a parameter')}"
            for p, state in optimizer.state.items() for key, value in state.items()
            if isinstance(value, torch.Tensor) and value.is_floating_point()
            and not bool(torch.isfinite(value).all())]
    if not bad:
        return "the weights"
    return ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")


class _Flat:
    """Flat copies of many tensors: checked and restored with a few ops instead of a few per tensor.

    Tensors are grouped by device and dtype; per group, :meth:`save` is one
    ``cat`` into a saved buffer, :meth:`finite` an infinity norm (after one
    ``cat`` of the current values when it gathers them), and
    :meth:`restore_unless` one ``where`` and one ``torch._foreach_copy_``
    back (from the current values that :meth:`finite` gathered).
    """

    def __init__(self, tensors: Sequence[torch.Tensor]):
        self.ids = [id(t) for t in tensors]
        self.groups: dict[tuple, list[int]] = {}
        for position, tensor in enumerate(tensors):
            self.groups.setdefault((tensor.device, tensor.dtype), []).append(position)
        self.sizes = {key: sum(tensors[i].numel() for i in positions)
                      for key, positions in self.groups.items()}
        self.saved: dict[tuple, torch.Tensor] = {}
        self.current = {key: torch.empty(size, device=key[0], dtype=key[1])
                        for key, size in self.sizes.items()}

    def fits(self, tensors: Sequence[torch.Tensor]) -> bool:
        return len(tensors) == len(self.ids) and all(
            id(t) == i for t, i in zip(tensors, self.ids, strict=True))

    def save(self, tensors: Sequence[torch.Tensor]) -> None:
        for key, positions in self.groups.items():
            if key not in self.saved:
                self.saved[key] = torch.empty(self.sizes[key], device=key[0], dtype=key[1])
            torch.cat([tensors[i].detach().reshape(-1) for i in positions], out=self.saved[key])

    def finite(self, tensors: Sequence[torch.Tensor], new: Sequence[torch.Tensor], device) -> torch.Tensor:
        """Gather the current values; whether every floating tensor on ``device`` is finite (a device flag).

        Per group one infinity norm of the gathered values (it reads each
        value once and writes nothing; NaN propagates through it). Groups on
        another device (Adam's step counts on the CPU when not capturable)
        are gathered for :meth:`restore_unless` but not checked: they hold
        counts, and reading them would copy across devices.
        """
        norms = []
        for key, positions in self.groups.items():
            torch.cat([tensors[i].detach().reshape(-1) for i in positions], out=self.current[key])
            if key[0] == device and key[1].is_floating_point:
                norms.append(torch.linalg.vector_norm(self.current[key], math.inf))
        norms += [torch.linalg.vector_norm(t.detach(), math.inf) for t in new
                  if t.is_floating_point() and t.device == device]
        return _finite_norms(norms, device)

    def restore_unless(self, kept: torch.Tensor, tensors: Sequence[torch.Tensor]) -> None:
        """Where not ``kept``, copy the saved values back (after :meth:`finite` gathered the current ones)."""
        for key, positions in self.groups.items():
            group = [tensors[i] for i in positions]
            # state kept on another device (Adam's step counts on the CPU when not capturable)
            flag = kept if kept.device == key[0] else kept.to(key[0])
            torch.where(flag, self.current[key], self.saved[key], out=self.saved[key])
            chunks = self.saved[key].split([t.numel() for t in group])
            torch._foreach_copy_([t.detach() for t in group],
                                 [chunk.view(t.shape) for chunk, t in zip(chunks, group, strict=True)])
