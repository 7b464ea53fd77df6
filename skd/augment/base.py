"""The view maker's two faces: an online batch augmentation and a booked view generator."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse
import torch
from sklearn.base import BaseEstimator

from skd.augment.counter import check_keys, counter_uniforms

__all__ = ["ViewMaker", "check_fraction", "check_image_shape", "check_nonnegative", "dense_features"]


def dense_features(X, owner: str) -> torch.Tensor:
    """``X`` as a dense floating tensor (numpy is wrapped, not copied); sparse X is refused."""
    if scipy.sparse.issparse(X) or (isinstance(X, torch.Tensor) and X.layout != torch.strided):
        raise TypeError(f"X of {owner} is sparse; view makers need dense features (a view rotates, mixes "
                        "or perturbs every feature). Convert it with X.toarray() (or X.to_dense()), or "
                        "use augment=None.")
    X = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X)
    if X.ndim != 2:
        raise ValueError(f"X of {owner} must be 2-d (rows, features); got shape {tuple(X.shape)}.")
    return X if X.dtype.is_floating_point else X.float()


def check_fraction(value, name: str, owner: str) -> None:
    """Refuse a probability or fraction outside [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} of {owner} must be a number in [0, 1]; got {value!r}.")


def check_nonnegative(value, name: str, owner: str) -> None:
    """Refuse a negative (or non-numeric, or NaN) scale."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0.0:
        raise ValueError(f"{name} of {owner} must be a number >= 0; got {value!r}.")


def check_image_shape(image_shape, n_features: int, owner: str) -> tuple[int, int, int]:
    """``image_shape`` as ``(C, H, W)``, refused unless it holds exactly ``n_features`` values."""
    if (not isinstance(image_shape, Sequence) or len(image_shape) != 3
            or not all(isinstance(n, (int, np.integer)) and n > 0 for n in image_shape)):
        raise ValueError(f"image_shape of {owner} must be (channels, height, width), three positive ints, "
                         f"e.g. image_shape=(1, 28, 28) for MNIST; got {image_shape!r}.")
    channels, height, width = (int(n) for n in image_shape)
    if channels * height * width != n_features:
        raise ValueError(f"image_shape={tuple(image_shape)} of {owner} holds {channels * height * width} "
                         f"values, but X has {n_features} features per row: give the shape of one image, "
                         "whose product is the number of features.")
    return channels, height, width


class ViewMaker(BaseEstimator):
    """Base of the view makers: one random view per row, drawn from uniforms.

    A subclass declares how many uniforms a view consumes (:meth:`n_draws`)
    and turns them into views (:meth:`make`). The base draws them in two
    ways:

    - ``maker(X_batch, y_batch)``: online augmentation, as
      ``DistillationClassifier(augment=maker)``; fresh uniforms from torch's
      generator on the batch's device (so a captured CUDA step replays new
      views), partners drawn from the batch.
    - ``maker.views(X, rows, view_ids, seed)``: booked views; the uniforms
      come from :func:`skd.augment.counter.counter_uniforms`, so a view
      depends only on (seed, row, view number), partners are drawn from all
      of ``X``.

    Parameters are stored by ``__init__`` and checked when the maker is
    used (scikit-learn's convention, so ``set_params`` and ``clone`` work).
    """

    def n_draws(self, n_features: int) -> int:
        """Uniforms one view of a row with ``n_features`` features consumes."""
        raise NotImplementedError

    def make(self, X_rows: torch.Tensor, u: torch.Tensor, pool: torch.Tensor,
             rows: torch.Tensor | None) -> torch.Tensor:
        """The views of ``X_rows`` (one per row) from the uniforms ``u`` (rows, n_draws).

        ``pool`` holds the rows partners are drawn from (all of X for booked
        views, the batch online); ``rows`` are the indices of ``X_rows`` in
        ``pool`` for booked views, None online (then ``X_rows`` is ``pool``).
        """
        raise NotImplementedError

    def check(self, n_features: int) -> None:
        """Refuse bad settings for data with ``n_features`` features (a clear error naming the parameter)."""

    def fit(self, X, y=None) -> ViewMaker:
        """Check the settings against X; makers that need statistics of X measure them here."""
        self.check(dense_features(X, f"{type(self).__name__}.fit").shape[1])
        return self

    def views(self, X, rows, view_ids, seed: int) -> torch.Tensor:
        """Views ``view_ids`` of rows ``rows`` of ``X``, reproducible from (seed, row, view) alone.

        Parameters
        ----------
        X : tensor or array of shape (n_rows, n_features)
            The training features (on the device the views are made on).
        rows : int or integer tensor
            Indices into ``X``.
        view_ids : int or integer tensor
            View numbers (>= 0), broadcast against ``rows``.
        seed : int
            The fit's seed, in [0, 2**63).

        Returns
        -------
        torch.Tensor
            Shape ``broadcast(rows, view_ids).shape + (n_features,)``, ``X``'s dtype and device.
        """
        X = dense_features(X, f"{type(self).__name__}.views")
        self.check(X.shape[1])
        owner = f"{type(self).__name__}.views"
        rows = check_keys(rows, f"rows of {owner}", X.device)
        view_ids = check_keys(view_ids, f"view_ids of {owner}", X.device)
        if rows.numel() and bool((rows >= len(X)).any()):
            raise ValueError(f"rows of {owner} must be indices into X, in [0, {len(X)}); some are outside.")
        shape = torch.broadcast_shapes(rows.shape, view_ids.shape)
        flat_rows, flat_views = (keys.expand(shape).reshape(-1) for keys in (rows, view_ids))
        return self.view_batch(X, flat_rows, flat_views, seed).reshape(*shape, X.shape[1])

    def view_batch(self, X: torch.Tensor, rows: torch.Tensor, view_ids: torch.Tensor,
                   seed: int) -> torch.Tensor:
        """:meth:`views` without checks: for the training step.

        ``rows`` and ``view_ids`` are 1-d int64 tensors of one length on
        ``X``'s device, already checked; no value is read back to the host,
        so the call can be captured in a CUDA graph. Returns (len(rows), n_features).
        """
        u = counter_uniforms(seed, rows, view_ids, self.n_draws(X.shape[1]), checked=False)
        return self.make(X.index_select(0, rows), u, X, rows)

    def __call__(self, X: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """A fresh random view of every row of the batch ``X`` (``augment=maker``)."""
        X = dense_features(X, type(self).__name__)
        self.check(X.shape[1])
        u = torch.rand(len(X), self.n_draws(X.shape[1]), device=X.device)
        return self.make(X, u, X, None)


def partner_rows(u: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """Rows of ``pool`` picked by uniforms ``u`` (one partner per uniform)."""
    index = (u * len(pool)).long().clamp_(max=len(pool) - 1)
    return pool.index_select(0, index)


def dominant(lam: torch.Tensor) -> torch.Tensor:
    """``max(lam, 1 - lam)``: the row keeps the larger share of its view."""
    return torch.maximum(lam, 1.0 - lam)
