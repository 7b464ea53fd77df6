"""The training engine: the trainer, its step (eager and CUDA-graph captured), the epoch state.

Names are loaded on first use (PEP 562): :mod:`skd.training.state` is
imported by the losses and the callbacks, which the trainer itself imports,
so this package must not import the trainer eagerly (an import cycle).
"""

import importlib

__all__ = ["EpochState", "EpochValues", "StepParts", "TrainableNet", "Trainer", "batch_terms", "stack_terms",
           "sum_terms", "terms_for"]

_HOME = {
    "EpochState": "state", "EpochValues": "state",
    "StepParts": "step", "batch_terms": "step", "stack_terms": "step", "sum_terms": "step",
    "terms_for": "step",
    "TrainableNet": "trainer", "Trainer": "trainer",
}


def __getattr__(name):
    if name in _HOME:
        return getattr(importlib.import_module(f"skd.training.{_HOME[name]}"), name)
    raise AttributeError(f"module 'skd.training' has no attribute {name!r}")
