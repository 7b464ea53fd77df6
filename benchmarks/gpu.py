"""How fast is one distillation step on a GPU? skd against the loops a user would write.

    python benchmarks/gpu.py [--device cuda] [--steps 300] [--mnist] [--write]

One report, one table per question (issue 18's budget):

1. **µs per step** (median of ``--repeats`` timed runs of ``--steps`` steps
   after a warm-up), side by side in one process, for an MLP student
   (100 -> 128 -> 10, KD, Adam, T=4) on tabular data (50k x 100, teacher logits
   precomputed) at batch 32, 256 and 2048, and for a CNN student (SmallCNN
   (8, 16) on 28 x 28 inputs) at batch 128:

     hand eager   the PyTorch loop a user writes (data and logits on the device);
     hand graph   the same step captured once in a CUDA graph and replayed (CUDA only);
     skorch CE    stock ``NeuralNetClassifier`` with cross-entropy only;
     skd eager    ``DistillationClassifier(trainer__step_mode="eager")`` with the book;
     skd graph    ``DistillationClassifier(trainer__step_mode="auto")``: the captured step on CUDA.

   skd and skorch are timed as whole ``fit`` calls of ``max_epochs`` epochs,
   divided by the number of steps (so they include their per-epoch work).
2. **Kernels per step**: on CUDA, CUDA kernels of one step from
   ``torch.profiler`` (hand eager, skd eager, one skd replay); everywhere,
   the ops dispatched per step counted on the CPU (benchmarks/ops.py), one
   per kernel.
3. **Host syncs per epoch** (CUDA): synchronising calls reported by
   ``torch.cuda.set_sync_debug_mode("warn")`` during a captured fit.
4. **Captures per fit**: kd, dkd with warm-up, a TemperatureSchedule, an
   epoch-wise StepLR (on the CPU, the simulated path's count).
5. **Each loss against plain KL**: forward + backward ops (and µs on CUDA)
   at C=100 and 1000.
6. With ``--mnist`` (CUDA): the wall time of ``python -m skd bench --dataset mnist``.

Without CUDA it runs the CPU-safe parts (1 without the graph columns, 2 as
op counts, 4 simulated, 5 as op counts) and says what it skipped. With
``--write`` it replaces its section of docs/gpu.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from skorch import NeuralNetClassifier

from skd import MLP, DistillationClassifier, SmallCNN

from _report import ROOT, add_write_flag, update_section

TEMPERATURE = 4.0


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def kd_step_fn(student, optimizer, X, y, logits):
    def step(index):
        out = student(X[index])
        soft = F.kl_div(F.log_softmax(out / TEMPERATURE, 1), F.log_softmax(logits[index] / TEMPERATURE, 1),
                        log_target=True, reduction="batchmean")
        loss = 0.1 * F.cross_entropy(out, y[index]) + 0.9 * TEMPERATURE**2 * soft
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        optimizer.step()
        return loss

    return step


def hand_loop(make_student, X, y, logits, batch_size, steps, device, graph):
    """µs per step of the hand-written loop, eager or captured."""
    torch.manual_seed(0)
    student = make_student().to(device)
    optimizer = torch.optim.Adam(student.parameters(), 1e-3, capturable=graph)
    step = kd_step_fn(student, optimizer, X, y, logits)
    n_batches = len(X) // batch_size
    order = torch.randperm(len(X), device=device)[: n_batches * batch_size].view(n_batches, batch_size)
    static_index = order[0].clone()
    if graph:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for i in range(3):
                step(order[i])
        torch.cuda.current_stream().wait_stream(side)
        cuda_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(cuda_graph):
            step(static_index)

        def run(i):
            static_index.copy_(order[i % n_batches])
            cuda_graph.replay()
    else:
        def run(i):
            step(order[i % n_batches])
    for i in range(10):
        run(i)
    sync(device)
    start = time.perf_counter()
    for i in range(steps):
        run(i)
    sync(device)
    return (time.perf_counter() - start) / steps * 1e6


def fit_seconds(net, X, y, device) -> float:
    """Seconds of ``net.fit(X, y)``, the device's queue drained before and after."""
    sync(device)
    start = time.perf_counter()
    net.fit(X, y)
    sync(device)
    return time.perf_counter() - start


