"""What the decoder predicts: the output distribution of the next audio sample.

One object holds every decision about it: how audio becomes the decoder's classes (its input
alphabet and the training targets; a first-order pre-emphasis first, if the model has one) and
back (`pcm_stream` for generated chunks), the width of the decoder's head, the loss, the most likely
value, sampling (a temperature and a probability floor) and classes back to audio. Training,
the teacher-forced scores, `info`, the fused CPU step and the CUDA-graph step all go through it.

A distribution is one class registered under a name; `ModelConfig.output` names the one a model
uses (`output_distribution(cfg)` builds it). Each class gives its sampler twice: in PyTorch
(`sample`, static shapes, for the graphed step) and as a plain-Python function of arrays that
numba compiles (`sample_one`, for the fused step); the two must agree (tested).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from deepsynth.audio import PcmStream, deemphasize, mu_law_decode, mu_law_encode, preemphasize
from deepsynth.config import AudioConfig, ModelConfig
from deepsynth.samplers import (
    MIX_COMPONENTS,
    MIX_LOG_SCALE_MIN,
    MIX_MU,
    sample_logistic_mix,
    sample_softmax,
)


class OutputDistribution(ABC):
    """The next sample's distribution, given the decoder head's output `params` (B, n_params, T).

    Audio is float in [-1, 1]; classes are int64 in [0, n_inputs): the decoder reads the past
    as classes and is trained to predict the next sample's class."""

    name: ClassVar[str]
    n_inputs: int  # size of the decoder's input alphabet (classes of past samples)
    n_params: int  # width of the decoder's head: parameters of one sample's distribution
    n_uniforms: int = 1  # uniform random numbers drawn per generated sample

    def __init__(self, audio: AudioConfig, preemphasis: float = 0.0) -> None:
        self.audio = audio
        self.preemphasis = float(preemphasis)  # ModelConfig.preemphasis: 0, none

    @property
    def silence(self) -> int:
        """The class of a zero amplitude: what precedes the first sample."""
        return int(self.quantize(np.zeros(1, np.float32))[0])

    @abstractmethod
    def quantize(self, signal):
        """The decoder's signal (float, numpy or torch) -> classes (int64, same library)."""

    @abstractmethod
    def dequantize(self, classes):
        """Classes (numpy or torch) -> the decoder's signal, float32 in [-1, 1]."""

    def encode(self, audio):
        """Audio (float, numpy or torch, time last) -> the classes the decoder reads and
        predicts: pre-emphasised (`preemphasis`; the sample before the first taken as 0), then
        quantized."""
        return self.quantize(preemphasize(audio, self.preemphasis))

    def decode(self, classes):
        """Classes (time last) -> float32 audio: `dequantize`, then de-emphasis from a silent
        start (whole signals; chunk after chunk: `pcm_stream`)."""
        signal = self.dequantize(classes)
        if not self.preemphasis:
            return signal
        is_torch = not isinstance(signal, np.ndarray)
        x = signal.detach().cpu().numpy() if is_torch else signal
        y = np.stack([deemphasize(row, self.preemphasis)[0] for row in
                      x.reshape(-1, x.shape[-1])]).reshape(x.shape).astype(np.float32)
        return torch.from_numpy(y).to(signal.device) if is_torch else y

    def pcm_stream(self) -> PcmStream:
        """Classes -> int16 audio chunk after chunk, for one generated signal (the same samples
        whatever the chunks; `decode`'s numbers to within one int16 step, as `decode` rounds
        to float32 first)."""
        return PcmStream(self.dequantize(np.arange(self.n_inputs)), self.preemphasis)

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
    return cls(cfg.audio, cfg.preemphasis)


class MuLawClasses(OutputDistribution):
    """The classes of the mu-law distributions: the mu + 1 (256) levels of mu-law quantised
    audio, read by the decoder as its input alphabet."""

    def __init__(self, audio: AudioConfig, preemphasis: float = 0.0) -> None:
        super().__init__(audio, preemphasis)
        self.mu = audio.mu
        self.n_inputs = audio.mu + 1

    def quantize(self, signal):
        return mu_law_encode(signal, self.mu)

    def dequantize(self, classes):
        return mu_law_decode(classes, self.mu)


