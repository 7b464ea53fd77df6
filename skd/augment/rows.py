"""View makers for any rows (MixUp) and for tabular rows (Munge, Noise)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors

from skd.augment.base import (
    ViewMaker,
    check_fraction,
    check_nonnegative,
    dense_features,
    dominant,
    partner_rows,
)
from skd.augment.counter import BETA_DRAWS, box_muller, symmetric_beta

__all__ = ["MixUp", "Munge", "Noise", "mix_rows", "munge_rows"]


def mix_rows(X_rows: torch.Tensor, partners: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """MixUp's convex combination ``lam·x + (1 - lam)·x'`` (Zhang et al., "mixup", ICLR 2018, eq. 1)."""
    lam = lam.to(X_rows.dtype)[:, None]
    return lam * X_rows + (1.0 - lam) * partners


def _feature_sd(X: torch.Tensor) -> torch.Tensor:
    """Per-feature standard deviation (0 for a constant feature, or a single row)."""
    if len(X) < 2:
        return torch.zeros(X.shape[1], dtype=X.dtype, device=X.device)
    return X.std(dim=0, correction=0)


def _feature_scale(X: torch.Tensor) -> torch.Tensor:
    """The divisor that standardizes X: the sd, with constant features given 1 (no division by 0)."""
    sd = _feature_sd(X)
    return torch.where(sd > 0, sd, torch.ones_like(sd))


class MixUp(ViewMaker):
    """MixUp views, for any data: each row mixed with a random partner row.

    ``lam ~ Beta(alpha, alpha)`` is taken as ``max(lam, 1 - lam)``, so the
    row keeps the larger share of its own view. The partner is a random row
    of the batch online, of all of X for booked views. Labels are not mixed:
    the teacher labels the view (function matching, Beyer et al., CVPR 2022).

    Parameters
    ----------
    alpha : float, default=0.2
        Beta(alpha, alpha) for ``lam`` (0.2 as in Zhang et al.'s ImageNet
        runs); 0 turns mixing off (every view is its row).
    """

    def __init__(self, alpha: float = 0.2):
        self.alpha = alpha

    def check(self, n_features: int) -> None:
        check_nonnegative(self.alpha, "alpha", "MixUp")

    def n_draws(self, n_features: int) -> int:
        return 1 + BETA_DRAWS

    def make(self, X_rows, u, pool, rows):
        lam = dominant(symmetric_beta(u[:, 1:], float(self.alpha)))
        return mix_rows(X_rows, partner_rows(u[:, 0], pool), lam)


def munge_rows(X_rows: torch.Tensor, neighbours: torch.Tensor, swap: torch.Tensor, normals: torch.Tensor,
               s: float) -> torch.Tensor:
    """MUNGE's rule for continuous attributes (Buciluă, Caruana and Niculescu-Mizil, KDD 2006, Algorithm 1).

    Where ``swap`` holds (probability p per attribute), the attribute is
    drawn from a normal centred on the nearest neighbour's value with
    standard deviation ``|x_a - x'_a| / s`` (the paper's ``norm(e'_a, sd)``,
    ``sd = |e_a - e'_a| / s``); elsewhere it is kept. ``s = inf`` swaps the
    values exactly.
    """
    spread = (X_rows - neighbours).abs() / s
    return torch.where(swap, neighbours + normals.to(X_rows.dtype) * spread, X_rows)


class Munge(ViewMaker):
    """MUNGE views of tabular rows: attributes swapped with the nearest neighbour's, and blurred.

    Buciluă, Caruana and Niculescu-Mizil, "Model compression", KDD 2006,
    Algorithm 1 (continuous attributes; :func:`munge_rows`). The nearest
    neighbour of each training row (Euclidean, in standardized units,
    itself excluded) is found once in :meth:`fit`; online, within the batch.
    Unlike the paper's sequential pass, which also rewrites the neighbour,
    each view depends only on its own row and its neighbour's original
    values, so that it can be regenerated from (seed, row, view). Views stay
    near the data, which suits teachers (trees) that label points off the
    data's manifold badly.

    Parameters
    ----------
    p : float, default=0.5
        Probability that an attribute is swapped, in [0, 1].
    s : float, default=1.0
        The paper's local variance parameter: a swapped attribute is drawn
        with standard deviation ``|x - x_neighbour| / s`` (> 0; ``inf``
        swaps exactly).

    Attributes
    ----------
    neighbours_ : torch.Tensor of shape (n_rows,)
        Each training row's nearest neighbour (set by :meth:`fit`), on X's device.
    """

    def __init__(self, p: float = 0.5, s: float = 1.0):
        self.p = p
        self.s = s

    def check(self, n_features: int) -> None:
        check_fraction(self.p, "p", "Munge")
        if isinstance(self.s, bool) or not isinstance(self.s, (int, float)) or not self.s > 0:
            raise ValueError(f"s of Munge must be a number > 0 (the swapped attribute's sd is "
                             f"|x - x_neighbour| / s; s=float('inf') swaps exactly); got {self.s!r}.")

    def fit(self, X, y=None) -> Munge:
        """Find each row's nearest neighbour in X (Euclidean, standardized units, itself excluded)."""
        X = dense_features(X, "Munge.fit")
        self.check(X.shape[1])
        if len(X) < 2:
            raise ValueError(f"X of Munge.fit has {len(X)} row(s); MUNGE needs at least 2 "
                             "(a row and its neighbour).")
        standard = (X / _feature_scale(X)).detach().cpu().double().numpy()
        index = NearestNeighbors(n_neighbors=2).fit(standard).kneighbors(standard, return_distance=False)
        own = index[:, 0] == np.arange(len(X))  # duplicates may list another row first
        self.neighbours_ = torch.as_tensor(np.where(own, index[:, 1], index[:, 0]), device=X.device)
        return self

    def n_draws(self, n_features: int) -> int:
        return 3 * n_features

    def views(self, X, rows, view_ids, seed: int) -> torch.Tensor:
        X = dense_features(X, "Munge.views")
        self.check(X.shape[1])
        if getattr(self, "neighbours_", None) is None:
            raise ValueError("Munge.views needs the training rows' neighbours: call maker.fit(X) first, "
                             "with the X whose views you want.")
        if len(X) != len(self.neighbours_):
            raise ValueError(f"X of Munge.views has {len(X)} rows, but Munge was fitted on "
                             f"{len(self.neighbours_)}: fit it on this X first.")
        return super().views(X, rows, view_ids, seed)

    def make(self, X_rows, u, pool, rows):
        n_features = X_rows.shape[1]
        if rows is None:  # online: the nearest other row of the batch
            standard = X_rows / _feature_scale(X_rows)
            distances = torch.cdist(standard, standard)
            distances.fill_diagonal_(float("inf"))
            neighbours = X_rows.index_select(0, distances.argmin(dim=1))
        else:
            neighbours = pool.index_select(0, self.neighbours_.to(pool.device).index_select(0, rows))
        swap = u[:, :n_features] < self.p
        normals = box_muller(u[:, n_features:2 * n_features], u[:, 2 * n_features:])
        return munge_rows(X_rows, neighbours, swap, normals, float(self.s))


class Noise(ViewMaker):
    """Gaussian noise of ``scale`` standard deviations per feature.

    The per-feature standard deviation is measured in :meth:`fit`; an
    unfitted maker measures it on the batch (online) or on X (booked
    views). A constant feature (sd 0) stays as it is. Noise moves rows off
    the data's manifold, where tree teachers label badly: keep ``scale``
    small for them, and compare with the student alone.

    Parameters
    ----------
    scale : float, default=0.1
        The noise's standard deviation, in standard deviations of each feature (>= 0).

    Attributes
    ----------
    scale_ : torch.Tensor of shape (n_features,)
        Each feature's standard deviation (set by :meth:`fit`).
    """

    def __init__(self, scale: float = 0.1):
        self.scale = scale

    def check(self, n_features: int) -> None:
        check_nonnegative(self.scale, "scale", "Noise")
        fitted = getattr(self, "scale_", None)
        if fitted is not None and len(fitted) != n_features:
            raise ValueError(f"Noise was fitted on {len(fitted)} features, but X has {n_features}: "
                             "fit it on this X.")

    def fit(self, X, y=None) -> Noise:
        """Measure each feature's standard deviation in X."""
        X = dense_features(X, "Noise.fit")
        check_nonnegative(self.scale, "scale", "Noise")
        self.scale_ = _feature_sd(X)
        return self

    def n_draws(self, n_features: int) -> int:
        return 2 * n_features

    def make(self, X_rows, u, pool, rows):
        n_features = X_rows.shape[1]
        fitted = getattr(self, "scale_", None)
        sd = _feature_sd(pool) if fitted is None else fitted.to(device=pool.device, dtype=pool.dtype)
        normals = box_muller(u[:, :n_features], u[:, n_features:]).to(X_rows.dtype)
        return X_rows + float(self.scale) * sd * normals
