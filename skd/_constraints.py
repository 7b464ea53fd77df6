"""One way to validate parameters: a declared table per class, checked once at fit.

Modelled on scikit-learn's ``_parameter_constraints``: an estimator, a loss,
the trainer and each skd callback declare ``_parameter_constraints``, a dict
``{parameter: [constraint, ...]}``; a value is valid when any constraint of
its list accepts it, and :func:`validate_params` raises one clear error that
names the parameter (with its routing prefix, e.g. ``loss__temperature``),
the value, and what is accepted.

Numbers are strict: ``True`` is not a number, NaN and infinities are never
inside an interval, and a text such as ``"4"`` is refused with a hint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

__all__ = ["Interval", "Options", "Satisfies", "validate_params"]


@dataclass(frozen=True)
class Interval:
    """Numbers of ``kind`` (``Real`` or ``Integral``) between ``low`` and ``high``.

    ``closed`` is ``"both"``, ``"left"``, ``"right"`` or ``"neither"``; a
    bound of None is open-ended. NaN, infinities and booleans are refused.
    """

    kind: type
    low: float | None
    high: float | None
    closed: str = "both"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, self.kind):
            return False
        if isinstance(value, Real) and not math.isfinite(float(value)):
            return False
        low_ok = self.low is None or (value >= self.low if self.closed in ("both", "left")
                                      else value > self.low)
        high_ok = self.high is None or (value <= self.high if self.closed in ("both", "right")
                                        else value < self.high)
        return bool(low_ok and high_ok)

    def describe(self) -> str:
        noun = "an int" if self.kind is Integral else "a finite number"
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{noun} in {left}{low}, {high}{right}"


@dataclass(frozen=True)
class Options:
    """One of ``values`` (compared by type and value, so ``1`` is not ``True``)."""

    values: tuple

    def accepts(self, value: Any) -> bool:
        return any(value is option or (type(value) is type(option) and value == option)
                   for option in self.values)

    def describe(self) -> str:
        return "one of " + ", ".join(repr(option) for option in self.values)


@dataclass(frozen=True)
class Satisfies:
    """A value for which ``test(value)`` is true, described as ``text``."""

    test: Callable[[Any], bool]
    text: str

    def accepts(self, value: Any) -> bool:
        return bool(self.test(value))

    def describe(self) -> str:
        return self.text


def _accepts(constraint, value) -> bool:
    if constraint is None:
        return value is None
    if isinstance(constraint, type):
        return isinstance(value, constraint)
    return constraint.accepts(value)


def _describe(constraint) -> str:
    if constraint is None:
        return "None"
    if isinstance(constraint, type):
        return f"an instance of {constraint.__name__}"
    return constraint.describe()


def validate_params(constraints: Mapping[str, Iterable], params: Mapping[str, Any], prefix: str = "",
                    owner: str = "") -> None:
    """Raise ``ValueError`` (``TypeError`` for text given as a number) for the first bad value.

    Parameters
    ----------
    constraints : mapping
        ``{name: [constraint, ...]}``; a constraint is an :class:`Interval`,
        :class:`Options`, :class:`Satisfies`, a type, or None (the value None).
    params : mapping
        The values to check (``get_params(deep=False)``); names without a
        constraint are not checked.
    prefix : str
        How the user sets them, e.g. ``"loss__"``, for the message.
    owner : str
        The class the parameters belong to, for the message.
    """
    for name, allowed in constraints.items():
        if name not in params:
            continue
        value = params[name]
        allowed = list(allowed)
        if any(_accepts(constraint, value) for constraint in allowed):
            continue
        accepted = " or ".join(_describe(constraint) for constraint in allowed)
        where = f" of {owner}" if owner else ""
        message = f"{prefix}{name}{where} must be {accepted}; got {value!r}."
        if isinstance(value, (str, bytes)) and any(isinstance(c, Interval) for c in allowed):
            raise TypeError(message + " Write numbers without quotes.")
        raise ValueError(message)
