"""The whole network: frames -> frame CNN -> hold to audio rate -> video encoder -> decoder,
modelling p(y | x) = prod_t p(y_t | y_<t, frames shown at samples <= t) (paper section 3.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from deepsynth.audio import mu_law_encode
from deepsynth.config import AudioConfig, ModelConfig
from deepsynth.model.encoder import VideoEncoder
from deepsynth.model.frame_cnn import FrameCNN, hold
from deepsynth.model.layers import ConvState
from deepsynth.model.wavenet import WaveNetDecoder


def silence_class(audio: AudioConfig) -> int:
    """The mu-law class of a zero amplitude (128 for mu = 255): what precedes the first sample."""
    return int(mu_law_encode(0.0, audio.mu))


def shift_right(audio: Tensor, fill: int) -> Tensor:
    """(B, T) -> (B, T): out[:, t] = audio[:, t - 1], out[:, 0] = fill."""
    return F.pad(audio[:, :-1], (1, 0), value=fill)


@dataclass
class GenerationState:
    """Everything incremental generation carries from one sample to the next."""

    encoder: list[ConvState | None] | None
    decoder: list[ConvState | None]


class DeepSynth(nn.Module):
    """frames (N, H, W) uint8, frame_index (B, T) int64, audio (B, T) int64 -> logits (B, K, T).

    `frames` holds the unique frames of the whole batch, `frame_index[b, t]` the row of the frame
    shown at sample t of sequence b. logits[:, :, t] predicts audio[:, t] from audio[:, :t] and the
    frames shown at samples <= t. The CNN runs once per row of `frames`.
    With `cfg.no_video` there is neither CNN nor encoder and the decoder is unconditioned
    (frames and frame_index may be None). Other conditioning variants override `condition`.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.frame_cnn: FrameCNN | None = None
        self.encoder: VideoEncoder | None = None
        cond_channels = 0
        if not cfg.no_video:
            self.frame_cnn = FrameCNN(cfg.cnn, cfg.frame_height, cfg.frame_width)
            self.encoder = VideoEncoder(cfg.cnn.features, cfg.encoder, cfg.cond_channels)
            cond_channels = cfg.cond_channels
        self.decoder = WaveNetDecoder(cfg.decoder, cfg.n_classes, cond_channels)
        self.silence = silence_class(cfg.audio)

    @property
    def receptive_field(self) -> int:
        """Past audio samples one prediction depends on (575 / 1026 / 1534 for 15 / 20 / 27)."""
        return self.decoder.receptive_field

    @property
    def video_receptive_field(self) -> int:
        """Samples of held frame features one prediction depends on (0 without video)."""
        if self.encoder is None:
            return 0
        return self.encoder.receptive_field + self.decoder.cond_receptive_field - 1

    def frame_features(self, frames: Tensor) -> Tensor | None:
        """Unique frames (N, H, W) uint8 -> features (N, F); None without video."""
        return None if self.frame_cnn is None else self.frame_cnn(frames)

    def condition(self, frames: Tensor | None, frame_index: Tensor | None) -> Tensor | None:
        """The decoder's local conditioning (B, C, T), or None for an unconditioned decoder."""
        if self.encoder is None:
            return None
        if frames is None or frame_index is None:
            raise ValueError("this model reads video: pass frames and frame_index")
        return self.encoder(hold(self.frame_features(frames), frame_index))

    def forward(self, frames: Tensor | None, frame_index: Tensor | None, audio: Tensor) -> Tensor:
        cond = self.condition(frames, frame_index)
        return self.decoder(shift_right(audio, self.silence), cond)

    # --- incremental generation -----------------------------------------------------------

    def init_state(self, batch: int, device=None, dtype=None) -> GenerationState:
        enc = None if self.encoder is None else self.encoder.init_state(batch, device, dtype)
        return GenerationState(enc, self.decoder.init_state(batch, device, dtype))

    def step(self, previous: Tensor, feature: Tensor | None, state: GenerationState) -> Tensor:
        """One new sample t: `previous` (B,) the class of sample t - 1 (`self.silence` at t = 0),
        `feature` (B, F) the frame features shown at t (rows of `frame_features`, None without
        video) -> logits (B, K) for sample t. Updates `state` in place."""
        cond = None
        if self.encoder is not None:
            if feature is None or state.encoder is None:
                raise ValueError("this model reads video: pass the frame feature of each sample")
            cond = self.encoder.step(feature, state.encoder)
        return self.decoder.step(previous, cond, state.decoder)
