"""Saving a fitted student without pickle: safetensors weights plus a little JSON.

:func:`save_student` writes the student's ``state_dict`` with safetensors and,
in the file's metadata, the labels (``classes_``), the data dimensions and the
JSON-able ``module__*`` parameters. :func:`load_student` rebuilds a
predicting classifier from that file and the student's module class; no
pickle is read, so a file from an untrusted source cannot run code.

Reading untrusted files
-----------------------
``pickle.load`` of a fitted estimator (or ``joblib.load``, or skorch's
``load_params`` of a ``.pt`` file without ``weights_only``) runs code: a
teacher is pickled by value, functions and classes included. Unpickle only
files you made. :func:`load_student` is the way to read a file from anyone
else: it checks the metadata's fields and cross-checks them against the
tensor shapes in the safetensors header *before* building any module (the
module is first built on PyTorch's ``meta`` device, which allocates
nothing), so edited metadata gets a clear error naming the file and the
field instead of a huge allocation or a classifier that mislabels.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from sklearn.preprocessing import LabelEncoder

__all__ = ["FORMAT", "SavesStudent", "load_student", "save_student"]

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
        If the file is not a readable ``save_student`` file, or its metadata
        does not agree with itself or with the tensors it holds; the message
        names the file and the field.
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
    net.initialize()
    net.module_.load_state_dict(load_file(path, device="cpu"))
    return net


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
