"""The hint terms' maths: pure torch functions of feature tensors, no state.

Each formula is one function whose docstring names its paper and equation,
and says where skd follows the authors' released code instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["attention_map", "attention_transfer_loss", "fitnet_loss"]


def fitnet_loss(projected: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """FitNets' hint loss: the mean squared error of the projected student features.

    Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015, eq. (3):
    ``L_HT = 1/2 ||u_h(x) - r(v_g(x))||^2``, with ``u_h`` the teacher's hint
    layer, ``v_g`` the student's guided layer and ``r`` the learnable
    regressor (here the projector, applied by the caller).

    Departure: the mean over the batch and every feature element, not half the
    sum (as mdistiller's and torchdistill's ``F.mse_loss``), so the term's
    scale does not grow with the batch or the feature size; the hint's
    ``weight`` takes the place of the constant.

    Parameters
    ----------
    projected : Tensor of shape (batch, ...)
        The student's features after the projector, shaped as the teacher's.
    teacher_features : Tensor of shape (batch, ...)

    Returns
    -------
    loss : 0-d Tensor
    """
    return (projected - teacher_features).pow(2).mean()


def attention_map(features: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """The spatial attention map of feature maps, L2-normalised per sample.

    Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017,
    section 3.1: ``F(A) = sum_c |A_c|^p`` over channels, vectorised and
    divided by its L2 norm (eq. 2). As the authors' released code
    (``szagoruyko/attention-transfer``, ``utils.at``:
    ``F.normalize(x.pow(2).mean(1).view(x.size(0), -1))``) the channels are
    averaged rather than summed, which the normalisation cancels.

    Parameters
    ----------
    features : Tensor of shape (batch, channels, *spatial)
    p : float, default=2.0

    Returns
    -------
    map : Tensor of shape (batch, prod(spatial))
        Unit L2 norm per row (a zero map stays zero: ``F.normalize``'s eps).
    """
    return F.normalize(features.abs().pow(p).mean(1).flatten(1), dim=1)


def attention_transfer_loss(student_features: torch.Tensor, teacher_features: torch.Tensor,
                            p: float = 2.0) -> torch.Tensor:
    """Attention transfer: the distance between normalised attention maps.

    Zagoruyko & Komodakis, ICLR 2017, eq. (2): ``beta/2 * sum_j || Q_S^j /
    ||Q_S^j||_2 - Q_T^j / ||Q_T^j||_2 ||_p`` over the hint pairs ``j``.

    Departure, as the released code (``utils.at_loss``:
    ``(at(x) - at(y)).pow(2).mean()``): the *squared* difference, averaged
    over the batch and the spatial positions. ``beta/2`` is the hint's
    ``weight`` (the code uses ``beta = 1e3``, so ``weight=500`` reproduces it).
    The two maps must have the same spatial size (the released code assumes it).

    Parameters
    ----------
    student_features, teacher_features : Tensor of shape (batch, channels, *spatial)
        The channel counts may differ; the spatial sizes must match.
    p : float, default=2.0

    Returns
    -------
    loss : 0-d Tensor
    """
    return (attention_map(student_features, p) - attention_map(teacher_features, p)).pow(2).mean()
