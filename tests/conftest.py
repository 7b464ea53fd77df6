import os

# One intra-op thread per test process, set before torch is imported: skd's fit_threads respects an
# explicit OMP_NUM_THREADS, so every fit runs with the same thread count whatever the machine's load
# and the tests that compare weights exactly stay exact (the pages and examples run in subprocesses
# inherit it).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from skd import MLP, DistillationClassifier  # noqa: E402

# derandomize: the examples are the same on every run, so a run here and CI's agree
settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
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


class Fresh:
    """A default made anew for every student (e.g. ``Fresh(CountingTeacher)``)."""

    def __init__(self, factory, *args, **kwargs):
        self.factory, self.args, self.kwargs = factory, args, kwargs

    def __call__(self):
        return self.factory(*self.args, **self.kwargs)


class StudentFactory:
    """Makes small ``DistillationClassifier`` students on the CPU; ``bind`` sets a file's defaults."""

    def __init__(self, **defaults):
        self.defaults = {**STUDENT_DEFAULTS, "teacher": Fresh(CountingTeacher), "module": MLP, **defaults}

    def bind(self, fresh_teacher=None, **defaults) -> "StudentFactory":
        """A factory with other defaults; ``fresh_teacher()`` makes each student's teacher."""
        if fresh_teacher is not None:
            defaults["teacher"] = Fresh(fresh_teacher)
        return StudentFactory(**{**self.defaults, **defaults})

    def __call__(self, **kwargs):
        params = {key: value() if isinstance(value, Fresh) else value
                  for key, value in {**self.defaults, **kwargs}.items()}
        return DistillationClassifier(params.pop("module"), **params)


@pytest.fixture
def make_student():
    """Factory of small ``DistillationClassifier(MLP, ...)`` students on the CPU.

    The teacher is a fresh linear :class:`CountingTeacher` unless ``teacher=`` is given.
    """
    return StudentFactory()


class CountedTeacher(torch.nn.Module):
    """Counts samples in a class attribute, so that joblib's hash of an instance is stable."""

    samples = 0

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))

    def forward(self, X):
        type(self).samples += X.shape[0]
        return self.net(X)


@pytest.fixture(scope="module")
def teacher(digits):
    """A :class:`CountedTeacher` trained for 100 full-batch Adam steps on digits, in eval mode."""
    X, y = digits
    teacher = CountedTeacher()
    opt = torch.optim.Adam(teacher.parameters(), 1e-2)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(teacher(Xt), yt).backward()
        opt.step()
    return teacher.eval()
