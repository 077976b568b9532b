"""The decoder's one-sample step fused into one compiled loop (numba), for fast generation.

At batch 1 a WaveNet step is a few hundred tiny matrix-vector products: in eager PyTorch the
per-operation overhead, not arithmetic, sets the speed. Here the weights are packed once into
contiguous float32 arrays (pre-transposed so every inner loop runs over contiguous memory) and a
whole chunk of samples runs in one compiled call: per sample and layer, read the ring buffer of
past inputs, dilated conv + conditioning, gate, residual and skip, then the head and sampling.

The cache: per layer a ring buffer of its last (kernel - 1) * dilation inputs, so a new sample
costs O(layers) work, not O(receptive field). The conditioning (the video encoder's output, C
channels per sample) is computed for a chunk beforehand; each conditioned layer's 1x1
projection of it is one more matrix product of the step, so the conditioning's work and memory
do not grow with the layers (a layer without conditioning, its projection all zeros, skips it).

Every matrix product is `_mv`, written as LLVM vector code (numba's own loops keep no sums in
registers, measured): the sums of a block of outputs stay in SIMD registers while the inputs
stream by, each sum in input order, each product fused with its add (an fma; of fastmath only
"contract", no reordering). The gate's tanh and sigmoid are a rational function (no C-library
call, no zero-division branch: it vectorizes).

Weights that are all float16 values (the shipped checkpoint is stored in float16) are streamed as
float16, half the bytes, and widened to float32 exactly as each is loaded: the same sums, bit for
bit, with the weights and the cache nearer the core (batch 1: ~1.3x the samples/s, measured).

A batch runs in groups (`group_width`): up to 8 sequences side by side, every activation
(sequences, channels), so each weight vector is loaded once per sample for the whole group; the
groups are spread over the cores (a single sequence is a group of one, run in the caller's
thread). Which sequences share a group changes no sum: an input's samples are bit-identical
alone or anywhere in a batch, at any group width (tests/test_fused.py). Throughput:
`python benchmarks/generate.py --only batch`.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numba import njit, prange

from deepsynth.generate.jitcache import cached_njit
from deepsynth.generate.simd import CONTRACT, FAST_HALF, MAX_LANES, _mv
from deepsynth.samplers import SAMPLER_FASTMATH, sample_softmax

if TYPE_CHECKING:  # packing reads a torch decoder; the kernels and their state need no torch
    import torch

    from deepsynth.model.wavenet import WaveNetDecoder


class Sampling(Protocol):
    """What the decoder's state needs of an output distribution (`model.output`'s classes, or
    a packed model's record of them)."""

    silence: int  # the class before the first sample
    n_uniforms: int  # uniform numbers drawn per sample
    sample_one: Callable  # the sampler numba compiles (`deepsynth.samplers`)


@dataclass
class PackedDecoder:
    """The decoder's weights as contiguous float32 arrays (layer l, output o, input i)."""

    embed: np.ndarray  # (K, R): input conv as a lookup table, bias included
    conv_w: np.ndarray  # (L, k, 2R, R): tap j reads the input (k - 1 - j) * dilation back
    conv_b: np.ndarray  # (L, 2R)
    cond_w: np.ndarray  # (L, 2R, C): each layer's projection of the conditioning (C = 0: none)
    out_w: np.ndarray  # (L, R + S, R): residual rows then skip rows
    out_b: np.ndarray  # (L, R + S)
    head1_w: np.ndarray  # (S, S)
    head1_b: np.ndarray  # (S,)
    head2_w: np.ndarray  # (K, S)
    head2_b: np.ndarray  # (K,)
    dilations: np.ndarray  # (L,) int64
    offsets: np.ndarray  # (L + 1,) int64: where each layer's ring starts in the cache
    kernel: int

    @property
    def cache_len(self) -> int:
        return int(self.offsets[-1])

    @property
    def residual(self) -> int:
        return self.embed.shape[1]

    @property
    def cond_channels(self) -> int:
        """C: the conditioning's channels per sample (0: an unconditioned decoder)."""
        return self.cond_w.shape[2]

    @property
    def conditioned_layers(self) -> np.ndarray:
        """(L,) bool: the layers whose projection of the conditioning is not all zeros."""
        return np.abs(self.cond_w).reshape(len(self.cond_w), -1).max(axis=1, initial=0) > 0


