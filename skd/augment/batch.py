"""Batch augmentation on the device with torchvision transforms or callables, for an online teacher."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torchvision.transforms import v2

__all__ = ["BatchAugment"]


class BatchAugment:
    """Apply a batched image transform to a batch of (possibly flat) inputs.

    Wraps ``torchvision.transforms.v2`` transforms such as ``MixUp``,
    ``CutMix`` or ``RandomErasing`` (or any callable on an image batch) so
    that ``DistillationClassifier(augment=...)`` can call it on a batch of
    flat features: the batch is viewed as images of ``image_shape``,
    transformed in one call on its device, and flattened back. Mixed labels
    are discarded: as in the R2KD recipe, the teacher labels the augmented
    batch.

    Parameters
    ----------
    transform : callable
        Called as ``transform(images, labels)`` for MixUp/CutMix (which need
        labels) and ``transform(images)`` otherwise.
    image_shape : sequence of int or None, default=None
        ``(channels, height, width)`` of one sample; None keeps the batch's shape.
    """

    def __init__(self, transform: Callable, image_shape: Sequence[int] | None = None):
        self.transform = transform
        self.image_shape = image_shape

    def _needs_labels(self):
        return isinstance(self.transform, (v2.MixUp, v2.CutMix))

    def __call__(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        images = X.reshape(X.shape[0], *self.image_shape) if self.image_shape else X
        if self._needs_labels():
            out = self.transform(images, y)
        else:
            out = self.transform(images)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.reshape(X.shape)

    def __repr__(self):
        return f"BatchAugment({self.transform!r}, image_shape={self.image_shape})"
