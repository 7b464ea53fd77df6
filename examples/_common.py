"""Shared switches of the examples: quick mode and where figures go."""

import os
import sys
from pathlib import Path

import torch

#: SKD_QUICK=1 cuts epochs and seeds so that every example runs in seconds (the tests use it).
QUICK = os.environ.get("SKD_QUICK") == "1"

ROOT = Path(__file__).resolve().parent.parent

#: ``--write`` (ignored in quick mode) refreshes the tracked figures in docs/img; without it
#: figures go to the ignored bench-out/img, or to SKD_FIGURES_DIR when that is set.
WRITE = "--write" in sys.argv[1:] and not QUICK
if WRITE:
    FIGURES = ROOT / "docs" / "img"
else:
    FIGURES = Path(os.environ.get("SKD_FIGURES_DIR", ROOT / "bench-out" / "img"))


def figure_path(name: str) -> Path:
    FIGURES.mkdir(parents=True, exist_ok=True)
    return FIGURES / name


class CountingTeacher(torch.nn.Module):
    """A small torch teacher for 64 features that counts the samples it sees.

    The count is a class attribute, so that joblib's cache key of the teacher
    does not change when it runs; it lives here, not in a script, so that
    worker processes can import it.
    """

    samples = 0

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))

    def forward(self, X):
        type(self).samples += len(X)
        return self.net(X)
