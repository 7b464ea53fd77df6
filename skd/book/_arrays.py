"""Small conversions shared by the book modules (full and compressed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_numpy(value: Any) -> np.ndarray:
    """``value`` (a tensor on any device, an array or array-like) as a numpy array."""
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def n_rows(features: Any) -> int:
    """The number of rows of a book's features (an array, tensor, DataFrame or sequence)."""
    return features.shape[0] if hasattr(features, "shape") else len(features)
