"""The training step captured in a CUDA graph and replayed by index.

For in-memory data on CUDA the whole step (gather of the batch by index, the
student's forward, every loss term, the non-finite guard, backward, the
optimizer step and the epoch sums) is recorded once with
:class:`torch.cuda.CUDAGraph` and replayed for every full batch: one small
host-to-device index copy and one graph launch per step, where the eager
step launches every kernel from Python.

Why a raw CUDA graph, not ``torch.compile(mode="reduce-overhead")`` or
``make_graphed_callables``: a capture costs milliseconds, where a compile
costs seconds to minutes per fit, paid again by every GridSearchCV candidate
(each clone is a new module); ``make_graphed_callables`` graphs the forward
and backward but leaves the optimizer step, the loss terms and the guard to
eager Python. The graph is re-captured when something it baked in changes:
the loss's scalar state (warm-up scale, scheduled temperature), the
optimizer's hyper-parameters (an epoch-wise learning-rate schedule) or the
student's parameters (pruning) -- a few milliseconds per change.

On the CPU there are no graphs: the same static-buffer step runs eagerly
(``step_mode="graph"`` there exists to test it against the eager step).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from skorch.callbacks import Callback, EpochScoring, PassthroughScoring

from skd.book import is_book
from skd.training.guard import NonFiniteGuard
from skd.training.ledger import EpochLedger
from skd.training.step import StepParts, batch_terms, stack_terms

__all__ = ["CapturedStep", "prepare_capturable", "graph_blockers", "WARMUP_STEPS"]

#: Eager steps before the first capture (lazy optimizer state, cuBLAS workspaces).
WARMUP_STEPS = 3


def prepare_capturable(optimizer: torch.optim.Optimizer, on_cuda: bool) -> str | None:
    """Switch ``capturable=True`` on (on CUDA) where the optimizer has it.

    Returns None if the optimizer's step can be captured, else the reason.
    Must run before the first step, so that state (Adam's step counts) is
    created on the device.
    """
    if "capturable" in optimizer.defaults:
        for group in optimizer.param_groups:
            group["capturable"] = on_cuda
        return None
    if isinstance(optimizer, torch.optim.SGD):
        return None  # no step counter; momentum buffers exist after the warm-up
    return f"the optimizer {type(optimizer).__name__} has no capturable mode"


def _scalars(obj) -> tuple:
    return tuple(sorted((key, value) for key, value in vars(obj).items()
                        if key.endswith("_") and isinstance(value, (bool, int, float, str))))


class CapturedStep:
    """One training step over static buffers, captured on CUDA, plain on the CPU.

    Parameters
    ----------
    parts : StepParts
    optimizer : callable
        Returns the current optimizer.
    module : torch.nn.Module
        The student (its parameters key the capture).
    guard : NonFiniteGuard
    ledger : EpochLedger
    take : callable
        ``index -> (X_batch, y_batch)``: gathers a batch from the device-resident data.
    batch_size : int
        The size of every captured batch (a ragged last batch runs eagerly).
    """

    def __init__(self, parts: StepParts, optimizer: Callable[[], torch.optim.Optimizer],
                 module: torch.nn.Module, guard: NonFiniteGuard, ledger: EpochLedger,
                 take: Callable[[torch.Tensor], tuple], batch_size: int, state=None):
        self.parts = parts
        self.get_optimizer = optimizer
        self.module = module
        self.guard = guard
        self.ledger = ledger
        self.take = take
        self.batch_size = batch_size
        self.state = state
        self.fit_params: dict = {}
        self.on_cuda = torch.device(parts.device).type == "cuda"
        self.index = torch.zeros(batch_size, dtype=torch.long, device=parts.device)
        self.graph = None
        self.pool = None
        self.signature = None
        self.n_captures = 0
        self.last_row: torch.Tensor | None = None
        self.last_pred: torch.Tensor | None = None

    def body(self) -> None:
        """The step on the static index: no host reads, so it can be captured."""
        Xi, y = self.take(self.index)
        terms, y_pred = batch_terms(self.parts, Xi, y, self.state, **self.fit_params)
        self.last_pred = y_pred.detach()
        values, total = stack_terms(terms)
        self.ledger.start(terms)
        finite = self.guard.observe(values)
        total.backward()
        self.guard.step(self.get_optimizer().step, lambda: finite)
        kept = finite if self.guard.mode == "skip" else None
        self.last_row = self.ledger.row(total, values, kept)
        self.ledger.add(self.last_row, self.batch_size)

    def _signature(self) -> tuple:
        groups = tuple(tuple(sorted((k, v) for k, v in group.items()
                                    if isinstance(v, (bool, int, float, str))))
                       for group in self.get_optimizer().param_groups)
        params = tuple((id(p), tuple(p.shape)) for p in self.module.parameters())
        return groups, params, self.module.training

    def run(self, index: torch.Tensor, **fit_params) -> None:
        """One step on the batch at ``index`` (a device tensor of ``batch_size`` indices)."""
        self.fit_params = fit_params
        self.index.copy_(index, non_blocking=True)
        if not self.on_cuda:
            self.get_optimizer().zero_grad()
            self.body()
            return
        signature = self._signature()
        if self.graph is None or signature != self.signature:
            self._capture()
            self.signature = signature
        self.graph.replay()

    def _capture(self) -> None:
        self.graph = None  # free the old graph before recording a new one
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        self.get_optimizer().zero_grad(set_to_none=True)  # backward allocates static grads in the pool
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self.body()
        self.graph = graph
        self.n_captures += 1


def graph_blockers(parts: StepParts, data, callbacks, optimizer_reason: str | None) -> list[str]:
    """Why the captured step cannot run for this fit (empty: it can)."""
    reasons = []
    if torch.device(parts.device).type != "cuda":
        reasons.append("the device is not CUDA")
    if data is None:
        reasons.append("the data is not in-memory device batches (a Dataset or a custom iterator)")
    elif parts.loss.requires_teacher and not is_book(data.X):
        reasons.append("the teacher runs online (no book)")
    if data is not None and data.sparse:
        reasons.append("X is sparse (its rows are selected and densified per batch)")
    if parts.augment is not None:
        reasons.append("augment runs the teacher online on every batch")
    if optimizer_reason:
        reasons.append(optimizer_reason)
    for name, callback in callbacks:
        hooks = [hook for hook in ("on_batch_begin", "on_batch_end", "on_grad_computed")
                 if _overrides(callback, hook)]
        if hooks:
            reasons.append(f"the callback {name!r} acts on every batch ({', '.join(hooks)})")
    return reasons


def _overrides(callback, hook: str) -> bool:
    if isinstance(callback, (EpochScoring, PassthroughScoring)) and not callback.on_train:
        return False  # their batch hooks act on validation batches only
    own = getattr(type(callback), hook, None)
    return own is not None and own is not getattr(Callback, hook)
