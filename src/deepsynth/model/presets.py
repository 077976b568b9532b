"""Named model configurations: one per row of the paper's Table 1, plus small CPU ones.

The paper gives layers, channels and L2 strength per row ("in each of the video encoder network
and audio decoder network"); it does not give skip or conditioning widths nor the frame CNN's
sizes: here skip = conditioning = residual channels, and the CNN is (16, 32, 64) channels at full
resolution with 128 features.

A preset gives its spans of time (lookahead, encoder hop, key-feature window) in milliseconds;
`Preset.model_for` turns them into samples at the rate of the store a model trains on. Layer
counts, kernels and dilations are the architecture: they stay in samples.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from deepsynth.config import AudioConfig, FrameCNNConfig, KeyFeatureConfig, ModelConfig, StackConfig
from deepsynth.errors import DeepSynthError


def samples(ms: float, sample_rate: int) -> int:
    """A duration in milliseconds as whole samples at `sample_rate` (rounded, halves up)."""
    return math.floor(ms * sample_rate / 1000 + 0.5)


@dataclass(frozen=True)
class Durations:
    """A preset's spans of time in milliseconds (ModelConfig holds them in samples)."""

    lookahead_ms: float = 0.0  # future video the conditioning may see (0: causal, the paper)
    encoder_hop_ms: float = 0.0  # between video-encoder steps, at least one sample (0: every one)
    key_window_ms: float = 512.0  # a key press older than this is forgotten (key features)

    def resolve(self, cfg: ModelConfig) -> ModelConfig:
        """`cfg` with these spans in samples at its audio's rate."""
        rate = cfg.audio.sample_rate
        return dataclasses.replace(
            cfg,
            lookahead=samples(self.lookahead_ms, rate),
            encoder_hop=max(1, samples(self.encoder_hop_ms, rate)),
            keys=dataclasses.replace(cfg.keys, window=samples(self.key_window_ms, rate)),
        )


@dataclass(frozen=True)
class Preset:
    base: ModelConfig  # the architecture; its spans of time come from `durations` when given
    l2: float  # L2 regularisation strength (weight decay) used with this model
    description: str
    durations: Durations | None = None  # None: base's spans, in samples at any rate (test variants)

    @property
    def model(self) -> ModelConfig:
        """The model at the default audio representation (`AudioConfig()`: 4 kHz)."""
        return self.model_for(AudioConfig())

    def model_for(self, audio: AudioConfig) -> ModelConfig:
        """The preset's model for audio of this representation (the store's sample rate): the
        durations resolved to samples at `audio.sample_rate`."""
        cfg = dataclasses.replace(self.base, audio=audio)
        return cfg if self.durations is None else self.durations.resolve(cfg)


PAPER_CNN = FrameCNNConfig(channels=(16, 32, 64), input_pool=(1, 1), features=128)


def paper_model(layers: int, channels: int) -> ModelConfig:
    stack = StackConfig(layers=layers, residual_channels=channels, skip_channels=channels)
    return ModelConfig(cnn=PAPER_CNN, encoder=stack, decoder=stack, cond_channels=channels)


def _paper(layers: int, channels: int, l2: float, train: float, val: float) -> Preset:
    return Preset(
        paper_model(layers, channels),
        l2,
        f"paper Table 1: {layers} layers x {channels} channels, L2 {l2:g} "
        f"(paper CE train {train}, val {val} nats)",
        Durations(),
    )


SMALL_CNN = FrameCNNConfig(channels=(8, 16), input_pool=(3, 3), features=64)
SMALL_PAPER = ModelConfig(
    cnn=SMALL_CNN,
    encoder=StackConfig(layers=8, residual_channels=32, skip_channels=32),
    decoder=StackConfig(layers=12, residual_channels=32, skip_channels=64),
    cond_channels=32,
)
SMALL_KEYS = KeyFeatureConfig(enabled=True, taus_ms=(20.0, 200.0))  # window: Durations
SMALL_AHEAD = Durations(lookahead_ms=3.75)  # 15 samples at 4 kHz
SMALL_AHEAD_HOP = Durations(lookahead_ms=3.75, encoder_hop_ms=4.0)  # 15 and 16 samples at 4 kHz
CPU_CHANNEL_DIVISOR = 8


def _cpu_standin(layers: int, channels: int, l2: float, paper: str) -> Preset:
    """A Table 1 row at 1/8 of its width for CPU sweeps: same layers and L2, small-paper's CNN."""
    ch = channels // CPU_CHANNEL_DIVISOR
    stack = StackConfig(layers=layers, residual_channels=ch, skip_channels=ch)
    return Preset(
        ModelConfig(cnn=SMALL_CNN, encoder=stack, decoder=stack, cond_channels=ch),
        l2,
        f"CPU stand-in for {paper}: {layers} layers x {ch} channels, L2 {l2:g}, "
        "small-paper's frame CNN",
        Durations(),
    )


SMALL = dataclasses.replace(SMALL_PAPER, learned_video=False, cond_layers=3,
                                    keys=dataclasses.replace(SMALL_KEYS, harmonics=3))

