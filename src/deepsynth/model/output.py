"""What the decoder predicts: the output distribution of the next audio sample.

One object holds every decision about it: how audio becomes the decoder's classes (its input
alphabet and the training targets), the width of the decoder's head, the loss, the most likely
value, sampling (a temperature and a probability floor) and classes back to audio. Training,
the teacher-forced scores, `info`, the fused CPU step and the CUDA-graph step all go through it.

A distribution is one class registered under a name; `ModelConfig.output` names the one a model
uses (`output_distribution(cfg)` builds it). Each class gives its sampler twice: in PyTorch
(`sample`, static shapes, for the graphed step) and as a plain-Python function of arrays that
numba compiles (`sample_one`, for the fused step); the two must agree (tested).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from deepsynth.audio import mu_law_decode, mu_law_encode
from deepsynth.config import AudioConfig, ModelConfig
from deepsynth.samplers import sample_softmax


class OutputDistribution(ABC):
    """The next sample's distribution, given the decoder head's output `params` (B, n_params, T).

    Audio is float in [-1, 1]; classes are int64 in [0, n_inputs): the decoder reads the past
    as classes and is trained to predict the next sample's class."""

    name: ClassVar[str]
    n_inputs: int  # size of the decoder's input alphabet (classes of past samples)
    n_params: int  # width of the decoder's head: parameters of one sample's distribution
    n_uniforms: int = 1  # uniform random numbers drawn per generated sample

    def __init__(self, audio: AudioConfig) -> None:
        self.audio = audio

    @property
    def silence(self) -> int:
        """The class of a zero amplitude: what precedes the first sample."""
        return int(self.encode(np.zeros(1, np.float32))[0])

    @abstractmethod
    def encode(self, audio):
        """Float audio (numpy or torch) -> classes (int64, same library)."""

    @abstractmethod
    def decode(self, classes):
        """Classes (numpy or torch) -> float32 audio in [-1, 1]."""

    @abstractmethod
    def loss(self, params: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
        """Negative log-likelihood in nats of `targets` (B, T) under `params` (B, n_params, T),
        in float32 whatever the params' dtype; reduction as in F.cross_entropy."""

    @abstractmethod
    def most_likely(self, params: Tensor) -> Tensor:
        """The most likely class (B, T) under `params` (B, n_params, T)."""

    @abstractmethod
    def sample(self, params: Tensor, uniforms: Tensor, inv_temp: Tensor,
               floor: Tensor) -> Tensor:
        """One sample per row: `params` (B, n_params), `uniforms` (B, n_uniforms) in [0, 1),
        `inv_temp` a 0-d tensor (1 / temperature; 0: the most likely class), `floor` a 0-d
        tensor (what the distribution does with it is its own: the softmax subtracts it from
        every probability) -> classes (B,). Static shapes and no host synchronisation (it runs
        inside a CUDA graph)."""

    # the fused step's sampler, the same rule as `sample` for one row: a plain function of
    # (params (n_params,) float32, uniforms (n_uniforms,) float64, inv_temp, floor) -> class,
    # written    # so that numba compiles it (loops over arrays, math and numpy scalar functions)
    sample_one: ClassVar[Callable[[np.ndarray, np.ndarray, float, float], int]]


OUTPUTS: dict[str, type[OutputDistribution]] = {}


def register(cls: type[OutputDistribution]) -> type[OutputDistribution]:
    """Class decorator: make `cls` available as `ModelConfig(output=cls.name)`."""
    OUTPUTS[cls.name] = cls
    return cls


def output_distribution(cfg: ModelConfig) -> OutputDistribution:
    try:
        cls = OUTPUTS[cfg.output]
    except KeyError:
        raise ValueError(f"unknown output distribution {cfg.output!r}; known: "
                         f"{', '.join(OUTPUTS)}") from None
    return cls(cfg.audio)


@register
class MuLawSoftmax(OutputDistribution):
    """The paper's output: a softmax over the mu + 1 (256) levels of mu-law quantised audio."""

    name = "mulaw-softmax"
    sample_one = staticmethod(sample_softmax)

    def __init__(self, audio: AudioConfig) -> None:
        super().__init__(audio)
        self.mu = audio.mu
        self.n_inputs = self.n_params = audio.mu + 1

    def encode(self, audio):
        return mu_law_encode(audio, self.mu)

    def decode(self, classes):
        return mu_law_decode(classes, self.mu)

    def loss(self, params: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
        return F.cross_entropy(params.float(), targets, reduction=reduction)

    def most_likely(self, params: Tensor) -> Tensor:
        return params.argmax(dim=1)

    def sample(self, params: Tensor, uniforms: Tensor, inv_temp: Tensor,
               floor: Tensor) -> Tensor:
        probs = torch.softmax(params * inv_temp, dim=1)
        probs = torch.where(floor > 0, (probs - floor).clamp_(min=0), probs)
        u = uniforms[:, 0]
        sampled = (probs.cumsum(1) <= u[:, None] * probs.sum(1, keepdim=True)).sum(1)
        sampled = sampled.clamp_(max=self.n_params - 1)
        return torch.where(inv_temp > 0, sampled, params.argmax(1))