def _np(t: torch.Tensor) -> np.ndarray:
    import torch

    return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())


def pack_decoder(decoder: WaveNetDecoder) -> PackedDecoder:
    blocks = decoder.stack.blocks
    k = decoder.stack.kernel_size
    dil = np.array(decoder.stack.dilations, dtype=np.int64)
    ctx = (k - 1) * dil
    cond = decoder.stack.cond_weights()
    width = blocks[0].conv.out_channels
    return PackedDecoder(
        embed=_np(decoder.input.weight[:, :, 0].t() + decoder.input.bias),
        conv_w=np.ascontiguousarray(
            np.stack([_np(b.conv.weight).transpose(2, 0, 1) for b in blocks])
        ),
        conv_b=np.stack([_np(b.conv.bias) for b in blocks]),
        cond_w=(np.zeros((len(blocks), width, 0), np.float32) if cond is None else _np(cond)),
        out_w=np.stack(
            [
                np.concatenate([_np(b.res.weight[:, :, 0]), _np(b.skip.weight[:, :, 0])])
                for b in blocks
            ]
        ),
        out_b=np.stack([np.concatenate([_np(b.res.bias), _np(b.skip.bias)]) for b in blocks]),
        head1_w=_np(decoder.head1.weight[:, :, 0]),
        head1_b=_np(decoder.head1.bias),
        head2_w=_np(decoder.head2.weight[:, :, 0]),
        head2_b=_np(decoder.head2.bias),
        dilations=dil,
        offsets=np.concatenate([[0], np.cumsum(np.maximum(ctx, 1))]).astype(np.int64),
        kernel=k,
    )


# tanh as a rational function (Eigen's fast float tanh: error ~1e-7, only + * / and a clamp, so
# a loop of it vectorizes, where a call to the C library's tanh or exp would not)
_TANH_CLAMP = np.float32(7.90531110763549805)
_A1, _A3, _A5, _A7 = (np.float32(4.89352455891786e-03), np.float32(6.37261928875436e-04),
                      np.float32(1.48572235717979e-05), np.float32(5.12229709037114e-08))
_A9, _A11, _A13 = (np.float32(-8.60467152213735e-11), np.float32(2.00018790482477e-13),
                   np.float32(-2.76076847742355e-16))
_B0, _B2, _B4, _B6 = (np.float32(4.89352518554385e-03), np.float32(2.26843463243900e-03),
                      np.float32(1.18534705686654e-04), np.float32(1.19825839466702e-06))
_HALF = np.float32(0.5)
_ZERO = np.float32(0.0)


def _tanh_py(v):
    """tanh of a float32, as a rational function (see above)."""
    x = min(max(v, -_TANH_CLAMP), _TANH_CLAMP)
    x2 = x * x
    p = x2 * _A13 + _A11
    p = x2 * p + _A9
    p = x2 * p + _A7
    p = x2 * p + _A5
    p = x2 * p + _A3
    p = x2 * p + _A1
    p = x * p
    q = x2 * _B6 + _B4
    q = x2 * q + _B2
    q = x2 * q + _B0
    return p / q


def _gate_py(a, b):
    """tanh(a) * sigmoid(b), with sigmoid(b) = (1 + tanh(b / 2)) / 2."""
    return _tanh(a) * (_HALF + _HALF * _tanh(_HALF * b))


_tanh = njit(inline="always")(_tanh_py)
_gate = njit(inline="always")(_gate_py)


