"""The audio decoder (paper section 3.4): a conditional WaveNet over mu-law classes."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from deepsynth.config import StackConfig
from deepsynth.model.layers import CausalConv1d, ResidualStack


class WaveNetDecoder(nn.Module):
    """Past audio classes (B, T) + conditioning (B, C, T) -> the next sample's distribution
    parameters (B, n_params, T) (`deepsynth.model.output`: logits for the mu-law softmax).

    The input is already shifted: logits at t depend on `x[:, t - R + 1 .. t]` with
    R = `receptive_field` (the top model feeds audio shifted right by one sample).
    Input conv (one-hot -> residual channels, kernel 1, i.e. an embedding, so the receptive
    field is exactly 1 + sum of dilations: 575 / 1026 / 1534 for 15 / 20 / 27 layers) ->
    gated residual blocks conditioned on `cond` -> sum of skips -> ReLU -> 1x1 -> ReLU -> 1x1.
    """

    def __init__(self, cfg: StackConfig, n_inputs: int, n_params: int, cond_channels: int = 0,
                 cond_layers: int = 0) -> None:
        """`n_inputs`: classes of past samples; `n_params`: the head's width; `cond_layers`:
        the blocks, from the first, that read the conditioning (0: all)."""
        super().__init__()
        self.n_inputs, self.n_params = n_inputs, n_params
        self.input = CausalConv1d(n_inputs, cfg.residual_channels, 1)
        self.stack = ResidualStack(
            cfg.residual_channels, cfg.skip_channels, cfg.dilations, cfg.kernel_size, cond_channels,
            cond_layers,
        )
        self.head1 = nn.Conv1d(cfg.skip_channels, cfg.skip_channels, 1)
        self.head2 = nn.Conv1d(cfg.skip_channels, n_params, 1)

    @property
    def receptive_field(self) -> int:
        """Input samples one output depends on (the input conv has kernel 1)."""
        return self.stack.receptive_field

    @property
    def cond_receptive_field(self) -> int:
        """Conditioning steps one output depends on: the conditioning joins each block after
        its dilated conv, so the first block's dilation does not count."""
        return 1 + (self.stack.kernel_size - 1) * sum(self.stack.dilations[1:])

    def embed(self, x: Tensor) -> Tensor:
        """Classes (B, T) int64 -> (B, R, T); a float (B, n_inputs, T) input (one-hot or any
        soft input, e.g. for gradient probes) goes through the same weights as a 1x1 conv."""
        if x.is_floating_point():
            return self.input(x)
        table = self.input.weight[:, :, 0].t()  # (n_inputs, R): one-hot conv == lookup
        return (F.embedding(x, table) + self.input.bias).transpose(1, 2)

    def head(self, skips: Tensor) -> Tensor:
        return self.head2(F.relu(self.head1(F.relu(skips))))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.head(self.stack(self.embed(x), cond))
