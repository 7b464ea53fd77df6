"""A fitted student outside the process: saved without pickle, exported lean, pickled portably.

**Saving without pickle.** :func:`save_student` writes the student's
``state_dict`` with safetensors and, in the file's metadata, the labels
(``classes_``), the data dimensions and the JSON-able ``module__*``
parameters. :func:`load_student` rebuilds a predicting classifier from that
file and the student's module class; no pickle is read, so a file from an
untrusted source cannot run code.

``pickle.load`` of a fitted estimator (or ``joblib.load``, or skorch's
``load_params`` of a ``.pt`` file without ``weights_only``) runs code: a
teacher is pickled by value, functions and classes included. Unpickle only
files you made. :func:`load_student` is the way to read a file from anyone
else: it checks the metadata's fields and cross-checks them against the
tensor shapes in the safetensors header *before* building any module (the
module is first built on PyTorch's ``meta`` device, which allocates
nothing), so edited metadata gets a clear error naming the file and the
field instead of a huge allocation or a classifier that mislabels; a tensor
holding NaN or infinity is refused, naming it, instead of a student that
predicts one class everywhere.

**Exporting.** :func:`lean_copy` is a copy for prediction only: no
teacher, trainer, optimizer or callbacks; :func:`refuse_if_exported` stops
a fit of it.

**Pickling.** skorch pickles its ``cuda_dependent_attributes_`` in a
nested, plain ``pickle`` stream, which stores classes by reference. A
teacher whose class lives in ``__main__`` (any notebook) then fails to load
in a joblib (loky) or Dask worker, because the worker's ``__main__`` is not
the notebook's. So skd leaves the teacher in the estimator's own state,
where the outer pickler (cloudpickle, for loky and Dask) sees it and can
store such classes by value. What skorch's nested stream bought, loading on
the CPU what was pickled on CUDA, is kept by :func:`cpu_portable`: a
teacher holding accelerator tensors is pickled as a copy whose tensors are
on the CPU (fit moves the teacher to the student's device anyway).
"""

from __future__ import annotations

import copy
import json
import math
import os
import types
from collections.abc import Callable
from itertools import chain
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from sklearn.preprocessing import LabelEncoder
from skorch import NeuralNet

__all__ = ["FORMAT", "SavesStudent", "cpu_portable", "lean_copy", "load_student", "refuse_if_exported",
           "save_student"]

#: Format tag written in the metadata; bumped when the layout changes.
FORMAT = "skd-student/1"

#: Kinds of ``classes_dtype`` a file may name: bool, integers, floats, text, bytes, object.
_CLASS_KINDS = "biufUSO"
_FIELDS = ("format", "classes", "classes_dtype", "data_dims", "n_features_in", "module_params")


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def save_student(net, path: str | os.PathLike) -> None:
    """Write ``net``'s student weights and what rebuilding it needs to ``path``.

    ``module__*`` parameters that are not JSON (e.g. a layer class) are not
    saved; give them again to :func:`load_student`.
    """
    net._check_fitted()
    classes = np.asarray(net.classes_)
    module_params = {key: (list(value) if isinstance(value, tuple) else value)
                     for key, value in net.get_params_for("module").items()}
    meta = {
        "format": FORMAT,
        "classes": classes.tolist(),
        "classes_dtype": classes.dtype.str,
        "data_dims": getattr(net, "data_dims_", None),
        "n_features_in": getattr(net, "n_features_in_", None),
        "module_params": {key: value for key, value in module_params.items() if _jsonable(value)},
    }
    state = {key: value.detach().cpu().clone().contiguous()
             for key, value in net.module_.state_dict().items()}
    save_file(state, os.fspath(path), metadata={"skd": json.dumps(meta)})


class _Refuse:
    """Builds the errors of :func:`load_student`: each names the file and the field."""

    def __init__(self, path: str):
        self.path = path

    def __call__(self, field: str, problem: str, fix: str = "") -> ValueError:
        fix = fix or ("The file was edited or damaged: save the student again with save_student, "
                      "or do not load a file from a source you do not trust.")
        return ValueError(f"{self.path}: the metadata field {field!r} {problem}. {fix}")


