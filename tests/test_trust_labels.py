"""Issue 30's unclear errors about labels: y that mixes types says so, and what to do."""

import numpy as np
import pytest

from skd.labels import validate_labels


@pytest.mark.parametrize("y, kinds", [
    (np.array([0, 1, "a", 2] * 5, dtype=object), r"number \(e\.g\. 0\) and text \(e\.g\. 'a'\)"),
    (np.array(["b", 2.5, "c", "b"] * 5, dtype=object), r"text \(e\.g\. 'b'\) and number \(e\.g\. 2\.5\)"),
    (np.array([True, 1, 0, False] * 5, dtype=object), r"bool \(e\.g\. True\) and number \(e\.g\. 1\)"),
])
def test_labels_of_mixed_types_say_so_and_what_to_do(y, kinds):
    X = np.zeros((len(y), 3), dtype=np.float32)
    # was: "Unknown label type: unknown. Maybe you are trying to fit a classifier, which expects
    # discrete classes on a regression target with continuous values."
    with pytest.raises(ValueError, match=rf"y mixes label types: {kinds}\. Convert the labels to one type"):
        validate_labels(y, X, None, None, "DistillationClassifier")


def test_labels_of_one_type_in_an_object_array_are_fine():
    y = np.array(["cat", "dog", "cat", "bird"], dtype=object)
    labels = validate_labels(y, np.zeros((4, 3)), None, None, "DistillationClassifier")
    assert labels.encoder.classes_.tolist() == ["bird", "cat", "dog"]


def test_a_fit_with_mixed_labels_names_them(digits, make_student):
    X, y = digits
    mixed = np.where(np.arange(len(y)) % 2 == 0, y.astype(object), "x")
    with pytest.raises(ValueError, match=r"y mixes label types: number \(e\.g\. 0\) and text \(e\.g\. 'x'\)"):
        make_student().fit(X, mixed)
