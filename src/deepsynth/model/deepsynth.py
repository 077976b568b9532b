"""The whole network: frames -> frame CNN -> hold to audio rate -> video encoder -> decoder,
modelling p(y | x) = prod_t p(y_t | y_<t, frames shown at samples <= t) (paper section 3.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepsynth.audio import mu_law_encode
from deepsynth.config import AudioConfig, ModelConfig
from deepsynth.model.encoder import VideoEncoder
from deepsynth.model.frame_cnn import FrameCNN, hold
from deepsynth.model.key_features import KeyFeatures
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
    (frames and frame_index may be None). Conditioning variants (all off in the paper's
    configuration): `encoder_hop` (the encoder at a lower rate), `lookahead` (the video a few
    samples ahead), `keys` (per-key features read through the keyboard's key map).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.frame_cnn: FrameCNN | None = None
        self.encoder: VideoEncoder | None = None
        self.keys: KeyFeatures | None = None
        cond_channels = 0
        if not cfg.no_video:
            if cfg.learned_video:
                self.frame_cnn = FrameCNN(cfg.cnn, cfg.frame_height, cfg.frame_width)
                self.encoder = VideoEncoder(cfg.cnn.features, cfg.encoder, cfg.cond_channels)
            cond_channels = cfg.cond_channels
            if cfg.keys.enabled:
                self.keys = KeyFeatures(cfg.keys, cfg.audio.sample_rate, cfg.cond_channels,
                                        cfg.frame_height, cfg.frame_width)
        self.decoder = WaveNetDecoder(cfg.decoder, cfg.n_classes, cond_channels, cfg.cond_layers)
        self.silence = silence_class(cfg.audio)

    @property
    def receptive_field(self) -> int:
        """Past audio samples one prediction depends on (575 / 1026 / 1534 for 15 / 20 / 27)."""
        return self.decoder.receptive_field

    @property
    def lookahead(self) -> int:
        """Samples of future video the conditioning at a sample sees (0: causal)."""
        return int(self.cfg.lookahead) if self.conditioned else 0

    @property
    def conditioned(self) -> bool:
        """Whether the decoder is conditioned on the video (False for --no-video)."""
        return not self.cfg.no_video

    @property
    def n_cnn_features(self) -> int:
        return 0 if self.frame_cnn is None else self.cfg.cnn.features

    @property
    def condition_context(self) -> int:
        """Samples of past video (before sample t + lookahead) the conditioning at t reads."""
        ctx = 0
        if self.encoder is not None:
            ctx = self.encoder.receptive_field * self.cfg.encoder_hop - 1
        return max(ctx, 0 if self.keys is None else self.keys.context)

    @property
    def video_receptive_field(self) -> int:
        """Samples of video one prediction depends on (0 without video): the prediction for
        sample t reads the video over [t + lookahead - video_receptive_field + 1, t + lookahead]."""
        if not self.conditioned:
            return 0
        return self.condition_context + self.decoder.cond_receptive_field

    @property
    def video_context(self) -> int:
        """Samples of video a training item needs before its first audio sample, beyond the
        audio context of one receptive field, so the first scored sample sees all it depends on."""
        return max(0, self.video_receptive_field - self.receptive_field)

    def item_windows(self) -> dict[str, int]:
        """What a training or scoring item needs around its window: `context` samples of audio
        (one receptive field), `video_context` more samples of video before that, `lookahead`
        samples of video after the window (SegmentDataset's keyword arguments)."""
        return {"context": self.receptive_field, "video_context": self.video_context,
                "lookahead": self.lookahead}

    @property
    def n_frame_features(self) -> int:
        """Width of `frame_features` rows: the CNN's features, then 88 key levels if used."""
        return self.n_cnn_features + (0 if self.keys is None else 88)

    def frame_features(self, frames: Tensor) -> Tensor | None:
        """Unique frames (N, H, W) uint8 -> features (N, F); None without video."""
        if not self.conditioned:
            return None
        parts = [] if self.frame_cnn is None else [self.frame_cnn(frames)]
        if self.keys is not None:
            dtype = parts[0].dtype if parts else self.keys.proj.weight.dtype
            parts.append(self.keys.key_levels(frames).to(dtype))
        return torch.cat(parts, dim=1)

    def condition_from_features(self, features: Tensor, frame_index: Tensor,
                                length: int) -> Tensor:
        """Frame features (N, F) + frame_index (B, V + length + lookahead): the frame shown at
        each of V samples of extra video context, the `length` samples to condition and the
        lookahead after them -> conditioning (B, C, length).

        The video encoder runs on every `encoder_hop`-th sample (blocks anchored at the first
        column; its output is held over the block); sample t sees the video up to t + lookahead.
        """
        extra = frame_index.shape[1] - length - self.lookahead
        if extra < 0:
            raise ValueError(f"frame_index has {frame_index.shape[1]} samples, fewer than the "
                             f"{length} to condition plus {self.lookahead} of lookahead")
        index = frame_index[:, self.lookahead :]  # column c: the video at sample c + lookahead
        cond = None
        if self.encoder is not None:
            cnn = features[:, : self.n_cnn_features]
            hop = self.cfg.encoder_hop
            cond = self.encoder(hold(cnn, index[:, ::hop]))
            if hop > 1:
                cond = cond.repeat_interleave(hop, dim=2)[:, :, : index.shape[1]]
            cond = cond[:, :, extra:]
        if self.keys is not None:
            keys = self.keys(features[:, self.n_cnn_features :], index, extra)
            cond = keys if cond is None else cond + keys
        return cond

    def condition(self, frames: Tensor | None, frame_index: Tensor | None,
                  length: int | None = None) -> Tensor | None:
        """The decoder's local conditioning (B, C, length), or None for an unconditioned decoder.
        `length` defaults to frame_index's length less the lookahead (no extra context)."""
        if not self.conditioned:
            return None
        if frames is None or frame_index is None:
            raise ValueError("this model reads video: pass frames and frame_index")
        if length is None:
            length = frame_index.shape[1] - self.lookahead
        return self.condition_from_features(self.frame_features(frames), frame_index, length)

    def forward(self, frames: Tensor | None, frame_index: Tensor | None, audio: Tensor) -> Tensor:
        """frame_index may be longer than audio: extra video context before it (any number of
        samples) and `lookahead` samples after it."""
        cond = self.condition(frames, frame_index, audio.shape[1])
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
        if self.conditioned:
            if self.cfg.encoder_hop != 1 or self.keys is not None or self.lookahead or \
                    self.encoder is None:
                raise NotImplementedError(
                    "per-sample encoder steps exist for the paper's conditioning only; "
                    "deepsynth.generate computes the conditioning of any variant")
            if feature is None or state.encoder is None:
                raise ValueError("this model reads video: pass the frame feature of each sample")
            cond = self.encoder.step(feature, state.encoder)
        return self.decoder.step(previous, cond, state.decoder)
