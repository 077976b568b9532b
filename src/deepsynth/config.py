"""Frozen configuration dataclasses. Every checkpoint stores them, so a file alone rebuilds its run.

Only plain values live here (no torch, no numpy), so every layer of the package can import it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

PedalMode = Literal["extend", "raw"]


@dataclass(frozen=True)
class AudioConfig:
    """How audio is represented everywhere: rate, sample width and mu-law quantisation."""

    sample_rate: int = 4000
    bits: int = 16
    mu: int = 255  # mu-law with mu = 255 gives mu + 1 = 256 classes (the paper writes 256)

    @property
    def n_classes(self) -> int:
        return self.mu + 1


@dataclass(frozen=True)
class SimConfig:
    """The piano simulator: how a MIDI file becomes key states, frames and audio."""

    audio: AudioConfig = AudioConfig()
    pedal: PedalMode = "extend"  # "extend": a note sounds (and shows) until the pedal lifts
    render_rate: int = 44100  # SoundFont rendering rate before polyphase resampling
    gain_db: float = 6.0  # fixed synthesizer gain, the same for every song
    tail_seconds: float = 1.0  # audio kept after the last key is released (release, reverb)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as nested plain dicts (for JSON and checkpoints)."""
    return dataclasses.asdict(cfg)


# Fields older files hold and `from_dict` drops: the frame size now comes with the model's keyboard
# layout (deepsynth.layout), stored beside the config.
RETIRED_FIELDS: dict[str, tuple[str, ...]] = {"ModelConfig": ("frame_height", "frame_width")}


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a (possibly nested) frozen dataclass from `to_dict` output (fields listed in
    `RETIRED_FIELDS` for its class are dropped)."""
    kwargs = {}
    hints = {f.name: f for f in dataclasses.fields(cls)}
    retired = RETIRED_FIELDS.get(cls.__name__, ())
    for name, value in data.items():
        if name not in hints:
            if name in retired:
                continue
            raise ValueError(f"unknown field {name!r} for {cls.__name__}")
        default = getattr(cls, name, None) if hasattr(cls, name) else None
        if isinstance(value, dict) and dataclasses.is_dataclass(default):
            value = from_dict(type(default), value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


# --- model ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameCNNConfig:
    """The VGG-like frame encoder: (conv3x3-conv3x3-maxpool2x2) per entry of `channels`."""

    channels: tuple[int, ...] = (16, 32, 64)  # output channels of each conv-conv-pool block
    input_pool: tuple[int, int] = (1, 1)  # average-pool (height, width) applied to the frame first
    features: int = 128  # width of the per-frame feature vector (the FC layer's output)


@dataclass(frozen=True)
class StackConfig:
    """A dilated causal stack of gated residual blocks (dilations 1, 2, .., max, 1, 2, ..)."""

    layers: int = 15
    residual_channels: int = 128
    skip_channels: int = 128
    kernel_size: int = 2
    max_dilation: int = 256

    def __post_init__(self) -> None:
        if self.max_dilation < 1 or self.max_dilation & (self.max_dilation - 1):
            raise ValueError(f"max_dilation must be a power of two, got {self.max_dilation}")
        if self.layers < 1 or self.kernel_size < 1:
            raise ValueError("a stack needs at least one layer and a kernel of at least 1")

    @property
    def dilations(self) -> tuple[int, ...]:
        cycle = self.max_dilation.bit_length()  # 256 -> 9 layers: 1, 2, .., 256
        return tuple(2 ** (i % cycle) for i in range(self.layers))

    @property
    def receptive_field(self) -> int:
        """Inputs seen by one output: 1 + (kernel - 1) * sum of dilations (15 layers: 575)."""
        return 1 + (self.kernel_size - 1) * sum(self.dilations)


@dataclass(frozen=True)
class KeyFeatureConfig:
    """Per-key conditioning read from the video by the keyboard's fixed key map (no learning):
    which keys are down, how long ago each was last pressed (a press is a frame difference: the
    key is down in this frame and was up in the one before), and optionally a bank of sinusoids at
    each pressed key's pitch and harmonics, phase-locked to its press. Projected by one 1x1 layer
    and added to the conditioning. Off by default (the paper has no such features).

    Every feature at sample t depends on the video over (t - window, t] only, so chunked
    generation equals the computation over the whole piece."""

    enabled: bool = False
    window: int = 2048  # samples: a press older than this is forgotten
    taus_ms: tuple[float, ...] = (20.0, 200.0)  # time constants of the decaying press traces
    harmonics: int = 0  # sinusoids per pressed key (pitch x 1..harmonics below Nyquist); 0: none
    oscillator_tau_ms: float = 500.0  # decay of the sinusoids after the press
    groups: int = 8  # the sinusoids are summed over keys within this many registers


@dataclass(frozen=True)
class ModelConfig:
    """The whole network: frame CNN -> video encoder -> conditional WaveNet decoder."""

    audio: AudioConfig = AudioConfig()
    cnn: FrameCNNConfig = FrameCNNConfig()
    encoder: StackConfig = StackConfig()
    decoder: StackConfig = StackConfig()
    cond_channels: int = 128  # width of the encoder's output, the decoder's local conditioning
    no_video: bool = False  # ablation: no frame CNN, no encoder, the decoder is unconditioned
    encoder_hop: int = 1  # the video encoder runs on every hop-th sample (1: audio rate, paper)
    lookahead: int = 0  # samples of future video the conditioning may see (0: causal, paper)
    keys: KeyFeatureConfig = KeyFeatureConfig()  # per-key features from the key map (off: paper)
    learned_video: bool = True  # frame CNN + video encoder (paper); False: the key features alone
    # decoder blocks that read the conditioning, counted from the first (0: every block, the
    # paper); the first block's reaches the rest through the residual path
    cond_layers: int = 0
    # the next sample's distribution (deepsynth.model.output): the paper's 256-way mu-law softmax
    output: str = "mulaw-softmax"
    # first-order pre-emphasis of the audio the decoder models, x[n] - a x[n-1] (0: none, the
    # paper); generation undoes it (de-emphasis), which shapes the model's error like the piano's
    # spectrum instead of white (LPCNet uses 0.85)
    preemphasis: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.preemphasis < 1.0:  # NaN too
            raise ValueError(f"preemphasis must be in [0, 1), got {self.preemphasis}")
        if self.encoder_hop < 1 or self.lookahead < 0:
            raise ValueError("encoder_hop must be >= 1 and lookahead >= 0")
        if not self.learned_video and not self.keys.enabled:
            raise ValueError("a model without the learned video path needs the key features")
        if not 0 <= self.cond_layers <= self.decoder.layers:
            raise ValueError(f"cond_layers must be in 0..{self.decoder.layers} (0: every decoder "
                             f"block), got {self.cond_layers}")

    @property
    def n_classes(self) -> int:
        return self.audio.n_classes
