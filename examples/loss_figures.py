"""Figures for "The losses, explained": how the KL splits as the teacher grows confident.

Run:  python examples/loss_figures.py           (writes bench-out/img/kl_split.png)
      python examples/loss_figures.py --write   (refreshes the tracked docs/img/kl_split.png)

A 10-class example: a fixed student, and a teacher whose target logit rises
so that its confidence p_t goes from 0.1 to 0.999. Left: DKD's split
KL = TCKD + (1 - p_t) NCKD. Right: CAKD's split with S = {t} ∪ the teacher's
top-4 non-target classes, KL = BCD + P_S SCD + P_W WCD. The teacher-mass
factors shrink the non-target and weak-group terms as the teacher grows
confident, which is why DKD and CAKD replace them with fixed weights.
"""

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from skd.losses import functional as Fn

#: SKD_QUICK=1 cuts epochs so that the script runs in seconds (the tests use it).
QUICK = os.environ.get("SKD_QUICK") == "1"


def figure_path(name: str) -> Path:
    """Where a figure goes: ``bench-out/img`` here (or ``$SKD_FIGURES_DIR``); with ``--write``, inside
    skd's repository, the tracked ``docs/img`` next to this script's folder."""
    if "--write" in sys.argv[1:] and not QUICK:
        folder = Path(__file__).resolve().parent.parent / "docs" / "img"
    else:
        folder = Path(os.environ.get("SKD_FIGURES_DIR", Path("bench-out") / "img"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def main():
    generator = torch.Generator().manual_seed(0)
    n_classes, temperature = 10, 1.0
    base = torch.randn(1, n_classes, generator=generator, dtype=torch.float64)
    student = torch.randn(1, n_classes, generator=generator, dtype=torch.float64)
    target = torch.tensor([0])
    lifts = np.linspace(-2, 10, 120)
    rows = []
    for lift in lifts:
        teacher = base.clone()
        teacher[0, 0] = base[0, 1:].max() + lift
        dkd = Fn.dkd_terms(student, teacher, target, temperature)
        mask = Fn.strong_class_mask(teacher, target, strong_k=4)
        cakd = Fn.cakd_terms(student, teacher, mask, temperature)
        rows.append([
            dkd.teacher_target_prob.item(), dkd.tckd.item(),
            ((1 - dkd.teacher_target_prob) * dkd.nckd).item(),
            cakd.bcd.item(), (cakd.mass_strong * cakd.scd).item(), (cakd.mass_weak * cakd.wcd).item(),
            Fn.kd_divergence(student, teacher, temperature).item(),
        ])
    rows = np.array(rows)
    confidence = rows[:, 0]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    left.stackplot(confidence, rows[:, 1], rows[:, 2], labels=["TCKD", "(1 − p_t) · NCKD"], alpha=0.8)
    left.plot(confidence, rows[:, 6], "k--", label="KL")
    left.set_title("DKD: KL = TCKD + (1 − p_t) NCKD")
    right.stackplot(confidence, rows[:, 3], rows[:, 4], rows[:, 5],
                    labels=["BCD", "P_S · SCD", "P_W · WCD"], alpha=0.8)
    right.plot(confidence, rows[:, 6], "k--", label="KL")
    right.set_title("CAKD (k = 4): KL = BCD + P_S SCD + P_W WCD")
    for ax in (left, right):
        ax.set_xlabel("teacher confidence p_t")
        ax.legend(loc="upper left", fontsize=8)
    left.set_ylabel("divergence (nats)")
    fig.tight_layout()
    path = figure_path("kl_split.png")
    fig.savefig(path, dpi=110)
    assert np.allclose(rows[:, 1] + rows[:, 2], rows[:, 6]) and np.allclose(rows[:, 3:6].sum(1), rows[:, 6])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