PRESETS: dict[str, Preset] = {
    "paper-15x128-l2e-2": _paper(15, 128, 1e-2, 2.23, 2.87),
    "paper-15x128": _paper(15, 128, 1e-4, 1.87, 2.35),
    "paper-15x128-l2e-5": _paper(15, 128, 1e-5, 1.65, 2.46),
    "paper-20x128": _paper(20, 128, 1e-4, 1.51, 2.26),
    "paper-27x128": _paper(27, 128, 1e-4, 1.21, 2.18),
    "paper-27x256": _paper(27, 256, 1e-4, 1.16, 2.15),
    "paper-27x512": _paper(27, 512, 1e-4, 1.14, 2.16),
    "small-paper": Preset(
        SMALL_PAPER,
        1e-4,
        "CPU model with the paper's conditioning: decoder 12x32 (receptive field 519 samples, "
        "130 ms at 4 kHz), encoder 8x32 at audio rate, CNN on 3x3-averaged frames; 0.27 M "
        "parameters",
        Durations(),
    ),
    "small": Preset(
        SMALL,
        1e-4,
        "CPU model (the shipped one): a 12x32 decoder (receptive field 519 samples, 130 ms at "
        "4 kHz) conditioned in its first 3 blocks on per-key features read from each frame "
        "through the keyboard's key map, 3.75 ms ahead: key levels, press traces (20 and 200 ms "
        "over a 0.5 s window) and sinusoids at each pressed key's pitch and 2 harmonics, "
        "phase-locked to the press, summed over 8 registers",
        SMALL_AHEAD,
    ),
    **{
        f"small-{layers}x{ch}": Preset(
            dataclasses.replace(SMALL, decoder=StackConfig(layers=layers, residual_channels=ch,
                                                           skip_channels=2 * ch)),
            1e-4,
            f"small with a {layers}x{ch} decoder (skip {2 * ch}), for the CPU model-size "
            f"ablation (issue 17): {what}",
            SMALL_AHEAD,
        )
        for layers, ch, what in [
            (18, 32, "two cycles of dilations, receptive field 1,023 samples, ~1.5x the step"),
            (12, 48, "1.5x the width, ~2.2x the step"),
            (12, 24, "0.75x the width, ~0.83x the step"),
        ]
    },
    **{
        name: Preset(
            dataclasses.replace(SMALL, **changes),
            1e-4,
            f"small with {what}, for the output ablation (issue 17)",
            SMALL_AHEAD,
        )
        for name, changes, what in [
            ("small-pe85", {"preemphasis": 0.85},
             "the audio pre-emphasised by 0.85 (x[n] - 0.85 x[n-1]; de-emphasis on output)"),
            ("small-mol", {"output": "mulaw-logistic"},
             "a mixture of 10 discretized logistics over the mu-law classes instead of the "
             "256-way softmax"),
        ]
    },
    "small-video": Preset(
        dataclasses.replace(SMALL_PAPER, keys=dataclasses.replace(SMALL_KEYS, harmonics=3)),
        1e-4,
        "small-keys plus the learned video path: small-paper's frame CNN and an encoder that "
        "runs every 4 ms (16 samples at 4 kHz, reaching 1 s back)",
        SMALL_AHEAD_HOP,
    ),
    "small-keys": Preset(
        dataclasses.replace(SMALL_PAPER, learned_video=False,
                            keys=dataclasses.replace(SMALL_KEYS, harmonics=3)),
        1e-4,
        "small with the conditioning in every decoder block (as the paper does)",
        SMALL_AHEAD,
    ),
    "small-traces": Preset(
        dataclasses.replace(SMALL_PAPER, keys=SMALL_KEYS),
        1e-4,
        "small-video without the sinusoids: press traces only",
        SMALL_AHEAD_HOP,
    ),
    **{
        name: _cpu_standin(layers, channels, l2, paper)
        for name, layers, channels, l2, paper in [
            ("cpu-15x16-l2e-2", 15, 128, 1e-2, "paper-15x128-l2e-2"),
            ("cpu-15x16", 15, 128, 1e-4, "paper-15x128"),
            ("cpu-15x16-l2e-5", 15, 128, 1e-5, "paper-15x128-l2e-5"),
            ("cpu-20x16", 20, 128, 1e-4, "paper-20x128"),
            ("cpu-27x16", 27, 128, 1e-4, "paper-27x128"),
            ("cpu-27x32", 27, 256, 1e-4, "paper-27x256"),
            ("cpu-27x64", 27, 512, 1e-4, "paper-27x512"),
        ]
    },
    "tiny": Preset(
        ModelConfig(
            cnn=FrameCNNConfig(channels=(4,), input_pool=(3, 3), features=8),
            encoder=StackConfig(layers=2, residual_channels=8, skip_channels=8),
            decoder=StackConfig(layers=3, residual_channels=8, skip_channels=16),
            cond_channels=8,
        ),
        1e-4,
        "for tests: a few layers of 8 channels, forward in milliseconds",
        Durations(),
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise DeepSynthError(
            f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}"
        ) from None
