"""View makers for images held as flat rows: per-sample affine warps and CutMix, one batched call each."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from skd.augment.base import (
    ViewMaker,
    check_fraction,
    check_image_shape,
    check_nonnegative,
    dominant,
    partner_rows,
)
from skd.augment.counter import BETA_DRAWS, symmetric_beta

__all__ = ["Affine", "CutMix", "Shift"]


def _pair(value, name: str, owner: str) -> tuple[float, float]:
    if (not isinstance(value, Sequence) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"{name} of {owner} must be a pair of numbers; got {value!r}.")
    return float(value[0]), float(value[1])


def affine_thetas(u: torch.Tensor, degrees: float, translate: tuple[float, float],
                  scale: tuple[float, float], height: int, width: int) -> torch.Tensor:
    """``affine_grid``'s (n, 2, 3) matrices from four uniforms per row: angle, x shift, y shift, scale.

    The view rotates the image by an angle uniform in ±``degrees``, scales it
    by a factor uniform in ``scale`` and shifts it by a fraction of its width
    and height uniform in ±``translate`` (torchvision's ``RandomAffine``
    conventions). ``affine_grid`` maps output to input coordinates, so the
    matrix is the inverse warp, written in pixel units and conjugated into
    the grid's [-1, 1] units (a rotation stays a rotation on non-square images).
    """
    angle = torch.deg2rad((2.0 * u[:, 0] - 1.0) * degrees)
    shift_x = (2.0 * u[:, 1] - 1.0) * translate[0] * 2.0  # grid units span 2 per image side
    shift_y = (2.0 * u[:, 2] - 1.0) * translate[1] * 2.0
    factor = scale[0] + u[:, 3] * (scale[1] - scale[0])
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    aspect = height / width
    # inverse of (rotate by angle, scale by factor) in pixel units, in grid units: D^-1 R(-angle)/factor D
    a, b = cos, sin * aspect
    c, d = -sin / aspect, cos
    tx = -(a * shift_x + b * shift_y)
    ty = -(c * shift_x + d * shift_y)
    return torch.stack([torch.stack([a, b, tx], -1), torch.stack([c, d, ty], -1)], -2)


def affine_grid(thetas: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid(thetas, (n, C, height, width), align_corners=False)``, as two broadcast products.

    The same sampling points (pixel centres, ``(2i + 1)/size - 1``) for a
    fraction of the time on the CPU, where ``F.affine_grid``'s batched matmul
    of an (n, H·W, 3) base grid dominated the cost of a view batch.
    Returns a (n, height, width, 2) view, as ``F.grid_sample`` takes it.
    """
    xs = (torch.arange(width, device=thetas.device, dtype=thetas.dtype) * 2.0 + 1.0) / width - 1.0
    ys = (torch.arange(height, device=thetas.device, dtype=thetas.dtype) * 2.0 + 1.0) / height - 1.0
    rows = thetas[:, :, :, None, None]  # (n, 2 outputs, 3 inputs, 1, 1)
    grid = rows[:, :, 0] * xs + rows[:, :, 1] * ys[:, None] + rows[:, :, 2]  # (n, 2, H, W)
    return grid.permute(0, 2, 3, 1)


class Affine(ViewMaker):
    """Per-sample random rotation, shift and scale of images held as flat rows.

    Every row gets its own angle, shift and scale; the batch's sampling grid
    is built in two broadcast products (:func:`affine_grid`) and the whole
    batch warped in one ``F.grid_sample`` call on its device (bilinear by
    default, pixels from outside the image are ``fill``). Use it as
    ``augment=Affine(image_shape=(1, 28, 28))`` with
    ``augment_mode="replace"`` (function matching: the teacher labels the
    very view the student sees), or as a booked view generator
    (:meth:`~skd.augment.base.ViewMaker.views`).

    Parameters
    ----------
    image_shape : (channels, height, width)
        The shape of one image; its product must be the number of features.
    degrees : float, default=10.0
        The angle is uniform in [-degrees, degrees].
    translate : (float, float), default=(0.1, 0.1)
        The shift is uniform in ±translate[0] of the width and ±translate[1]
        of the height, each in [0, 1].
    scale : (float, float), default=(1.0, 1.0)
        The zoom factor is uniform in [scale[0], scale[1]] (both > 0).
    fill : float, default=0.0
        The value of pixels that come from outside the image.
    interpolation : {"bilinear", "nearest"}, default="bilinear"
        How ``F.grid_sample`` reads between pixels ("nearest" is torchvision's
        default for ``RandomAffine``, and about twice as fast on the CPU).
    """

    def __init__(self, image_shape=None, degrees: float = 10.0, translate=(0.1, 0.1), scale=(1.0, 1.0),
                 fill: float = 0.0, interpolation: str = "bilinear"):
        self.image_shape = image_shape
        self.degrees = degrees
        self.translate = translate
        self.scale = scale
        self.fill = fill
        self.interpolation = interpolation

    def check(self, n_features: int) -> None:
        owner = type(self).__name__
        check_image_shape(self.image_shape, n_features, owner)
        check_nonnegative(self.degrees, "degrees", owner)
        for value in _pair(self.translate, "translate", owner):
            check_fraction(value, "translate", owner)
        low, high = _pair(self.scale, "scale", owner)
        if not 0 < low <= high:
            raise ValueError(f"scale of {owner} must be (low, high) with 0 < low <= high; "
                             f"got {self.scale!r}.")
        if isinstance(self.fill, bool) or not isinstance(self.fill, (int, float)):
            raise ValueError(f"fill of {owner} must be a number; got {self.fill!r}.")
        if self.interpolation not in ("bilinear", "nearest"):
            raise ValueError(f"interpolation of {owner} must be 'bilinear' or 'nearest'; "
                             f"got {self.interpolation!r}.")

    def n_draws(self, n_features: int) -> int:
        return 4

    def make(self, X_rows, u, pool, rows):
        channels, height, width = (int(n) for n in self.image_shape)
        images = X_rows.reshape(len(X_rows), channels, height, width)
        thetas = affine_thetas(u, float(self.degrees), _pair(self.translate, "translate", "Affine"),
                               _pair(self.scale, "scale", "Affine"), height, width).to(images.dtype)
        grid = affine_grid(thetas, height, width)
        shifted = images if self.fill == 0 else images - self.fill
        warped = F.grid_sample(shifted, grid, mode=self.interpolation, padding_mode="zeros",
                               align_corners=False)
        return (warped if self.fill == 0 else warped + self.fill).reshape(X_rows.shape)


