"""The optimizer's fused implementation, where torch has one and the user chose none (issue 18).

torch's ``Adam``, ``AdamW``, ``SGD`` and ``Adagrad`` have three
implementations of the same update: a Python loop over the parameters (the
default on the CPU), ``foreach`` (multi-tensor ops; the default on CUDA) and
``fused`` (one kernel per parameter group and step). On a small student the
loop is a large share of the step: for an MLP 100-128-10 at batch 32 on the
CPU, Adam's loop takes about 320-480 µs of a 0.8-1.2 ms step, its fused form
140-170 µs (``benchmarks/speed.py``). So a fit builds the optimizer with
``fused=True`` when:

- the optimizer is one of torch's own four classes (a subclass may not take
  ``fused``);
- neither ``optimizer__fused`` nor ``optimizer__foreach`` is set (nor either
  key in a parameter group of ``optimizer__param_groups``), and not
  ``optimizer__differentiable=True``: a choice the user made is kept;
- every parameter is a floating-point tensor on the CPU or CUDA (Adagrad:
  the CPU only, torch has no fused CUDA Adagrad);
- for ``SGD`` and ``Adagrad``, no embedding of the student has sparse
  gradients (their fused kernels take dense gradients only).

The update is the same algorithm; its float rounding differs from the loop's
(the order of operations inside the kernel), as ``foreach`` does already.
``optimizer__fused=False`` gives torch's default back (give it at construction: skorch applies
an ``optimizer__*`` set on a fitted net to the live optimizer only, and a refit builds a new one).
"""

from __future__ import annotations

import torch

__all__ = ["FUSED_DEVICES", "with_fused_default"]

#: torch's optimizers with a fused implementation, and the device types it runs on.
FUSED_DEVICES: dict[type, tuple[str, ...]] = {
    torch.optim.Adam: ("cpu", "cuda"),
    torch.optim.AdamW: ("cpu", "cuda"),
    torch.optim.SGD: ("cpu", "cuda"),
    torch.optim.Adagrad: ("cpu",),
}
#: Those whose fused kernel refuses sparse gradients (Adam and AdamW refuse them in every form).
_DENSE_ONLY = (torch.optim.SGD, torch.optim.Adagrad)
_CHOICES = ("fused", "foreach")


def _params(args: tuple) -> list[torch.Tensor]:
    params = []
    for group in (args[0] if args else []):
        if isinstance(group, dict):
            params.extend(group["params"])
        else:
            params.append(group)
    return params


def _groups_choose(args: tuple) -> bool:
    groups = args[0] if args else []
    return any(isinstance(group, dict) and any(key in group for key in _CHOICES) for group in groups)


def _sparse_gradients(module: torch.nn.Module | None) -> bool:
    if module is None:
        return False
    sparse = (torch.nn.Embedding, torch.nn.EmbeddingBag)
    return any(isinstance(m, sparse) and m.sparse for m in module.modules())


def with_fused_default(optimizer: type, args: tuple, kwargs: dict,
                       module: torch.nn.Module | None = None) -> dict:
    """``kwargs`` with ``fused=True`` added where the rules of this module allow it.

    Parameters
    ----------
    optimizer : type
        The net's ``optimizer`` (a class).
    args, kwargs
        What skorch's ``get_params_for_optimizer`` returns: ``args[0]`` the
        parameters or parameter groups, ``kwargs`` the ``optimizer__*`` options.
    module : torch.nn.Module or None
        The student (checked for sparse embeddings).

    Returns
    -------
    dict
        A new dict; ``kwargs`` itself is not changed.
    """
    devices = FUSED_DEVICES.get(optimizer) if isinstance(optimizer, type) else None
    if devices is None or any(key in kwargs for key in _CHOICES) or kwargs.get("differentiable"):
        return kwargs
    if _groups_choose(args) or (issubclass(optimizer, _DENSE_ONLY) and _sparse_gradients(module)):
        return kwargs
    params = _params(args)
    if not params or not all(isinstance(p, torch.Tensor) and p.device.type in devices
                             and p.is_floating_point() for p in params):
        return kwargs
    return {**kwargs, "fused": True}