# The arithmetic of one sample: every sum starts at its bias and adds the products of its inputs
# one by one, in input order, in float32 (of fastmath only "contract": each product fused with
# its add, an fma, no reordering), the conditioning's projection added to the conv's bias first,
# then the taps in kernel order (oldest input first). Every matrix product is `simd._mv`: the
# sums of a block of outputs held in SIMD registers (a vector of outputs per sequence) while
# the inputs stream by, each weight vector loaded once for all the sequences of a group. Which
# outputs share a vector, and how many sequences share a weight, changes no sum: a sequence's
# numbers are the same alone or in any group.


def _run_group_py(
    p_embed, conv_wt, conv_b, cond_wt, out_wt, out_b, h1wt, h1b, h2wt, h2b, dil, off, kernel,
    cache, g, t0, cond, cond_on, prev, forced, uniforms, inv_temp, floor, classes, logits_out,
    keep_logits,
):
    """Samples t0 .. t0 + T - 1 of the W sequences g * W ... of the batch at once (those past
    the batch are padding). Every activation is (W, channels), one row per sequence; cache
    (cache_len, W, R): per layer a ring of its past inputs; weights transposed (input,
    output). cond (B, T, C) or (B, 0, 0) without conditioning, projected by cond_wt (L, C, 2R)
    at the layers where cond_on (L,) is true (the others' projections are zeros, left unread);
    forced (B, T) classes
    for teacher forcing or (B, 0); uniforms (B, T, U) in [0, 1) for sampling; writes classes
    (B, T) and, if keep_logits, the head's outputs (B, T, K). The next class comes from
    `_sample`, the output distribution's sampler (a global, so the kernel of the default
    distribution is cached on disk)."""
    W = cache.shape[1]
    n_layers = conv_wt.shape[0]
    R = p_embed.shape[1]
    S = h1b.shape[0]
    K = h2b.shape[0]
    B = prev.shape[0]
    T = classes.shape[1]
    x = np.zeros((W, R), np.float32)
    hf = np.empty(W * 2 * R, np.float32)
    h = hf.reshape((W, 2 * R))
    z = np.empty((W, R), np.float32)
    o_acc = np.empty((W, R + S), np.float32)
    skip = np.empty((W, S), np.float32)
    act = np.empty((W, S), np.float32)
    hid = np.empty((W, S), np.float32)
    lg = np.empty((W, K), np.float32)
    c_in = np.zeros((W, cond.shape[2]), np.float32)  # this sample's conditioning (padding: 0)
    lane_prev = np.zeros(W, np.int64)
    b0 = g * W
    nb = min(W, B - b0)
    for w in range(nb):
        lane_prev[w] = prev[b0 + w]
    has_cond = cond.shape[1] > 0
    has_forced = forced.shape[1] > 0
    for tt in range(T):
        t = t0 + tt
        for w in range(W):
            for i in range(R):
                x[w, i] = p_embed[lane_prev[w], i]
            for i in range(S):
                skip[w, i] = _ZERO
        if has_cond:
            for w in range(nb):
                for i in range(c_in.shape[1]):
                    c_in[w, i] = cond[b0 + w, tt, i]
        for l in range(n_layers):
            d = dil[l]
            ctx = (kernel - 1) * d
            for w in range(W):
                for o in range(2 * R):
                    h[w, o] = conv_b[l, o]
            if has_cond and cond_on[l]:
                _mv(h, cond_wt[l], c_in)
            for j in range(kernel):
                back = (kernel - 1 - j) * d
                if back == 0:
                    _mv(h, conv_wt[l, j], x)
                else:
                    _mv(h, conv_wt[l, j], cache[off[l] + (t - back) % ctx])
            if ctx > 0:
                dst = cache[off[l] + t % ctx]
                for w in range(W):
                    for i in range(R):
                        dst[w, i] = x[w, i]
            for w in range(W):
                for i in range(R):
                    z[w, i] = _gate(h[w, i], h[w, R + i])
                for o in range(R + S):
                    o_acc[w, o] = out_b[l, o]
            _mv(o_acc, out_wt[l], z)
            for w in range(W):
                for o in range(R):
                    x[w, o] = x[w, o] + o_acc[w, o]
                for o in range(S):
                    skip[w, o] = skip[w, o] + o_acc[w, R + o]
        for w in range(W):
            for o in range(S):
                hid[w, o] = h1b[o]
                act[w, o] = max(skip[w, o], _ZERO)
        _mv(hid, h1wt, act)
        for w in range(W):
            for o in range(K):
                lg[w, o] = h2b[o]
            for o in range(S):
                act[w, o] = max(hid[w, o], _ZERO)
        _mv(lg, h2wt, act)
        for w in range(nb):
            b = b0 + w
            if keep_logits:
                for o in range(K):
                    logits_out[b, tt, o] = lg[w, o]
            nxt = forced[b, tt] if has_forced else _sample(lg[w], uniforms[b, tt], inv_temp,
                                                           floor)
            classes[b, tt] = nxt
            lane_prev[w] = nxt
    for w in range(nb):
        prev[b0 + w] = lane_prev[w]


