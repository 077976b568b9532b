"""The decoder's conditioning from key features in one compiled loop (numba), for generation.

For a model whose only conditioning path is the key features (`model.key_features.KeyFeatures`,
the shipped `small`), the conditioning the decoder reads at a sample is linear in the features:

    c(t) = W f(t) + b

with `f(t)` the key levels of the frame shown at t + lookahead, the press traces of each key's
most recent press and the sinusoids of the pressed keys (summed over registers), and `W, b` the
features' 1x1 projection (the decoder's layers project `c` themselves: `fused`, `graphed`).
A compiled loop walks the samples: the frame's level term (recomputed when the frame changes),
plus, for each key pressed within the window, its trace and sinusoid columns of `W` times
their values at the press's age.

Every output sample is computed by the same loop in the same order from the frames it reads
alone, so the numbers are bit-identical whatever the chunk it is computed in, even one sample:
the live generator and `generate` share this code. They equal the torch computation
(`KeyFeatures.forward`, then the projection) up to float32 rounding (tests/test_keycond.py).
A call costs ~0.15 ms beyond its samples, where the torch one paid ~100 small operations.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from deepsynth.generate.jitcache import cached_njit
from deepsynth.generate.simd import CONTRACT, _mv_rows
from deepsynth.layout import N_KEYS

if TYPE_CHECKING:  # packing reads a torch model; the loop needs no torch
    import torch

    from deepsynth.model.deepsynth import DeepSynth


@dataclass(frozen=True)
class PackedKeyConditioning:
    """The projection's columns by feature (C = the conditioning's channels, float32)."""

    level_w: np.ndarray  # (88, C): a key's level
    bias: np.ndarray  # (C,)
    trace_w: np.ndarray  # (n_taus, 88, C): a key's press traces
    wave_w: np.ndarray  # (H, 2, G, C): per harmonic, the sines then cosines of each register
    trace_curves: np.ndarray  # (n_taus, window) float32: each trace at each age
    osc_curve: np.ndarray  # (window,) float32: the sinusoids' decay at each age
    omega: np.ndarray  # (H, 88) float32: radians per sample (0 above Nyquist)
    audible: np.ndarray  # (H, 88) float32
    group: np.ndarray  # (88,) int64: each key's register
    window: int

    @property
    def channels(self) -> int:
        """C: the conditioning's channels per sample."""
        return self.bias.shape[0]

    @cached_property
    def terms(self) -> np.ndarray:
        """(n_taus x 88 + H x 2 x G, C): every per-key column in one table, the traces (tau i,
        key k at row i x 88 + k) then the sinusoids (harmonic h, sine j = 0 or cosine j = 1,
        register g at n_taus x 88 + (2h + j) G + g)."""
        C = self.channels
        return np.ascontiguousarray(np.concatenate([self.trace_w.reshape(-1, C),
                                                    self.wave_w.reshape(-1, C)]))

    @cached_property
    def waves(self) -> np.ndarray:
        """(H, 88, window, 2) float32: the sine and cosine of each key's harmonic at each age
        (phase = age x omega, float32 throughout), tabulated once (7 ms) instead of two
        C-library calls per key, harmonic and sample."""
        age = np.arange(self.window, dtype=np.float32)
        phase = age[None, None, :] * self.omega[:, :, None]
        return np.ascontiguousarray(np.stack([np.sin(phase), np.cos(phase)], axis=-1))


def supports(model: DeepSynth) -> bool:
    """Whether the model's conditioning is the key features alone (this module's case)."""
    from deepsynth.model.key_features import KeyFeatures

    paths = list(model.paths.values())
    return len(paths) == 1 and isinstance(paths[0], KeyFeatures)


