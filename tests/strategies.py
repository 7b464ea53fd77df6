"""Hypothesis strategies for logits: random, extreme (±1e4), tied, C from 2 to 200."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

EXTREME = 1e4


@st.composite
def logits_pairs(draw, min_classes=2, max_classes=200, max_batch=16, extremes=True, ties=True):
    """(student_logits, teacher_logits, target) as float64 tensors.

    Rows mix ordinary values, ties (repeated values) and, optionally, extreme
    magnitudes of ±1e4; batches can have a single sample.
    """
    n_classes = draw(st.integers(min_classes, max_classes))
    batch = draw(st.integers(1, max_batch))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([0.1, 1.0, 5.0, 30.0]))
    student = rng.normal(0.0, scale, size=(batch, n_classes))
    teacher = rng.normal(0.0, scale, size=(batch, n_classes))
    if ties and draw(st.booleans()):
        # quantise so that many entries are equal
        student = np.round(student)
        teacher = np.round(teacher)
    if extremes and draw(st.booleans()):
        mask = rng.random(size=(batch, n_classes)) < 0.2
        signs = rng.choice([-EXTREME, EXTREME], size=(batch, n_classes))
        which = draw(st.sampled_from(["student", "teacher", "both"]))
        if which in ("student", "both"):
            student = np.where(mask, signs, student)
        if which in ("teacher", "both"):
            teacher = np.where(mask, -signs, teacher)
    target = rng.integers(0, n_classes, size=batch)
    return (
        torch.tensor(student, dtype=torch.float64),
        torch.tensor(teacher, dtype=torch.float64),
        torch.tensor(target, dtype=torch.long),
    )


temperatures = st.sampled_from([0.1, 0.5, 1.0, 2.0, 4.0, 8.0])


@st.composite
def untied_rows(draw, min_len=2, max_len=60, max_rows=6):
    """A float64 matrix whose rows have distinct values (no ties)."""
    length = draw(st.integers(min_len, max_len))
    rows = draw(st.integers(1, max_rows))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    base = np.stack([rng.permutation(length) for _ in range(rows)]).astype(np.float64)
    return torch.tensor(base + rng.uniform(-0.3, 0.3, size=base.shape))


#: Shapes of a pair of feature maps, ``(batch, channels, side, teacher_channels, seed)``, for the hint terms.
feature_maps = st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5), st.integers(1, 4),
                         st.integers(0, 2**31 - 1))
