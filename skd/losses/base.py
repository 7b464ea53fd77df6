"""The distillation-loss base class and the registry of named losses."""

from __future__ import annotations

import functools
import inspect
import weakref
from dataclasses import dataclass
from numbers import Real
from typing import Any

import torch
import torch.nn.functional as F
from sklearn.base import clone
from skorch.callbacks import Callback

from skd._constraints import Interval, Options, validate_params
from skd.losses.functional import (
    CONVENTIONS,
    TopKBook,
    extracted_teacher_logits,
    labelled_cross_entropy,
    standardize_logits,
)
from skd.state import EpochState, EpochValues

__all__ = ["DistillationLoss", "LossCapabilities", "available_losses", "foreign_loss_params",
           "get_loss_class", "make_loss", "register_loss"]

#: Process-wide, owned by :func:`register_loss` (its only writer): the loss classes by name. A
#: registry must outlive any one estimator, as scikit-learn's and torch's do; it is written at import.
_REGISTRY: dict[str, type[DistillationLoss]] = {}
#: Process-wide, owned by :meth:`DistillationLoss._call_state` (its only reader and writer): each
#: loss's state for calls outside a fit, kept so a call does not fill a state on the device every
#: time (and CTKD does not read the host). Weak: it dies with its loss and is never pickled.
_CALL_STATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def register_loss(name: str):
    """Class decorator: make a :class:`DistillationLoss` available by ``name``."""

    def decorator(cls):
        _REGISTRY[name] = cls
        return cls

    return decorator


def available_losses() -> list[str]:
    """Names accepted by ``DistillationClassifier(loss=...)``."""
    return sorted(_REGISTRY)


