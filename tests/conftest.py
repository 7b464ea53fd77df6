import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

from skd import MLP, DistillationClassifier

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def digits():
    """scikit-learn digits scaled to [0, 1], float32, and int labels."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


class CountingTeacher(torch.nn.Module):
    """A seeded teacher that counts its forward calls and samples.

    ``hidden=None`` is one linear layer; an int adds a ReLU hidden layer.
    """

    def __init__(self, n_features=64, n_classes=10, hidden=None, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        if hidden is None:
            self.net = torch.nn.Linear(n_features, n_classes)
        else:
            self.net = torch.nn.Sequential(torch.nn.Linear(n_features, hidden), torch.nn.ReLU(),
                                           torch.nn.Linear(hidden, n_classes))
        self.calls = 0
        self.samples = 0

    def forward(self, X):
        self.calls += 1
        self.samples += X.shape[0]
        return self.net(X)


@pytest.fixture
def make_teacher():
    """Factory of seeded :class:`CountingTeacher` modules."""
    return CountingTeacher


#: Settings every test student shares unless a test overrides them.
STUDENT_DEFAULTS = dict(loss="kd", max_epochs=3, verbose=0, device="cpu",
                        optimizer=torch.optim.Adam, lr=1e-2, batch_size=64, random_state=0)


@pytest.fixture
def make_student():
    """Factory of small ``DistillationClassifier(MLP, ...)`` students on the CPU.

    The teacher is a fresh linear :class:`CountingTeacher` unless ``teacher=`` is given.
    """

    def make(**kwargs):
        kwargs.setdefault("teacher", CountingTeacher())
        return DistillationClassifier(kwargs.pop("module", MLP), **{**STUDENT_DEFAULTS, **kwargs})

    return make
