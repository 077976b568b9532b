"""The video encoder (paper section 3.3): a dilated causal stack over the audio-rate frame
features; its output at sample t summarises the video up to t and conditions the decoder."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from deepsynth.config import StackConfig
from deepsynth.model.layers import CausalConv1d, ResidualStack


class VideoEncoder(nn.Module):
    """features (B, F, T) -> conditioning (B, cond_channels, T), causal in T.

    1x1 input conv -> gated residual blocks (residual + skip) -> sum of skips -> ReLU -> 1x1.
    """

    def __init__(self, in_features: int, cfg: StackConfig, cond_channels: int) -> None:
        super().__init__()
        self.input = CausalConv1d(in_features, cfg.residual_channels, 1)
        self.stack = ResidualStack(
            cfg.residual_channels, cfg.skip_channels, cfg.dilations, cfg.kernel_size
        )
        self.out = nn.Conv1d(cfg.skip_channels, cond_channels, 1)

    @property
    def receptive_field(self) -> int:
        """Feature time steps (audio samples) one conditioning vector depends on."""
        return self.stack.receptive_field

    def forward(self, features: Tensor) -> Tensor:
        return self.out(F.relu(self.stack(self.input(features))))
