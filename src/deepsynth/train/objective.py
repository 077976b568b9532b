"""What training minimises: the cross-entropy of the segment's own samples (not of its left
context) plus the L2 penalty, and the figures validation reports."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NATS_TO_BITS = 1.0 / math.log(2.0)


def segment_ce(logits: Tensor, classes: Tensor, loss_start: int, reduction: str = "mean") -> Tensor:
    """Cross-entropy in nats of logits (B, K, T) against classes (B, T) over positions
    t >= loss_start only: the first `loss_start` samples are left context, there so every scored
    sample sees a full receptive field. Computed in float32 whatever the logits' dtype."""
    if not 0 <= loss_start < classes.shape[-1]:
        raise ValueError(f"loss_start {loss_start} outside a sequence of {classes.shape[-1]}")
    return F.cross_entropy(logits[:, :, loss_start:].float(), classes[:, loss_start:],
                           reduction=reduction)


def segment_correct(logits: Tensor, classes: Tensor, loss_start: int) -> Tensor:
    """How many positions t >= loss_start have the target as their most likely class."""
    return (logits[:, :, loss_start:].argmax(dim=1) == classes[:, loss_start:]).sum()


def decayed_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the L2 penalty covers: weights of convolutions and linear layers (every
    parameter with 2 or more dimensions), not biases."""
    return [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]


def l2_penalty(params: list[Tensor], strength: float) -> Tensor:
    """strength / 2 * sum of squared entries (TensorFlow's l2_loss, as in the paper's code)."""
    if not params or strength == 0:
        return torch.zeros((), device=params[0].device if params else None)
    squares = torch.stack([p.float().square().sum() for p in params])
    return 0.5 * strength * squares.sum()
