"""How many kernels does one training step launch? Dispatched ops, counted on the CPU.

    python benchmarks/ops.py [--batch 256] [--top 6] [--host] [--write]

One op dispatched on the CPU is one kernel launched on a GPU (a ``_foreach``
op launches one kernel per chunk of tensors: one for a small student), so
these counts are the GPU's launch budget, measured without a GPU and
deterministic. Ops that launch no kernel are left out: views (``view``,
``t``, ``expand``, ``detach``, ...), allocations (``empty*``), wrapped
Python numbers (``scalar_tensor``), the profiler's record-function markers
and ``_local_scalar_dense`` (a host read, counted apart as a sync; Adam
without ``capturable`` reads its step counts on the CPU, so the step's
syncs are not reported).

Tables:

1. **Step**: the whole training step (MLP 100 -> 128 -> C=10, batch 256) -- a
   hand-written KD step (``F.cross_entropy`` + ``F.kl_div``, as in
   benchmarks/gpu.py) with Adam ``foreach=True`` (torch's default on CUDA)
   against skd's captured step (``trainer__step_mode="graph"``, the body a
   CUDA graph records; on the CPU it runs eagerly) for each loss, three
   times: with the same Adam (``optimizer__foreach=True``); with skd's
   default, fused Adam (one kernel for the update;
   :mod:`skd.training.optimizers`); and with fused Adam and the compiled
   loss (``trainer__compile_loss=True``; :mod:`skd.losses.compiled`),
   TorchInductor's CPU kernels counted (a lower bound of its Triton kernels
   on a GPU, see :func:`counting`). Targets: KD <= 1.1x, every other loss
   <= 1.5x the hand step.
2. **Loss**: each loss's forward + backward on (256, C) logits against
   plain KL (``T**2 * F.kl_div`` of the softened logits), at C=100 and 1000,
   eager and compiled. Target <= 1.5x.
3. **Offenders**: per loss, the ops that dominate its forward + backward.
4. With ``--host``: Python µs per ``CapturedStep.run`` call spent outside the
   step itself (signature checks, lr sync), i.e. the host cost per replay
   on CUDA. A timing: meaningful on an idle machine only.

The counter (:class:`OpCounter`) is the one implementation; tests/test_ops.py
loads it from this file (the eager counts only: no CI test compiles a loss to
count its kernels).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections import Counter

import numpy as np
import torch
import torch._inductor.config as inductor_config
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

LOSSES = ["kd", "tfkd", "dkd", "cakd", "dist", "r2kd"]
TEMPERATURE = 4.0


def profile_compiled_kernels() -> None:
    """Make TorchInductor's CPU kernels visible to :func:`counting` (``compiled=True``).

    They call no op: compiled with ``cpp.enable_kernel_profile``, each call is
    a profiler event that the counter reads. A process-wide Inductor setting,
    so only the scripts set it (this file's and gpu.py's ``main``), before
    anything of the process compiles; importing this file changes nothing.
    """
    inductor_config.cpp.enable_kernel_profile = True
#: Ops that launch no kernel (besides views, found from the op's schema).
#: ``scalar_tensor`` wraps a Python number (``torch.where(mask, x, 0.0)``): a CPU scalar, no GPU kernel.
NO_KERNEL = frozenset({"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided",
                       "lift_fresh", "_unsafe_view", "set_", "resize_", "scalar_tensor",
                       "_record_function_enter", "_record_function_enter_new", "_record_function_exit"})
SYNC = frozenset({"_local_scalar_dense", "item"})


class OpCounter(TorchDispatchMode):
    """Counts the ops dispatched while active, by name (``with OpCounter() as ops: ...``).

    ``ops.kernels`` is the number that launch a kernel; ``ops.syncs`` the host
    reads; ``ops.counts`` a Counter of kernel ops by name.

    Compiled code (``torch.compile``) runs compiled under the counter: the ops
    it still dispatches (library kernels such as ``mm`` or ``sort``, the
    autograd engine's) are counted here, TorchInductor's own kernels by
    :func:`count_ops` with ``compiled=True``, as ``compiled`` in ``counts``.
    """

    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()
        self.syncs = 0

    @classmethod
    def ignore_compile_internals(cls) -> bool:
        return True  # without it Dynamo runs a compiled function eagerly under the mode

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNC:
            self.syncs += 1
        elif not (func.is_view or name in NO_KERNEL):
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))

    @property
    def kernels(self) -> int:
        return sum(self.counts.values())


@contextlib.contextmanager
def counting(compiled: bool = False):
    """``with counting() as ops:`` counts the ops of the block; ``compiled=True`` also Inductor's kernels.

    Those are the CPU kernels of compiled code, read from the profiler (one
    event per kernel call, see :func:`profile_compiled_kernels`): one per
    fused kernel. A lower bound of the Triton kernels the same graph makes
    on a GPU: the CPU backend fuses loops of different shapes (a row
    reduction, then a batch mean) into one kernel, where Triton launches
    one kernel per loop nest.
    """
    if not compiled:
        with OpCounter() as ops:
            yield ops
        return
    with profile(activities=[ProfilerActivity.CPU]) as profiler, OpCounter() as ops:
        yield ops
    events = profiler.events()
    graphs = [e for e in events if e.name.startswith("## Call CompiledFxGraph")]
    kernels = [e for e in events if "cpp_fused" in e.name]
    for graph in graphs:
        if not any(graph.time_range.start <= k.time_range.start <= graph.time_range.end for k in kernels):
            raise RuntimeError("A compiled graph ran without kernel profiling (compiled before "
                               "profile_compiled_kernels() was called): its kernels cannot be counted.")
    if kernels:
        ops.counts["compiled"] += len(kernels)


def count_ops(fn, *args, compiled: bool = False, **kwargs) -> OpCounter:
    """The ops of one call of ``fn`` (with ``compiled``, TorchInductor's kernels too)."""
    with counting(compiled) as ops:
        fn(*args, **kwargs)
    return ops


# ------------------------------------------------------------------ the step
def make_data(n=4096, n_features=100, n_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_features)).astype(np.float32)
    y = rng.integers(0, n_classes, n).astype(np.int64)
    logits = (rng.standard_normal((n, n_classes)) * 3).astype(np.float32)
    return X, y, logits


def hand_step_ops(batch_size=256, n_classes=10) -> OpCounter:
    """The hand-written KD step (benchmarks/gpu.py's), one step after two warm-up steps."""
    from skd import MLP

    X, y, logits = (torch.as_tensor(a) for a in make_data(n_classes=n_classes))
    torch.manual_seed(0)
    student = MLP(X.shape[1], n_classes)
    optimizer = torch.optim.Adam(student.parameters(), 1e-3, foreach=True)
    index = torch.arange(batch_size)

    def step():
        out = student(X[index])
        soft = F.kl_div(F.log_softmax(out / TEMPERATURE, 1), F.log_softmax(logits[index] / TEMPERATURE, 1),
                        log_target=True, reduction="batchmean")
        loss = 0.1 * F.cross_entropy(out, y[index]) + 0.9 * TEMPERATURE**2 * soft
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        optimizer.step()

    step(), step()
    return count_ops(step)


def skd_step_ops(loss: str, batch_size=256, n_classes=10, **options) -> OpCounter:
    """skd's captured step (``trainer__step_mode="graph"``; run eagerly on the CPU): one replayed step.

    ``options`` are the classifier's (e.g. ``optimizer__foreach=True``, the hand
    step's Adam; without it skd picks fused Adam; ``trainer__compile_loss=True``,
    the compiled loss of a CUDA fit, whose kernels are counted too).
    """
    from skd import MLP, DistillationClassifier
    from skd.training import graph

    X, y, logits = make_data(n_classes=n_classes)
    counted: list[OpCounter] = []
    original = graph.CapturedStep.run

    def run(self, **fit_params):
        if self.graph is None or counted:
            return original(self, **fit_params)
        with counting(options.get("trainer__compile_loss") is True) as ops:
            result = original(self, **fit_params)
        counted.append(ops)
        return result

    params = dict(loss=loss, max_epochs=1, batch_size=batch_size, optimizer=torch.optim.Adam, lr=1e-3,
                  verbose=0, device="cpu", train_split=None,
                  trainer__step_mode="graph", trainer__record_batches=False, random_state=0,
                  iterator_train__shuffle=True, **options)
    if loss in ("dkd", "cakd"):
        params["loss__warmup"] = 0
    X_fit = X if loss == "tfkd" else {"X": X, "teacher_logits": logits}
    graph.CapturedStep.run = run
    try:
        DistillationClassifier(MLP, **params).fit(X_fit, y)
    finally:
        graph.CapturedStep.run = original
    if not counted:
        raise RuntimeError("no replayed step ran: too few batches for the warm-up")
    return counted[0]


# ------------------------------------------------------------------ the loss
def _state(loss, device="cpu"):
    """The loss's epoch state (every row labelled, as in the step's common case), made once as a fit does."""
    return loss.epoch_state(10**9, device=device, labelled_only=True)


def loss_ops(name: str, n_classes: int, batch_size=256, seed=0, compiled=False) -> OpCounter:
    """One forward + backward of the loss ``name`` (every term) on (batch, C) logits.

    ``compiled``: through the loss's compiled call (:mod:`skd.losses.compiled`).
    """
    from skd.losses import make_loss
    from skd.losses.compiled import loss_terms

    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(batch_size, n_classes, generator=generator, requires_grad=True)
    teacher = torch.randn(batch_size, n_classes, generator=generator) * 3
    y = torch.randint(0, n_classes, (batch_size,), generator=generator)
    loss = make_loss(name, {})
    state = _state(loss)

    def step():
        terms = loss_terms(loss, student, teacher if loss.capabilities.teacher else None, y, state, compiled)
        total = None
        for value in terms.values():
            total = value if total is None else total + value
        total.backward()

    step()
    student.grad = None
    return count_ops(step, compiled=compiled)


def reference_ops(kind: str, n_classes: int, batch_size=256, seed=0) -> OpCounter:
    """Plain KL (``kind="kl"``), labelled CE as ``F.cross_entropy(ignore_index=-1)`` (``"ce"``)."""
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(batch_size, n_classes, generator=generator, requires_grad=True)
    teacher = torch.randn(batch_size, n_classes, generator=generator) * 3
    y = torch.randint(0, n_classes, (batch_size,), generator=generator)

    def step():
        if kind == "kl":
            value = TEMPERATURE**2 * F.kl_div(F.log_softmax(student / TEMPERATURE, 1),
                                              F.log_softmax(teacher / TEMPERATURE, 1),
                                              log_target=True, reduction="batchmean")
        else:
            value = F.cross_entropy(student, y, ignore_index=-1)
        value.backward()

    step()
    student.grad = None
    return count_ops(step)


def labelled_ce_ops(n_classes=10, batch_size=256) -> OpCounter:
    """skd's labelled CE for data with unlabelled rows (``labelled_cross_entropy``), forward + backward."""
    from skd.losses.functional import labelled_cross_entropy

    student = torch.randn(batch_size, n_classes, requires_grad=True)
    y = torch.randint(0, n_classes, (batch_size,))
    return count_ops(lambda: labelled_cross_entropy(student, y).backward())


# ------------------------------------------------------------------ host cost
def host_us_per_run(calls=20_000, batch_size=64) -> dict[str, float]:
    """Python µs per ``CapturedStep.run`` outside the step: the per-replay host cost on CUDA."""
    from skd import MLP
    from skd.training import graph
    from skd.training.ledger import EpochLedger

    module = MLP(100, 10)
    optimizer = torch.optim.Adam(module.parameters(), 1e-3)
    ledger = EpochLedger("", "train_loss", "cpu", False)
    ledger.reset()

    class Parts:
        device = torch.device("cpu")
        loss = None

    step = graph.CapturedStep(Parts(), lambda: optimizer, module, None, ledger, None, batch_size,
                              state=object(), warmup_steps=0)
    step._replay = lambda optimizer: None  # the graph's launch, not host bookkeeping
    batches = torch.arange(batch_size).repeat(calls + 1, 1)  # an epoch of calls + 1 batches
    results = {}
    for label, fit_params in (("no fit_params", {}), ("one fit_param", {"mask": torch.ones(1)})):
        step.load_epoch(batches)
        step.run(**fit_params)
        start = time.perf_counter()
        for _ in range(calls):
            step.run(**fit_params)
        results[label] = (time.perf_counter() - start) / calls * 1e6
    return results


# ------------------------------------------------------------------ report
def offenders(ops: OpCounter, top: int) -> str:
    return ", ".join(f"{name} {count}" for name, count in ops.counts.most_common(top))


def main(argv=None):
    from _report import add_write_flag, update_section

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--top", type=int, default=6)
    parser.add_argument("--host", action="store_true", help="also time the host work per run() call")
    add_write_flag(parser)
    args = parser.parse_args(argv)
    profile_compiled_kernels()
    torch.set_num_threads(1)
    lines = [f"Dispatched kernel ops per step on the CPU (torch {torch.__version__}; "
             "`python benchmarks/ops.py`): deterministic counts, the GPU's launch budget.", ""]

    hand = hand_step_ops(args.batch)
    steps = {loss: skd_step_ops(loss, args.batch, optimizer__foreach=True) for loss in LOSSES}
    fused = {loss: skd_step_ops(loss, args.batch) for loss in LOSSES}
    compiled = {loss: skd_step_ops(loss, args.batch, trainer__compile_loss=True) for loss in LOSSES}
    names = " | ".join(LOSSES)
    rule = "|---" * (len(LOSSES) + 2) + "|"
    lines += [f"| step (MLP, batch {args.batch}; hand: Adam foreach) | hand KD | {names} |", rule]
    for label, counted in (("skd, Adam foreach", steps), ("skd's default (fused Adam)", fused),
                           ("skd, compiled loss (CPU kernels)", compiled)):
        lines += [f"| {label}: kernel ops | {hand.kernels} | "
                  + " | ".join(str(counted[n].kernels) for n in LOSSES) + " |",
                  f"| {label}: vs hand KD step (target: kd <= 1.1, others <= 1.5) | 1.00 | "
                  + " | ".join(f"{counted[n].kernels / hand.kernels:.2f}" for n in LOSSES) + " |"]
    lines.append("")

    lines += [f"| forward + backward, batch {args.batch} | plain KL | {names} |", rule]
    per_c = {}
    for n_classes in (100, 1000):
        kl = reference_ops("kl", n_classes, args.batch)
        losses = {name: loss_ops(name, n_classes, args.batch) for name in LOSSES}
        fused_losses = {name: loss_ops(name, n_classes, args.batch, compiled=True) for name in LOSSES}
        per_c[n_classes] = losses
        for label, counted in (("eager", losses), ("compiled", fused_losses)):
            lines.append(f"| C={n_classes}, {label}: kernel ops | {kl.kernels} | "
                         + " | ".join(str(counted[n].kernels) for n in LOSSES) + " |")
            lines.append(f"| C={n_classes}, {label}: vs plain KL (target <= 1.5) | 1.00 | "
                         + " | ".join(f"{counted[n].kernels / kl.kernels:.2f}" for n in LOSSES) + " |")
    ce = reference_ops("ce", 100, args.batch)
    labelled = labelled_ce_ops(100, args.batch)
    lines += ["", "Labelled CE (`DistillationLoss.cross_entropy`), forward + backward: "
              f"{labelled.kernels} ops ({offenders(labelled, args.top)}); "
              f"`F.cross_entropy(ignore_index=-1)`: {ce.kernels} ({offenders(ce, args.top)}).", "",
              "| loss | top ops of its forward + backward at C=100 | top ops of its whole step |",
              "|---|---|---|"]
    for name in LOSSES:
        top_loss, top_step = offenders(per_c[100][name], args.top), offenders(steps[name], args.top)
        lines.append(f"| {name} | {top_loss} | {top_step} |")
    lines.append(f"| hand KD step | — | {offenders(hand, args.top)} |")
    if args.host:
        host = host_us_per_run()
        lines += ["", "Host µs per `CapturedStep.run` call outside the step (timing; idle machine only): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in host.items()) + "."]
    table = "\n".join(lines)
    print(table)
    print(f"saved to {update_section('ops', table, write=args.write)}")


if __name__ == "__main__":
    main()
