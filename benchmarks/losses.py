"""Forward + backward time of every loss against plain KL, on the CPU.

    python benchmarks/losses.py [--repeats 30] [--no-write]

Times the loss callbacks' distillation terms (all terms but CE) at
B in {64, 256} and C in {10, 100, 1000}, median of repeats, side by side in one
process, and prints the ratio to plain ``T**2 * KL`` (``F.kl_div``, batch mean).
Writes the table into docs/benchmarks.md unless --no-write.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from skd.losses import CAKD, DIST, DKD, KD, R2KD, TfKD

LOSSES = {"kd": KD, "dkd": DKD, "cakd": CAKD, "r2kd": R2KD, "dist": DIST, "tfkd": TfKD}
TARGETS = {"dkd": 1.3, "cakd": 2.0, "dist": 2.0, "r2kd": 4.0}


def plain_kl(student, teacher, y, temperature=4.0):
    return F.kl_div(
        F.log_softmax(student / temperature, 1), F.softmax(teacher / temperature, 1), reduction="batchmean"
    ) * temperature**2


def median_seconds(fn, student, teacher, y, repeats):
    times = []
    for i in range(repeats + 3):
        z = student.detach().requires_grad_(True)
        start = time.perf_counter()
        out = fn(z, teacher, y)
        out.backward()
        elapsed = time.perf_counter() - start
        if i >= 3:  # warm-up
            times.append(elapsed)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    callbacks = {name: cls().initialize() for name, cls in LOSSES.items()}
    for loss in callbacks.values():
        loss.cross_entropy = lambda student_logits, y: student_logits.new_zeros(())
    rows = []
    for batch in (64, 256):
        for n_classes in (10, 100, 1000):
            student = torch.randn(batch, n_classes) * 3
            teacher = torch.randn(batch, n_classes) * 3
            y = torch.randint(0, n_classes, (batch,))
            base = median_seconds(plain_kl, student, teacher, y, args.repeats)
            ratios = {}
            for name, loss in callbacks.items():
                def soft_terms(s, t, y, loss=loss):
                    return sum(v for k, v in loss(s, t, y).items() if k != "ce")

                seconds = median_seconds(soft_terms, student, teacher, y, args.repeats)
                ratios[name] = seconds / base
            rows.append((batch, n_classes, base, ratios))
    header = "| B | C | plain KL (µs) | " + " | ".join(LOSSES) + " |"
    lines = [
        f"Command: `python benchmarks/losses.py` (median of {args.repeats} forward+backward passes, "
        f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}). Ratios are to plain "
        "`T² · KL`; each loss's time covers its distillation terms (CE, common to all, is left out).",
        "",
        header,
        "|" + "---|" * (3 + len(LOSSES)),
    ]
    for batch, n_classes, base, ratios in rows:
        cells = " | ".join(f"{ratios[name]:.2f}×" for name in LOSSES)
        lines.append(f"| {batch} | {n_classes} | {base * 1e6:.0f} | {cells} |")
    target_row = next(r for r in rows if r[0] == 256 and r[1] == 100)
    verdicts = [
        f"{name} {target_row[3][name]:.2f}× (target ≤ {limit}×: {'met' if target_row[3][name] <= limit else 'missed'})"
        for name, limit in TARGETS.items()
    ]
    lines += ["", "Targets at B=256, C=100: " + "; ".join(verdicts) + "."]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        from _report import update_section

        update_section("losses", table)


if __name__ == "__main__":
    main()