@register
class MuLawSoftmax(MuLawClasses):
    """The paper's output: a softmax over the mu + 1 (256) levels of mu-law quantised audio."""

    name = "mulaw-softmax"
    sample_one = staticmethod(sample_softmax)

    def __init__(self, audio: AudioConfig, preemphasis: float = 0.0) -> None:
        super().__init__(audio, preemphasis)
        self.n_params = self.n_inputs

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



@register
class MuLawLogistic(MuLawClasses):
    """A discretized mixture of logistics (PixelCNN++, Parallel WaveNet) over the same 256
    mu-law classes: per sample, M weights, means and log-scales of the companded value in
    [-1, 1] (3M head outputs instead of 256); a class's probability is the mixture's mass over
    its bin (the end bins reach to infinity). The decoder reads past samples as the same classes
    as the softmax does. The temperature scales the logistics' spread (not the weights); the
    most likely class is taken as the heaviest component's mean (close to, not always, the
    mixture's mode)."""

    name = "mulaw-logistic"
    sample_one = staticmethod(sample_logistic_mix)
    n_uniforms = 2
    components = MIX_COMPONENTS

    def __init__(self, audio: AudioConfig, preemphasis: float = 0.0) -> None:
        if audio.mu != MIX_MU:
            raise ValueError(f"the logistic mixture's classes are mu-law with mu = {MIX_MU}")
        super().__init__(audio, preemphasis)
        self.n_params = 3 * self.components

    def _split(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        M = self.components
        return (params[:, :M], params[:, M : 2 * M],
                params[:, 2 * M :].clamp(min=MIX_LOG_SCALE_MIN))

    def loss(self, params: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
        logit, mean, log_s = self._split(params.float())
        x = (targets.float() * (2.0 / self.mu) - 1.0)[:, None]  # (B, 1, T) the bin's centre
        half = 1.0 / self.mu
        inv_s = torch.exp(-log_s)
        up, lo = inv_s * (x + half - mean), inv_s * (x - half - mean)
        log_cdf_up = F.logsigmoid(up)  # the lowest bin: log P(X < x + half)
        log_sf_lo = -F.softplus(lo)  # the highest bin: log P(X > x - half)
        delta = torch.sigmoid(up) - torch.sigmoid(lo)
        # a bin far in a component's tail: its density at the centre times the bin's width
        mid = inv_s * (x - mean)
        log_pdf = mid - log_s - 2.0 * F.softplus(mid) + math.log(2.0 * half)
        log_mid = torch.where(delta > 1e-5, torch.log(delta.clamp(min=1e-12)), log_pdf)
        log_p = torch.where(x < -1.0 + half, log_cdf_up,
                            torch.where(x > 1.0 - half, log_sf_lo, log_mid))
        nll = -torch.logsumexp(log_p + F.log_softmax(logit, dim=1), dim=1)
        return {"mean": nll.mean(), "sum": nll.sum(), "none": nll}[reduction]

    def _to_class(self, x: Tensor) -> Tensor:
        return torch.floor((x + 1.0) * (self.mu / 2.0) + 0.5).clamp(0, self.mu).long()

    def most_likely(self, params: Tensor) -> Tensor:
        logit, mean, _ = self._split(params)
        return self._to_class(mean.gather(1, logit.argmax(1, keepdim=True))[:, 0].double())

    def sample(self, params: Tensor, uniforms: Tensor, inv_temp: Tensor,
               floor: Tensor) -> Tensor:
        logit, mean, log_s = (p.double() for p in self._split(params))
        u = uniforms.double()
        weights = torch.exp(logit - logit.max(1, keepdim=True).values)
        k = (weights.cumsum(1) <= u[:, :1] * weights.sum(1, keepdim=True)).sum(1)
        k = k.clamp_(max=self.components - 1)[:, None]
        v = (floor + (1.0 - 2.0 * floor) * u[:, 1]).clamp(1e-12, 1.0 - 1e-12)
        spread = torch.exp(log_s.gather(1, k)[:, 0]) / torch.where(inv_temp > 0, inv_temp, 1.0)
        x = mean.gather(1, k)[:, 0] + spread * (torch.log(v) - torch.log(1.0 - v))
        best = mean.gather(1, logit.argmax(1, keepdim=True))[:, 0]
        return self._to_class(torch.where(inv_temp > 0, x, best))
