"""Saving a fitted student without pickle: safetensors weights plus a little JSON.

:func:`save_student` writes the student's ``state_dict`` with safetensors and,
in the file's metadata, the labels (``classes_``), the data dimensions and the
JSON-able ``module__*`` parameters. :func:`load_student` rebuilds a
predicting classifier from that file and the student's module class; no
pickle is read, so a file from an untrusted source cannot run code.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from sklearn.preprocessing import LabelEncoder

__all__ = ["FORMAT", "SavesStudent", "load_student", "save_student"]

#: Format tag written in the metadata; bumped when the layout changes.
FORMAT = "skd-student/1"


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


def load_student(cls, path: str | os.PathLike, module, **params):
    """A ``cls`` classifier with ``module``'s weights, labels and dimensions read from ``path``.

    ``params`` are classifier parameters (``device``, ``module__*``, ...);
    they win over the saved ``module__*`` values.
    """
    path = os.fspath(path)
    with safe_open(path, framework="pt") as handle:
        raw = (handle.metadata() or {}).get("skd")
    if raw is None:
        raise ValueError(f"{path} was not written by save_student (no 'skd' metadata).")
    meta = json.loads(raw)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} has format {meta.get('format')!r}; this skd reads {FORMAT!r}.")
    dtype = np.dtype(meta["classes_dtype"])
    classes = np.asarray(meta["classes"], dtype=object if dtype.kind == "O" else dtype)
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
        """
        return load_student(cls, path, module, **params)