def _run_groups_py(
    p_embed, conv_wt, conv_b, cond_wt, out_wt, out_b, h1wt, h1b, h2wt, h2b, dil, off, kernel,
    caches, t0, cond, cond_on, prev, forced, uniforms, inv_temp, floor, classes, logits_out,
    keep_logits,
):
    """`_run_group` for every group of the batch, the groups spread over the CPU cores.
    caches (G, cache_len, W, R)."""
    for g in prange(caches.shape[0]):
        _run_group(p_embed, conv_wt, conv_b, cond_wt, out_wt, out_b, h1wt, h1b, h2wt, h2b, dil,
                   off, kernel, caches[g], g, t0, cond, cond_on, prev, forced, uniforms, inv_temp,
                   floor, classes, logits_out, keep_logits)


# the default distribution's kernels, compiled once and cached on disk; of fastmath only
# "contract" (CONTRACT): each product fused with the add that follows it (one rounding, an fma
# where the CPU has one); no reordering. error_model numpy: no zero-division branch in the
# gate's p / q (q >= 0.0049), so it vectorizes
# (cached_njit: njit(cache=True) whose cache also follows the files these inline, simd.py and
# samplers.py, which numba's alone does not)
_sample = cached_njit(fastmath=SAMPLER_FASTMATH, nogil=True)(sample_softmax)
_FLAGS = {"nogil": True, "fastmath": set(CONTRACT), "error_model": "numpy"}
_run_group = cached_njit(**_FLAGS)(_run_group_py)
_run_groups = cached_njit(parallel=True, nogil=True)(_run_groups_py)


@cache
def kernels(sample_one: Callable) -> tuple[Callable, Callable]:
    """(one group, every group over the cores) kernels that draw each sample with `sample_one`
    (an output distribution's sampler): the cached ones for the default, else compiled now
    (not cached: numba caches no function whose globals differ from its module's)."""
    if sample_one is sample_softmax:
        return _run_group, _run_groups

    def rebind(fn, name: str, **names):
        return types.FunctionType(fn.__code__, {**globals(), **names}, name)

    sample = njit(fastmath=SAMPLER_FASTMATH, nogil=True)(sample_one)
    group = njit(**_FLAGS)(rebind(_run_group_py, "_run_group", _sample=sample))
    groups = njit(parallel=True, nogil=True)(rebind(_run_groups_py, "_run_groups",
                                                    _run_group=group))
    return group, groups


