"""Views: inputs the teacher labels beside the training rows, made on the device.

``BatchAugment`` wraps torchvision transforms and callables for online
augmentation. The view makers (:class:`Affine`, :class:`Shift`,
:class:`CutMix`, :class:`MixUp`, :class:`Munge`, :class:`Noise`) work both
as ``augment=<maker>`` (a fresh random view of every batch) and as booked
view generators, ``maker.views(X, rows, view_ids, seed)``, whose views
depend only on (seed, row, view number) through the counter-based
generator of :mod:`skd.augment.counter`.
"""

from skd.augment.base import ViewMaker
from skd.augment.batch import BatchAugment
from skd.augment.images import Affine, CutMix, Shift
from skd.augment.rows import MixUp, Munge, Noise

__all__ = ["Affine", "BatchAugment", "CutMix", "MixUp", "Munge", "Noise", "Shift", "ViewMaker"]
