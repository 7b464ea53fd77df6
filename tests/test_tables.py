"""A user's own table (issue 33 item 1): the teacher sees the DataFrame as given, the student numbers.

The documented route for a table with categorical columns (docs/pipelines.md):
``make_pipeline(WriteBook(teacher), OnFeatures(ColumnTransformer([("cat", OneHotEncoder(), cats)],
remainder=StandardScaler())), DistillationClassifier(MLP))``, with a prefit or an unfitted teacher.
"""

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skd import MLP, DistillationClassifier, OnFeatures, WriteBook


@pytest.fixture(scope="module")
def table():
    """breast_cancer as a DataFrame, its "mean radius" binned into a categorical with string levels."""
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X = X.copy()
    X["size"] = pd.cut(X.pop("mean radius"), 3, labels=["small", "medium", "large"])
    return train_test_split(X, y.to_numpy(), test_size=0.3, random_state=0, stratify=y)


def hgb():
    return HistGradientBoostingClassifier(categorical_features="from_dtype", max_iter=50, random_state=0)


def route(teacher):
    encode = ColumnTransformer([("cat", OneHotEncoder(), ["size"])], remainder=StandardScaler())
    return make_pipeline(WriteBook(teacher), OnFeatures(encode),
                         DistillationClassifier(MLP, max_epochs=30, verbose=0, device="cpu", random_state=0))


@pytest.mark.parametrize("prefit", [False, True], ids=["unfitted", "prefit"])
def test_a_mixed_type_table_trains_through_the_documented_route(table, prefit):
    X_train, X_test, y_train, y_test = table
    teacher = FrozenEstimator(hgb().fit(X_train, y_train)) if prefit else hgb()
    pipe = route(teacher).fit(X_train, y_train)
    assert pipe[0].teacher_score_ > 0.95  # the teacher saw the table it was (or is) fitted on
    assert pipe.score(X_test, y_test) > 0.9


def test_write_book_hands_the_teacher_and_the_next_step_the_dataframe_as_given(table):
    X_train, _, y_train, _ = table
    book = WriteBook(hgb()).fit_transform(X_train, y_train)
    assert book["X"] is X_train and isinstance(book["X"]["size"].dtype, pd.CategoricalDtype)
    assert book["teacher_logits"].shape == (len(X_train), 2)


def test_a_categorical_column_reaching_the_student_names_the_route(table):
    X_train, _, y_train, _ = table
    clf = DistillationClassifier(MLP, teacher=hgb(), verbose=0, device="cpu")
    match = r"\['size'\].*WriteBook.*OnFeatures.*ColumnTransformer.*OneHotEncoder"
    with pytest.raises(ValueError, match=match):
        clf.fit(X_train, y_train)


def test_a_string_column_reaching_the_student_names_the_route(table):
    X_train, _, y_train, _ = table
    X = X_train.assign(size=X_train["size"].astype(str).astype(object))
    with pytest.raises(ValueError, match="not numbers.*ColumnTransformer.*OneHotEncoder"):
        DistillationClassifier(MLP, loss="ce", verbose=0, device="cpu").fit(X, y_train)


def test_an_unfitted_teacher_with_unlabelled_rows_is_fitted_on_the_dataframe(table):
    # the labelled rows of the user's DataFrame (not the student's float32 copy) fit the teacher
    X_train, _, y_train, _ = table
    numeric = X_train.drop(columns="size")
    y = y_train.copy()
    y[::4] = -1
    teacher = make_pipeline(ColumnTransformer([("some", StandardScaler(), ["mean texture", "worst area"])]),
                            LogisticRegression())
    clf = DistillationClassifier(MLP, teacher=teacher, unlabelled=-1, max_epochs=5, lr=1e-2, verbose=0,
                                 device="cpu").fit(numeric, y)
    assert clf.teacher_fitted_in_fit_ and clf.teacher_score_ > 0.85


def test_values_too_large_for_float32_get_an_error_saying_rescale():
    X = np.ones((20, 2))
    X[3, 1] = 1e300
    with pytest.raises(ValueError, match="too large for float32.*Rescale"):
        DistillationClassifier(MLP, loss="ce", verbose=0, device="cpu").fit(X, np.arange(20) % 2)


def test_nan_still_gets_the_impute_message():
    X = np.ones((20, 2))
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity.*impute"):
        DistillationClassifier(MLP, loss="ce", verbose=0, device="cpu").fit(X, np.arange(20) % 2)


def test_an_online_teacher_fitted_on_a_dataframe_gets_its_column_names(table):
    # online the teacher is asked about the student's float32 batches: they carry the table's names
    import warnings

    X_train, _, y_train, _ = table
    numeric = X_train.drop(columns="size")
    teacher = FrozenEstimator(LogisticRegression(max_iter=2000).fit(numeric, y_train))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*feature names.*")
        clf = DistillationClassifier(MLP, teacher=teacher, book="online", max_epochs=1, verbose=0,
                                     device="cpu").fit(numeric, y_train)
    assert clf.teacher_.n_forward_samples_ >= len(numeric)
