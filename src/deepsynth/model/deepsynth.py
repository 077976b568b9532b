"""The whole network: frames -> conditioning paths -> conditional WaveNet decoder, modelling
p(y | x) = prod_t p(y_t | y_<t, frames shown at samples <= t) (paper section 3.1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from deepsynth.config import ModelConfig
from deepsynth.layout import KeyboardLayout
from deepsynth.model.conditioning import PATHS
from deepsynth.model.encoder import VideoEncoder
from deepsynth.model.frame_cnn import FrameCNN
from deepsynth.model.key_features import KeyFeatures
from deepsynth.model.output import output_distribution
from deepsynth.model.wavenet import WaveNetDecoder

# state-dict names from before the conditioning paths (old checkpoints and runs load as they were)
_RENAMED = (("frame_cnn.", "paths.video.frame_cnn."), ("encoder.", "paths.video.encoder."),
            ("keys.", "paths.key_features."))


def shift_right(audio: Tensor, fill: int) -> Tensor:
    """(B, T) -> (B, T): out[:, t] = audio[:, t - 1], out[:, 0] = fill."""
    return F.pad(audio[:, :-1], (1, 0), value=fill)


class DeepSynth(nn.Module):
    """frames (N, H, W) uint8, frame_index (B, T) int64, classes (B, T) int64 -> the next
    sample's distribution parameters (B, P, T) (logits for the mu-law softmax).

    `frames` holds the unique frames of the whole batch, `frame_index[b, t]` the row of the frame
    shown at sample t of sequence b. out[:, :, t] predicts classes[:, t] from classes[:, :t] and
    the frames shown at samples <= t + lookahead. Each path reads every row of `frames` once.
    `self.output` turns audio into classes and parameters into samples (deepsynth.model.output).
    The conditioning is the sum of the paths' (`self.paths`, by name): "video", the paper's
    frame CNN -> video encoder (`learned_video`, maybe every `encoder_hop`-th sample), and
    "key_features", per-key features read through the keyboard's layout (`cfg.keys`). With
    `cfg.no_video` there is no path and the decoder is unconditioned (frames and frame_index
    may be None).
    """

    def __init__(self, cfg: ModelConfig, layout: KeyboardLayout | None = None) -> None:
        """`layout`: the keyboard the frames show (deepsynth.layout); a model conditioned on the
        video needs one (its frame size and key map), a --no-video model may have none."""
        super().__init__()
        if layout is None and not cfg.no_video:
            raise ValueError("a model conditioned on the video needs its keyboard layout: "
                             "DeepSynth(cfg, layout), e.g. deepsynth.sim.keyboard.layout()")
        self.cfg = cfg
        self.layout = layout
        self.paths = nn.ModuleDict()  # the conditioning paths this config has, by name
        for name, cls in ({} if cfg.no_video else PATHS).items():
            path = cls.from_config(cfg, layout)
            if path is not None:
                self.paths[name] = path
        self.output = output_distribution(cfg)  # the next sample's distribution
        self.decoder = WaveNetDecoder(cfg.decoder, self.output.n_inputs, self.output.n_params,
                                      cfg.cond_channels if self.paths else 0, cfg.cond_layers)
        self.silence = self.output.silence
        self._register_load_state_dict_pre_hook(_rename_old_keys)

    # the paths' parts, by their old names (None when absent)
    @property
    def frame_cnn(self) -> FrameCNN | None:
        return self.paths["video"].frame_cnn if "video" in self.paths else None

    @property
    def encoder(self) -> VideoEncoder | None:
        return self.paths["video"].encoder if "video" in self.paths else None

    @property
    def keys(self) -> KeyFeatures | None:
        return self.paths["key_features"] if "key_features" in self.paths else None  # noqa: SIM401 (ModuleDict has no get)

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
        return len(self.paths) > 0

    @property
    def condition_context(self) -> int:
        """Samples of past video (before sample t + lookahead) the conditioning at t reads."""
        return max((p.context for p in self.paths.values()), default=0)

    @property
    def condition_hop(self) -> int:
        """Chunks of generation start on multiples of this many samples before the video they
        read, so every path's blocks stay where they are over the whole piece (the lcm of the
        paths' hops)."""
        return math.lcm(*(p.hop for p in self.paths.values()))

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

    def item_spans(self) -> dict[str, int]:
        """What a training or scoring item needs around its segment: `context` samples of audio
        (one receptive field), `video_context` more samples of video before that, `lookahead`
        samples of video after the segment (SegmentDataset's keyword arguments)."""
        return {"context": self.receptive_field, "video_context": self.video_context,
                "lookahead": self.lookahead}

    def frame_features(self, frames: Tensor) -> list[Tensor] | None:
        """Unique frames (N, H, W) uint8 -> each path's rows (N, F_path); None without video."""
        if not self.conditioned:
            return None
        return [path.frame_features(frames) for path in self.paths.values()]

    def condition_from_features(self, features: Sequence[Tensor], frame_index: Tensor,
                                length: int) -> Tensor:
        """Each path's frame rows + frame_index (B, V + length + lookahead): the frame shown at
        each of V samples of extra video context, the `length` samples to condition and the
        lookahead after them -> conditioning (B, C, length), the sum of the paths'.

        Sample t sees the video up to t + lookahead; a path with a hop computes on blocks
        anchored at the first column of frame_index."""
        extra = frame_index.shape[1] - length - self.lookahead
        if extra < 0:
            raise ValueError(f"frame_index has {frame_index.shape[1]} samples, fewer than the "
                             f"{length} to condition plus {self.lookahead} of lookahead")
        index = frame_index[:, self.lookahead :]  # column c: the video at sample c + lookahead
        cond = None
        for path, rows in zip(self.paths.values(), features, strict=True):
            part = path(rows, index, extra)
            cond = part if cond is None else cond + part
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

    def forward(self, frames: Tensor | None, frame_index: Tensor | None,
                classes: Tensor) -> Tensor:
        """frame_index may be longer than classes: extra video context before them (any number
        of samples) and `lookahead` samples after them."""
        cond = self.condition(frames, frame_index, classes.shape[1])
        return self.decoder(shift_right(classes, self.silence), cond)


def _rename_old_keys(state_dict: dict, prefix: str, *args) -> None:
    """load_state_dict pre-hook: weights saved before the conditioning paths keep loading."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        local = key[len(prefix) :]
        for old, new in _RENAMED:
            if local.startswith(old):
                state_dict[prefix + new + local[len(old) :]] = state_dict.pop(key)
                break