def group_width(batch: int, threads: int) -> int:
    """Sequences per group for a batch on `threads` cores: enough groups to keep every core
    busy, each group as wide as that allows (up to MAX_LANES), a power of two."""
    per_core = -(-batch // max(1, threads))
    width = 1
    while width < min(per_core, MAX_LANES):
        width *= 2
    return width


class FusedDecoderState:
    """The decoder's cache for a batch, and the loop over chunks of samples. The batch runs in
    groups of `width` sequences (default `group_width`; one group: in this thread, more: over
    numba's threads); the width changes the speed, never a sample. `half`: stream the weights
    as float16 (None: when every one is a float16 value, so that nothing changes, and the CPU
    widens float16 in hardware)."""

    def __init__(self, packed: PackedDecoder, output: Sampling, batch: int,
                 width: int | None = None, half: bool | None = None) -> None:
        import numba

        self.p = packed
        self.output = output
        self.prev = np.full(batch, output.silence, np.int64)
        self.t = 0
        self._group, self._groups = kernels(output.sample_one)
        # (a single sequence asks no thread count: that starts numba's threads, ~40 ms)
        self.width = width or (1 if batch == 1 else group_width(batch, numba.get_num_threads()))
        groups = -(-batch // self.width)
        p = packed
        self.cache = np.zeros((groups, p.cache_len, self.width, p.residual), np.float32)
        self.cond_on = packed.conditioned_layers  # the layers that project the conditioning
        t = np.ascontiguousarray  # weights (input, output): each input's row a run of outputs
        streamed = [t(p.conv_w.transpose(0, 1, 3, 2)), t(p.cond_w.transpose(0, 2, 1)),
                    t(p.out_w.transpose(0, 2, 1)), t(p.head1_w.T), t(p.head2_w.T)]
        if half is None:
            half = FAST_HALF and all(np.array_equal(a.astype(np.float16).astype(np.float32), a)
                       for a in streamed)
        if half:
            streamed = [a.astype(np.float16).view(np.uint16) for a in streamed]
        self.half = bool(half)
        conv, cond, out, h1, h2 = streamed
        self._weights = (p.embed, conv, p.conv_b, cond, out, p.out_b, h1, p.head1_b, h2,
                         p.head2_b, p.dilations, p.offsets, p.kernel)

    def run(
        self,
        cond: np.ndarray | None,  # (B, T >= n, C) float32
        n: int,
        uniforms: np.ndarray | None = None,  # (B, T, U)
        temperature: float = 1.0,
        forced: np.ndarray | None = None,  # (B, T) int64
        keep_logits: bool = False,
        floor: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Generate (or, with `forced`, score) the next `n` samples -> (classes (B, n), the
        head's outputs (B, n, K) if keep_logits); `floor`: the sampler's probability floor."""
        p, B = self.p, self.prev.shape[0]
        K = p.head2_w.shape[0]
        classes = np.empty((B, n), np.int64)
        logits = np.empty((B, n if keep_logits else 0, K), np.float32)
        cond = np.zeros((B, 0, 0), np.float32) if cond is None else cond
        forced = np.zeros((B, 0), np.int64) if forced is None else forced
        if uniforms is None:
            uniforms = np.zeros((B, n, self.output.n_uniforms), np.float64)
        inv_temp = 0.0 if temperature <= 0 else 1.0 / temperature
        if cond.shape[1] and (cond.shape[0] != B or cond.shape[1] < n
                              or cond.shape[2] != p.cond_channels):
            raise ValueError(f"cond must be (B, >= n, C) = ({B}, >= {n}, {p.cond_channels}), "
                             f"got {cond.shape}")
        cond = np.ascontiguousarray(cond, np.float32)
        forced = np.ascontiguousarray(forced, np.int64)
        uniforms = np.ascontiguousarray(uniforms, np.float64)
        args = (self.t, cond, self.cond_on, self.prev, forced, uniforms, inv_temp, float(floor),
                classes, logits, keep_logits)
        if self.cache.shape[0] == 1:  # no thread pool for a single group
            self._group(*self._weights, self.cache[0], 0, *args)
        else:
            self._groups(*self._weights, self.cache, *args)
        self.t += n
        return classes, (logits if keep_logits else None)
