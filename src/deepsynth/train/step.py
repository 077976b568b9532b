"""One optimizer step, and the validation pass.

A step: the batch's audio becomes the output distribution's classes, forward (bf16 autocast on
CUDA if asked), the distribution's loss (CE) over the segment's own samples, plus the L2
penalty, backward, global gradient norm measured and clipped to `grad_clip`, Adam. Figures come
back as device tensors, so a GPU is not synchronised every step.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deepsynth.model.output import OutputDistribution
from deepsynth.train.data import DeviceBatch
from deepsynth.train.objective import l2_penalty, segment_correct, segment_loss


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CUDA when asked; otherwise nothing (fp32 everywhere)."""
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class StepResult:
    ce: Tensor  # mean CE (nats) over the scored samples of this process's batch
    grad_norm: Tensor  # global gradient norm before clipping
    penalty: Tensor  # the L2 term added to the loss


def noisy(classes: Tensor, std: float, n_inputs: int, seed: int = 0) -> Tensor:
    """The classes the decoder reads in a training step: `classes` plus Gaussian noise of `std`
    classes, rounded and kept in [0, n_inputs) (the targets stay `classes`), drawn from a
    generator seeded `seed` alone (the run gives one per step and process: a resumed run, on
    any number of devices, draws the same); std 0: `classes` itself."""
    if not std:
        return classes
    gen = torch.Generator(device=classes.device)
    gen.manual_seed(int(seed))
    noise = torch.randn(classes.shape, device=classes.device, generator=gen)
    return (classes + torch.round(noise * std).long()).clamp_(0, n_inputs - 1)


def noise_seed(seed: int, rank: int, step: int) -> int:
    """The input noise's seed for one step of one process."""
    return ((int(seed) * 1_000_003 + int(rank)) * 1_000_000_007 + int(step)) & (2**63 - 1)


def train_step(forward: nn.Module, output: OutputDistribution, batch: DeviceBatch,
               optimizer: torch.optim.Optimizer, params: list[nn.Parameter],
               decayed: list[nn.Parameter], l2: float, grad_clip: float,
               precision: str = "fp32", input_noise: float = 0.0,
               input_seed: int = 0) -> StepResult:
    """One step on `batch`. `forward` is the model as called (maybe DDP-wrapped or compiled),
    `output` its output distribution, `params` all its parameters, `decayed` the ones under
    the L2 penalty; `input_noise`, `input_seed` (from `noise_seed`): see `noisy`."""
    forward.train()
    optimizer.zero_grad(set_to_none=True)
    classes = output.encode(batch.audio)
    inputs = noisy(classes, input_noise, output.n_inputs, input_seed)
    with autocast(classes.device, precision):
        params_out = forward(batch.frames, batch.frame_index, inputs)
    ce = segment_loss(output, params_out, classes, batch.loss_start)
    penalty = l2_penalty(decayed, l2) if l2 else torch.zeros((), device=ce.device)
    (ce + penalty).backward()
    max_norm = grad_clip if grad_clip > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()
    return StepResult(ce.detach(), grad_norm.detach(), penalty.detach())


@torch.no_grad()
def evaluate_batches(forward: nn.Module, output: OutputDistribution, batches,
                     precision: str = "fp32") -> tuple[float, int, int]:
    """Sum of CE (nats), number of scored samples and of samples whose class is the most
    likely one over `batches` (DeviceBatch items), in eval mode."""
    forward.eval()
    total, count, correct = 0.0, 0, 0
    sums = []
    for batch in batches:
        classes = output.encode(batch.audio)
        with autocast(classes.device, precision):
            params_out = forward(batch.frames, batch.frame_index, classes)
        sums.append(torch.stack([
            segment_loss(output, params_out, classes, batch.loss_start, "sum").double(),
            segment_correct(output, params_out, classes, batch.loss_start).double(),
        ]))
        count += batch.scored
    if sums:
        total, correct = (float(x) for x in torch.stack(sums).sum(0).tolist())
    return total, count, int(correct)
