"""Removed: split into :mod:`skd.teachers.fitting`, :mod:`skd.teachers.checks` and :mod:`skd.book.writing`.

Only the name tests/test_engine.py still imports from here remains, until it imports it from
:mod:`skd.teachers`.
"""

from skd.teachers.checks import UnderTrainedWarning

__all__ = ["UnderTrainedWarning"]
