"""``Hint``: one pair of named layers whose outputs the student learns to match.

A hint names a teacher module and a student module by their
``named_modules()`` paths; forward hooks take their outputs, so neither
model is edited. :func:`checked_hints` validates the classifier's ``hints``
parameter once per fit and names each hint's term in ``history``.
"""

from __future__ import annotations

from numbers import Real

from sklearn.base import BaseEstimator

__all__ = ["HINT_KINDS", "Hint", "checked_hints"]

#: The hint terms: FitNets (Romero et al., 2015) and attention transfer (Zagoruyko & Komodakis, 2017).
HINT_KINDS = ("fitnet", "at")


class Hint(BaseEstimator):
    """A hint term between a teacher layer and a student layer, added to any logit loss.

    Parameters
    ----------
    teacher_layer : str
        The teacher module's path in ``teacher.named_modules()``, e.g. ``"features.3"``.
    student_layer : str
        The student module's path in ``student.named_modules()``.
    kind : {"fitnet", "at"}, default="fitnet"
        ``"fitnet"``: the mean squared error between the teacher's output and
        the student's, mapped to the teacher's shape by a learnable projector
        (a linear layer for vectors, a 1x1 convolution for maps), trained
        with the student and dropped at export. ``"at"``: attention transfer
        between the normalised spatial attention maps of convolutional layers
        of the same spatial size (no projector).
    weight : float, default=1.0
        The term's factor (the schedules' soft-term scale applies too).
    name : str or None, default=None
        The term's name in ``history``; by default ``kind``, or
        ``"<kind>_<position>"`` when several hints share a kind.

    Examples
    --------
    >>> from skd import Hint
    >>> Hint("features.3", "features.3", kind="at", weight=100.0)
    Hint(kind='at', student_layer='features.3', teacher_layer='features.3', weight=100.0)
    """

    def __init__(self, teacher_layer: str, student_layer: str, kind: str = "fitnet",
                 weight: float = 1.0, name: str | None = None):
        self.teacher_layer = teacher_layer
        self.student_layer = student_layer
        self.kind = kind
        self.weight = weight
        self.name = name

    def check(self, position: int) -> Hint:
        """Raise a clear error naming ``hints[position]`` for a bad value; return self."""
        where = f"hints[{position}]"
        for field in ("teacher_layer", "student_layer"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value:
                raise ValueError(
                    f"{where}.{field} must be a module name from named_modules(), e.g. 'features.3'; "
                    f"got {value!r}."
                )
        if self.kind not in HINT_KINDS:
            raise ValueError(f"{where}.kind must be one of {HINT_KINDS}; got {self.kind!r}.")
        if isinstance(self.weight, bool) or not isinstance(self.weight, Real) or not self.weight >= 0:
            raise ValueError(f"{where}.weight must be a number >= 0; got {self.weight!r}.")
        if self.name is not None and (not isinstance(self.name, str) or not self.name.isidentifier()):
            raise ValueError(
                f"{where}.name must be None or a name made of letters, digits and underscores "
                f"(it names the term in history); got {self.name!r}."
            )
        return self


def checked_hints(hints, loss_terms) -> tuple[tuple[Hint, ...], tuple[str, ...]]:
    """The classifier's ``hints`` checked, and each hint's term name.

    Parameters
    ----------
    hints : Hint, sequence of Hint, or None
    loss_terms : sequence of str
        The logit loss's terms, which a hint's name may not repeat.

    Returns
    -------
    hints, names : tuple of Hint, tuple of str
        Empty for None or an empty list.
    """
    if hints is None:
        return (), ()
    if isinstance(hints, Hint):
        hints = [hints]
    if not isinstance(hints, (list, tuple)) or not all(isinstance(h, Hint) for h in hints):
        raise TypeError(
            "hints must be None, a skd.Hint or a list of them, e.g. "
            f"hints=[Hint('features.3', 'features.3', kind='fitnet')]; got {hints!r:.120}."
        )
    hints = tuple(hint.check(position) for position, hint in enumerate(hints))
    kinds = [hint.kind for hint in hints]
    names = tuple(hint.name or (hint.kind if kinds.count(hint.kind) == 1 else f"{hint.kind}_{position}")
                  for position, hint in enumerate(hints))
    for position, name in enumerate(names):
        if name in names[:position] or name in loss_terms:
            raise ValueError(
                f"hints[{position}] names its term {name!r}, which another term already has "
                f"(the loss's terms are {list(loss_terms)}); give it another name=."
            )
    return hints, names