def fit_time(make_net, X, y, batch_size, device):
    """µs per step of a whole fit (epochs sized to about ``steps``)."""
    net = make_net()
    seconds = fit_seconds(net, X, y, device)
    steps = net.max_epochs * -(-len(y) // batch_size)
    return seconds / steps * 1e6, net


def marginal_time(make_net, X, y, batch_size, device):
    """µs per step of one more epoch: a fit of ``max_epochs + 1`` epochs less one of ``max_epochs``.

    The fixed costs of a fit (checks, the copy to the device, the warm-up and
    the capture, the teacher's score) cancel, leaving what each further step costs.
    """
    epochs = make_net().max_epochs
    base, more = (fit_seconds(make_net().set_params(max_epochs=epochs + extra), X, y, device)
                  for extra in (0, 1))
    return (more - base) / -(-len(y) // batch_size) * 1e6


def measure(case, batch_size, args):
    device = args.device
    rng = np.random.default_rng(0)
    if case == "mlp":
        n, shape = 50_000, (100,)
        def make_student(): return MLP(100, 10)
    else:
        n, shape = 20_000, (784,)
        def make_student(): return SmallCNN(784, 10, channels=(8, 16), hidden=32)
    X_np = rng.standard_normal((n, *shape)).astype(np.float32)
    y_np = rng.integers(0, 10, n).astype(np.int64)
    logits_np = rng.standard_normal((n, 10)).astype(np.float32) * 3
    X, y, logits = (torch.as_tensor(a, device=device) for a in (X_np, y_np, logits_np))
    epochs = max(1, round(args.steps * batch_size / n))
    common = dict(max_epochs=epochs, batch_size=batch_size, optimizer=torch.optim.Adam, lr=1e-3,
                  verbose=0, device=device, train_split=None)
    book = {"X": X_np, "teacher_logits": logits_np}
    module = MLP if case == "mlp" else SmallCNN
    module_args = {} if case == "mlp" else dict(module__channels=(8, 16), module__hidden=32)
    variants = {
        "hand eager": lambda: hand_loop(make_student, X, y, logits, batch_size, args.steps, device, False),
        "skorch CE": lambda: fit_time(lambda: NeuralNetClassifier(
            module, module__n_features=int(np.prod(shape)), module__n_classes=10,
            criterion=torch.nn.CrossEntropyLoss, iterator_train__shuffle=True, **module_args, **common),
            X_np, y_np, batch_size, device)[0],
        "skd eager": lambda: fit_time(lambda: DistillationClassifier(
            module, loss="kd", trainer__step_mode="eager", **module_args, **common),
            book, y_np, batch_size, device)[0],
    }
    if torch.device(device).type == "cuda":
        variants["hand graph"] = lambda: hand_loop(make_student, X, y, logits, batch_size, args.steps,
                                                   device, True)
        def skd_graph():
            return DistillationClassifier(module, loss="kd", trainer__step_mode="auto", **module_args,
                                          **common)

        variants["skd graph"] = lambda: fit_time(skd_graph, book, y_np, batch_size, device)[0]
        variants["skd graph, per further step"] = lambda: marginal_time(skd_graph, book, y_np, batch_size,
                                                                        device)
    times = {name: [] for name in variants}
    for _ in range(args.repeats):  # interleaved, so that drifts hit every variant alike
        for name, run in variants.items():
            times[name].append(run())
    return {name: statistics.median(values) for name, values in times.items()}


def step_table(args):
    names = ["hand eager", "hand graph", "skorch CE", "skd eager", "skd graph", "skd graph, per further step"]
    lines = ["| µs per step | " + " | ".join(names) + " | skd eager / hand eager | skd graph / hand graph "
             "(per further step) | hand eager / skd graph |",
             "|---" * (len(names) + 4) + "|"]
    for case in args.cases.split(","):
        kind, batch = case.split(":")
        result = measure(kind, int(batch), args)
        cells = [f"{result[n]:.0f}" if n in result else "—" for n in names]
        eager_ratio = result["skd eager"] / result["hand eager"]
        graph_ratio = speedup = "—"
        if "skd graph" in result:
            further = result["skd graph, per further step"] / result["hand graph"]
            graph_ratio = f"{result['skd graph'] / result['hand graph']:.2f} ({further:.2f})"
            speedup = f"{result['hand eager'] / result['skd graph']:.1f}x"
        lines.append(f"| {kind} batch {batch} | {' | '.join(cells)} | {eager_ratio:.2f} | {graph_ratio} "
                     f"| {speedup} |")
        print(lines[-1], flush=True)
    return lines


class Recorded:
    """Patches the trainer's CapturedStep to keep its instances (a fit drops its trainer)."""

    def __enter__(self):
        from skd.training import graph, trainer

        made = self.made = []

        class Step(graph.CapturedStep):
            def __init__(self, *a, **kw):
                super().__init__(*a, **kw)
                made.append(self)

        self.module, self.original = trainer, trainer.CapturedStep
        trainer.CapturedStep = Step
        return self

    def __exit__(self, *exc):
        self.module.CapturedStep = self.original


def digits_fit(device, step_mode, callbacks=(), **options):
    from sklearn.datasets import load_digits
    from skorch.callbacks import LRScheduler  # noqa: F401  (callbacks come from the caller)

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    logits = (X @ np.random.default_rng(0).standard_normal((64, 10)).astype(np.float32))
    params = dict(loss="kd", max_epochs=5, batch_size=64, optimizer=torch.optim.Adam, lr=1e-2, verbose=0,
                  device=device, random_state=0, train_split=None, trainer__step_mode=step_mode,
                  callbacks=list(callbacks))
    clf = DistillationClassifier(MLP, **{**params, **options})
    return clf, {"X": X, "teacher_logits": logits}, y


def captures_table(device):
    from skorch.callbacks import LRScheduler

    from skd import TemperatureSchedule

    mode = "auto" if torch.device(device).type == "cuda" else "graph"
    cases = {"kd": ({}, []), "dkd, warm-up 3": (dict(loss="dkd", loss__warmup=3), []),
             "TemperatureSchedule": ({}, [TemperatureSchedule(8.0, 2.0)]),
             "StepLR (epoch-wise)": ({}, [LRScheduler("StepLR", step_size=1, gamma=0.5)])}
    cells = []
    for options, callbacks in cases.values():
        clf, X, y = digits_fit(device, mode, callbacks, **options)
        with Recorded() as recorded:
            clf.fit(X, y)
        cells.append(str(sum(step.n_captures for step in recorded.made)))
    where = "" if mode == "auto" else " (CPU: simulated)"
    return [f"| captures per fit, 5 epochs{where} | " + " | ".join(cases) + " |",
            "|---" * (len(cases) + 1) + "|", "| captures (target 1) | " + " | ".join(cells) + " |"]


def syncs_table(device):
    import warnings

    clf, X, y = digits_fit(device, "auto", trainer__check_every=10_000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            clf.fit(X, y)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    return [f"Host syncs per epoch of a captured KD fit on digits: {syncs / clf.max_epochs:.1f} "
            f"({syncs} in {clf.max_epochs} epochs, from torch.cuda.set_sync_debug_mode('warn'))."]


def cuda_kernels(fn):
    """CUDA kernels launched by ``fn()``, from the profiler."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def kernel_table(device, batch=256):
    import ops

    lines = []
    on_cuda = torch.device(device).type == "cuda"
    hand = ops.hand_step_ops(batch)
    steps = {loss: ops.skd_step_ops(loss, batch) for loss in ops.LOSSES}
    lines += [f"| kernels per step (MLP, batch {batch}; hand: Adam foreach, skd: fused Adam) | hand KD | "
              + " | ".join(ops.LOSSES) + " |",
              "|---" * (len(ops.LOSSES) + 2) + "|",
              f"| ops dispatched on the CPU (= kernels) | {hand.kernels} | "
              + " | ".join(str(steps[n].kernels) for n in ops.LOSSES) + " |",
              "| vs hand (target kd <= 1.1, others <= 1.5) | 1.00 | "
              + " | ".join(f"{steps[n].kernels / hand.kernels:.2f}" for n in ops.LOSSES) + " |"]
    compiled = {loss: ops.skd_step_ops(loss, batch, trainer__compile_loss=True) for loss in ops.LOSSES}
    lines.append("| the same, compiled loss (Inductor's CPU kernels, a lower bound) | "
                 f"{hand.kernels} | " + " | ".join(str(compiled[n].kernels) for n in ops.LOSSES) + " |")
    if on_cuda:
        lines.append(f"| CUDA kernels of one replay (profiler) | {hand_replay_kernels(batch)} | "
                     + " | ".join(str(skd_replay_kernels(loss, batch)) for loss in ops.LOSSES) + " |")
        lines.append("| the same, `trainer__compile_loss=True` | — | "
                     + " | ".join(str(skd_replay_kernels(loss, batch, trainer__compile_loss=True))
                                  for loss in ops.LOSSES) + " |")
    return lines


def hand_replay_kernels(batch):
    """CUDA kernels of one replay of the hand-written KD step, captured (digits, as skd_replay_kernels)."""
    _, book, y = digits_fit("cuda", "auto")
    X, logits, y = (torch.as_tensor(a, device="cuda") for a in (book["X"], book["teacher_logits"], y))
    torch.manual_seed(0)
    student = MLP(X.shape[1], 10).to("cuda")
    optimizer = torch.optim.Adam(student.parameters(), 1e-2, capturable=True)
    step = kd_step_fn(student, optimizer, X, y, logits)
    index = torch.arange(batch, device="cuda") % len(X)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step(index)
    torch.cuda.current_stream().wait_stream(side)
    cuda_graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(cuda_graph):
        step(index)
    return cuda_kernels(cuda_graph.replay)


def skd_replay_kernels(loss, batch, **options):
    from skd.training import graph

    clf, X, y = digits_fit("cuda", "auto", loss=loss, batch_size=batch, max_epochs=2,
                           **({"loss__warmup": 0} if loss in ("dkd", "cakd") else {}), **options)
    if loss == "tfkd":
        X = X["X"]
    counted = []
    original = graph.CapturedStep.run

    def run(self, **fit_params):
        if self.graph is None or counted:
            return original(self, **fit_params)
        result = []
        counted.append(cuda_kernels(lambda: result.append(original(self, **fit_params))))
        return result[0]

    graph.CapturedStep.run = run
    try:
        clf.fit(X, y)
    finally:
        graph.CapturedStep.run = original
    return counted[0] if counted else "—"


def loss_table(device):
    import ops

    lines = ["| forward + backward, batch 256 | plain KL | " + " | ".join(ops.LOSSES) + " |",
             "|---" * (len(ops.LOSSES) + 2) + "|"]
    for n_classes in (100, 1000):
        kl = ops.reference_ops("kl", n_classes).kernels
        counts = [ops.loss_ops(name, n_classes).kernels for name in ops.LOSSES]
        lines.append(f"| C={n_classes}: ops (= kernels), vs KL | {kl} | "
                     + " | ".join(f"{c} ({c / kl:.2f}x)" for c in counts) + " |")
        counts = [ops.loss_ops(name, n_classes, compiled=True).kernels for name in ops.LOSSES]
        lines.append(f"| C={n_classes}, compiled: Inductor's CPU kernels, vs KL | {kl} | "
                     + " | ".join(f"{c} ({c / kl:.2f}x)" for c in counts) + " |")
        if torch.device(device).type == "cuda":
            kl_us = loss_us("kl", n_classes, device)
            for compiled in (False, True):
                ratios = [f"{loss_us(n, n_classes, device, compiled=compiled) / kl_us:.2f}x"
                          for n in ops.LOSSES]
                lines.append(f"| C={n_classes}{', compiled' if compiled else ''}: µs, vs KL | {kl_us:.0f} | "
                             + " | ".join(ratios) + " |")
            kernels = [loss_cuda_kernels(n, n_classes, device, compiled=True) for n in ops.LOSSES]
            kl_kernels = loss_cuda_kernels("kl", n_classes, device)
            lines.append(f"| C={n_classes}, compiled: CUDA kernels (profiler) | {kl_kernels} | "
                         + " | ".join(map(str, kernels)) + " |")
    return lines


def loss_step(name, n_classes, device, batch=256, compiled=False):
    """One forward + backward of the loss ``name`` (``"kl"``: plain KL), warmed up (compiled first)."""
    import ops

    from skd.losses import make_loss
    from skd.losses.compiled import loss_terms

    student = torch.randn(batch, n_classes, device=device, requires_grad=True)
    teacher = torch.randn(batch, n_classes, device=device) * 3
    y = torch.randint(0, n_classes, (batch,), device=device)
    loss = None if name == "kl" else make_loss(name, {})
    state = None if loss is None else ops._state(loss, device)

    def step():
        if loss is None:
            value = TEMPERATURE**2 * F.kl_div(F.log_softmax(student / TEMPERATURE, 1),
                                              F.log_softmax(teacher / TEMPERATURE, 1),
                                              log_target=True, reduction="batchmean")
        else:
            given = teacher if loss.capabilities.teacher else None
            terms = loss_terms(loss, student, given, y, state, compiled)
            value = sum(terms.values())
        value.backward()

    for _ in range(10):
        step()
    sync(device)
    return step


def loss_cuda_kernels(name, n_classes, device, compiled=False):
    return cuda_kernels(loss_step(name, n_classes, device, compiled=compiled))


def loss_us(name, n_classes, device, calls=200, compiled=False):
    step = loss_step(name, n_classes, device, compiled=compiled)
    start = time.perf_counter()
    for _ in range(calls):
        step()
    sync(device)
    return (time.perf_counter() - start) / calls * 1e6


def mnist_bench_seconds():
    import subprocess
    import sys

    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "skd", "bench", "--dataset", "mnist"], check=True)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", default="mlp:32,mlp:256,mlp:2048,cnn:128")
    parser.add_argument("--mnist", action="store_true", help="also time the full-MNIST `skd bench` (CUDA)")
    parser.add_argument("--skip-steps", action="store_true", help="skip the µs-per-step table")
    add_write_flag(parser)
    args = parser.parse_args(argv)
    import ops

    ops.profile_compiled_kernels()  # before this process compiles anything
    on_cuda = torch.device(args.device).type == "cuda"
    device_name = torch.cuda.get_device_name() if on_cuda else "CPU"
    lines = [f"`python benchmarks/gpu.py` on {device_name} (torch {torch.__version__}, "
             f"{time.strftime('%Y-%m-%d')}; timings are medians of {args.repeats})", ""]
    skipped = []
    if not args.skip_steps:
        lines += step_table(args) + [""]
    lines += kernel_table(args.device) + [""]
    if on_cuda:
        lines += syncs_table(args.device) + [""]
    else:
        skipped += ["CUDA kernels from the profiler", "host syncs per epoch"]
    lines += captures_table(args.device) + [""]
    lines += loss_table(args.device) + [""]
    if args.mnist and on_cuda:
        lines.append(f"Full-MNIST `skd bench` (`python -m skd bench --dataset mnist`): "
                     f"{mnist_bench_seconds():.0f} s (target < 60 s).")
    elif args.mnist:
        skipped.append("the full-MNIST bench (CUDA only here)")
    if not on_cuda:
        skipped = ["the hand graph and skd graph columns"] + skipped
        lines.append("No CUDA device: skipped " + ", ".join(skipped) + ".")
    table = "\n".join(lines)
    print("\n" + table)
    doc = ROOT / "docs" / "gpu.md" if args.write else None
    print(f"saved to {update_section('gpu-steps', table, write=args.write, doc=doc)}")


if __name__ == "__main__":
    main()
