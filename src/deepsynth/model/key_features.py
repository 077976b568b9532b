"""Per-key conditioning features read from the keyboard video through the keyboard's layout.

The frame CNN must learn where the keys are and the encoder how long ago each was pressed; both
are known in advance from the keyboard's layout (deepsynth.layout: the pixels, shades and pitch
of each key). This path reads them directly (no learning):

1. `key_levels`: each frame's 88 key levels, the mean of each key's own pixels scaled so that
   0 is the key's resting shade and 1 its pressed shade (computed once per unique frame).
2. `KeyFeatures.features`: at audio rate, per key, the level and decaying traces of the key's
   most recent press (a press: down at sample t, up at t - 1, i.e. a frame difference), and
   optionally sinusoids at the key's pitch and harmonics, phase-locked to that press and summed
   over keys within a few registers.
3. One 1x1 layer projects them to the conditioning width.

`forward` computes the projection press by press: the level columns once per distinct frame, the
traces and sinusoids only over the samples each press is remembered for (a few presses a second,
where the dense `features` computes every pressed key at every sample); the two agree (tested),
and the press-by-press one costs a fraction of the dense one in training.

A press older than `window` samples is forgotten, so the features at sample t depend on the video
over [t - window, t] only: chunked generation equals the computation over the whole piece.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepsynth.config import KeyFeatureConfig, ModelConfig
from deepsynth.layout import N_KEYS, KeyboardLayout
from deepsynth.model.conditioning import ConditioningPath, register_path


@register_path("key_features")
class KeyFeatures(ConditioningPath):
    """Key levels (N, 88) of the unique frames + frame_index (B, T) -> conditioning (B, C, T).

    `layout` gives the pixels of each key, its resting and pressed shades and its pitch."""

    def __init__(self, cfg: KeyFeatureConfig, sample_rate: int, out_channels: int,
                 layout: KeyboardLayout) -> None:
        super().__init__()
        if cfg.window < 1 or cfg.groups < 1 or cfg.harmonics < 0:
            raise ValueError("key features need window >= 1, groups >= 1, harmonics >= 0")
        self.cfg = cfg
        self.frame_shape = layout.shape
        owner = np.where(layout.key_map < 0, N_KEYS, layout.key_map).reshape(-1).astype(np.int64)
        self.register_buffer("owner", torch.tensor(owner), persistent=False)
        self.register_buffer("counts", torch.tensor(layout.counts).float(), persistent=False)
        self.register_buffer("up", torch.tensor(layout.rest_shade.astype(np.float64)).float(),
                             persistent=False)
        self.register_buffer("down", torch.tensor(layout.pressed_shade.astype(np.float64))
                             .float(), persistent=False)
        taus = torch.tensor([t * sample_rate / 1000.0 for t in cfg.taus_ms], dtype=torch.float32)
        self.register_buffer("taus", taus, persistent=False)
        # sinusoids: per harmonic, angular step per sample of each key (0 above Nyquist)
        freqs = 440.0 * 2.0 ** ((layout.pitches - 69) / 12.0)
        omega = np.stack([2 * math.pi * h * freqs / sample_rate
                          for h in range(1, cfg.harmonics + 1)]) if cfg.harmonics else \
            np.zeros((0, N_KEYS))
        audible = omega < math.pi
        self.register_buffer("omega", torch.tensor(omega * audible).float(),
                             persistent=False)
        self.register_buffer("audible", torch.tensor(audible).float(), persistent=False)
        groups = np.zeros((N_KEYS, cfg.groups), np.float32)
        groups[np.arange(N_KEYS), np.arange(N_KEYS) * cfg.groups // N_KEYS] = 1.0
        self.register_buffer("group_matrix", torch.tensor(groups), persistent=False)
        self.osc_tau = cfg.oscillator_tau_ms * sample_rate / 1000.0
        # per press, over the window: samples since the press and the curves of that age
        lags = torch.arange(cfg.window)
        self.register_buffer("lags", lags, persistent=False)
        self.register_buffer("trace_curves", torch.exp(-lags[None, :].float() / taus[:, None]),
                             persistent=False)
        self.register_buffer("osc_curve", torch.exp(-lags.float() / self.osc_tau),
                             persistent=False)
        self.proj = nn.Linear(self.n_features, out_channels)

    @property
    def n_features(self) -> int:
        per_key = N_KEYS * (1 + len(self.cfg.taus_ms))
        return per_key + 2 * self.cfg.harmonics * self.cfg.groups

    @property
    def press_columns(self) -> int:
        """Feature columns a press writes (its traces and sinusoids): 0 for levels alone."""
        return len(self.cfg.taus_ms) + 2 * self.cfg.harmonics

    learned = False  # the levels, traces and sinusoids are read, not learned: only `proj` is

    @classmethod
    def from_config(cls, cfg: ModelConfig, layout: KeyboardLayout) -> KeyFeatures | None:
        if not cfg.keys.enabled:
            return None
        return cls(cfg.keys, cfg.audio.sample_rate, cfg.cond_channels, layout)

    @property
    def n_frame_features(self) -> int:
        return N_KEYS  # a level per key

    def frame_features(self, frames: Tensor) -> Tensor:
        return self.key_levels(frames).to(self.proj.weight.dtype)

    @property
    def context(self) -> int:
        """Samples of past video the features at a sample depend on."""
        return int(self.cfg.window)

    def key_levels(self, frames: Tensor) -> Tensor:
        """uint8 frames (N, H, W) -> (N, 88) float: 0 at rest, 1 pressed (mean of own pixels)."""
        if tuple(frames.shape[1:]) != self.frame_shape:
            raise ValueError(f"key features read {self.frame_shape[1]}x{self.frame_shape[0]} "
                             f"frames (their layout's), got shape {tuple(frames.shape)}")
        flat = frames.reshape(len(frames), -1).to(self.counts.dtype)
        sums = flat.new_zeros(len(frames), N_KEYS + 1).index_add_(1, self.owner, flat)
        mean = sums[:, : N_KEYS] / self.counts
        return ((mean - self.up) / (self.down - self.up)).clamp(0.0, 1.0)

    @torch.no_grad()
    def active_features(self, levels: Tensor, frame_index: Tensor,
                        skip: int = 0) -> tuple[Tensor, Tensor]:
        """Per-frame key levels (N, 88) + frame_index (B, T) -> (features, columns): the
        features (B, len(columns), T - skip) of the samples after the first `skip` (those are
        read for presses only), for the feature columns that can be nonzero: keys that are
        never down in the batch have all-zero features and are left out (most of the 88)."""
        cfg = self.cfg
        T = frame_index.shape[1]
        if levels.is_meta:  # shapes only (memory estimates): every key
            keys = torch.arange(N_KEYS, device=levels.device)
        else:
            keys = torch.nonzero(levels.amax(dim=0) > 0).flatten()  # keys down in some frame
        level = levels.float()[:, keys].t()[:, frame_index].transpose(0, 1)  # (B, K, T)
        down = level > 0.5
        pressed = down.clone()
        pressed[:, :, 1:] &= ~down[:, :, :-1]  # down now, up one sample before
        pressed[:, :, 0] = False
        t = torch.arange(T, device=level.device, dtype=torch.int32)
        press_at = torch.where(pressed, t, torch.tensor(-(cfg.window + 1), dtype=torch.int32,
                                                       device=level.device))
        age = (t - press_at.cummax(dim=2).values)[:, :, skip:].float()  # since the last press
        level = level[:, :, skip:]
        fresh = age < cfg.window
        parts = [level]
        parts += [torch.exp(-age / tau).masked_fill_(~fresh, 0.0) for tau in self.taus]
        columns = [keys + i * N_KEYS for i in range(1 + len(self.taus))]
        if cfg.harmonics:
            env = torch.exp(-age / self.osc_tau).masked_fill_(~fresh, 0.0).mul_(level)
            groups = self.group_matrix[keys].t()  # (G, K)
            first = N_KEYS * (1 + len(self.taus))
            for h in range(cfg.harmonics):
                phase = age * self.omega[h, keys][:, None]
                gate = env * self.audible[h, keys][:, None]
                parts.append(groups @ (torch.sin(phase) * gate))
                parts.append(groups @ (torch.cos(phase) * gate))
                for _ in range(2):
                    columns.append(torch.arange(cfg.groups, device=keys.device) + first)
                    first += cfg.groups
        return torch.cat(parts, dim=1), torch.cat(columns)

    def features(self, levels: Tensor, frame_index: Tensor, skip: int = 0) -> Tensor:
        """All features (B, n_features, T - skip), zeros included (see `active_features`)."""
        feats, columns = self.active_features(levels, frame_index, skip)
        out = feats.new_zeros(feats.shape[0], self.n_features, feats.shape[2])
        out[:, columns] = feats
        return out

    def forward(self, levels: Tensor, frame_index: Tensor, skip: int = 0) -> Tensor:
        """Conditioning (B, C, T - skip) for the samples of frame_index after the first `skip`:
        `proj` applied to `features`, computed press by press (see `_press_features`)."""
        if levels.is_meta:  # shapes only (memory estimates): the dense computation
            return self._dense_forward(levels, frame_index, skip)
        W = self.proj.weight
        # the level columns: projected once per distinct frame, then held over its samples
        per_frame = levels.to(W.dtype) @ W[:, : N_KEYS].t() + self.proj.bias  # (N, C)
        out = per_frame[frame_index[:, skip:]]  # (B, T - skip, C)
        presses = self._presses(levels, frame_index, skip) if self.press_columns else None
        if presses is not None:
            feats, columns = self._press_features(levels, frame_index, skip, *presses)
            out = out + feats.to(W.dtype) @ W[:, columns].t()
        return out.transpose(1, 2).contiguous()

    @torch.no_grad()
    def _presses(self, levels: Tensor, frame_index: Tensor,
                 skip: int) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """Every press in frame_index whose features reach a sample >= skip: (item, sample,
        key, length) int64 tensors, `length` the samples it is remembered for (up to the
        window, the key's next press or the end); None if there is none."""
        keys = torch.nonzero(levels.amax(dim=0) > 0).flatten()
        if len(keys) == 0:
            return None
        down = levels[:, keys].float() > 0.5  # (N, K), as the dense computation reads it
        item, before = torch.nonzero(frame_index[:, 1:] != frame_index[:, :-1], as_tuple=True)
        at = before + 1  # a frame change at sample `at`
        pressed = down[frame_index[item, at]] & ~down[frame_index[item, before]]
        change, k = torch.nonzero(pressed, as_tuple=True)
        if len(change) == 0:
            return None
        item, at, key = item[change], at[change], keys[k]
        T = frame_index.shape[1]
        order = torch.argsort((item * N_KEYS + key) * T + at)
        item, at, key = item[order], at[order], key[order]
        end = torch.clamp(at + self.cfg.window, max=T)
        same = (item[1:] == item[:-1]) & (key[1:] == key[:-1])
        end[:-1] = torch.where(same, torch.minimum(end[:-1], at[1:]), end[:-1])
        keep = end > skip
        return item[keep], at[keep], key[keep], (end - at)[keep]

    @torch.no_grad()
    def _press_features(self, levels: Tensor, frame_index: Tensor, skip: int, item: Tensor,
                        at: Tensor, key: Tensor, length: Tensor) -> tuple[Tensor, Tensor]:
        """The presses' features (B, T - skip, n) and their feature columns (n,): the press
        traces of the pressed keys, then per harmonic the sines and cosines of every register.
        Only the samples a press is remembered for are computed (one press per key at a time)."""
        cfg, n_keys = self.cfg, N_KEYS
        B, T = frame_index.shape
        keys, slot = torch.unique(key, return_inverse=True)
        K, n_taus, G = len(keys), len(self.taus), cfg.groups
        press, lag = torch.nonzero(self.lags[None, :] < length[:, None], as_tuple=True)
        sample = at[press] + lag
        inside = sample >= skip
        press, lag, sample = press[inside], lag[inside], sample[inside]
        row = item[press] * (T - skip) + sample - skip
        dtype = torch.float64 if self.trace_curves.dtype == torch.float64 else torch.float32
        feats = torch.zeros(B * (T - skip), n_taus * K + 2 * cfg.harmonics * G,
                            device=levels.device, dtype=dtype)
        slot = slot[press]
        for i in range(n_taus):  # a key's presses do not overlap: one value per cell
            feats[row, i * K + slot] = self.trace_curves[i, lag].to(dtype)
        columns = [keys + n_keys * (1 + i) for i in range(n_taus)]
        if cfg.harmonics:
            key = key[press]
            level = levels.to(dtype)[frame_index[item[press], sample], key]
            env = self.osc_curve[lag].to(dtype) * level
            group = key * G // n_keys
            first = n_keys * (1 + n_taus)
            for h in range(cfg.harmonics):
                phase = lag.to(dtype) * self.omega[h, key].to(dtype)
                gate = env * self.audible[h, key].to(dtype)
                for j, wave in enumerate((torch.sin(phase) * gate, torch.cos(phase) * gate)):
                    col = n_taus * K + (2 * h + j) * G
                    feats.index_put_((row, col + group), wave, accumulate=True)
            columns.append(torch.arange(first, first + 2 * cfg.harmonics * G,
                                        device=keys.device))
        return feats.view(B, T - skip, -1), torch.cat(columns)

    def _dense_forward(self, levels: Tensor, frame_index: Tensor, skip: int) -> Tensor:
        """`proj` applied to `active_features`: the same numbers as `forward`, computed key by
        key over every sample (the reference the tests hold `forward` to)."""
        feats, columns = self.active_features(levels, frame_index, skip)
        if len(columns) == 0:  # no key down anywhere: the bias alone (the weight joins the
            B, T = feats.shape[0], feats.shape[2]  # graph with zero gradient, for DDP)
            unused = 0.0 * self.proj.weight.sum()
            return (self.proj.bias + unused)[None, :, None].expand(B, -1, T)
        weight = self.proj.weight[:, columns, None]
        return F.conv1d(feats.to(weight.dtype), weight, self.proj.bias)
