"""Issue 19, item 14: shard() takes rows of a DataFrame and refuses y of another length."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse
import torch

from skd.distributed import shard


def test_a_dataframe_is_sharded_by_rows_not_columns():
    X = pd.DataFrame(np.arange(40).reshape(10, 4), columns=list("abcd"), index=np.arange(100, 110))
    y = pd.Series(np.arange(10) % 3, index=X.index)
    X_rank, y_rank = shard(X, y, 1, 2)
    assert list(X_rank.columns) == list("abcd")  # every column kept
    assert X_rank.index.tolist() == [101, 103, 105, 107, 109]
    assert np.array_equal(y_rank, (np.arange(1, 10, 2) % 3))


def test_a_book_of_dataframes_and_tensors_is_sharded_by_rows():
    X = pd.DataFrame(np.arange(12).reshape(6, 2))
    book = {"X": X, "teacher_logits": torch.arange(18.0).reshape(6, 3)}
    book_rank, y_rank = shard(book, np.arange(6), 0, 3)
    assert book_rank["X"].to_numpy().tolist() == [[0, 1], [6, 7]]
    assert book_rank["teacher_logits"].tolist() == [[0.0, 1.0, 2.0], [9.0, 10.0, 11.0]]
    assert y_rank.tolist() == [0, 3]


@pytest.mark.parametrize("X", [np.zeros((10, 3)), scipy.sparse.csr_matrix(np.eye(10)),
                               pd.DataFrame(np.zeros((10, 3))), {"X": np.zeros((10, 3)),
                                                                 "teacher_logits": np.zeros((10, 2))}])
def test_labels_of_another_length_are_refused(X):
    with pytest.raises(ValueError, match=r"shard\(X, y\): y has 9 rows but X has 10"):
        shard(X, np.arange(9), 0, 2)


def test_more_ranks_than_rows_is_a_clear_error():
    # was: every rank got 0 rows, then "Found array with 0 sample(s)" from the fit
    with pytest.raises(ValueError, match=r"X has 3 rows for world_size=4 ranks; each rank needs at least "):
        shard(np.zeros((3, 2)), np.arange(3), 0, 4)
