"""Building blocks shared by the video encoder and the audio decoder.

Every layer owns two ways of running the same weights:

- `forward(x)` over a whole sequence `(B, C, T)` at once (training, scoring), and
- `step(x_t, state)` over one new time step `(B, C)` (autoregressive generation), carrying the
  past inputs it still needs in an explicit state object.

Running `step` over a sequence from a fresh state gives what `forward` gives (tests check it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class ConvState:
    """The past inputs a causal convolution still needs: a ring buffer of the last
    `dilation * (kernel - 1)` time steps, `pos` pointing at the oldest one."""

    buffer: Tensor  # (B, C, dilation * (kernel - 1))
    pos: int = 0


def pointwise(conv: nn.Conv1d, x: Tensor) -> Tensor:
    """A 1x1 `Conv1d` applied to one time step `(B, C_in)` -> `(B, C_out)`."""
    return F.linear(x, conv.weight[:, :, 0], conv.bias)


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

    def init_state(self, batch: int, device=None, dtype=None) -> ConvState | None:
        """Zeros, like the left padding of `forward`; None when there is no past to keep."""
        if self.context == 0:
            return None
        w = self.weight
        buffer = torch.zeros(
            batch, self.in_channels, self.context, device=device or w.device, dtype=dtype or w.dtype
        )
        return ConvState(buffer)

    def step(self, x: Tensor, state: ConvState | None) -> Tensor:
        """One time step: `x` (B, C_in) -> (B, C_out); updates `state` in place."""
        k, d = self.kernel_size[0], self.dilation[0]
        if state is None:
            return F.linear(x, self.weight[:, :, 0], self.bias)
        buf, n = state.buffer, self.context
        # tap j (weight[:, :, j]) reads the input (k - 1 - j) * d steps back; the oldest is at pos.
        # torch.stack copies the taps, so the slot at pos may be overwritten below (a view of
        # it would silently change under us).
        taps = [buf[:, :, (state.pos + j * d) % n] for j in range(k - 1)]
        window = torch.stack([*taps, x], dim=2)  # (B, C_in, k), laid out like the weight
        out = F.linear(window.flatten(1), self.weight.flatten(1), self.bias)
        buf[:, :, state.pos] = x
        state.pos = (state.pos + 1) % n
        return out


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

    def init_state(self, batch: int, device=None, dtype=None) -> ConvState | None:
        return self.conv.init_state(batch, device, dtype)

    def step(
        self, x: Tensor, cond: Tensor | None, state: ConvState | None
    ) -> tuple[Tensor, Tensor]:
        h = self.conv.step(x, state)
        if self.cond is not None:
            h = h + pointwise(self.cond, _need(cond))
        z = self._gate(h)
        return x + pointwise(self.res, z), pointwise(self.skip, z)


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

    def init_state(self, batch: int, device=None, dtype=None) -> list[ConvState | None]:
        return [block.init_state(batch, device, dtype) for block in self.blocks]

    def step(self, x: Tensor, cond: Tensor | None, states: list[ConvState | None]) -> Tensor:
        skips = 0
        for block, state in zip(self.blocks, states, strict=True):
            x, skip = block.step(x, cond, state)
            skips = skips + skip
        return skips


def _need(cond: Tensor | None) -> Tensor:
    if cond is None:
        raise ValueError("this layer is conditioned: pass the conditioning sequence")
    return cond
