"""Teachers: every kind of teacher answers "logits for this X, aligned to ``classes_``".

Each adapter is made fresh at ``fit`` from the user's object by
:func:`as_teacher`, fitted on the training data if it is an unfitted
scikit-learn or skorch model, and aligned to the student's ``classes_``.

- :mod:`skd.teachers.base`: the :class:`Teacher` contract and its checks;
- :mod:`skd.teachers.adapters`: one adapter per kind of object (torch, skorch,
  scikit-learn, callable);
- :mod:`skd.teachers.composite`: teachers made of teachers
  (:class:`CompositeTeacher`, :class:`EnsembleTeacher`) and :func:`as_teacher`;
- :mod:`skd.teachers.pruned`: R2KD's :class:`PrunedTeacher` and the pruning tools;
- :mod:`skd.teachers.fitting`: which teacher a fit uses, the rows it sees, and its book;
- :mod:`skd.teachers.checks`: the teacher's score (at chance: an error), the online probe, and
  whether the student ended far below it.
"""

from skd.teachers.adapters import CallableTeacher, SklearnTeacher, SkorchTeacher, TorchTeacher
from skd.teachers.base import TEACHER_KINDS, Teacher, TeacherScoreWarning, teacher_classes
from skd.teachers.checks import TeacherAtChanceError, UnderTrainedWarning
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
    "TeacherAtChanceError",
    "TeacherScoreWarning",
    "UnderTrainedWarning",
    "TorchTeacher",
    "as_teacher",
    "prunable_layers",
    "prune_copy",
]
