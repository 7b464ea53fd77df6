"""Teachers that pickle like any Python object, and load on a CPU-only machine.

skorch pickles its ``cuda_dependent_attributes_`` in a nested, plain
``pickle`` stream, which stores classes by reference. A teacher whose class
lives in ``__main__`` (any notebook) then fails to load in a joblib (loky)
or Dask worker, because the worker's ``__main__`` is not the notebook's. So
skd leaves the teacher in the estimator's own state, where the outer pickler
(cloudpickle, for loky and Dask) sees it and can store such classes by value.

What skorch's nested stream bought, loading on the CPU what was pickled on
CUDA, is kept by :func:`cpu_portable`: a teacher holding accelerator tensors
is pickled as a copy whose tensors are on the CPU (fit moves the teacher to
the student's device anyway).
"""

from __future__ import annotations

import copy
import types
from itertools import chain

import torch
from skorch import NeuralNet

__all__ = ["cpu_portable"]

#: How deep :func:`cpu_portable` looks into containers and attributes for tensors.
_MAX_DEPTH = 8


#: Pickled as they are: functions (lambdas, closures) and modules are not searched, and
#: skorch nets map their own CUDA state to the CPU when unpickled.
_NOT_SEARCHED = (types.FunctionType, types.MethodType, types.BuiltinFunctionType, types.ModuleType,
                 NeuralNet)


def _on_accelerator(tensor: torch.Tensor) -> bool:
    return tensor.device.type != "cpu"


def _accelerator_tensors(obj, found: dict, seen: set, depth: int = 0) -> None:
    """Collect the non-CPU tensors reachable from ``obj`` into ``found`` (by id)."""
    if id(obj) in seen or depth > _MAX_DEPTH or isinstance(obj, (str, bytes, int, float, type)):
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        if _on_accelerator(obj):
            found[id(obj)] = obj
        return
    if isinstance(obj, torch.nn.Module):
        children = chain(obj.parameters(), obj.buffers())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = iter(obj)
    elif isinstance(obj, dict):
        children = iter(obj.values())
    elif isinstance(obj, _NOT_SEARCHED):
        return
    elif hasattr(obj, "__dict__"):  # adapters, estimators, skorch nets
        children = iter(vars(obj).values())
    else:
        return
    for child in children:
        _accelerator_tensors(child, found, seen, depth + 1)


def _cpu_twin(tensor: torch.Tensor) -> torch.Tensor:
    cpu = tensor.detach().to("cpu", copy=True)
    if isinstance(tensor, torch.nn.Parameter):
        return torch.nn.Parameter(cpu, requires_grad=tensor.requires_grad)
    return cpu


def cpu_portable(obj):
    """``obj`` itself, or a deep copy of it with its accelerator tensors on the CPU.

    Tensors are found through modules (parameters and buffers), lists,
    tuples, dicts and object attributes; a callable's closure is not
    searched. The copy shares nothing with ``obj`` and moves each tensor to
    the CPU once, without a second copy on the accelerator.
    """
    found: dict = {}
    _accelerator_tensors(obj, found, set())
    if not found:
        return obj
    memo = {key: _cpu_twin(tensor) for key, tensor in found.items()}
    return copy.deepcopy(obj, memo)
