"""A second output distribution and a second conditioning path, each added in this file alone:
the one class (and its registration) is all the package needs to train, score and generate
with them through the shared machinery (objective, fused CPU kernel, torch/CUDA-graph step,
chunked conditioning)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from deepsynth.generate.fused import FusedDecoderState, pack_decoder
from deepsynth.generate.generator import Conditioner, frame_features, generate, score_incremental
from deepsynth.generate.graphed import GraphedDecoderState
from deepsynth.generate.sources import VideoSource
from deepsynth.model import DeepSynth, get_preset
from deepsynth.model.conditioning import PATHS, ConditioningPath
from deepsynth.model.frame_cnn import hold
from deepsynth.model.output import OUTPUTS, OutputDistribution
from deepsynth.sim import keyboard
from deepsynth.train.data import DeviceBatch
from deepsynth.train.objective import decayed_parameters
from deepsynth.train.step import train_step

# --- a toy output distribution: one discretized logistic over 64 linear levels -------------

LEVELS = 64
HALF = (LEVELS - 1) / 2


def _sample_logistic(params: np.ndarray, uniforms: np.ndarray, inv_temp: float,
                     floor: float) -> int:
    """Inverse CDF of the logistic (mean and scale from params, in level units); the
    temperature scales the spread; inv_temp <= 0: the mean, rounded (no floor rule)."""
    mean = HALF * (1.0 + params[0])
    x = mean
    if inv_temp > 0.0:
        u = min(max(uniforms[0], 1e-6), 1.0 - 1e-6)
        x = mean + (math.exp(params[1]) + 0.5) / inv_temp * (math.log(u) - math.log(1.0 - u))
    return int(min(max(math.floor(x + 0.5), 0.0), LEVELS - 1.0))


class ToyLogistic(OutputDistribution):
    name = "toy-logistic"
    sample_one = staticmethod(_sample_logistic)
    n_inputs, n_params, n_uniforms = LEVELS, 2, 1

    def quantize(self, audio):
        lib = torch if isinstance(audio, Tensor) else np
        q = lib.floor((lib.clip(audio, -1.0, 1.0) + 1.0) / 2.0 * (LEVELS - 1) + 0.5)
        return q.long() if lib is torch else q.astype(np.int64)

    def dequantize(self, classes):
        return (classes * (2.0 / (LEVELS - 1)) - 1.0).astype(np.float32) \
            if isinstance(classes, np.ndarray) else (classes * (2.0 / (LEVELS - 1)) - 1.0).float()

    def _cdf(self, params: Tensor, x: Tensor) -> Tensor:
        mean, scale = HALF * (1 + params[:, 0]), params[:, 1].exp() + 0.5
        return torch.sigmoid((x - mean) / scale)

    def loss(self, params, targets, reduction="mean"):
        params, x = params.float(), targets.float()
        upper = torch.where(x >= LEVELS - 1, 1.0, self._cdf(params, x + 0.5))
        lower = torch.where(x <= 0, 0.0, self._cdf(params, x - 0.5))
        nll = -torch.log((upper - lower).clamp_min(1e-12))
        return {"mean": nll.mean(), "sum": nll.sum(), "none": nll}[reduction]

    def most_likely(self, params):
        return torch.floor(HALF * (1 + params[:, 0]) + 0.5).clamp(0, LEVELS - 1).long()

    def sample(self, params, uniforms, inv_temp, floor):
        mean = HALF * (1 + params[:, 0])
        u = uniforms[:, 0].clamp(1e-6, 1 - 1e-6)
        spread = (params[:, 1].exp() + 0.5) / torch.where(inv_temp > 0, inv_temp, 1.0)
        x = torch.where(inv_temp > 0, mean + spread * (u.log() - (1 - u).log()), mean)
        return torch.floor(x + 0.5).clamp(0, LEVELS - 1).long()


# --- a toy conditioning path: each frame's mean brightness, through one learned 1x1 layer ---


class Brightness(ConditioningPath):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv1d(1, channels, 1)

    @classmethod
    def from_config(cls, cfg, layout):
        return cls(cfg.cond_channels)

    n_frame_features = 1
    context = 0

    def frame_features(self, frames):
        return frames.float().mean(dim=(1, 2))[:, None] / 255.0

    def forward(self, features, frame_index, skip):
        return self.proj(hold(features, frame_index))[:, :, skip:]


@pytest.fixture
def toy_output(monkeypatch):
    monkeypatch.setitem(OUTPUTS, ToyLogistic.name, ToyLogistic)


@pytest.fixture
def toy_path(monkeypatch):
    monkeypatch.setitem(PATHS, "brightness", Brightness)


def video(T: int, seed: int = 0) -> tuple[VideoSource, torch.Tensor]:
    rng = np.random.default_rng(seed)
    states = rng.random((12, 88)) < 0.15
    starts = np.sort(rng.choice(np.arange(1, T), 11, replace=False))
    starts = np.concatenate([[0], starts]).astype(np.int64)
    src = VideoSource(None, "test", starts, T, 4000, lambda: iter([keyboard.render(states)]))
    return src, torch.from_numpy(keyboard.render(states))


def tiny(**changes) -> DeepSynth:
    torch.manual_seed(0)
    cfg = dataclasses.replace(get_preset("tiny").model, **changes)
    return DeepSynth(cfg, keyboard.layout()).eval()


def trains_scores_and_generates(m: DeepSynth) -> None:
    """What any output distribution must support, through the shared machinery: training
    lowers its loss; the fused kernel's teacher-forced head equals the parallel forward; the
    numba sampler (fused) and the torch sampler (graphed step) draw alike; end to end, the same
    audio whatever the chunks."""
    T = 3 * m.receptive_field
    src, frames = video(T + m.lookahead)
    index = torch.from_numpy(src.frame_index(0, T))[None]
    audio = torch.sin(torch.arange(T) / 7.0)[None] * 0.5
    batch = DeviceBatch(frames, index, audio, m.receptive_field)
    params = list(m.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    first = train_step(m, m.output, batch, opt, params, decayed_parameters(m), 0.0, 10.0).ce
    for _ in range(5):
        last = train_step(m, m.output, batch, opt, params, decayed_parameters(m), 0.0, 10.0).ce
    assert torch.isfinite(first) and last < first
    m.eval()
    classes = m.output.encode(audio)
    with torch.no_grad():
        parallel = m(frames, index, classes)
    cached = score_incremental(m, frames, index, classes, chunk=333)
    assert (cached - parallel).abs().max() <= 1e-4
    cond = Conditioner(m, [frame_features(m, src)]).chunk([src], [0], 500)
    u = np.random.default_rng(3).random((1, 500, m.output.n_uniforms))
    fused, _ = FusedDecoderState(pack_decoder(m.decoder), m.output, 1).run(cond, 500, u, 0.7)
    graphed, _ = GraphedDecoderState(m.decoder, m.output, 1, 500).run(cond, 500, u, 0.7)
    assert (fused == graphed).mean() > 0.99 and len(np.unique(fused)) > 3
    out = generate(m, [src], temperature=0.7, seed=1)[0]
    assert out.dtype == np.int16 and len(out) == T + m.lookahead
    assert np.array_equal(out, generate(m, [src], temperature=0.7, seed=1, chunk=300)[0])


def test_a_second_output_distribution_trains_scores_and_generates(toy_output):
    m = tiny(output="toy-logistic")
    assert isinstance(m.output, ToyLogistic) and m.decoder.head2.out_channels == 2
    assert m.silence == 32  # level of zero amplitude
    trains_scores_and_generates(m)


def test_the_mixture_of_logistics_trains_scores_and_generates():
    m = tiny(output="mulaw-logistic")
    assert m.decoder.head2.out_channels == 30 and m.output.n_uniforms == 2
    trains_scores_and_generates(m)


def test_a_second_conditioning_path_is_summed_and_generates_exactly(toy_path):
    m = tiny()
    assert list(m.paths) == ["video", "brightness"]
    assert sum(p.numel() for p in m.paths["brightness"].parameters()) == 2 * m.cfg.cond_channels
    T = 2 * m.receptive_field + 300
    src, frames = video(T)
    index = torch.from_numpy(src.frame_index(0, T))[None]
    classes = torch.randint(0, 256, (1, T), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        parallel = m(frames, index, classes)
    cached = score_incremental(m, frames, index, classes, chunk=250)
    assert (cached - parallel).abs().max() <= 1e-4
    assert len(generate(m, [src], seed=0)[0]) == T
    with torch.no_grad():  # the path takes part: without its weights the output changes
        m.paths["brightness"].proj.weight.zero_()
        m.paths["brightness"].proj.bias.zero_()
        assert not torch.allclose(m(frames, index, classes), parallel)
