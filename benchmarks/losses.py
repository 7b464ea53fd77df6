"""Forward + backward time of every loss's distillation terms against plain KL.

    PYTHONPATH=. python benchmarks/losses.py [--device cpu|cuda|auto] [--repeats 20] [--budget 4] [--write]

(``PYTHONPATH=.`` times this checkout's ``skd``, not an installed one.)

At (B, C) in {(256, 100), (256, 1000), (1024, 1000)}, each loss callback's
distillation terms (every term but CE, which all share) and plain
``T**2 * KL`` (``F.kl_div``, batch mean) are timed forward + backward in one
process, interleaved round by round so that drift hits all of them alike; the
table gives the median time of plain KL and each loss's median ratio to it.
The plug-ins of the base class (``+LS``: ``standardize=True``; ``+extract``:
``extract=1``) are timed through the loss's call, whose forward also computes
the CE (its backward is left out).
A case stops early once it has spent ``--budget`` seconds (at least 3
rounds). Nothing is written unless ``--write`` (then docs/benchmarks.md,
section "losses").
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from skd.bench import machine
from skd.losses import CAKD, CTKD, DIST, DKD, KD, NKD, R2KD, WTTM, SelectiveKD, SelfKnowledgeLS, TfKD, TopKKD

from _report import add_write_flag, update_section

LOSSES = {"kd": KD, "dkd": DKD, "cakd": CAKD, "r2kd": R2KD, "dist": DIST, "tfkd": TfKD, "wttm": WTTM,
          "nkd": NKD, "selective_kd": SelectiveKD, "skls": SelfKnowledgeLS, "kd_topk": TopKKD, "ctkd": CTKD}
#: The base class's plug-ins, timed through the loss's call: (loss class, parameters).
PLUGINS = {"kd+LS": (KD, {"standardize": True}), "kd+extract": (KD, {"extract": 1.0}),
           "dkd+extract": (DKD, {"extract": 1.0})}
SHAPES = ((256, 100), (256, 1000), (1024, 1000))
WARMUP_ROUNDS = 2


def plain_kl(student, teacher, y, temperature=4.0):
    log_student = F.log_softmax(student / temperature, 1)
    return F.kl_div(log_student, F.softmax(teacher / temperature, 1), reduction="batchmean") * temperature**2


def soft_terms_of(loss):
    # CE is common to every loss (the base class adds it): time the loss's own terms only
    temperature = float(getattr(loss, "temperature", 1.0) or 1.0)

    def soft_terms(student, teacher, y):
        return sum(loss.compute_terms(student, teacher, y, temperature).values())

    return soft_terms


def call_terms_of(loss):
    """The loss's terms but CE through its call, so that the base class's plug-ins run."""

    def soft_terms(student, teacher, y):
        return sum(value for name, value in loss(student, teacher, y).items() if name != "ce")

    return soft_terms


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn, student, teacher, y, device):
    z = student.detach().requires_grad_(True)
    _sync(device)
    start = time.perf_counter()
    fn(z, teacher, y).backward()
    _sync(device)
    return time.perf_counter() - start


def measure(fns, student, teacher, y, device, repeats, budget):
    """Median seconds per function, measured round-robin."""
    times = {name: [] for name in fns}
    spent = 0.0
    for round_ in range(repeats + WARMUP_ROUNDS):
        for name, fn in fns.items():
            elapsed = time_once(fn, student, teacher, y, device)
            spent += elapsed
            if round_ >= WARMUP_ROUNDS:
                times[name].append(elapsed)
        if round_ >= WARMUP_ROUNDS + 2 and spent > budget:
            break
    return {name: statistics.median(values) for name, values in times.items()}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... or auto (default)")
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds per case (at most)")
    parser.add_argument("--budget", type=float, default=4.0, help="seconds per case before stopping early")
    add_write_flag(parser)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    fns = {"plain": plain_kl}
    for name, cls in LOSSES.items():
        fns[name] = soft_terms_of(cls().initialize())
    for name, (cls, params) in PLUGINS.items():
        fns[name] = call_terms_of(cls(**params).initialize())
    rows = []
    load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    for batch, n_classes in SHAPES:
        student = torch.randn(batch, n_classes, device=device) * 3
        teacher = torch.randn(batch, n_classes, device=device) * 3
        y = torch.randint(0, n_classes, (batch,), device=device)
        seconds = measure(fns, student, teacher, y, device, args.repeats, args.budget)
        rows.append((batch, n_classes, seconds))
    where = f"{device.type}, {torch.get_num_threads()} threads" if device.type == "cpu" else str(device)
    lines = [
        (f"Command: `python benchmarks/losses.py --device {args.device}` (median of up to {args.repeats} "
        f"interleaved forward+backward rounds, {where}, torch {torch.__version__}). "
        "Ratios are to plain `T² · KL` timed in the same rounds; each loss's time covers "
        "its distillation terms (CE is left out; the plug-in rows' forward includes it)."),
        "",
        machine(load_at_start),
        "",
        "| loss | " + " | ".join(f"B={batch}, C={n_classes}" for batch, n_classes, _ in rows) + " |",
        "|" + "---|" * (1 + len(rows)),
        "| plain KL (µs) | " + " | ".join(f"{seconds['plain'] * 1e6:.0f}" for *_, seconds in rows) + " |",
    ]
    for name in [*LOSSES, *PLUGINS]:
        cells = " | ".join(f"{seconds[name] / seconds['plain']:.2f}×" for *_, seconds in rows)
        lines.append(f"| {name} | {cells} |")
    table = "\n".join(lines)
    print(table)
    print(f"saved to {update_section('losses', table, write=args.write)}")


if __name__ == "__main__":
    main()
