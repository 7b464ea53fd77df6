"""KD from the compressed book: the teacher's top-k classes and a tail bucket (``"kd_topk"``)."""

from __future__ import annotations

from numbers import Integral

from skd._constraints import Interval
from skd.losses.base import DistillationLoss, LossCapabilities, register_loss
from skd.losses.functional import TopKBook, compress_teacher, topk_kd_divergence

__all__ = ["TopKKD"]


@register_loss("kd_topk")
class TopKKD(DistillationLoss):
    """Knowledge distillation over the teacher's top-k classes plus one tail bucket.

    ``ce_weight * CE + kd_weight * T**2 * KL(b^T || b^S)``, where ``b`` holds
    the probabilities of the teacher's k most likely classes and the summed
    probability of the other ``C - k``
    (:func:`~skd.losses.functional.topk_kd_divergence`). It reads a
    :class:`~skd.losses.functional.TopKBook` (``k`` log-probabilities,
    indices and the tail's log-mass per row, instead of ``C`` logits), and
    says so with ``capabilities.compressed_book``; given full teacher logits
    it compresses them on the fly, so it can be compared with ``"kd"``.

    The buckets are exact at the temperature the book was written at (a
    book made on the fly is written at this loss's temperature); at another
    T the tail's mass is taken as spread evenly over its classes before
    re-softening (the book does not keep how it is spread).

    Parameters
    ----------
    k : int, default=10
    temperature : float, default=1.0
    ce_weight : float, default=0.1
    kd_weight : float, default=0.9

    It has no ``standardize``: a compressed book holds log-probabilities,
    not logits to z-score.
    """

    terms = ("ce", "kd_topk")
    #: This loss can read a compressed (top-k + tail) book; other losses refuse one.
    capabilities = LossCapabilities(compressed_book=True)

    _parameter_constraints = {"k": [Interval(Integral, 1, None, closed="left")]}

    def __init__(
        self,
        k: int = 10,
        temperature: float = 1.0,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
    ):
        self.k = k
        self.temperature = temperature
        self.ce_weight = ce_weight
        self.kd_weight = kd_weight

    def compute_terms(self, student_logits, teacher_logits, y, temperature):
        book = teacher_logits
        if not isinstance(book, TopKBook):
            book = compress_teacher(teacher_logits, min(self.k, teacher_logits.shape[1]), temperature)
        return {"kd_topk": topk_kd_divergence(student_logits, book, temperature).mean()}

    def term_weights(self, temperature):
        return {"kd_topk": self.kd_weight * temperature**2}
