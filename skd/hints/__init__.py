"""Feature (hint) distillation: named teacher and student layers matched by forward hooks.

- :mod:`skd.hints.spec`: :class:`Hint`, the user's description of one pair of layers;
- :mod:`skd.hints.functional`: the maths (FitNets, attention transfer);
- :mod:`skd.hints.taps`: forward hooks that keep layers' outputs;
- :mod:`skd.hints.projectors`: FitNets' learnable regressors, student to teacher shape;
- :mod:`skd.hints.plan`: a fit's checks and plan (the book's writer writes the teacher's features);
- :mod:`skd.hints.terms`: the terms of a step, handed to :func:`skd.training.step.terms_for`.

See the "Feature distillation" page.
"""

from skd.hints.functional import attention_map, attention_transfer_loss, fitnet_loss
from skd.hints.plan import HINT_BOOK_LIMIT, HintBookWarning, HintPlan, plan_hints
from skd.hints.projectors import make_projector, make_projectors, student_projectors
from skd.hints.spec import HINT_KINDS, Hint, checked_hints
from skd.hints.taps import FeatureTap, find_layer, teacher_module
from skd.hints.terms import HintTerms, fit_hint_terms

__all__ = [
    "HINT_BOOK_LIMIT",
    "HINT_KINDS",
    "FeatureTap",
    "Hint",
    "HintBookWarning",
    "HintPlan",
    "HintTerms",
    "attention_map",
    "attention_transfer_loss",
    "checked_hints",
    "find_layer",
    "fit_hint_terms",
    "fitnet_loss",
    "make_projector",
    "make_projectors",
    "plan_hints",
    "student_projectors",
    "teacher_module",
]
