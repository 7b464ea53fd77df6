"""Logit standardization (Sun et al., CVPR 2024): a z-score of each row of logits."""

from __future__ import annotations

import torch

__all__ = ["STANDARDIZE_EPS", "standardize_logits"]

#: Added to the standard deviation, as in the released ``normalize`` (``1e-7 + stdv``).
STANDARDIZE_EPS = 1e-7


def standardize_logits(logits: torch.Tensor, eps: float = STANDARDIZE_EPS) -> torch.Tensor:
    """Z-score each row of logits over its classes.

    Sun, Ren, Li, Wang & Cao (2024), "Logit Standardization in Knowledge
    Distillation", CVPR (the Z-score ``Z(z) = (z - mean(z)) /
    std(z)``), as the released code computes it
    (sunshangquan/logit-standardization-KD, ``mdistiller/distillers/KD.py``,
    ``normalize``)::

        mean = logit.mean(dim=-1, keepdims=True)
        stdv = logit.std(dim=-1, keepdims=True)      # torch's default correction (n - 1)
        return (logit - mean) / (1e-7 + stdv)

    The caller then softens with its base temperature (the released configs
    use 2, with ``kd_weight`` 9 for KD; see ``docs/methods.md``).

    The same operations, so values and gradients equal the released ones. A
    constant row (e.g. a zero-initialised last layer) maps to zeros with a
    finite gradient: ``torch.std``'s backward is 0 where the deviation is 0,
    and the ``1e-7`` keeps the division finite (the gradient there is large,
    ``1 / 1e-7`` per unit of spread, as in the released code).

    Parameters
    ----------
    logits : Tensor of shape (batch, n_classes)
        ``n_classes >= 2`` (the unbiased variance of one value is undefined).
    eps : float, default=1e-7
        Added to the standard deviation.

    Returns
    -------
    Tensor of the same shape: each row has mean 0 and standard deviation
    ``std / (std + eps)`` (1 up to ``eps``).
    """
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True)
    return (logits - mean) / (eps + std)
