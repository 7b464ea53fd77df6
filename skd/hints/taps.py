"""Forward hooks that keep named layers' outputs, and which teachers have layers.

A :class:`FeatureTap` registers one forward hook per named module and keeps
the latest output of each; :meth:`FeatureTap.close` removes the hooks, so
neither model is edited. The hook does no host work, so it runs the same
inside a captured step.
"""

from __future__ import annotations

import difflib

import torch
from torch import nn

__all__ = ["FeatureTap", "find_layer", "teacher_module"]


def find_layer(module: nn.Module, name: str, parameter: str) -> nn.Module:
    """The submodule of ``module`` named ``name``; a clear error listing the close names if none.

    Parameters
    ----------
    module : torch.nn.Module
    name : str
        A path from ``module.named_modules()``.
    parameter : str
        The parameter that gave the name, for the error (e.g. ``"hints[0].teacher_layer"``).
    """
    layers = dict(module.named_modules())
    layers.pop("", None)
    if name in layers:
        return layers[name]
    close = difflib.get_close_matches(name, list(layers), n=5, cutoff=0.4) or list(layers)[:8]
    raise ValueError(
        f"{parameter}={name!r} is not a layer of the {type(module).__name__}; close names from its "
        f"named_modules(): {close}. Name a layer from named_modules() (e.g. 'features.3')."
    )


def teacher_module(teacher) -> nn.Module | None:
    """The torch module whose layers the hints hook, or None for a teacher without one.

    Asks the set-up adapter (:meth:`skd.teachers.Teacher.hooked_module`): a
    torch module's, a skorch net's ``module_``, a ``PrunedTeacher``'s
    original (unpruned) teacher's; scikit-learn teachers, callables and
    ensembles have none.
    """
    hooked = getattr(teacher, "hooked_module", None)
    return hooked() if hooked is not None else None


class FeatureTap:
    """Forward hooks keeping the latest output of named layers of a module.

    Parameters
    ----------
    module : torch.nn.Module
    layers : sequence of str
        Paths in ``module.named_modules()`` (checked: an unknown one raises).
    parameter : str, default="hints"
        Named in the error for an unknown layer.
    gather : bool, default=False
        Keep every output since :meth:`clear` and return them concatenated
        along the batch (a teacher that runs a call in several forwards, such
        as a skorch net batching its input); else only the latest output.

    Attributes
    ----------
    outputs : dict of str to list of Tensor
        Each layer's outputs since :meth:`clear` (only the latest without ``gather``).
    """

    def __init__(self, module: nn.Module, layers, parameter: str = "hints", gather: bool = False):
        self.gather = gather
        self.outputs: dict[str, list] = {}
        found = {name: find_layer(module, name, parameter) for name in dict.fromkeys(layers)}
        self._handles = [layer.register_forward_hook(self._keeper(name)) for name, layer in found.items()]

    def _keeper(self, name: str):
        def keep(module, inputs, output):
            if isinstance(output, (tuple, list)):
                output = output[0]
            if self.gather:
                self.outputs.setdefault(name, []).append(output)
            else:
                self.outputs[name] = [output]
        return keep

    def output(self, name: str) -> torch.Tensor:
        """The output of ``name`` (all since :meth:`clear`, concatenated, with ``gather``).

        An error if its layer did not run in the forward.
        """
        kept = self.outputs.get(name)
        if not kept:
            raise RuntimeError(
                f"The layer {name!r} did not run in the forward pass, so it has no output to "
                "distil; name a layer that the model's forward calls."
            )
        return kept[0] if len(kept) == 1 else torch.cat(kept)

    def clear(self) -> None:
        """Forget the outputs kept so far."""
        self.outputs = {}

    def close(self) -> None:
        """Remove the hooks (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.outputs = {}

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
