"""The intra-op thread count of one fit (placeholder; replaced by the engine part 2 work)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["fit_threads"]


@contextlib.contextmanager
def fit_threads() -> Iterator[None]:
    """Run a fit with torch's thread settings unchanged."""
    yield
