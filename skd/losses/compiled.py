"""Compiled loss terms: ``torch.compile`` of a loss's call, once per loss class and process.

Eagerly, a loss's forward and backward dispatch one kernel per op: 17 for
plain KL on (256, 100) logits, about 80 for DIST's correlations, 160 for
R2KD's soft ranks (``python benchmarks/ops.py``). On a GPU each is a launch,
so the step is launch-bound and the methods cost what their op counts say.
Compiled (TorchInductor), a loss's forward and backward become a few fused
kernels, whatever its formula.

:func:`loss_terms` is the one call of a loss during training (the step
modules call it through :func:`skd.training.step.terms_for`): with
``compiled=True`` and gradients on, it runs the loss's compiled call,
otherwise the loss itself; :func:`should_compile` is the trainer's choice
(its ``compile_loss`` option, off by default).
The compiled call is made once per loss class and process
(:func:`compiled_call`) and traced as one graph (``fullgraph=True``), its
batch dimension dynamic, so one compilation serves full and ragged batches
and every fit of the process with the same number of classes.
Hyper-parameters that are Python floats do not recompile (Dynamo does not
specialise on floats); booleans and options such as ``standardize`` do.

What it costs: the first call per loss class, class count and process
compiles the forward and the backward, measured 10-25 s on a 2-core CPU
(TorchInductor caches its kernels on disk, so a later process compiles
faster). Inside a CUDA graph a launch costs the device a few microseconds,
so the kernels saved pay for the compilation only over many steps: it is an
option, not the default. The first call of a class also runs the compiled
forward and backward once on copies of the batch, so that a failure shows
here and not in the step's ``backward()`` (a loss whose call has side
effects, such as counting its calls, sees one call more). A loss that cannot
be compiled (a graph break, no C++ or Triton compiler, more than
``torch._dynamo.config.recompile_limit`` variants, an error of the compiler)
runs eagerly, with one :class:`CompileFallbackWarning` per loss class and
process naming the cause.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch._functorch.config as functorch_config
from torch._dynamo import maybe_mark_dynamic

__all__ = ["CompileFallbackWarning", "compiled_call", "loss_terms", "should_compile"]

#: TorchInductor's options for a loss. A loss reduces (batch, classes) tensors over the batch for
#: per-class statistics (DIST, R2KD); Inductor splits each such reduction in two kernels to use more
#: of a GPU, which for a loss's sizes costs a launch more than it saves (benchmarks/triton_kernels.py).
INDUCTOR_OPTIONS = {"split_reductions": False}
#: The compiled call of each loss class, made once per process.
_COMPILED: dict[type, Callable] = {}
#: Loss classes whose compiled call has run forward and backward in this process.
_PROBED: set[type] = set()
#: Loss classes whose compilation failed in this process, with the reason (they run eagerly).
_FAILED: dict[type, str] = {}


class CompileFallbackWarning(RuntimeWarning):
    """A loss could not be compiled and runs eagerly (``trainer__compile_loss``)."""


def should_compile(loss, option: bool) -> bool:
    """Whether a fit compiles ``loss``: the trainer's ``compile_loss`` ``option``, unless the loss
    declares itself not ``compilable`` (then a :class:`CompileFallbackWarning` says so)."""
    if option and loss.compilable is False:
        warnings.warn(f"trainer__compile_loss=True: the loss {type(loss).__name__} cannot be compiled (its "
                      "call does host work on every batch) and runs eagerly. trainer__compile_loss=False "
                      "silences this warning.", CompileFallbackWarning, stacklevel=3)
    return bool(option) and loss.compilable is not False


def _call(loss, student_logits, teacher_logits, y, state, **kwargs):
    return loss(student_logits, teacher_logits, y, state, **kwargs)


def compiled_call(loss_class: type) -> Callable:
    """The compiled ``(loss, student_logits, teacher_logits, y, state, **kwargs) -> terms`` of a class.

    Made once per class and process. Dynamo keeps its compiled variants on
    the code object, at most ``recompile_limit`` (8) of them: each class gets
    its own copy of the code, so the classes of a process do not share them.
    """
    compiled = _COMPILED.get(loss_class)
    if compiled is None:
        code = _call.__code__.replace(co_name=f"{loss_class.__name__}_terms")
        function = types.FunctionType(code, _call.__globals__, code.co_name)
        compiled = _COMPILED[loss_class] = torch.compile(function, fullgraph=True, options=INDUCTOR_OPTIONS)
    return compiled


def _mark_batch_dynamic(value: Any) -> None:
    if isinstance(value, torch.Tensor) and value.ndim:
        maybe_mark_dynamic(value, 0)
    elif isinstance(value, tuple):  # a compressed book (TopKBook): a named tuple of batch tensors
        for item in value:
            _mark_batch_dynamic(item)


def _probe(compiled: Callable, loss, student_logits, teacher_logits, y, state, **kwargs) -> None:
    """One compiled forward and backward on copies of the batch (the loss's own gradients untouched)."""
    student = student_logits.detach().clone().requires_grad_()
    terms = compiled(loss, student, teacher_logits, y, state, **kwargs)
    torch.autograd.grad(sum(terms.values()), student, allow_unused=True)


def loss_terms(loss, student_logits: torch.Tensor, teacher_logits, y: torch.Tensor, state,
               compiled: bool = False, **kwargs) -> dict[str, torch.Tensor]:
    """The loss's named terms of one batch: ``loss(student_logits, teacher_logits, y, state, **kwargs)``.

    Parameters
    ----------
    loss : DistillationLoss
    student_logits, teacher_logits, y, state
        As :meth:`DistillationLoss.__call__ <skd.losses.DistillationLoss.__call__>`.
    compiled : bool, default=False
        Run the loss's compiled call (:func:`compiled_call`) when gradients
        are on (training). Without gradients (validation) the loss runs
        eagerly: a no-grad graph would be a second compilation for a pass
        that launches half the kernels. A compilation that fails warns once
        per class (:class:`CompileFallbackWarning`) and the loss runs eagerly.
    **kwargs
        Passed on (``second=`` for a loss that compares two passes).
    """
    cls = type(loss)
    if not (compiled and torch.is_grad_enabled()) or cls in _FAILED:
        return loss(student_logits, teacher_logits, y, state, **kwargs)
    for value in (student_logits, teacher_logits, y, *kwargs.values()):
        _mark_batch_dynamic(value)
    call = compiled_call(cls)
    try:
        # the backward is compiled with the forward, so that its failure is caught here, not in backward()
        with functorch_config.patch(force_non_lazy_backward_lowering=True):
            if cls not in _PROBED:
                _probe(call, loss, student_logits, teacher_logits, y, state, **kwargs)
                _PROBED.add(cls)
            return call(loss, student_logits, teacher_logits, y, state, **kwargs)
    except Exception as error:  # noqa: BLE001 -- the eager call below tells the loss's errors from the compiler's
        failure = f"{type(error).__name__}: {(str(error).strip() or '(no message)').splitlines()[0]}"
    # eagerly, outside the handler: an error of the loss itself (bad input) raises as without compiling
    terms = loss(student_logits, teacher_logits, y, state, **kwargs)
    _FAILED[cls] = failure
    warnings.warn(
        f"The loss {cls.__name__} could not be compiled and runs eagerly for the rest of this process "
        f"({failure}). The fit is correct, with more kernels per step. "
        "trainer__compile_loss=False silences this warning.", CompileFallbackWarning, stacklevel=2)
    return terms
