"""Projectors: learnable maps of the student's features to the teacher's shape (FitNets' regressor).

One per ``"fitnet"`` hint, in an ``nn.ModuleDict`` keyed by the hint's term
name: the classifier's ``projectors_``, trained by the student's optimizer,
pickled with the classifier and left out of ``save_student`` and
``export_student`` (prediction never needs them).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from skd.hints.taps import FeatureTap, find_layer

__all__ = ["feature_bytes", "make_projector", "make_projectors", "student_projectors"]


def make_projector(student_shape: tuple, teacher_shape: tuple, where: str) -> nn.Module:
    """A linear layer (vectors) or a 1x1 convolution (maps of equal spatial size).

    Parameters
    ----------
    student_shape, teacher_shape : tuple of int
        One sample's output shape at the two layers (no batch dimension).
    where : str
        The hint, for the error (e.g. ``"hints[0]"``).

    Raises
    ------
    ValueError
        If no such projector maps one shape onto the other.
    """
    if len(student_shape) == 1 and len(teacher_shape) == 1:
        return nn.Linear(student_shape[0], teacher_shape[0])
    if len(student_shape) == len(teacher_shape) == 3 and student_shape[1:] == teacher_shape[1:]:
        return nn.Conv2d(student_shape[0], teacher_shape[0], kernel_size=1)
    raise ValueError(
        f"{where}: no projector maps the student's features of shape {student_shape} to the "
        f"teacher's {teacher_shape} (per sample). A linear projector maps vectors (C,) and a 1x1 "
        "convolution maps (C, H, W) maps of the same H and W; pick layers whose outputs agree so "
        "(e.g. both after the same number of poolings), or a flattening layer on both sides."
    )


def make_projectors(hints, names, student_shapes: dict, teacher_shapes: dict) -> nn.ModuleDict:
    """The projectors of the ``"fitnet"`` hints, keyed by term name; attention transfer checks shapes.

    ``student_shapes``/``teacher_shapes`` map layer names to one sample's output shape.
    """
    projectors = nn.ModuleDict()
    for position, (hint, name) in enumerate(zip(hints, names, strict=True)):
        student, teacher = student_shapes[hint.student_layer], teacher_shapes[hint.teacher_layer]
        where = f"hints[{position}] ({hint.kind}, {hint.teacher_layer!r} <- {hint.student_layer!r})"
        if hint.kind == "fitnet":
            projectors[name] = make_projector(student, teacher, where)
        elif len(student) < 2 or len(teacher) < 2 or student[1:] != teacher[1:]:
            raise ValueError(
                f"{where}: attention transfer compares spatial maps of convolutional layers, of shape "
                f"(C, H, W) with the same H and W; the student's output is {student} and the "
                f"teacher's {teacher} per sample. Pick layers of equal spatial size, or "
                "kind='fitnet' for vectors."
            )
    return projectors


def feature_bytes(n_rows: int, shapes) -> int:
    """Bytes of float32 features for ``n_rows`` rows at layers of these per-sample shapes."""
    return 4 * n_rows * sum(math.prod(shape) for shape in shapes)


def student_projectors(plan, student: nn.Module) -> nn.ModuleDict | None:
    """The projectors of a fit's hints for ``student`` (None without hints).

    The student runs once, in eval mode and without gradient, on the plan's
    probe row, so that its hooked layers' shapes are known; its training mode
    is restored. An unknown student layer raises, listing the close names.
    """
    if plan is None:
        return None
    layers = [hint.student_layer for hint in plan.hints]
    for position, layer in enumerate(layers):
        find_layer(student, layer, f"hints[{position}].student_layer")
    device = next((p.device for p in student.parameters()), torch.device("cpu"))
    was_training = student.training
    with FeatureTap(student, layers) as tap, torch.no_grad():
        student.eval()
        try:
            student(plan.probe.to(device))
        finally:
            student.train(was_training)
        shapes = {layer: tuple(tap.output(layer).shape[1:]) for layer in layers}
    return make_projectors(plan.hints, plan.names, shapes, plan.teacher_shapes)
