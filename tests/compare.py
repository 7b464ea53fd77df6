"""Comparing two fits that should have trained alike (the captured step against the eager one)."""

import numpy as np
import torch


def assert_same_fit(a, b, optimizer: str) -> None:
    """``a`` and ``b`` trained alike: the same epoch losses and, with SGD, the same weights.

    The captured step and the eager step do the same arithmetic in another order
    of kernels (cuBLAS picks algorithms per stream and per capture), so they agree
    to float32 rounding, not bitwise. SGD carries such differences along
    linearly: the weights must agree closely. Adam divides by ``sqrt(v)``, so
    a parameter whose gradient is near zero gets a full ``lr`` step whose sign
    rounding can flip; over a few epochs those weights drift apart while the
    loss does not. With Adam the epoch losses are compared.
    """
    losses_a, losses_b = (np.array(clf.history[:, "train_loss"]) for clf in (a, b))
    np.testing.assert_allclose(losses_a, losses_b, rtol=1e-4 if optimizer == "sgd" else 2e-3)
    if optimizer == "sgd":
        for p, q in zip(a.module_.parameters(), b.module_.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=2e-5)


OPTIMIZERS = {
    "sgd": dict(optimizer=torch.optim.SGD, optimizer__momentum=0.9, lr=0.05),
    "adam": dict(optimizer=torch.optim.Adam, lr=1e-2),
}
