"""The compiled loss (``trainer__compile_loss=True``): experimental, off by default.

``torch.compile`` of a loss's call, so that its forward and backward run as a
few fused TorchInductor kernels instead of one kernel per op. Whether that
pays on a GPU has not been measured yet (docs/gpu.md): it stays an option
until a GPU does. It gives the eager loss's terms and gradients
(tests/test_compiled.py).

:func:`loss_terms` is the one call of a loss during training (the step calls
it); :func:`should_compile` is the trainer's choice. The compiled call is
traced as one graph (``fullgraph=True``) with a dynamic batch dimension, so
one compilation serves full and ragged batches and every later fit of the
process with the same number of classes; Python-float hyper-parameters do
not recompile, booleans and options do. The first call per loss class and
process compiles (10-25 s on a 2-core CPU) and runs the compiled forward and
backward once on copies of the batch, so that a failure shows here and not
in the step's ``backward()`` (a loss whose call has side effects sees one
call more). A loss that cannot be compiled (a graph break, no C++ or Triton
compiler, more than ``torch._dynamo.config.recompile_limit`` variants, an
error of the compiler) runs eagerly, with one :class:`CompileFallbackWarning`
per loss class and process naming the cause.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch._functorch.config as functorch_config
from torch._dynamo import maybe_mark_dynamic

__all__ = ["CompileFallbackWarning", "loss_terms", "should_compile"]

#: TorchInductor's options for a loss: no split reductions (a loss's per-class reductions over the batch
#: are small; splitting each in two kernels costs a launch more than it saves: benchmarks/triton_kernels.py).
INDUCTOR_OPTIONS = {"split_reductions": False}


@dataclass
class _Compiled:
    """A loss class's compiled call in this process: ``probed`` once it ran forward and backward,
    ``failure`` the reason it runs eagerly instead."""

    call: Callable
    probed: bool = False
    failure: str | None = None


#: The compiled call of each loss class, made once per process. Owner: :func:`loss_terms`, its only
#: reader and writer. Why process-wide: a compilation costs 10-25 s, and Dynamo keeps the compiled code
#: on the code object for the process's life anyway; a fit-local cache would compile again every fit
#: (a GridSearchCV runs hundreds). It holds one entry per loss class used with the option.
_COMPILED: dict[type, _Compiled] = {}


class CompileFallbackWarning(RuntimeWarning):
    """A loss could not be compiled and runs eagerly (``trainer__compile_loss``)."""


def should_compile(loss, option: bool) -> bool:
    """Whether a fit compiles ``loss``: the trainer's ``compile_loss`` ``option``, unless the loss
    declares itself not ``compilable`` (then a :class:`CompileFallbackWarning` says so)."""
    if option and loss.capabilities.compilable is False:
        warnings.warn(f"trainer__compile_loss=True: the loss {type(loss).__name__} cannot be compiled (its "
                      "call does host work on every batch) and runs eagerly. trainer__compile_loss=False "
                      "silences this warning.", CompileFallbackWarning, stacklevel=3)
    return bool(option) and loss.capabilities.compilable


def _call(loss, student_logits, teacher_logits, y, state, **kwargs):
    return loss(student_logits, teacher_logits, y, state, **kwargs)


def _compiled(loss_class: type) -> _Compiled:
    """The class's entry of :data:`_COMPILED`, made at its first use. Dynamo keeps at most
    ``recompile_limit`` (8) variants per code object: each class compiles its own copy of the code, so
    that the classes of a process do not share that limit."""
    entry = _COMPILED.get(loss_class)
    if entry is None:
        code = _call.__code__.replace(co_name=f"{loss_class.__name__}_terms")
        function = types.FunctionType(code, _call.__globals__, code.co_name)
        entry = _COMPILED[loss_class] = _Compiled(_compile(function))
    return entry


def _compile(function: Callable) -> Callable:
    """``torch.compile`` of a loss's call: one graph, TorchInductor with :data:`INDUCTOR_OPTIONS`."""
    return torch.compile(function, fullgraph=True, options=INDUCTOR_OPTIONS)


def _mark_batch_dynamic(value) -> None:
    if isinstance(value, torch.Tensor) and value.ndim:
        maybe_mark_dynamic(value, 0)
    elif isinstance(value, tuple):  # a compressed book (TopKBook): a named tuple of batch tensors
        for item in value:
            _mark_batch_dynamic(item)


def loss_terms(loss, student_logits: torch.Tensor, teacher_logits, y: torch.Tensor, state,
               compiled: bool = False, **kwargs) -> dict[str, torch.Tensor]:
    """The loss's named terms of one batch: ``loss(student_logits, teacher_logits, y, state, **kwargs)``.

    Parameters
    ----------
    loss : DistillationLoss
    student_logits, teacher_logits, y, state
        As :meth:`DistillationLoss.__call__ <skd.losses.DistillationLoss.__call__>`.
    compiled : bool, default=False
        Run the loss's compiled call when gradients are on (training).
        Without gradients (validation) the loss runs eagerly: a no-grad
        graph would be a second compilation for a pass that launches half
        the kernels. A compilation that fails warns once per class
        (:class:`CompileFallbackWarning`) and the loss runs eagerly.
    **kwargs
        Passed on (``second=`` for a loss that compares two passes).
    """
    if not (compiled and torch.is_grad_enabled()):
        return loss(student_logits, teacher_logits, y, state, **kwargs)
    entry = _compiled(type(loss))
    if entry.failure is not None:
        return loss(student_logits, teacher_logits, y, state, **kwargs)
    for value in (student_logits, teacher_logits, y, *kwargs.values()):
        _mark_batch_dynamic(value)
    try:
        # the backward is compiled with the forward, so that its failure is caught here, not in backward()
        with functorch_config.patch(force_non_lazy_backward_lowering=True):
            if not entry.probed:  # forward and backward once, on a copy: the loss's gradients untouched
                student = student_logits.detach().clone().requires_grad_()
                terms = entry.call(loss, student, teacher_logits, y, state, **kwargs)
                torch.autograd.grad(sum(terms.values()), student, allow_unused=True)
                entry.probed = True
            return entry.call(loss, student_logits, teacher_logits, y, state, **kwargs)
    except Exception as error:  # noqa: BLE001 -- the eager call below tells the loss's errors from the compiler's
        failure = f"{type(error).__name__}: {(str(error).strip() or '(no message)').splitlines()[0]}"
    # eagerly, outside the handler: an error of the loss itself (bad input) raises as without compiling
    terms = loss(student_logits, teacher_logits, y, state, **kwargs)
    entry.failure = failure
    warnings.warn(
        f"The loss {type(loss).__name__} could not be compiled and runs eagerly for the rest of this process "
        f"({failure}). The fit is correct, with more kernels per step. "
        "trainer__compile_loss=False silences this warning.", CompileFallbackWarning, stacklevel=2)
    return terms
