"""How fast is one distillation step? skd against the loops a user would write.

    python benchmarks/gpu.py [--device cuda] [--steps 300] [--write]

Per training step (µs, median of ``--repeats`` timed runs of ``--steps``
steps after a warm-up), side by side in one process, for an MLP student
(100 -> 128 -> 10, KD, Adam, T=4) on tabular data (50k x 100, teacher logits
precomputed) at batch 32, 256 and 2048, and for a CNN student (SmallCNN
(8, 16) on 28 x 28 inputs) at batch 128:

  hand eager   the PyTorch loop a user writes (data and logits on the device);
  hand graph   the same step captured once in a CUDA graph and replayed (CUDA only);
  skorch CE    stock ``NeuralNetClassifier`` with cross-entropy only;
  skd eager    ``DistillationClassifier(trainer__step_mode="eager")`` with the book;
  skd graph    ``DistillationClassifier(trainer__step_mode="auto")``: the captured step on CUDA.

skd and skorch are timed as whole ``fit`` calls of ``max_epochs`` epochs,
divided by the number of steps (so they include their per-epoch work). It
prints the table and the ratios the project's goals are stated in; with
``--write`` it replaces its section of docs/benchmarks.md.
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

from _report import add_write_flag, update_section

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


def fit_time(make_net, X, y, batch_size, device):
    """µs per step of a whole fit (epochs sized to about ``steps``)."""
    net = make_net()
    sync(device)
    start = time.perf_counter()
    net.fit(X, y)
    sync(device)
    steps = net.max_epochs * -(-len(y) // batch_size)
    return (time.perf_counter() - start) / steps * 1e6, net


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
        variants["skd graph"] = lambda: fit_time(lambda: DistillationClassifier(
            module, loss="kd", trainer__step_mode="auto", **module_args, **common),
            book, y_np, batch_size, device)[0]
    times = {name: [] for name in variants}
    for _ in range(args.repeats):  # interleaved, so that drifts hit every variant alike
        for name, run in variants.items():
            times[name].append(run())
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", default="mlp:32,mlp:256,mlp:2048,cnn:128")
    add_write_flag(parser)
    args = parser.parse_args(argv)
    names = ["hand eager", "hand graph", "skorch CE", "skd eager", "skd graph"]
    lines = [f"µs per training step on {torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'} "
             f"(torch {torch.__version__}; median of {args.repeats})", "",
             "| case | " + " | ".join(names) + " | skd eager / hand eager | hand graph / skd graph |",
             "|---" * (len(names) + 3) + "|"]
    for case in args.cases.split(","):
        kind, batch = case.split(":")
        result = measure(kind, int(batch), args)
        cells = [f"{result[n]:.0f}" if n in result else "—" for n in names]
        eager_ratio = result["skd eager"] / result["hand eager"]
        graph_ratio = "—"
        if "skd graph" in result:
            graph_ratio = f"{result['hand graph'] / result['skd graph']:.2f}"
        cells_text = " | ".join(cells)
        lines.append(f"| {kind} batch {batch} | {cells_text} | {eager_ratio:.2f} | {graph_ratio} |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    print("\n" + table)
    print(f"saved to {update_section('gpu-steps', table, write=args.write)}")


if __name__ == "__main__":
    main()
