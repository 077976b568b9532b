"""What training minimises: the output distribution's loss (cross-entropy, nats) over the
segment's own samples (not its left context) plus the L2 penalty, and the figures validation
reports."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from deepsynth.model.output import OutputDistribution

NATS_TO_BITS = 1.0 / math.log(2.0)


def segment_loss(output: OutputDistribution, params: Tensor, classes: Tensor, loss_start: int,
                 reduction: str = "mean") -> Tensor:
    """The loss in nats of params (B, P, T) against classes (B, T) over positions
    t >= loss_start only: the first `loss_start` samples are left context, there so every scored
    sample sees a full receptive field. Computed in float32 whatever the params' dtype."""
    if not 0 <= loss_start < classes.shape[-1]:
        raise ValueError(f"loss_start {loss_start} outside a sequence of {classes.shape[-1]}")
    return output.loss(params[:, :, loss_start:], classes[:, loss_start:], reduction)


def segment_correct(output: OutputDistribution, params: Tensor, classes: Tensor,
                    loss_start: int) -> Tensor:
    """How many positions t >= loss_start have the target as their most likely class."""
    return (output.most_likely(params[:, :, loss_start:]) == classes[:, loss_start:]).sum()


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
