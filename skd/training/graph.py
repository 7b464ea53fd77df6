"""The training step captured in a CUDA graph and replayed from an epoch's batch table.

For in-memory data on CUDA the whole step (gather of the batch by index, the
student's forward, every loss term, the non-finite guard, backward, gradient
clipping, the optimizer step and the epoch sums) is recorded once with
:class:`torch.cuda.CUDAGraph` and replayed for every full batch: one graph
launch per step, where the eager step launches every kernel from Python.
The epoch's batches are an index table on the device, copied once per
epoch (:meth:`CapturedStep.load_epoch`); the step takes its row at a device
counter that it advances itself, so a replay needs no index from the host.
The step's body runs :func:`~skd.training.step.batch_loss`, the one
function of a batch's terms and their sum, as the eager step does.

Why a raw CUDA graph, not ``torch.compile(mode="reduce-overhead")`` or
``make_graphed_callables``: a capture costs milliseconds, where a compile
costs seconds to minutes per fit, paid again by every GridSearchCV candidate
(each clone is a new module); ``make_graphed_callables`` graphs the forward
and backward but leaves the optimizer step, the loss terms and the guard to
eager Python.

**One capture per fit.** Whatever changes from epoch to epoch is read by the
graph from device memory, not baked into it: the loss's per-epoch scalars
(temperature, scales, warm-up) live in the 0-d tensors of
:class:`~skd.state.EpochState`, and the learning rate of Adam, AdamW
and SGD lives in a 0-d tensor per parameter group (:meth:`CapturedStep.sync_lr`).
A scheduler (skorch's ``LRScheduler``, epoch- or batch-wise) keeps writing
plain floats to ``group["lr"]``, where the user and skorch see them; before
each step the float is copied into the tensor if it changed (one tiny device
fill, no sync). The tensor is put into ``group["lr"]`` only while the graph
is recorded. It is float32, as torch's tensor learning rates are: replays use
the learning rate rounded to float32 (a relative change below 1e-7), eager
steps the float. The graph is captured again only after a structural change,
which the capture's signature sees: another optimizer object (made capturable
too), its state or hyper-parameters (e.g. Adam's ``betas``), a parameter's
``requires_grad`` (skorch's ``Freezer``/``Unfreezer``), parameters or buffers
replaced (pruning), the student's training mode, other forward ``fit_params``.
The signature is walked once per epoch (when the ledger starts an epoch) and
whenever one of a few cheap identities changes; between those, a step costs
a few attribute reads and comparisons of Python host work.

**Warm-up.** Before each capture, :data:`WARMUP_STEPS` real steps run
eagerly on a side stream, as PyTorch's CUDA-graph documentation shows (lazy
optimizer state, cuBLAS workspaces, autograd's first pass); they are counted
per capture.

**What a replay leaves.** The gradients ``p.grad`` are the graph's static
tensors, overwritten by each replay with that batch's gradients, as an eager
step would leave them (if an eager step replaced them in between, the next
replay binds the static ones again). :attr:`CapturedStep.last_pred` and
:attr:`CapturedStep.last_row` are static too: they hold the last batch's
values until the next replay overwrites them; a callback that keeps them
across batches must clone them.

On the CPU there are no graphs: the same static-buffer step runs eagerly
(``step_mode="graph"`` there exists to test it against the eager step), with
the same signature, warm-up and capture bookkeeping, so
:attr:`CapturedStep.n_captures` counts the captures a GPU would make.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from skd.state import EpochState
from skd.training.guard import NonFiniteGuard
from skd.training.ledger import EpochLedger
from skd.training.step import StepParts, batch_loss

__all__ = ["CapturedStep", "WARMUP_STEPS", "lr_in_tensor", "prepare_capturable"]

#: Eager steps before each capture (lazy optimizer state, cuBLAS workspaces).
WARMUP_STEPS = 3


def prepare_capturable(optimizer: torch.optim.Optimizer, on_cuda: bool) -> str | None:
    """Make ``optimizer``'s step capturable on CUDA, where it can be.

    Adam-like optimizers get ``capturable=True`` (their existing step counts
    are moved to the parameters' device); Adam and AdamW also get
    ``fused=True``: one multi-tensor kernel for the update where the
    capturable ``foreach`` path launches about a dozen (it reads the tensor
    learning rate and keeps its step count on the device too). SGD gets
    ``fused=True``, the one SGD implementation that reads a tensor learning
    rate without a host sync. Returns None if the optimizer's step can be
    captured, else the reason. Call it for every new optimizer object, before
    its first step.
    """
    if "capturable" in optimizer.defaults:
        fuse = on_cuda and isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW))
        for group in optimizer.param_groups:
            group["capturable"] = on_cuda
            if fuse and _fusable(group):
                group["fused"], group["foreach"] = True, False
        if on_cuda:
            _state_to_param_device(optimizer)
        return None
    if isinstance(optimizer, torch.optim.SGD):
        if on_cuda:
            for group in optimizer.param_groups:
                if not group.get("differentiable"):
                    group["fused"], group["foreach"] = True, False
        return None  # no step counter; momentum buffers exist after the warm-up
    return (f"the optimizer {type(optimizer).__name__} has no capturable mode (use SGD, Adam or AdamW, "
            "or another optimizer with a capturable option)")


def _fusable(group: dict) -> bool:
    """Whether a group can take torch's fused Adam: CUDA floating-point tensors, not differentiable."""
    return not group.get("differentiable") and all(
        p.is_cuda and p.is_floating_point() and not p.is_complex() for p in group["params"])


def _state_to_param_device(optimizer: torch.optim.Optimizer) -> None:
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.device != param.device:
                state[key] = value.to(param.device)


def lr_in_tensor(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the captured step reads this optimizer's learning rate from a 0-d tensor.

    True for Adam and AdamW (capturable) and SGD (fused), as
    :func:`prepare_capturable` sets them up on CUDA; any other optimizer has
    its learning rate baked into the graph, and a change re-captures.
    """
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        return True
    if isinstance(optimizer, torch.optim.SGD):  # fused, which a differentiable SGD cannot be
        return not any(group.get("differentiable") for group in optimizer.param_groups)
    return False


def _fit_params_key(fit_params: dict) -> tuple:
    return tuple((key, id(value)) for key, value in fit_params.items())


def _hyper_key(value):
    if isinstance(value, (bool, int, float, str, type(None))):
        return value
    if isinstance(value, tuple):
        return tuple(_hyper_key(v) for v in value)
    return ("id", id(value))  # a tensor hyper-parameter: read by the graph, keyed by identity


class _Simulated:
    """The CPU's stand-in for a recorded graph: a replay runs the step eagerly."""


class CapturedStep:
    """One training step over static buffers, captured on CUDA, plain on the CPU.

    Parameters
    ----------
    parts : StepParts
    optimizer : callable
        Returns the current optimizer.
    module : torch.nn.Module
        The student (its parameters and buffers key the capture).
    guard : NonFiniteGuard
    ledger : EpochLedger
        The training ledger; its :attr:`~EpochLedger.epochs` counter tells
        the step that an epoch began (the signature is walked again then).
    take : callable
        ``index -> (X_batch, y_batch)``: gathers a batch from the device-resident data.
    batch_size : int
        The size of every captured batch (a ragged last batch runs eagerly).
    state : EpochState
        The per-epoch state the loss reads, in place (passed to ``batch_loss``).
    clip : callable or None
        ``module -> None``, called between backward and the optimizer step
        (see :func:`body_clipper`).
    warmup_steps : int, default=WARMUP_STEPS
        Eager steps before each capture.
    """

    def __init__(self, parts: StepParts, optimizer: Callable[[], torch.optim.Optimizer],
                 module: torch.nn.Module, guard: NonFiniteGuard, ledger: EpochLedger,
                 take: Callable[[torch.Tensor], tuple], batch_size: int, state: EpochState,
                 clip: Callable[[torch.nn.Module], None] | None = None, warmup_steps: int = WARMUP_STEPS):
        self.parts = parts
        self.get_optimizer = optimizer
        self.module = module
        self.guard = guard
        self.ledger = ledger
        self.take = take
        self.batch_size = batch_size
        self.state = state
        self.clip = clip
        self.warmup_steps = warmup_steps
        self.on_cuda = torch.device(parts.device).type == "cuda"
        #: The device counter of the next batch in :attr:`batches`.
        self.cursor = torch.zeros(1, dtype=torch.long, device=parts.device)
        self.batches: torch.Tensor | None = None
        self._left = 0  # batches of the loaded epoch not taken yet (host count: no device read)
        self.last_loss: torch.Tensor | None = None
        self.graph = None
        self.pool = None
        self.n_captures = 0
        self.n_warmup = 0
        self.last_row: torch.Tensor | None = None
        self.last_pred: torch.Tensor | None = None
        self.fit_params: dict = {}
        self._warmup_left = warmup_steps
        self._structure = None
        self._seen = None  # (optimizer, training, epoch, fit_params key): the cheap identities
        self._lr_slots: list[list] = []  # [group, lr tensor, last float copied]
        self._static_grads: list = []
        self._side = None

    # ------------------------------------------------------------------ step
    def body(self) -> None:
        """The step on the cursor's batch: no host reads, so it can be captured."""
        index = self.batches.index_select(0, self.cursor).view(-1)
        self.cursor.add_(1)
        Xi, y = self.take(index)
        result = batch_loss(self.parts, Xi, y, self.state, **self.fit_params)
        self.last_pred = result.y_pred.detach()
        self.ledger.start(result.terms)
        finite = self.guard.observe(result.values, result.total)
        result.total.backward()
        if self.clip is not None:
            self.clip(self.module)
        kept = self.guard.step(self.get_optimizer().step, lambda: finite)
        self.last_row = self.ledger.row(result.total, result.values, kept)
        self.last_loss = self.last_row[0]  # a view: static too, so a replay needs no indexing on the host
        self.ledger.add(self.last_row, self.batch_size)

    def load_epoch(self, batches: torch.Tensor) -> None:
        """Give the step this epoch's full batches, an ``(n, batch_size)`` index tensor.

        One copy per epoch into a static table, and the counter set to 0;
        each ``run()`` then takes the next row.
        """
        if self.batches is None or self.batches.shape != batches.shape:
            self.batches = torch.empty_like(batches)  # a new table: the signature sees it, a new capture
        self.batches.copy_(batches, non_blocking=True)
        self.cursor.zero_()
        self._left = len(batches)

    def run(self, **fit_params) -> bool:
        """One step on the next batch of the epoch given to :meth:`load_epoch`.

        Returns True if the step was the graph's (a replay, or its stand-in
        on the CPU), False if it was an eager warm-up step before a capture.
        ``fit_params`` are the forward's keyword arguments; they are fixed
        in the graph at its capture, and other ones (keys or objects)
        re-capture.
        """
        if self._left <= 0:
            raise RuntimeError("Every batch given to load_epoch has been taken: load the next epoch.")
        self._left -= 1
        optimizer = self.get_optimizer()
        seen = self._seen
        if (seen is None or seen[0] is not optimizer or seen[1] != self.module.training
                or seen[2] != self.ledger.epochs
                or (fit_params or seen[3]) and _fit_params_key(fit_params) != seen[3]):
            self._check_structure(optimizer, fit_params)
        self.sync_lr()
        if self.graph is None:
            if self._warmup_left > 0:
                self._warmup_left -= 1
                self.n_warmup += 1
                self._eager_step(optimizer)
                return False
            # what the graph bakes in is what exists now, after the warm-up (lazy optimizer state)
            self._structure = self.signature(optimizer, fit_params)
            self._capture(optimizer)
        self._replay(optimizer)
        return True

    def sync_lr(self) -> None:
        """Copy each group's float ``lr`` into its lr tensor where it changed (no host sync).

        ``run`` calls it before every step; a scheduler that writes
        ``group["lr"]`` (skorch's ``LRScheduler``, epoch- or batch-wise)
        needs nothing else.
        """
        for slot in self._lr_slots:
            lr = slot[0]["lr"]
            if lr != slot[2]:
                slot[1].fill_(lr)
                slot[2] = lr

    # ------------------------------------------------------------- signature
    def signature(self, optimizer: torch.optim.Optimizer, fit_params: dict) -> tuple:
        """Everything the graph bakes in: a change means a new capture (a walk over the parameters)."""
        tensor_lr = lr_in_tensor(optimizer)

        def baked(key, value):  # the float lr of a tensor-lr optimizer is read from its tensor
            return key != "params" and not (key == "lr" and tensor_lr and not isinstance(value, torch.Tensor))

        groups = tuple((tuple(id(p) for p in group["params"]),
                        tuple((key, _hyper_key(value)) for key, value in sorted(group.items())
                              if baked(key, value)))
                       for group in optimizer.param_groups)
        params = tuple((id(p), tuple(p.shape), p.requires_grad) for p in self.module.parameters())
        buffers = (tuple(id(b) for b in self.module.buffers()), id(self.batches))
        state = (id(optimizer.state), len(optimizer.state), id(optimizer.param_groups))
        return (id(optimizer), state, groups, params, buffers, self.module.training,
                _fit_params_key(fit_params))

    def _check_structure(self, optimizer, fit_params: dict) -> None:
        new_optimizer = self._seen is None or self._seen[0] is not optimizer
        if new_optimizer:
            reason = prepare_capturable(optimizer, self.on_cuda)
            if reason:
                raise RuntimeError(f"The captured step cannot continue: {reason}.")
        structure = self.signature(optimizer, fit_params)
        if structure != self._structure:
            self._structure = structure
            if self.graph is not None or new_optimizer:  # a warm-up under way goes on (its own state)
                self._warmup_left = self.warmup_steps
            self.graph = None  # free the old graph before recording a new one
            self.fit_params = dict(fit_params)
            self._lr_slots = []
            if lr_in_tensor(optimizer):
                device = self.parts.device
                self._lr_slots = [[group, torch.full((), float(group["lr"]), device=device),
                                   float(group["lr"])]
                                  for group in optimizer.param_groups
                                  if not isinstance(group["lr"], torch.Tensor)]
        self._seen = (optimizer, self.module.training, self.ledger.epochs, _fit_params_key(fit_params))

    # --------------------------------------------------------------- capture
    def _eager_step(self, optimizer) -> None:
        if not self.on_cuda:
            optimizer.zero_grad()
            self.body()
            return
        if self._side is None:
            self._side = torch.cuda.Stream()
        self._side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._side):
            optimizer.zero_grad(set_to_none=True)
            self.body()
        torch.cuda.current_stream().wait_stream(self._side)

    def _capture(self, optimizer) -> None:
        self.n_captures += 1
        if not self.on_cuda:
            self.graph = _Simulated()
            return
        # a fresh memory pool per capture: the previous graph (freed on a structural change)
        # released its pool, and capturing into a released pool fails inside the allocator
        self.pool = torch.cuda.graph_pool_handle()
        optimizer.zero_grad(set_to_none=True)  # backward allocates static grads in the pool
        graph = torch.cuda.CUDAGraph()
        floats = [(slot[0], slot[0]["lr"]) for slot in self._lr_slots]
        for slot in self._lr_slots:
            slot[0]["lr"] = slot[1]  # the graph reads the tensor; the user keeps the float
        try:
            # captured on the warm-up's side stream: autograd nodes the warm-up leaves alive (a
            # pruning mask's product, kept as the module's weight) then run on the capture's stream
            with torch.cuda.graph(graph, pool=self.pool, stream=self._side):
                self.body()
        finally:
            for group, lr in floats:
                group["lr"] = lr
        self.graph = graph
        self._static_grads = [(p, p.grad) for p in self.module.parameters() if p.grad is not None]

    def _replay(self, optimizer) -> None:
        if not self.on_cuda:
            optimizer.zero_grad()
            self.body()
            return
        if self._static_grads and self._static_grads[0][0].grad is not self._static_grads[0][1]:
            for param, grad in self._static_grads:  # an eager step replaced them
                param.grad = grad
        self.graph.replay()

