"""Conditioning paths: the ways the video conditions the decoder, behind one interface.

A path turns each unique frame into a feature row once (`frame_features`), then the rows shown
over a stretch of samples into the decoder's conditioning (`forward`). It says how much past
video it reads (`context`) and the blocks its computation is aligned to (`hop`), which is all
training items and chunked generation need to know. `DeepSynth` holds its paths by name and sums
their outputs; a new kind of conditioning is one class, registered with `@register_path(name)`
and built by its `from_config` (None when the config leaves it out). The model applies the
lookahead (every path sees the video `lookahead` samples ahead), so a path is written as if it
were causal.

Two paths exist: the paper's learned one (`LearnedVideo`: frame CNN -> video encoder, which may
run on every `hop`-th sample), and the key features read through the keyboard's layout
(`deepsynth.model.key_features.KeyFeatures`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

from torch import Tensor, nn

from deepsynth.config import ModelConfig
from deepsynth.layout import KeyboardLayout
from deepsynth.model.encoder import VideoEncoder
from deepsynth.model.frame_cnn import FrameCNN, hold


class ConditioningPath(nn.Module, ABC):
    """Unique frames (N, H, W) uint8 -> rows (N, n_frame_features); rows + the frame shown at each
    sample -> conditioning (B, C, length)."""

    learned: ClassVar[bool] = True  # False: the path reads the frames with no trained weights
    # before its projection (no gradient reaches its input; see model.info)

    @classmethod
    @abstractmethod
    def from_config(cls, cfg: ModelConfig, layout: KeyboardLayout) -> ConditioningPath | None:
        """The path a model of this config has (its output `cfg.cond_channels` wide), or None
        when the config leaves it out."""

    @property
    @abstractmethod
    def n_frame_features(self) -> int:
        """Width of the rows `frame_features` returns."""

    @property
    @abstractmethod
    def context(self) -> int:
        """Samples of video before sample t that the conditioning at t reads."""

    @property
    def hop(self) -> int:
        """The path computes on blocks of this many samples, anchored at the first column of
        `forward`'s frame index (chunked generation keeps the blocks where they are)."""
        return 1

    @abstractmethod
    def frame_features(self, frames: Tensor) -> Tensor:
        """Unique frames (N, H, W) uint8 -> rows (N, n_frame_features), one per frame."""

    @abstractmethod
    def forward(self, features: Tensor, frame_index: Tensor, skip: int) -> Tensor:
        """Rows (N, n_features) + frame_index (B, T), the row shown at each sample ->
        conditioning (B, C, T - skip) for the samples after the first `skip`, which are video
        context only."""


PATHS: dict[str, type[ConditioningPath]] = {}  # by name, in the order their outputs are summed


def register_path(name: str) -> Callable[[type[ConditioningPath]], type[ConditioningPath]]:
    """Class decorator: models build this path (by its `from_config`) under `name`."""

    def add(cls: type[ConditioningPath]) -> type[ConditioningPath]:
        PATHS[name] = cls
        return cls

    return add


@register_path("video")
class LearnedVideo(ConditioningPath):
    """The paper's conditioning: a frame CNN per unique frame, held at audio rate, then a dilated
    causal video encoder, run on every `encoder_hop`-th sample (1 in the paper) and held over the
    block."""

    def __init__(self, cfg: ModelConfig, layout: KeyboardLayout) -> None:
        super().__init__()
        self.frame_cnn = FrameCNN(cfg.cnn, layout.height, layout.width)
        self.encoder = VideoEncoder(cfg.cnn.features, cfg.encoder, cfg.cond_channels)
        self._hop = int(cfg.encoder_hop)

    @classmethod
    def from_config(cls, cfg: ModelConfig, layout: KeyboardLayout) -> LearnedVideo | None:
        return cls(cfg, layout) if cfg.learned_video else None

    @property
    def n_frame_features(self) -> int:
        return self.frame_cnn.cfg.features

    @property
    def context(self) -> int:
        return self.encoder.receptive_field * self._hop - 1

    @property
    def hop(self) -> int:
        return self._hop

    def frame_features(self, frames: Tensor) -> Tensor:
        return self.frame_cnn(frames)

    def forward(self, features: Tensor, frame_index: Tensor, skip: int) -> Tensor:
        hop = self._hop
        cond = self.encoder(hold(features, frame_index[:, ::hop]))
        if hop > 1:
            cond = cond.repeat_interleave(hop, dim=2)[:, :, : frame_index.shape[1]]
        return cond[:, :, skip:]
