"""Factories shared by the teacher, pruned-teacher and callback tests.

Candidates for fixtures in ``conftest.py`` (``make_student``, ``trained_teacher``).
"""

import torch

from skd import MLP, DistillationClassifier


def student(**kwargs):
    """A small, quick, seeded ``DistillationClassifier`` on the CPU; ``kwargs`` override."""
    params = {"max_epochs": 3, "verbose": 0, "device": "cpu", "optimizer": torch.optim.Adam,
              "lr": 1e-2, "batch_size": 64, "random_state": 0}
    params.update(kwargs)
    return DistillationClassifier(MLP, **params)


class CountedTeacher(torch.nn.Module):
    """Counts samples in a class attribute, so that joblib's hash of it is stable."""

    samples = 0

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))

    def forward(self, X):
        type(self).samples += X.shape[0]
        return self.net(X)


def trained_teacher(digits):
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
