"""Teachers: every kind of teacher answers "logits for this X, aligned to ``classes_``".

Each adapter is made fresh at ``fit`` from the user's object by
:func:`as_teacher`, fitted on the training data if it is an unfitted
scikit-learn or skorch model, and aligned to the student's ``classes_``.

- :mod:`skd.teachers.base`: the :class:`Teacher` contract and its checks;
- :mod:`skd.teachers.adapters`: one adapter per kind of object (torch, skorch,
  scikit-learn, callable);
- :mod:`skd.teachers.composite`: teachers made of teachers
  (:class:`CompositeTeacher`, :class:`EnsembleTeacher`) and :func:`as_teacher`;
- :mod:`skd.teachers.pruned`: R2KD's :class:`PrunedTeacher` and the pruning tools.
"""

from skd.teachers.adapters import CallableTeacher, SklearnTeacher, SkorchTeacher, TorchTeacher
from skd.teachers.base import TEACHER_KINDS, Teacher, TeacherScoreWarning, teacher_classes
from skd.teachers.composite import CompositeTeacher, EnsembleTeacher, as_teacher, register_teacher
from skd.teachers.pruned import PrunedTeacher, prunable_layers, prune_copy

__all__ = [
    "register_teacher",
    "teacher_classes",
    "TEACHER_KINDS",
    "CallableTeacher",
    "CompositeTeacher",
    "EnsembleTeacher",
    "PrunedTeacher",
    "SklearnTeacher",
    "SkorchTeacher",
    "Teacher",
    "TeacherScoreWarning",
    "TorchTeacher",
    "as_teacher",
    "prunable_layers",
    "prune_copy",
]
