"""Issue 19, item 12: load_student checks a file's metadata against its tensors before building."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import skd.persist
from skd import MLP, DistillationClassifier

REMOVE = object()


@pytest.fixture(scope="module")
def saved(tmp_path_factory, digits):
    X, y = digits
    clf = DistillationClassifier(MLP, teacher=torch.nn.Linear(64, 10), loss="kd", max_epochs=1,
                                 module__hidden_units=[32], verbose=0, device="cpu", random_state=0)
    clf.fit(X[:200], y[:200])
    path = tmp_path_factory.mktemp("student") / "student.safetensors"
    clf.save_student(path)
    return path, clf


def _edited(saved, tmp_path, **changes):
    """A copy of the saved file whose metadata has ``changes`` (``REMOVE`` removes a field)."""
    path, _ = saved
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["skd"])
    for key, value in changes.items():
        if value is REMOVE:
            meta.pop(key)
        else:
            meta[key] = value
    out = tmp_path / "edited.safetensors"
    save_file(load_file(str(path)), str(out), metadata={"skd": json.dumps(meta)})
    return out


def test_a_saved_student_still_loads_and_predicts_the_same(saved, digits):
    path, clf = saved
    X, _ = digits
    loaded = DistillationClassifier.load_student(path, module=MLP)
    assert np.array_equal(loaded.predict(X[:50]), clf.predict(X[:50]))


def test_enormous_module_params_are_refused_before_anything_is_built(saved, tmp_path):
    path = _edited(saved, tmp_path, module_params={"hidden_units": [200000, 200000]})
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"edited\.safetensors: the metadata field 'module_params' builds"):
        DistillationClassifier.load_student(path, module=MLP)
    assert time.perf_counter() - start < 5  # no 149 GiB module was built first
    path = _edited(saved, tmp_path, module_params={"hidden_units": [200000]})
    with pytest.raises(ValueError, match=r"'layers.1.weight' has shape \(200000, 64\) \(12,800,000 values\)"):
        DistillationClassifier.load_student(path, module=MLP)


def test_module_params_that_disagree_with_the_weights_are_refused(saved, tmp_path):
    path = _edited(saved, tmp_path, module_params={"hidden_units": [16]})
    with pytest.raises(ValueError, match="'module_params'.*shape"):
        DistillationClassifier.load_student(path, module=MLP)


def test_fewer_classes_than_student_outputs_are_refused(saved, tmp_path):
    path = _edited(saved, tmp_path, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="edited.safetensors.*'data_dims' says 10 classes but 'classes'"):
        DistillationClassifier.load_student(path, module=MLP)
    # the data_dims edited too: the built student's last layer no longer fits the weights
    path = _edited(saved, tmp_path, classes=[0, 1, 2], data_dims={"n_features": 64, "n_classes": 3})
    with pytest.raises(ValueError, match="'module_params'.*shape"):
        DistillationClassifier.load_student(path, module=MLP)


def test_classes_that_disagree_with_the_outputs_are_refused_without_data_dims(saved, tmp_path):
    path = _edited(saved, tmp_path, classes=[0, 1, 2], data_dims={"n_features": 64})
    with pytest.raises(ValueError, match="'classes' holds 3 labels, but the student outputs 10"):
        DistillationClassifier.load_student(path, module=MLP, module__n_features=64, module__n_classes=10)


@pytest.mark.parametrize("dtype", ["<x9", "not a dtype", 12, "|V8", "<M8[s]"])
def test_a_bad_classes_dtype_is_a_clear_error(saved, tmp_path, dtype):
    path = _edited(saved, tmp_path, classes_dtype=dtype)
    with pytest.raises(ValueError, match="edited.safetensors: the metadata field 'classes_dtype'"):
        DistillationClassifier.load_student(path, module=MLP)


@pytest.mark.parametrize("field, value, match", [
    ("classes", [[1, 2], 3] + list(range(8)), "'classes' must hold only text or numbers"),
    ("classes", [], "'classes' must be a non-empty list"),
    ("classes", [0] * 10, "'classes' holds a label twice"),
    ("classes", ["a"] * 9 + ["b"], "'classes'"),
    ("data_dims", {"n_features": -3, "n_classes": 10}, "'data_dims'"),
    ("n_features_in", "64", "'n_features_in'"),
    ("module_params", [1, 2], "'module_params'"),
    ("classes_dtype", REMOVE, "'classes_dtype' is missing"),
])
def test_bad_metadata_fields_are_named(saved, tmp_path, field, value, match):
    path = _edited(saved, tmp_path, **{field: value})
    with pytest.raises(ValueError, match=match):
        DistillationClassifier.load_student(path, module=MLP)


def test_a_truncated_file_is_a_clear_error(saved, tmp_path):
    path, _ = saved
    cut = tmp_path / "cut.safetensors"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.safetensors"):
        DistillationClassifier.load_student(cut, module=MLP)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match=r"junk\.safetensors is not a readable safetensors file"):
        DistillationClassifier.load_student(junk, module=MLP)


def test_metadata_that_is_not_json_is_a_clear_error(saved, tmp_path):
    path, _ = saved
    out = tmp_path / "raw.safetensors"
    save_file(load_file(str(path)), str(out), metadata={"skd": "{not json"})
    with pytest.raises(ValueError, match="raw.safetensors: the metadata field 'skd' is not JSON"):
        DistillationClassifier.load_student(out, module=MLP)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_nonfinite_weight_is_refused_naming_the_tensor(saved, tmp_path, bad):
    # was: loaded with valid metadata; predict returned 0 for every row
    path, _ = saved
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    key = sorted(tensors)[0]
    tensors[key].view(-1)[3] = bad
    out = tmp_path / "nan.safetensors"
    save_file(tensors, str(out), metadata=metadata)
    with pytest.raises(ValueError, match=rf"nan\.safetensors: the tensor '{key}' holds 1 non-finite "
                                         r"value\(s\) \(NaN or infinity\).*save the student again"):
        DistillationClassifier.load_student(out, module=MLP)


def test_the_persistence_concern_is_one_module():
    package = Path(skd.persist.__file__).parent
    assert not [name for name in ("_persist.py", "_pickling.py", "_export.py") if (package / name).exists()]
    assert {"save_student", "load_student", "lean_copy", "refuse_if_exported", "cpu_portable"} <= set(
        skd.persist.__all__)


def test_cpu_portable_moves_accelerator_tensors_to_the_cpu_in_a_copy(monkeypatch):
    teacher = torch.nn.Linear(3, 2)
    assert skd.persist.cpu_portable(teacher) is teacher  # on the CPU: pickled as it is
    monkeypatch.setattr(skd.persist, "_on_accelerator", lambda tensor: True)
    copy = skd.persist.cpu_portable([teacher])[0]
    assert copy is not teacher and torch.equal(copy.weight, teacher.weight)