class Shift(Affine):
    """Per-sample random shifts of images held as flat rows: :class:`Affine` without rotation or zoom.

    Parameters
    ----------
    image_shape : (channels, height, width)
        The shape of one image; its product must be the number of features.
    translate : (float, float), default=(0.1, 0.1)
        The shift is uniform in ±translate[0] of the width and ±translate[1] of the height.
    fill : float, default=0.0
        The value of pixels that come from outside the image.
    interpolation : {"bilinear", "nearest"}, default="bilinear"
        How ``F.grid_sample`` reads between pixels.
    """

    degrees = 0.0
    scale = (1.0, 1.0)

    def __init__(self, image_shape=None, translate=(0.1, 0.1), fill: float = 0.0,
                 interpolation: str = "bilinear"):
        self.image_shape = image_shape
        self.translate = translate
        self.fill = fill
        self.interpolation = interpolation


def cutmix_masks(u: torch.Tensor, lam: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Boolean (n, height, width) boxes covering at most ``1 - lam`` of each image.

    Yun et al., "CutMix", ICCV 2019, eq. (2): a box of sides
    ``floor(H·sqrt(1 - lam))`` by ``floor(W·sqrt(1 - lam))`` pixels, placed
    uniformly inside the image (``u[:, 0]``, ``u[:, 1]``): whole pixels, so
    the pasted share never exceeds ``1 - lam`` (the paper centres the box
    uniformly and clips it at the border).
    """
    side = torch.sqrt((1.0 - lam).clamp_min(0.0))
    box_h, box_w = torch.floor(side * height), torch.floor(side * width)
    top = torch.minimum(torch.floor(u[:, 0] * (height - box_h + 1.0)), height - box_h)
    left = torch.minimum(torch.floor(u[:, 1] * (width - box_w + 1.0)), width - box_w)
    ys = torch.arange(height, device=u.device, dtype=u.dtype)
    xs = torch.arange(width, device=u.device, dtype=u.dtype)
    inside_y = (ys >= top[:, None]) & (ys < (top + box_h)[:, None])
    inside_x = (xs >= left[:, None]) & (xs < (left + box_w)[:, None])
    return inside_y[:, :, None] & inside_x[:, None, :]


class CutMix(ViewMaker):
    """CutMix views: a box of a partner image pasted into each image (Yun et al., ICCV 2019).

    The box covers at most a share ``1 - lam`` of the image, ``lam ~
    Beta(alpha, alpha)`` taken as ``max(lam, 1 - lam)`` so that the row keeps
    the larger share of its own view (:func:`cutmix_masks`). The partner is a random row of the batch online,
    of all of X for booked views. Labels are not mixed: the teacher labels
    the view.

    Parameters
    ----------
    image_shape : (channels, height, width)
        The shape of one image; its product must be the number of features.
    alpha : float, default=1.0
        Beta(alpha, alpha) for ``lam`` (1: uniform, as in the paper); 0 turns mixing off.
    """

    def __init__(self, image_shape=None, alpha: float = 1.0):
        self.image_shape = image_shape
        self.alpha = alpha

    def check(self, n_features: int) -> None:
        check_image_shape(self.image_shape, n_features, "CutMix")
        check_nonnegative(self.alpha, "alpha", "CutMix")

    def n_draws(self, n_features: int) -> int:
        return 3 + BETA_DRAWS

    def make(self, X_rows, u, pool, rows):
        channels, height, width = (int(n) for n in self.image_shape)
        partners = partner_rows(u[:, 0], pool)
        lam = dominant(symmetric_beta(u[:, 3:], float(self.alpha)))
        mask = cutmix_masks(u[:, 1:3], lam, height, width)
        images = X_rows.reshape(len(X_rows), channels, height, width)
        mixed = torch.where(mask[:, None], partners.reshape(images.shape), images)
        return mixed.reshape(X_rows.shape)

