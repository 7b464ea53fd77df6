"""What the captured step can run with, and what a fit says when it cannot.

:func:`graph_blockers` lists why a fit cannot use the captured step (each
reason names its cause); :func:`fallback_warning` turns them into the one
warning of a fit that wanted the graph and runs the eager step;
:func:`body_clipper` moves skorch's ``GradientNormClipping`` inside the
captured step.

Callbacks with per-batch hooks that run with the captured step, and why:
skorch's ``LRScheduler`` (epoch-wise: it writes ``group["lr"]`` between
epochs; batch-wise: in ``on_batch_end``, copied into the lr tensor before the
next replay, not with ``cycle_momentum``, which changes the betas);
``ProgressBar`` (host work only); ``GradientNormClipping`` (clips inside the
step, :func:`body_clipper`); skd's ``StudentPruning(structured=False)``
(prunes between epochs; torch's masks are applied in the forward, inside the
graph: one re-capture per pruning step); ``EpochScoring`` and
``PassthroughScoring`` with ``on_train=False`` (their batch hooks act on
validation batches only); any callback acting in ``on_train_*`` and
``on_epoch_*`` hooks only (``Freezer``, ``Checkpoint``, ``EarlyStopping``,
the schedules, the loss).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from skorch.callbacks import (
    Callback,
    EpochScoring,
    GradientNormClipping,
    LRScheduler,
    PassthroughScoring,
    ProgressBar,
)

from skd.book import is_book
from skd.callbacks.pruning import StudentPruning
from skd.training.graph import lr_in_tensor
from skd.training.step import StepParts

__all__ = ["body_clipper", "fallback_warning", "graph_blockers"]

# ------------------------------------------------------------------ clipping
class _ClipGradNorm:
    """``clip_grad_norm_`` inside the step: capturable (no host read, foreach on CUDA)."""

    def __init__(self, max_norm: float, norm_type: float):
        self.max_norm = max_norm
        self.norm_type = norm_type

    def __call__(self, module: torch.nn.Module) -> None:
        torch.nn.utils.clip_grad_norm_([p for p in module.parameters() if p.grad is not None],
                                       max_norm=self.max_norm, norm_type=self.norm_type)


def body_clipper(callbacks: Sequence) -> Callable[[torch.nn.Module], None] | None:
    """The gradient clipping the captured step must do itself, from skorch's ``GradientNormClipping``.

    The captured step calls no ``on_grad_computed`` hook: pass the result as
    ``CapturedStep(..., clip=...)``. None if no callback clips.
    """
    clips = [callback for _, callback in callbacks
             if isinstance(callback, GradientNormClipping) and callback.gradient_clip_value is not None]
    if not clips:
        return None
    if len(clips) > 1:
        raise ValueError("More than one GradientNormClipping callback clips the gradients; keep one.")
    return _ClipGradNorm(clips[0].gradient_clip_value, clips[0].gradient_clip_norm_type)


# ----------------------------------------------------------------- blockers
def graph_blockers(parts: StepParts, data, callbacks, optimizer_reason: str | None,
                   optimizer: torch.optim.Optimizer | None = None) -> list[str]:
    """Why the captured step cannot run for this fit (empty: it can).

    Each reason names its cause; :func:`fallback_warning` adds how to avoid it.
    """
    reasons = []
    if torch.device(parts.device).type != "cuda":
        reasons.append("the device is not CUDA")
    if data is None:
        reasons.append("the data is not in-memory device batches (a Dataset or a custom iterator)")
    elif parts.loss.capabilities.teacher and not is_book(data.X):
        reasons.append("the teacher runs online (no book)")
    if data is not None and data.sparse:
        reasons.append("X is sparse (its rows are selected and densified per batch)")
    if parts.augment is not None:
        reasons.append("augment runs the teacher online on every batch")
    if parts.hints is not None:
        reasons.append("hints (feature distillation) train projectors beside the student, which the "
                       "captured step does not yet snapshot or re-bind")
    if parts.net_steps:
        reasons.append(f"the classifier's {', '.join(parts.net_steps)} is overridden, and the captured "
                       "step runs skd's step, not the net's methods")
    if optimizer_reason:
        reasons.append(optimizer_reason)
    for name, callback in callbacks:
        reason = _callback_blocker(name, callback, optimizer)
        if reason:
            reasons.append(reason)
    return reasons


def _callback_blocker(name: str, callback, optimizer) -> str | None:
    if isinstance(callback, LRScheduler):
        if callback.step_every != "batch":
            return None
        policy = callback.policy if isinstance(callback.policy, str) else callback.policy.__name__
        if policy in ("CyclicLR", "OneCycleLR") and callback.kwargs.get("cycle_momentum", True):
            return (f"the callback {name!r} cycles the momentum every batch (LRScheduler with "
                    f"{policy}, cycle_momentum=True)")
        if optimizer is not None and not lr_in_tensor(optimizer):
            return (f"the callback {name!r} changes the learning rate every batch, and "
                    f"{type(optimizer).__name__}'s is baked into the graph")
        return None
    if isinstance(callback, (ProgressBar, GradientNormClipping)):
        return None
    if isinstance(callback, StudentPruning):
        if callback.structured:
            return f"the callback {name!r} prunes structurally (it traces a batch and rebuilds the optimizer)"
        return None
    hooks = [hook for hook in ("on_batch_begin", "on_batch_end", "on_grad_computed")
             if _overrides(callback, hook)]
    if hooks:
        return f"the callback {name!r} acts on every batch ({', '.join(hooks)})"
    return None


def _overrides(callback, hook: str) -> bool:
    if isinstance(callback, (EpochScoring, PassthroughScoring)) and not callback.on_train:
        return False  # their batch hooks act on validation batches only
    own = getattr(type(callback), hook, None)
    return own is not None and own is not getattr(Callback, hook)


_ADVICE = (
    ("the device is not CUDA", "train on a CUDA device"),
    ("not in-memory device batches", "pass X as arrays or tensors (or a book), not a Dataset, "
                                     "and keep trainer__batching='auto'"),
    ("the teacher runs online", "keep book='auto' or 'memory' so the teacher writes its book once"),
    ("X is sparse", "densify X, if it fits in device memory"),
    ("is overridden", "add the method's work to the loss (a term, see 'Write your own loss') or to a "
                      "callback, or accept the eager step"),
    ("augment", "augmentation needs the online teacher: it always runs eagerly"),
    ("hints (feature distillation)", "hints always run eagerly for now"),
    ("capturable mode", "use SGD, Adam or AdamW"),
    ("cycles the momentum", "pass cycle_momentum=False to the LRScheduler"),
    ("baked into the graph", "use SGD, Adam or AdamW, or step the schedule per epoch"),
    ("prunes structurally", "prune with structured=False, or accept the eager step"),
    ("acts on every batch", "move its work to on_epoch_begin/on_epoch_end, or accept the eager step"),
    ("checks every batch on the host", "leave trainer__check_every='auto' (a device-side check)"),
)


def fallback_warning(reasons: Sequence[str]) -> str:
    """The warning of a fit that wanted the captured step and runs the eager one.

    Names each cause and how to avoid it; the trainer warns once per fit.
    """
    lines = []
    for reason in reasons:
        advice = next((text for key, text in _ADVICE if key in reason), None)
        lines.append(f"- {reason}" + (f": {advice}." if advice else "."))
    return ("This fit trains with the eager step, not the captured CUDA graph, because:\n"
            + "\n".join(lines)
            + "\ntrainer__step_mode='eager' silences this warning; trainer__step_mode='graph' makes "
              "it an error.")
