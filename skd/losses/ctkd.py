"""Curriculum temperature (``"ctkd"``): a learnable, adversarial temperature for a logit loss."""

from __future__ import annotations

from numbers import Real
from typing import Any

import torch

from skd._constraints import Interval, Options
from skd.losses.base import MAX_TEMPERATURE, DistillationLoss, LossCapabilities, make_loss, register_loss
from skd.losses.functional import (
    GlobalTemperature,
    InstanceTemperature,
    curriculum_lambda,
    kd_divergence_per_sample_temperature,
)

__all__ = ["CTKD"]


@register_loss("ctkd")
class CTKD(DistillationLoss):
    """Curriculum Temperature for KD (Li et al., AAAI 2023) around a logit loss.

    The wrapped loss (``base``: ``"kd"``, ``"dkd"``, ``"cakd"``, ``"dist"``,
    ``"r2kd"``; DKD's and CAKD's closed-form backward,
    :func:`~skd.losses.functional.split_kl_means`, gives the temperature its
    gradient) is computed at a learnable temperature ``T = t_start + t_range *
    sigmoid(theta)``, within ``(t_start, t_start + t_range)``: ``t_start +
    t_range`` may not exceed ``MAX_TEMPERATURE`` (1000), the bound of every
    temperature, and the learnt one is clamped to it. ``theta`` is trained to *increase* that loss, through
    a gradient reversal layer of strength lambda; lambda follows the cosine
    curriculum from 0 to ``lambda_max`` over ``lambda_epochs`` epochs
    (:func:`~skd.losses.functional.curriculum_lambda`). Defaults are the
    released script's (``t_start`` 1, ``t_end`` 20, lambda 0 to 1 over 10
    epochs, ``theta`` starting at 1, so T starts near 15.6).

    ``scope="global"``: one temperature (:class:`~skd.losses.functional.GlobalTemperature`),
    for any ``base`` whose terms read ``temperature_``. ``scope="instance"``:
    one per sample from a 2-layer MLP on both models' logits
    (:class:`~skd.losses.functional.InstanceTemperature`), with ``base="kd"``
    only (``ce_weight * CE + kd_weight * mean_i T_i^2 KL_i``).

    The temperature module is trained by its own SGD optimizer (``lr``
    ``temperature_lr``, momentum 0.9; the released code puts it in the
    student's SGD), stepped on each training batch's gradient in the loss's
    own ``on_batch_end`` (the loss is one of the fit's callbacks). A hook on
    every batch: the fit runs the eager step (``graph_blockers`` names the
    loss), where the next batch reads the updated temperature. ``temperature_history_``
    holds the (mean) temperature reached at each epoch's start, from the
    second epoch; ``last_temperature_`` the last batch's.

    Parameters
    ----------
    base : str, default="kd"
    base_params : dict or None
        Parameters of the wrapped loss (its ``temperature`` is ignored).
    scope : {"global", "instance"}, default="global"
    lambda_max : float, default=1.0
    lambda_epochs : int, default=10
    t_start : float, default=1.0
    t_range : float, default=20.0
    temperature_lr : float, default=0.05
    """

    #: Not compilable: it runs eagerly under ``trainer__compile_loss`` (its temperature module is
    #: built on the first call). No ``loss__extract``: the temperature is learnt, while extraction
    #: transforms at the epoch's.
    capabilities = LossCapabilities(temperature=False, compilable=False, extract=False)
    _parameter_constraints = {
        "base": [str],
        "base_params": [None, dict],
        "scope": [Options(("global", "instance"))],
        "lambda_max": [Interval(Real, 0, None, closed="left")],
        "lambda_epochs": [Interval(Real, 0, None, closed="neither")],
        "t_start": [Interval(Real, 0, None, closed="neither")],
        "t_range": [Interval(Real, 0, None, closed="neither")],
        "temperature_lr": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        base: str = "kd",
        base_params: dict[str, Any] | None = None,
        scope: str = "global",
        lambda_max: float = 1.0,
        lambda_epochs: int = 10,
        t_start: float = 1.0,
        t_range: float = 20.0,
        temperature_lr: float = 0.05,
    ):
        self.base = base
        self.base_params = base_params
        self.scope = scope
        self.lambda_max = lambda_max
        self.lambda_epochs = lambda_epochs
        self.t_start = t_start
        self.t_range = t_range
        self.temperature_lr = temperature_lr

    def _wrapped(self) -> DistillationLoss:
        return make_loss(self.base, dict(self.base_params or {}))

    @property
    def terms(self) -> tuple[str, ...]:
        return self._wrapped().terms

    @property
    def ce_weight(self) -> float:
        """The wrapped loss's CE weight (the base class applies it)."""
        return self._wrapped().ce_weight

    def validate(self):
        super().validate()
        if self.base == "ctkd":
            raise ValueError("loss__base cannot be 'ctkd' itself.")
        if self.t_start + self.t_range > MAX_TEMPERATURE:
            raise ValueError(
                f"loss__t_range={self.t_range!r} with loss__t_start={self.t_start!r} lets CTKD's learnt "
                f"temperature reach {self.t_start + self.t_range:g}, above {MAX_TEMPERATURE:g}, the bound "
                "of every temperature (beyond it the softened distributions are uniform in float32 and "
                f"the KD term is rounding noise): choose t_start + t_range <= {MAX_TEMPERATURE:g}, e.g. "
                "the released loss__t_range=20.")
        if self.scope == "instance" and self.base != "kd":
            raise ValueError(f"loss__scope='instance' works with loss__base='kd' only, got {self.base!r}.")

    def initialize(self):
        super().initialize()
        self.base_ = self._wrapped()
        self.temperature_module_ = None  # built at the first batch, when C, the device and dtype are known
        self.optimizer_ = None
        self.lambda_ = 0.0
        self.last_temperature_ = None
        self.temperature_history_: list[float] = []
        return self

    def _module(self, logits: torch.Tensor) -> torch.nn.Module:
        if self.temperature_module_ is None:
            if self.scope == "global":
                module = GlobalTemperature(self.t_start, self.t_range)
            else:
                module = InstanceTemperature(logits.shape[1], t_start=self.t_start, t_range=self.t_range)
            self.temperature_module_ = module.to(device=logits.device, dtype=logits.dtype)
            self.optimizer_ = torch.optim.SGD(self.temperature_module_.parameters(), lr=self.temperature_lr,
                                              momentum=0.9)
        return self.temperature_module_

    def epoch_values(self, epoch, schedules=None):
        """The base's values; sets this epoch's lambda and records the temperature reached so far."""
        self.lambda_ = curriculum_lambda(epoch, self.lambda_max, 0.0, self.lambda_epochs)
        if self.last_temperature_ is not None:  # one host read per epoch, at its start
            self.temperature_history_.append(float(self.last_temperature_.mean()))
        return super().epoch_values(epoch, schedules)

    def on_batch_end(self, net, training=False, **kwargs) -> None:
        """Apply the training batch's (reversed) gradient to the temperature module."""
        if training and self.optimizer_ is not None:
            if any(p.grad is not None for p in self.temperature_module_.parameters()):
                self.optimizer_.step()
                self.optimizer_.zero_grad()

    def compute_terms(self, student_logits, teacher_logits, y, temperature):
        # ``temperature`` (the epoch state's) is not used: this loss's temperature is learnt
        module = self._module(student_logits)
        if self.scope == "instance":
            learnt = module(student_logits, teacher_logits, self.lambda_).clamp(max=MAX_TEMPERATURE)
            self.last_temperature_ = learnt.detach()
            kd = kd_divergence_per_sample_temperature(student_logits, teacher_logits, learnt).mean()
            return {"kd": self.base_.kd_weight * kd}
        learnt = module(self.lambda_).squeeze(0).clamp(max=MAX_TEMPERATURE)
        self.last_temperature_ = learnt.detach()
        terms = self.base_.compute_terms(student_logits, teacher_logits, y, learnt)
        # the wrapped loss's weights (T**2 included) at the learnt T, inside the graph: T gets their gradient
        weights = self.base_.term_weights(learnt)
        return {name: value * weights.get(name, 1.0) for name, value in terms.items()}
