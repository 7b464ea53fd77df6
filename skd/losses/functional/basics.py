"""Shared pieces: parameter checks, softening, masks, the labelled mean and cross-entropy."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "UNDEFINED_RTOL",
    "UNLABELLED",
    "check_choice",
    "check_temperature",
    "class_indices",
    "compute_dtype",
    "labelled_cross_entropy",
    "standardize_logits",
    "labelled_mean",
    "soften",
    "target_mask",
    "target_or_teacher_top",
]

#: Encoded label of an unlabelled row (scikit-learn's semi-supervised convention).
UNLABELLED = -1
#: A correlation (exact convention) is undefined where its input's spread ``|a - mean(a)|`` is at most
#: this many units of rounding (the compute dtype's ``eps``) times ``|a|``: the input is constant.
UNDEFINED_RTOL = 32


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a correlation is computed in: float32 for half types, whose 3 significant digits make
    sums of squares overflow or cancel; ``dtype`` otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def check_temperature(temperature: float, name: str = "temperature") -> float:
    """Return ``temperature`` as a float, or raise if it is not positive."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a positive number, got {temperature!r} "
            f"({type(temperature).__name__})."
        ) from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(
            f"{name} must be a finite number > 0, got {temperature!r}. "
            f"Typical values are 1 to 8 (4 is the common default)."
        )
    return value


def check_choice(value, choices: tuple[str, ...], name: str, hint: str = "") -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ValueError naming ``name``."""
    if not isinstance(value, str) or value not in choices:
        valid = " or ".join(repr(choice) for choice in choices)
        raise ValueError(f"{name} must be {valid}, got {value!r}.{' ' + hint if hint else ''}")
    return value


def soften(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log of the temperature-softened distribution, ``log softmax(z / T)``.

    Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural
    Network", Eq. (1): ``q_i = exp(z_i / T) / sum_j exp(z_j / T)``.
    """
    return torch.log_softmax(logits / temperature, dim=1)


#: ``arange(n)`` per (n, device), made once per process. Owner: :func:`class_indices`, its only reader and
#: writer. Why process-wide: the masks of every step compare with it, and making it per step would be one
#: kernel more per step (on a GPU, a launch) for a constant; it holds n int64 values per size and device.
_INDICES: dict[tuple[int, torch.device], torch.Tensor] = {}


def class_indices(n: int, device: torch.device | str) -> torch.Tensor:
    """``torch.arange(n)`` on ``device`` (int64), made once per process and device.

    Kept for the process's life (``n`` int64 values per size and device).
    Not kept when made while a CUDA graph is captured (its memory belongs to
    that graph) nor in inference mode (an inference tensor can't be saved
    for a backward later). In a compiled loss it is a plain ``arange``,
    which the compiler fuses into the kernels that read it.
    """
    if torch.compiler.is_compiling():  # traced into a compiled loss: a constant the compiler fuses
        return torch.arange(n, device=device)
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # the key names the device the tensor is on
        device = torch.device("cuda", torch.cuda.current_device())
    key = (int(n), device)
    indices = _INDICES.get(key)
    if indices is None:
        indices = torch.arange(n, device=device)
        capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
        if not (capturing or torch.is_inference_mode_enabled()):
            _INDICES[key] = indices
    return indices


def target_mask(target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Boolean (batch, n_classes) mask of the target class.

    A comparison with ``arange`` rather than ``F.one_hot``, whose range check
    reads the labels back to the host on CUDA (a sync, fatal to graph capture).
    """
    return target.long().unsqueeze(1) == class_indices(n_classes, target.device)


def labelled_mean(values: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of per-sample ``values`` over the labelled rows (``target >= 0``).

    ``sum_i [t_i >= 0] v_i / max(n_labelled, 1)``: static shapes, no boolean
    indexing and no host read, so it is 0 (with zero gradient) for a batch
    without labelled rows. Rows marked ``UNLABELLED`` (-1) count for nothing;
    their values are selected away with ``torch.where``, so a NaN there
    cannot leak into the mean.
    """
    labelled = target >= 0
    total = torch.where(labelled, values, 0.0).sum()
    return total / labelled.sum().clamp_min(1).to(values.dtype)


def labelled_cross_entropy(student_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the labels, averaged over the labelled rows only.

    The usual ``-log softmax(z)_t``, batch mean (Hinton et al., 2015, the
    hard-target term), restricted to rows whose ``target`` is not
    ``UNLABELLED``: ``F.cross_entropy(..., ignore_index=UNLABELLED)``, whose
    mean is over the labelled rows. A batch with no labelled row has no mean
    (0/0); its CE is 0, with a zero gradient (``nan_to_num``), as
    :func:`labelled_mean` gives.
    """
    ce = F.cross_entropy(student_logits, target, ignore_index=UNLABELLED)
    return torch.nan_to_num(ce, nan=0.0)


def standardize_logits(logits: torch.Tensor) -> torch.Tensor:
    """Z-score each row of logits (Sun et al., "Logit Standardization in KD", CVPR 2024, Eq. 7).

    ``(z - mean(z)) / (std(z) + 1e-7)`` over the classes, with torch's default
    (Bessel-corrected) ``std``, exactly as the authors' released ``normalize``.
    """
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True)
    return (logits - mean) / (1e-7 + std)


def target_or_teacher_top(target: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """The label where there is one, else the teacher's top class.

    What DKD's and CAKD's target-class split uses for an unlabelled row
    (``target == UNLABELLED``): the class the teacher believes in, as in
    pseudo-labelling. With it, their soft terms stay an exact split of
    ``KL(p^T || p^S)`` (the chain rule holds for any partition of the
    classes), so an unlabelled row is distilled as fully as a labelled one.
    """
    return torch.where(target >= 0, target.long(), teacher_logits.argmax(dim=1))