def _read_header(path: str, refuse: _Refuse) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """The ``skd`` metadata and the tensor shapes of a safetensors file, reading no tensor."""
    try:
        with safe_open(path, framework="pt") as handle:
            raw = (handle.metadata() or {}).get("skd")
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise ValueError(
            f"{path} is not a readable safetensors file ({error}). Was it truncated, or not "
            "written by save_student?"
        ) from error
    if raw is None:
        raise ValueError(f"{path} was not written by save_student (no 'skd' metadata).")
    try:
        meta = json.loads(raw)
    except ValueError as error:
        raise refuse("skd", f"is not JSON ({error})") from error
    if not isinstance(meta, dict):
        raise refuse("skd", f"is a {type(meta).__name__}, not a JSON object")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} has format {meta.get('format')!r}; this skd reads {FORMAT!r}.")
    missing = [field for field in _FIELDS if field not in meta]
    if missing:
        raise refuse(missing[0], "is missing")
    return meta, shapes


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked_classes(meta: dict, refuse: _Refuse) -> np.ndarray:
    try:
        dtype = np.dtype(meta["classes_dtype"])
    except (TypeError, ValueError, SyntaxError) as error:
        raise refuse("classes_dtype",
                     f"= {meta['classes_dtype']!r} is not a NumPy dtype ({error})") from error
    if dtype.kind not in _CLASS_KINDS:
        raise refuse("classes_dtype", f"= {meta['classes_dtype']!r} is not a dtype of labels "
                                      "(bool, integer, float, text or object)")
    labels = meta["classes"]
    if not isinstance(labels, list) or not labels:
        raise refuse("classes", "must be a non-empty list of labels")
    if not all(isinstance(label, (str, int, float, bool)) for label in labels):
        raise refuse("classes", "must hold only text or numbers")
    try:
        classes = np.asarray(labels, dtype=object if dtype.kind == "O" else dtype)
    except (TypeError, ValueError, OverflowError) as error:
        raise refuse("classes", f"cannot be read as {dtype} ({error})") from error
    if len(set(classes.tolist())) != len(classes):
        raise refuse("classes", "holds a label twice")
    return classes


def _check_dims(meta: dict, n_classes: int, refuse: _Refuse) -> None:
    dims = meta["data_dims"]
    if dims is not None:
        if not isinstance(dims, dict) or not all(_is_int(value) and value >= 1 for value in dims.values()):
            raise refuse("data_dims", f"= {dims!r} must map names to positive integers")
        if dims.get("n_classes", n_classes) != n_classes:
            raise refuse("data_dims", f"says {dims['n_classes']} classes but 'classes' holds {n_classes}")
    n_features_in = meta["n_features_in"]
    if n_features_in is not None and not (_is_int(n_features_in) and n_features_in >= 1):
        raise refuse("n_features_in", f"= {n_features_in!r} must be a positive integer or null")
    if not isinstance(meta["module_params"], dict):
        raise refuse("module_params", "must be a JSON object of module__* values")


def _integers_in(value):
    if _is_int(value):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _integers_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _integers_in(item)


def _expected_module(net, module, meta: dict, shapes: dict, refuse: _Refuse):
    """The student built on the ``meta`` device (no memory), or None if it cannot be built there."""
    if isinstance(module, torch.nn.Module):
        return module
    try:
        # skorch lets module_ be set only inside its 'module' init context
        with net._current_init_context("module"), torch.device("meta"):
            net.initialize_module()
        return net.module_
    except Exception:  # a module that cannot live on 'meta': fall back to a coarser check
        largest = max((max(shape, default=1) for shape in shapes.values()), default=0)
        for key, value in meta["module_params"].items():
            if any(number > largest for number in _integers_in(value)):
                raise refuse("module_params", f"sets {key}={value!r}, larger than every tensor "
                                              f"dimension in the file ({largest})") from None
        return None


def _check_against_header(net, module, meta, shapes, classes, refuse: _Refuse) -> None:
    built = _expected_module(net, module, meta, shapes, refuse)
    if built is None:
        return
    expected = {key: tuple(value.shape) for key, value in built.state_dict().items()}
    name = getattr(module, "__name__", type(module).__name__)
    fix = (f"Pass the module the file was saved from, with the same module__* parameters; if it "
           f"is, the metadata was edited: do not load {refuse.path}.")
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise refuse("module_params", f"builds a {name} whose weights are not the file's "
                                      f"(missing from the file: {missing[:5]}, not in the module: "
                                      f"{unexpected[:5]})", fix)
    for key, shape in expected.items():
        if shapes[key] != shape:
            size = math.prod(shape)
            raise refuse("module_params", f"builds a {name} whose {key!r} has shape {shape} "
                                          f"({size:,} values), but the file holds {shapes[key]}", fix)
    n_features = (meta["data_dims"] or {}).get("n_features")
    if n_features is None or isinstance(module, torch.nn.Module):
        return
    try:
        with torch.no_grad():
            out = built(torch.empty(2, n_features, device="meta"))
    except Exception:  # a student that takes other shapes than (batch, n_features)
        return
    if isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[1] != len(classes):
        raise refuse("classes", f"holds {len(classes)} labels, but the student outputs "
                                f"{out.shape[1]} logits per sample")


