"""The learning-rate schedule (paper section 5): start at `lr`, multiply by `lr_decay_factor`
every `lr_decay_every` batches, never below `lr_min`.

With the paper's numbers: 1e-3 for steps 0..19,999, 1e-4 from step 20,000, 1e-5 from 40,000,
1e-6 from 60,000 on. A pure function of the step, so resuming needs no scheduler state.

With `lr_warmup` = W > 0 the first W steps ramp linearly up to that schedule: step k runs at
(k + 1) / W of it (not in the paper; for a run that starts from trained weights).
"""

from __future__ import annotations

import math

import torch

from deepsynth.train.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The learning rate of optimizer step `step` (0-based: the first step is step 0)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    decays = step // cfg.lr_decay_every
    try:  # dividing by 10 ** k lands on 1e-4, 1e-5, .. exactly where multiplying by 0.1 does not
        lr = cfg.lr / (1.0 / cfg.lr_decay_factor) ** decays
    except OverflowError:
        return cfg.lr_min
    # snap to the floor when within rounding of it, so the schedule lands on lr_min itself
    if lr <= cfg.lr_min or math.isclose(lr, cfg.lr_min, rel_tol=1e-9):
        lr = cfg.lr_min
    if step < cfg.lr_warmup:
        return lr * (step + 1) / cfg.lr_warmup
    return lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