def _f64(t: torch.Tensor) -> np.ndarray:
    import torch

    return t.detach().to("cpu", torch.float64).numpy()


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def pack(model: DeepSynth) -> PackedKeyConditioning:
    """The model's key-feature projection, by feature (see the module's docstring)."""
    if not supports(model):
        raise ValueError("the model's conditioning is not the key features alone")
    path = next(iter(model.paths.values()))
    cfg = path.cfg
    W, b = _f32(_f64(path.proj.weight).T), _f32(_f64(path.proj.bias))  # (F, C), (C,)
    n_taus, H, G = len(cfg.taus_ms), cfg.harmonics, cfg.groups
    first = N_KEYS * (1 + n_taus)  # the sinusoids' columns: harmonic, sine or cosine, register
    return PackedKeyConditioning(
        level_w=_f32(W[:N_KEYS]),
        bias=b,
        trace_w=_f32(W[N_KEYS:first].reshape(n_taus, N_KEYS, -1)),
        wave_w=_f32(W[first : first + 2 * H * G].reshape(H, 2, G, -1)),
        trace_curves=_f32(path.trace_curves.detach().cpu().numpy()),
        osc_curve=_f32(path.osc_curve.detach().cpu().numpy()),
        omega=_f32(path.omega.detach().cpu().numpy()),
        audible=_f32(path.audible.detach().cpu().numpy()),
        group=(np.arange(N_KEYS) * G // N_KEYS).astype(np.int64),
        window=int(cfg.window),
    )


_ZERO32 = np.float32(0.0)


@cached_njit(nogil=True, fastmath=set(CONTRACT), error_model="numpy")  # (simd.py inlined)
def _condition(levels, rows, skip, n, level_w, bias, terms, waves, trace_curves, osc_curve,
               audible, group, n_taus, n_groups, window, out):  # pragma: no cover - compiled
    """out (n, C): the conditioning of columns skip .. skip + n - 1 of `rows` (the frame row
    shown at each column, the video `lookahead` samples ahead); columns before `skip` are read
    for presses only (a press at column c: the key down at c, up at c - 1; down: level > 0.5).
    Per sample the frame's term, then the trace columns of every key pressed within the window
    (keys in order) times their values at the press's age, then the sinusoid columns
    (harmonic, sine or cosine, register) times the sum of their keys' values, summed by
    `_mv_rows`."""
    n_keys = levels.shape[1]
    C = bias.shape[0]
    H = audible.shape[0]
    n_waves = 2 * H * n_groups
    coef = np.empty((1, n_keys * n_taus + n_waves), np.float32)  # this sample's column values
    which = np.empty(coef.shape[1], np.int64)  # and their rows of `terms`
    waves0 = n_taus * n_keys
    wave = np.zeros(n_waves, np.float32)  # the sinusoid columns' values, summed over keys
    last = np.full(n_keys, -1, np.int64)  # column of each key's last press (-1: none)
    frame = np.zeros(C, np.float32)  # the level term of the current frame
    frame_row = -1
    prev = rows[0]
    for c in range(skip + n):
        r = rows[c]
        if r != prev:  # (never at column 0)
            for k in range(n_keys):
                if levels[r, k] > 0.5 and not levels[prev, k] > 0.5:
                    last[k] = c
            prev = r
        if c < skip:
            continue
        if r != frame_row:  # bias + levels @ level_w, keys in order
            for d in range(C):
                frame[d] = bias[d]
            for k in range(n_keys):
                v = levels[r, k]
                if v != 0.0:
                    for d in range(C):
                        frame[d] += v * level_w[k, d]
            frame_row = r
        m = 0
        for k in range(n_keys):
            if last[k] < 0:
                continue
            age = c - last[k]
            if age >= window:
                continue
            for i in range(n_taus):
                coef[0, m] = trace_curves[i, age]
                which[m] = i * n_keys + k
                m += 1
            env = osc_curve[age] * levels[r, k]
            if env == 0.0:
                continue
            for h in range(H):
                gate = env * audible[h, k]
                if gate == 0.0:
                    continue
                j = 2 * h * n_groups + group[k]  # the keys of a register share its columns
                wave[j] += waves[h, k, age, 0] * gate
                wave[j + n_groups] += waves[h, k, age, 1] * gate
        for j in range(n_waves):  # (a column whose value is 0 would add nothing)
            if wave[j] != 0.0:
                coef[0, m] = wave[j]
                which[m] = waves0 + j
                m += 1
                wave[j] = _ZERO32
        o = out[c - skip : c - skip + 1]
        for d in range(C):
            o[0, d] = frame[d]
        _mv_rows(o, terms, which, coef, m)


def condition(packed: PackedKeyConditioning, levels: np.ndarray, rows: np.ndarray, skip: int,
              n: int, out: np.ndarray | None = None) -> np.ndarray:
    """(n, C) float32: the conditioning of columns skip .. skip + n - 1 of `rows` (int64
    indexes into `levels`, (N, 88) float32 key levels; column c shows the video at conditioned
    sample c - skip plus the lookahead); written into `out` if given (float32, C-contiguous)."""
    if skip < 0 or len(rows) < skip + n:
        raise ValueError(f"need 0 <= skip and skip + n <= len(rows), got {skip}, {n}, {len(rows)}")
    p = packed
    shape = (n, p.channels)
    if out is None:
        out = np.empty(shape, np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous float32 {shape}, got {out.dtype} {out.shape}")
    _condition(np.ascontiguousarray(levels, np.float32), np.ascontiguousarray(rows, np.int64),
               int(skip), int(n), p.level_w, p.bias, p.terms, p.waves, p.trace_curves,
               p.osc_curve, p.audible, p.group, len(p.trace_w), p.wave_w.shape[2], p.window,
               out)
    return out