def load_student(cls, path: str | os.PathLike, module, **params):
    """A ``cls`` classifier with ``module``'s weights, labels and dimensions read from ``path``.

    ``params`` are classifier parameters (``device``, ``module__*``, ...);
    they win over the saved ``module__*`` values. No pickle is read, and the
    metadata is checked against the safetensors header before any module is
    built (see the module docstring): this is the way to read a student
    from an untrusted source.

    Raises
    ------
    ValueError
        If the file is not a readable ``save_student`` file, its metadata
        does not agree with itself or with the tensors it holds (the message
        names the file and the field), or a tensor holds NaN or infinity
        (the message names the tensor).
    """
    path = os.fspath(path)
    refuse = _Refuse(path)
    meta, shapes = _read_header(path, refuse)
    classes = _checked_classes(meta, refuse)
    _check_dims(meta, len(classes), refuse)
    saved = {f"module__{key}": value for key, value in meta["module_params"].items()}
    params.setdefault("teacher", None)
    net = cls(module, **{**saved, **params})
    encoder = LabelEncoder()
    encoder.classes_ = classes
    net.label_encoder_ = encoder
    net.classes_inferred_ = classes
    net.data_dims_ = meta["data_dims"]
    if meta["n_features_in"] is not None:
        net.n_features_in_ = meta["n_features_in"]
    _check_against_header(net, module, meta, shapes, classes, refuse)
    state = load_file(path, device="cpu")
    _check_finite(state, path)
    net.initialize()
    net.module_.load_state_dict(state)
    return net


def _check_finite(state: dict[str, torch.Tensor], path: str) -> None:
    """Refuse a tensor holding NaN or infinity: the student would predict garbage (one class everywhere).

    No option allows them: a fit never keeps non-finite weights (the guard
    undoes or refuses such steps), so such a file is damaged or edited.
    """
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            count = int((~torch.isfinite(tensor)).sum())
            raise ValueError(
                f"{path}: the tensor {key!r} holds {count} non-finite value(s) (NaN or infinity) of "
                f"{tensor.numel()}; a student with them predicts garbage. The file is damaged or was "
                "edited: save the student again from a fitted estimator, or do not load this file."
            )


class SavesStudent:
    """Mixin of ``DistillationClassifier``: :meth:`save_student` and :meth:`load_student`."""

    def save_student(self, path: str | os.PathLike) -> None:
        """Save the student without pickle: safetensors weights, ``classes_`` and dimensions.

        ``module__*`` values that are not JSON (e.g. a layer class) are not
        saved; pass them again to :meth:`load_student`.

        Examples
        --------
        >>> clf.save_student("student.safetensors")  # doctest: +SKIP
        >>> clf2 = DistillationClassifier.load_student("student.safetensors", module=MLP)  # doctest: +SKIP
        """
        save_student(self, path)

    @classmethod
    def load_student(cls, path: str | os.PathLike, module, **params):
        """A predicting classifier from a :meth:`save_student` file and the student's module class.

        Reads no pickle. ``params`` are classifier parameters (``device``,
        ``module__*``, ``teacher`` to go on training with ``partial_fit``).
        The metadata is checked against the tensors' shapes before any
        module is built. Unpickling an estimator runs code (teachers are
        pickled by value), so this is the way to read a file you did not
        make.
        """
        return load_student(cls, path, module, **params)


# ----------------------------------------------------------------------------- export
def lean_copy(net, predict_nonlinearity: Callable):
    """A copy of ``net`` without teacher, trainer, hints' projectors, augmentation, callbacks, optimizer
    or criterion.

    Its pickle holds the student, ``classes_`` and ``history``. skorch's
    ``trim_for_prediction`` drops the criterion that the output
    nonlinearity is inferred from, so it is given here.
    """
    lean = copy.copy(net)
    for key in list(vars(lean)):
        if key.startswith("teacher"):
            setattr(lean, key, None)
    vars(lean).pop("trainer_", None)  # the last fit's trainer holds the teacher and the loss
    vars(lean).pop("hint_plan_", None)  # hints train only: their projectors are dropped too
    if getattr(lean, "projectors_", None) is not None:
        lean.projectors_ = None
    lean.augment = None
    lean.callbacks_ = []
    lean.callbacks = None
    lean.predict_nonlinearity = predict_nonlinearity
    lean.trim_for_prediction()
    lean.exported_ = True
    return lean


def refuse_if_exported(net) -> None:
    """Raise if ``net`` is a lean copy: it has no optimizer or teacher to train with."""
    if getattr(net, "exported_", False):
        raise RuntimeError(
            f"This {type(net).__name__} was made by export_student(): a lean copy that only "
            "predicts (no teacher, optimizer or callbacks). Train the estimator it was "
            "exported from, or load its weights with load_student(..., teacher=...) to "
            "train again."
        )


# ----------------------------------------------------------------------------- pickling
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