def get_loss_class(name: str) -> type[DistillationLoss]:
    """Return the loss class registered under ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"Unknown loss {name!r}. Valid names are: {', '.join(available_losses())}; "
            "or pass an instance of a skd.losses.DistillationLoss subclass."
        ) from None


def make_loss(spec: str | DistillationLoss, params: dict[str, Any]) -> DistillationLoss:
    """Build a fresh, initialised loss callback from a name or an instance.

    ``params`` are the ``loss__<param>`` values routed by the classifier. An
    instance is cloned first, so the user's object is never changed.
    """
    if isinstance(spec, str):
        cls = get_loss_class(spec)
        loss = cls()
    elif isinstance(spec, DistillationLoss):
        loss = clone(spec)
    elif isinstance(spec, type) and issubclass(spec, DistillationLoss):
        loss = spec()
    else:
        raise TypeError(
            f"loss must be a name ({', '.join(available_losses())}) or a "
            f"skd.losses.DistillationLoss instance, got {type(spec).__name__}: {spec!r}."
        )
    valid = loss.get_params()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"loss__{unknown[0]} is not a parameter of {type(loss).__name__}; "
            f"its parameters are: {', '.join(sorted(valid)) or '(none)'}."
        )
    loss.set_params(**params)
    return loss.initialize()


def foreign_loss_params(loss: Any, keys) -> list[str]:
    """The ``loss__*`` keys among ``keys`` that the loss ``loss`` (a name or an instance) does not accept.

    The classifier drops them when ``loss`` changes: they were the old loss's
    settings. An unknown loss gives none (it is reported at fit).
    """
    try:
        accepted = set((get_loss_class(loss)() if isinstance(loss, str) else loss).get_params())
    except (AttributeError, TypeError, ValueError):
        return []
    return [key for key in keys if key.startswith("loss__") and key.removeprefix("loss__") not in accepted]


#: Upper bound of a temperature: beyond it every softened distribution is uniform in float32.
MAX_TEMPERATURE = 1e3

#: Constraints shared by the losses, applied to whichever of these parameters a loss has.
COMMON_CONSTRAINTS = {
    "temperature": [Interval(Real, 0, MAX_TEMPERATURE, closed="right")],
    "warmup": [Interval(Real, 0, None, closed="left")],
    "convention": [Options(CONVENTIONS)],
    "standardize": [Options((True, False))],
    "extract": [None, Interval(Real, 0, MAX_TEMPERATURE, closed="right")],
}

_NON_NEGATIVE = [Interval(Real, 0, None, closed="left")]


@dataclass(frozen=True)
class LossCapabilities:
    """What a loss needs and offers: one value, the class attribute ``capabilities`` of each loss.

    The classifier, the book, the labels and the step read it (nothing else
    of the loss's class says what it needs). A loss whose needs depend on its
    parameters (Tf-KD's ``mode``) makes it a property.

    Attributes
    ----------
    teacher : bool, default=True
        The loss needs teacher logits (a teacher, or a book).
    self_teaching : bool, default=False
        The teacher is a first fit of the student itself (Tf-KD ``self``).
    temperature : bool, default=True
        The loss softens at its ``temperature`` parameter (schedules apply to it).
    labelled_only : bool, default=False
        :meth:`DistillationLoss.compute_terms` takes a keyword ``labelled_only``:
        True when every row of the fit has a label (no ``UNLABELLED`` in ``y``),
        so the loss can skip its unlabelled-row handling (DKD and CAKD: the
        teacher's top class, three kernels per step).
    extract : bool, default=True
        ``loss__extract`` can apply: the loss reads full teacher logits and
        softens them at its temperature.
    compressed_book : bool, default=False
        The loss reads a compressed book (a :class:`~skd.losses.functional.TopKBook`:
        the teacher's top-k classes and a tail) in place of teacher logits.
        Such a loss has ``k`` and ``temperature`` parameters: the classifier
        writes its book with them. Other losses refuse one.
    compilable : bool, default=True
        The loss's call can be compiled as one graph (``trainer__compile_loss``);
        False for a loss whose call does host work on every batch (CTKD): it runs eagerly.
    student_passes : int, default=1
        Forward passes of the student per training batch that the loss
        compares (2 for Cons-KD: two dropout-perturbed passes).
    non_negative : tuple of str
        Parameters (besides ``*weight``) that must be numbers >= 0 where a loss has them.
    """

    teacher: bool = True
    self_teaching: bool = False
    temperature: bool = True
    labelled_only: bool = False
    extract: bool = True
    compressed_book: bool = False
    compilable: bool = True
    student_passes: int = 1
    non_negative: tuple[str, ...] = ("alpha", "beta", "gamma", "w_bcd", "w_scd", "w_wcd")


#: The capability flags of skd before :class:`LossCapabilities`, and the field each became.
_FLAGS = {"requires_teacher": "teacher", "self_teaching": "self_teaching", "uses_temperature": "temperature",
          "takes_labelled_only": "labelled_only", "takes_extract": "extract",
          "accepts_compressed_book": "compressed_book", "compilable": "compilable",
          "student_passes": "student_passes", "non_negative_params": "non_negative"}


def _with_extract(init):
    """``init`` with a keyword-only ``extract=None`` added, stored as ``self.extract``.

    So every loss takes ``loss__extract`` (get_params, set_params, clone,
    GridSearchCV) without each subclass declaring it. ``init`` is returned
    unchanged when it already takes ``extract`` or any keyword (``**kwargs``).
    """
    signature = inspect.signature(init)
    kinds = {parameter.kind for parameter in signature.parameters.values()}
    if "extract" in signature.parameters or inspect.Parameter.VAR_KEYWORD in kinds:
        return init

    @functools.wraps(init)
    def __init__(self, *args, extract=None, **kwargs):
        init(self, *args, **kwargs)
        self.extract = extract

    added = inspect.Parameter("extract", inspect.Parameter.KEYWORD_ONLY, default=None,
                              annotation="float | None")
    __init__.__signature__ = signature.replace(parameters=[*signature.parameters.values(), added])
    return __init__


class DistillationLoss(Callback):
    """Base class of skd's distillation losses (a skorch callback holding hyper-parameters).

    A loss turns a batch of student logits, teacher logits and encoded labels
    into named, weighted terms; the trainer sums them and records each term
    in ``history`` (averaged per epoch). The base class owns the hard-label
    term: ``"ce"``, ``ce_weight`` times the cross-entropy on the labelled
    rows (``F.cross_entropy`` with ``ignore_index``). A subclass returns
    only its own (soft) terms from :meth:`compute_terms`.

    Subclasses store their hyper-parameters in ``__init__`` and nothing else
    (so ``get_params``/``set_params``, ``clone`` and ``loss__<param>``
    routing work), declare ``terms`` (``"ce"`` first when they use labels)
    and, for parameters beyond the common ones, ``_parameter_constraints``.

    The per-epoch scalars (the temperature of a ``TemperatureSchedule``, the
    factors of a ``SoftLossSchedule``, the warm-up) are not attributes: they
    are computed by :meth:`epoch_values` and reach :meth:`__call__` as an
    :class:`~skd.state.EpochState`, whose tensors a captured step
    reads in place.

    Parameters common to the losses that declare them: ``ce_weight``
    (default 1 where not declared), ``temperature``, ``warmup`` (epochs of
    linear warm-up of the soft terms), ``convention`` and ``standardize``
    (z-score each row of student and teacher logits before the soft terms,
    Sun et al., CVPR 2024; CE always sees the raw logits).

    One parameter every loss has, added by this class to each subclass's
    ``__init__``: ``extract`` (float or None, default None), extractive
    distillation's teacher transform (Kobayashi, WACV 2022; skd's form, see
    :func:`~skd.losses.functional.extracted_teacher_logits`). A number ``c``
    keeps the teacher's top-class probability at temperature ``c`` while the
    loss's temperature only spreads the rest over the other classes; it is
    applied to the teacher logits (after ``standardize``) before
    :meth:`compute_terms`, so every logit loss takes it unchanged.
    """

    #: Names of the terms of :meth:`__call__`, in order, the same for every call.
    terms: tuple[str, ...] = ("ce",)
    #: What the loss needs and offers, in one place (see :class:`LossCapabilities`).
    capabilities: LossCapabilities = LossCapabilities()
    #: Constraints of this loss's own parameters (see :mod:`skd._constraints`).
    _parameter_constraints: dict = {}
    #: Defaults for losses that do not declare these parameters.
    ce_weight: float = 1.0
    standardize: bool = False
    warmup: float = 0
    extract: float | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        declared = [flag for flag in _FLAGS if flag in cls.__dict__]
        if declared:
            fields = ", ".join(f"{_FLAGS[flag]}=..." for flag in declared)
            raise TypeError(
                f"{cls.__name__} declares {', '.join(declared)}, which skd no longer reads: declare "
                f"capabilities = LossCapabilities({fields}) (skd.losses.LossCapabilities) instead."
            )
        if "__init__" in cls.__dict__:
            cls.__init__ = _with_extract(cls.__dict__["__init__"])

    # -- hooks for subclasses -------------------------------------------------
    def term_weights(self, temperature: float) -> dict[str, float]:
        """Each soft term's weight at ``temperature`` (e.g. ``{"kd": kd_weight * T**2}``).

        A term not listed has weight 1. The base multiplies it by the
        schedules' soft scale into one coefficient per term and epoch.
        """
        return {}

    def compute_terms(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor | None,
        y: torch.Tensor,
        temperature: torch.Tensor | float,
    ) -> dict[str, torch.Tensor]:
        """Return ``{term name: scalar tensor}`` of the soft terms of one batch, unweighted.

        Each term is multiplied by its coefficient of the epoch (see
        :meth:`term_weights`), so a term is the bare divergence (a mean over
        the rows that define it).

        Parameters
        ----------
        student_logits : Tensor of shape (batch, n_classes)
            Standardised first when ``standardize`` is True.
        teacher_logits : Tensor of shape (batch, n_classes), or None
            Aligned to the classifier's ``classes_``; None when
            ``capabilities.teacher`` is False.
        y : LongTensor of shape (batch,)
            Encoded labels, indices into ``classes_``; ``UNLABELLED`` (-1)
            marks a row without a label, which gets the teacher's terms only.
            Every loss keeps each term a mean over the rows that define it
            (no boolean indexing, no host read).
        temperature : 0-d Tensor or float
            This epoch's temperature (a device tensor during a fit).
        """
        return {}

    # -- parameters -----------------------------------------------------------
    def parameter_constraints(self) -> dict:
        """The constraints of this loss's parameters: common, weights, and its own."""
        params = self.get_params()
        table = {name: rule for name, rule in COMMON_CONSTRAINTS.items() if name in params}
        table.update({name: _NON_NEGATIVE for name in params
                      if name.endswith("weight") or name in self.capabilities.non_negative})
        table.update(self._parameter_constraints)
        return table

    def validate(self) -> None:
        """Raise a clear error naming ``loss__<param>`` for a bad value. Called at fit."""
        validate_params(self.parameter_constraints(), self.get_params(), "loss__", type(self).__name__)
        self._check_some_weight()
        self._check_extract()

    def _check_some_weight(self) -> None:
        """Refuse a loss whose every term weighs 0: its value is 0 and the student would not train."""
        temperature = float(getattr(self, "temperature", None) or 1.0)
        weights = self.term_weights(temperature)
        coefficients = [float(self.ce_weight) if name == "ce" else float(weights.get(name, 1.0))
                        for name in dict.fromkeys([*self.terms, *weights])]
        if not coefficients or any(coefficient != 0 for coefficient in coefficients):
            return
        params = self.get_params()
        named = ", ".join(f"loss__{name}={params[name]!r}" for name in sorted(params)
                          if name.endswith("weight") or name in self.capabilities.non_negative)
        raise ValueError(
            f"Every term of {type(self).__name__} weighs 0 ({named}): the loss is 0 whatever the "
            "student does, and it would not train. Give at least one term a positive weight (e.g. "
            "loss__ce_weight=1 for the labels alone, or loss='ce')."
        )

    def _check_extract(self) -> None:
        """Refuse ``loss__extract`` where there are no teacher logits to transform."""
        if self.extract is None:
            return
        name = type(self).__name__
        if not self.capabilities.teacher:
            raise ValueError(
                f"loss__extract={self.extract!r} transforms the teacher's logits, but {name} "
                "(with these parameters) has no teacher. Leave loss__extract at None, or use a "
                "loss that distils from a teacher (e.g. 'kd', 'dkd', 'dist')."
            )
        if self.capabilities.compressed_book or not self.capabilities.extract:
            raise ValueError(
                f"loss__extract={self.extract!r} cannot apply to {name}: it does not soften full "
                "teacher logits at its own temperature (a compressed book, or a learnt "
                "temperature). Leave loss__extract at None, or use e.g. 'kd', 'dkd' or 'dist'."
            )

    def initialize(self):
        self.validate()
        return self

    # -- per-epoch state ------------------------------------------------------
    def epoch_values(self, epoch: int, schedules=None) -> EpochValues:
        """This loss's :class:`EpochValues` at ``epoch`` (1 in the first epoch).

        Parameters
        ----------
        epoch : int
        schedules : skd.callbacks.Schedules or None
            The fit's ``SoftLossSchedule`` and ``TemperatureSchedule``, if any.
        """
        warmup = min(epoch / self.warmup, 1.0) if self.warmup else 1.0
        soft = ce = 1.0
        if schedules is not None and schedules.soft is not None:
            soft, ce = schedules.soft.scales_at(epoch, schedules.max_epochs)
        temperature = 1.0
        if self.capabilities.temperature and getattr(self, "temperature", None) is not None:
            temperature = float(self.temperature)
            if schedules is not None and schedules.temperature is not None:
                temperature = float(schedules.temperature.value_at(epoch, schedules.max_epochs))
        return EpochValues(temperature=temperature, ce_scale=float(ce), soft_scale=float(soft) * warmup,
                           warmup=warmup)

    def term_coefficients(self, values: EpochValues) -> dict[str, float]:
        """Each term's factor at ``values``: ``ce_weight * ce_scale`` and ``weight * soft_scale``.

        Every name in :attr:`terms` gets one (weight 1 where :meth:`term_weights` gives none).
        """
        weights = self.term_weights(values.temperature)
        coefficients = {}
        for name in dict.fromkeys([*self.terms, *weights]):
            if name == "ce":
                coefficients[name] = float(self.ce_weight) * values.ce_scale
            else:
                coefficients[name] = float(weights.get(name, 1.0)) * values.soft_scale
        return coefficients

    def epoch_state(self, epoch: int, schedules=None, device="cpu", labelled_only: bool = False,
                    dtype: torch.dtype = torch.float32) -> EpochState:
        """A fresh :class:`EpochState` of this loss at ``epoch``."""
        values = self.epoch_values(epoch, schedules)
        return EpochState(device, values, self.term_coefficients(values), labelled_only, dtype)

    # -- the loss as the fit's callback -----------------------------------------
    def fit_state(self, epoch: int, schedules=None, device="cpu", labelled_only: bool = False) -> EpochState:
        """The fit's :class:`EpochState`, which this loss owns and loads in its ``on_epoch_begin``.

        The trainer calls it once at the start of a fit (``epoch``: the
        first epoch to train) and hands the state to every step; the
        classifier puts the loss in ``callbacks_``, so skorch calls
        :meth:`on_epoch_begin` before each epoch.
        """
        self.schedules_ = schedules
        self.state_ = self.epoch_state(epoch, schedules, device, labelled_only)
        return self.state_

    def on_epoch_begin(self, net, **kwargs) -> None:
        """Load this epoch's :class:`EpochValues` into the fit's state, in place (no new tensor)."""
        state = getattr(self, "state_", None)
        if state is None:  # not the loss of a fit (fit_state was not called)
            return
        values = self.epoch_values(len(net.history), self.schedules_)
        state.load(values, self.term_coefficients(values))

    # -- machinery ------------------------------------------------------------
    def _call_state(self, logits: torch.Tensor) -> EpochState:
        """The state of a call outside a fit (warm-up finished, no schedule), kept per device and dtype.

        Made once and kept until a parameter changes: a state costs a fill per
        scalar on the device, and some losses read the host to make one (CTKD
        records its temperature), which would be a sync on every call.
        """
        key = (logits.device, logits.dtype, repr(sorted(self.get_params().items())))
        kept = _CALL_STATES.get(self)
        if kept is None or kept[0] != key:
            kept = (key, self.epoch_state(10**9, device=logits.device, dtype=logits.dtype))
            _CALL_STATES[self] = kept
        return kept[1]

    def __call__(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
                 y: torch.Tensor, state: EpochState | None = None) -> dict[str, torch.Tensor]:
        """The batch's terms, ``"ce"`` first, with this epoch's scales applied.

        ``state`` defaults to the values of the loss's parameters (no
        schedule, warm-up finished), e.g. for a loss called outside a fit.
        """
        if isinstance(teacher_logits, TopKBook) and not self.capabilities.compressed_book:
            raise TypeError(
                f"{type(self).__name__} needs the teacher's full logits, not a compressed book (TopKBook); "
                "use a loss that reads one (e.g. 'kd_topk'), or pass the full logits."
            )
        if state is None:
            state = self._call_state(student_logits)
        soft_student, soft_teacher = student_logits, teacher_logits
        if self.standardize:
            soft_student = standardize_logits(student_logits)
            soft_teacher = None if teacher_logits is None else standardize_logits(teacher_logits)
        if self.extract is not None and soft_teacher is not None:
            soft_teacher = extracted_teacher_logits(soft_teacher, state.temperature, self.extract)
        terms = {}
        if "ce" in self.terms:
            ce = (F.cross_entropy(student_logits, y) if state.labelled_only
                  else labelled_cross_entropy(student_logits, y))
            terms["ce"] = ce * state.coefficient("ce")
        extra = {"labelled_only": state.labelled_only} if self.capabilities.labelled_only else {}
        soft = self.compute_terms(soft_student, soft_teacher, y, state.temperature, **extra)
        for name, value in soft.items():
            terms[name] = value * state.coefficient(name)
        return terms

