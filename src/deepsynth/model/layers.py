"""Building blocks shared by the video encoder and the audio decoder.

Each layer runs over a whole sequence `(B, C, T)` at once: this parallel `forward` is the
reference. Autoregressive generation steps through the same weights one sample at a time in
deepsynth.generate (the fused CPU kernel and the CUDA-graph step), tested against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CausalConv1d(nn.Conv1d):
    """A dilated convolution whose output at t sees inputs at t, t - d, .., t - (k - 1) d only."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 2,
        dilation: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation, bias=bias)
        self.context = dilation * (kernel_size - 1)  # past time steps each output needs

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (self.context, 0)))  # left padding only: causal

class GatedResidualBlock(nn.Module):
    """WaveNet's layer: z = tanh(W_f * x + V_f c) . sigmoid(W_g * x + V_g c);
    returns (x + residual(z), skip(z)). `c` is an optional local conditioning sequence."""

    def __init__(
        self,
        channels: int,
        skip_channels: int,
        dilation: int,
        kernel_size: int = 2,
        cond_channels: int = 0,
    ) -> None:
        super().__init__()
        self.conv = CausalConv1d(channels, 2 * channels, kernel_size, dilation)
        self.cond = nn.Conv1d(cond_channels, 2 * channels, 1, bias=False) if cond_channels else None
        self.res = nn.Conv1d(channels, channels, 1)
        self.skip = nn.Conv1d(channels, skip_channels, 1)

    def _gate(self, h: Tensor) -> Tensor:
        f, g = h.chunk(2, dim=1)
        return torch.tanh(f) * torch.sigmoid(g)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = self.conv(x)
        if self.cond is not None:
            h = h + self.cond(_need(cond))
        z = self._gate(h)
        return x + self.res(z), self.skip(z)

class ResidualStack(nn.Module):
    """Gated residual blocks with the given dilations; returns the sum of their skip outputs."""

    def __init__(
        self,
        channels: int,
        skip_channels: int,
        dilations: tuple[int, ...],
        kernel_size: int = 2,
        cond_channels: int = 0,
        cond_blocks: int = 0,
    ) -> None:
        """`cond_blocks`: how many blocks, from the first, read the conditioning (0: all)."""
        super().__init__()
        n_cond = cond_blocks or len(dilations)
        self.blocks = nn.ModuleList(
            GatedResidualBlock(channels, skip_channels, d, kernel_size,
                               cond_channels if i < n_cond else 0)
            for i, d in enumerate(dilations)
        )
        self.cond_channels = cond_channels
        self.kernel_size = kernel_size
        self.dilations = tuple(dilations)

    @property
    def receptive_field(self) -> int:
        """Input time steps one output depends on: 1 + (kernel - 1) * sum(dilations)."""
        return 1 + (self.kernel_size - 1) * sum(self.dilations)

    def cond_weights(self) -> Tensor | None:
        """(L, 2 * channels, cond_channels): each block's 1x1 projection of the conditioning,
        zeros for a block that does not read it; None for an unconditioned stack."""
        if not self.cond_channels:
            return None
        first = self.blocks[0]
        zero = first.conv.weight.new_zeros(first.conv.out_channels, self.cond_channels)
        return torch.stack([zero if b.cond is None else b.cond.weight[:, :, 0]
                            for b in self.blocks])

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        skips = 0
        for block in self.blocks:
            x, skip = block(x, cond)
            skips = skips + skip
        return skips


def _need(cond: Tensor | None) -> Tensor:
    if cond is None:
        raise ValueError("this layer is conditioned: pass the conditioning sequence")
    return cond
