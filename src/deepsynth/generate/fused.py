"""The decoder's one-sample step fused into one compiled loop (numba), for fast generation.

At batch 1 a WaveNet step is a few hundred tiny matrix-vector products: in eager PyTorch the
per-operation overhead, not arithmetic, sets the speed. Here the weights are packed once into
contiguous float32 arrays (pre-transposed so every inner loop runs over contiguous memory) and a
whole chunk of samples runs in one compiled call: per sample and layer, read the ring buffer of
past inputs, dilated conv + conditioning, gate, residual and skip, then the head and sampling.

The cache: per layer a ring buffer of its last (kernel - 1) * dilation inputs, so a new sample
costs O(layers) work, not O(receptive field). The conditioning of every layer (the decoder's 1x1
projection of the video encoder's output) is computed in parallel for a chunk beforehand.

Every matrix-vector product is written as one loop over the outputs per input (weights stored
(input, output)), which the compiler vectorizes without reordering any sum, and the gate's tanh
and sigmoid as a rational function (no C-library call, no zero-division branch: it vectorizes).
Of fastmath only "contract": each product is fused with the add that follows it (an fma).

A batch whose lanes are at least 3/4 full (6-8, 12-16, 18-24, ...) runs in lanes
(`_run_group`): LANES = 8 sequences side by side, every activation (channels, LANES), so each
weight is loaded once per sample for all of them and every matrix product is a small
matrix-matrix product whose 8 x 8 sums stay in SIMD registers (`_mm_lanes`, LLVM vector code:
numba vectorizes neither across sequences nor with sums in registers, measured). Smaller
batches run each sequence through the one-sequence code, the sequences spread over the cores.
Both do the same products and sums in the same order, contracted alike: an input's samples are
bit-identical alone or anywhere in a batch (tests/test_fused.py). Throughput:
`python benchmarks/generate.py --only batch`.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Protocol

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba import types as nbtypes
from numba.core import cgutils
from numba.extending import intrinsic

from deepsynth.samplers import sample_softmax

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


def _np(t: torch.Tensor) -> np.ndarray:
    import torch

    return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())


def pack_decoder(decoder: WaveNetDecoder) -> PackedDecoder:
    blocks = decoder.stack.blocks
    k = decoder.stack.kernel_size
    dil = np.array(decoder.stack.dilations, dtype=np.int64)
    ctx = (k - 1) * dil
    return PackedDecoder(
        embed=_np(decoder.input.weight[:, :, 0].t() + decoder.input.bias),
        conv_w=np.ascontiguousarray(
            np.stack([_np(b.conv.weight).transpose(2, 0, 1) for b in blocks])
        ),
        conv_b=np.stack([_np(b.conv.bias) for b in blocks]),
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
# its add, an fma, no reordering), the conditioning added to
# the conv's bias first, the taps in kernel order (oldest input first). Written as one loop over
# the outputs per input (weights transposed), which vectorizes over the outputs; as a sum per
# output it would not, without fastmath, and with it the order would be the compiler's.


def _run_one_py(
    p_embed, conv_wt, conv_b, out_wt, out_b, h1wt, h1b, h2wt, h2b, dil, off, kernel,
    cache, t0, cond, prev, forced, uniforms, inv_temp, floor, classes, logits_out, keep_logits,
):
    """Samples t0 .. t0 + T - 1 of one sequence. Weights transposed (input, output) so each
    input's products with all outputs are one vectorized loop. cache (cache_len, R) ring
    buffers; cond (T, L, 2R) or (0, 0, 0) without conditioning; forced (T,) classes for teacher
    forcing or (0,); uniforms (T, U) in [0, 1) for sampling; writes classes (T,) and, if
    keep_logits, the head's outputs (T, K). The next class comes from `_sample`, the output
    distribution's sampler (a global, so the kernel of the default distribution is cached on
    disk)."""
    n_layers = conv_wt.shape[0]
    R = p_embed.shape[1]
    S = h1wt.shape[0]
    K = h2wt.shape[1]
    T = classes.shape[0]
    x = np.empty(R, np.float32)
    h = np.empty(2 * R, np.float32)
    z = np.empty(R, np.float32)
    o_acc = np.empty(R + S, np.float32)
    skip = np.empty(S, np.float32)
    hid = np.empty(S, np.float32)
    logits = np.empty(K, np.float32)
    has_cond = cond.shape[0] > 0
    for tt in range(T):
        t = t0 + tt
        for i in range(R):
            x[i] = p_embed[prev, i]
        for i in range(S):
            skip[i] = _ZERO
        for l in range(n_layers):
            d = dil[l]
            ctx = (kernel - 1) * d
            for o in range(2 * R):
                h[o] = conv_b[l, o] + cond[tt, l, o] if has_cond else conv_b[l, o]
            for j in range(kernel):
                back = (kernel - 1 - j) * d
                if back == 0:
                    for i in range(R):
                        xi = x[i]
                        for o in range(2 * R):
                            h[o] = h[o] + conv_wt[l, j, i, o] * xi
                else:
                    row = off[l] + (t - back) % ctx
                    for i in range(R):
                        xi = cache[row, i]
                        for o in range(2 * R):
                            h[o] = h[o] + conv_wt[l, j, i, o] * xi
            if ctx > 0:
                row = off[l] + t % ctx
                for i in range(R):
                    cache[row, i] = x[i]
            for i in range(R):
                z[i] = _gate(h[i], h[R + i])
            for o in range(R + S):
                o_acc[o] = out_b[l, o]
            for i in range(R):
                zi = z[i]
                for o in range(R + S):
                    o_acc[o] = o_acc[o] + out_wt[l, i, o] * zi
            for o in range(R):
                x[o] = x[o] + o_acc[o]
            for o in range(S):
                skip[o] = skip[o] + o_acc[R + o]
        for o in range(S):
            hid[o] = h1b[o]
        for i in range(S):
            si = max(skip[i], _ZERO)
            for o in range(S):
                hid[o] = hid[o] + h1wt[i, o] * si
        for o in range(K):
            logits[o] = h2b[o]
        for i in range(S):
            hi = max(hid[i], _ZERO)
            for o in range(K):
                logits[o] = logits[o] + h2wt[i, o] * hi
        if keep_logits:
            for o in range(K):
                logits_out[tt, o] = logits[o]
        nxt = forced[tt] if forced.shape[0] > 0 else _sample(logits, uniforms[tt], inv_temp,
                                                                     floor)
        classes[tt] = nxt
        prev = nxt
    return prev


def _run_batch_py(
    p_embed, conv_wt, conv_b, out_wt, out_b, h1wt, h1b, h2wt, h2b, dil, off, kernel,
    caches, t0, cond, prev, forced, uniforms, inv_temp, floor, classes, logits_out,
    keep_logits,
):
    """`_run_one` for every sequence of the batch, the sequences spread over the CPU cores.
    caches (B, cache_len, R); cond (B, T, L, 2R) or (B, 0, 0, 0); forced (B, T) or (B, 0).
    Each sequence runs the very code it runs alone: its samples are the same, bit for bit."""
    for b in prange(caches.shape[0]):
        prev[b] = _run_one(p_embed, conv_wt, conv_b, out_wt, out_b, h1wt, h1b, h2wt, h2b, dil,
                           off, kernel, caches[b], t0, cond[b], prev[b], forced[b], uniforms[b],
                           inv_temp, floor, classes[b], logits_out[b], keep_logits)


# The batch in lanes: LANES sequences side by side, every matrix product a small matrix-matrix
# product whose sums live in SIMD registers (written as LLVM vector code: numba vectorizes
# neither across sequences nor with several sums in registers, measured), each product and add
# contracted as in `_run_one` (CONTRACT), so a sequence's numbers are the ones it gets alone.
LANES = 8
CONTRACT = ("contract",)


@intrinsic
def _mm_lanes(typingctx, acc, wt, src):
    """acc (n_out, LANES) += W @ src (n_in, LANES), W given in blocks of LANES outputs as wt
    (n_out // LANES, n_in, LANES) (C-contiguous float32): per block of LANES outputs, their
    LANES x LANES sums stay in SIMD registers (one vector per output, the sequences as lanes)
    while the inputs stream by; each sum in input order, each product contracted with its add
    (an fma), exactly as `_run_one` computes it."""
    if not all(isinstance(a, nbtypes.Array) and a.dtype == nbtypes.float32 and a.layout == "C"
               for a in (acc, wt, src)) or (acc.ndim, wt.ndim, src.ndim) != (2, 3, 2):
        return None
    sig = nbtypes.void(acc, wt, src)

    def codegen(context, builder, sig, args):
        f32 = ir.FloatType()
        vec = ir.VectorType(f32, LANES)
        i64 = ir.IntType(64)
        a_acc, a_wt, a_src = (context.make_array(t)(context, builder, v)
                              for t, v in zip(sig.args, args, strict=True))
        nblk = builder.extract_value(a_wt.shape, 0)
        n_in = builder.extract_value(a_wt.shape, 1)
        vacc = builder.bitcast(a_acc.data, vec.as_pointer())
        vsrc = builder.bitcast(a_src.data, vec.as_pointer())
        wdata = a_wt.data
        slots = [cgutils.alloca_once(builder, vec) for _ in range(LANES)]
        zero_mask = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
        undef = ir.Constant(vec, ir.Undefined)
        with cgutils.for_range(builder, nblk) as blk:
            o0 = builder.mul(blk.index, ir.Constant(i64, LANES))
            for k in range(LANES):
                row = builder.add(o0, ir.Constant(i64, k))
                builder.store(builder.load(builder.gep(vacc, [row]), align=4), slots[k])
            with cgutils.for_range(builder, n_in) as inp:
                i = inp.index
                xv = builder.load(builder.gep(vsrc, [i]), align=4)
                for k in range(LANES):
                    row = builder.add(o0, ir.Constant(i64, k))
                    at = builder.add(builder.mul(builder.add(builder.mul(blk.index, n_in), i),
                                                 ir.Constant(i64, LANES)), ir.Constant(i64, k))
                    w = builder.load(builder.gep(wdata, [at]))
                    one = builder.insert_element(undef, w, ir.Constant(i64, 0))
                    wv = builder.shuffle_vector(one, undef, zero_mask)
                    prod = builder.fmul(wv, xv, flags=CONTRACT)
                    builder.store(builder.fadd(builder.load(slots[k]), prod, flags=CONTRACT),
                                  slots[k])
            for k in range(LANES):
                row = builder.add(o0, ir.Constant(i64, k))
                builder.store(builder.load(slots[k]), builder.gep(vacc, [row]), align=4)
        return context.get_dummy_value()

    return sig, codegen


def _run_group_py(
    p_embed, conv_w, conv_b, out_w, out_b, h1w, h1b, h2w, h2b, dil, off, kernel,
    cache, g, t0, cond, prev, forced, uniforms, inv_temp, floor, classes, logits_out,
    keep_logits,
):
    """`_run_one` for the LANES sequences g * LANES ... of the batch at once (those past the
    batch are padding), in lanes: every activation is (channels, LANES), the cache (cache_len,
    R, LANES), the weights blocked (see `_mm_lanes`); the same sums in the same order as
    `_run_one`, so each sequence's samples are bit-identical to its own."""
    W = LANES
    n_layers = conv_w.shape[0]
    R = p_embed.shape[1]
    S = h1b.shape[0]
    K = h2b.shape[0]
    B = prev.shape[0]
    T = classes.shape[1]
    x = np.zeros((R, W), np.float32)
    hf = np.empty(2 * R * W, np.float32)
    h = hf.reshape((2 * R, W))
    zf = np.empty(R * W, np.float32)
    z = zf.reshape((R, W))
    o_acc = np.empty((R + S, W), np.float32)
    skip = np.empty((S, W), np.float32)
    act = np.empty((S, W), np.float32)
    hid = np.empty((S, W), np.float32)
    lg = np.empty((K, W), np.float32)
    one = np.empty(K, np.float32)
    lane_prev = np.zeros(W, np.int64)
    b0 = g * W
    nb = min(W, B - b0)
    for w in range(nb):
        lane_prev[w] = prev[b0 + w]
    has_cond = cond.shape[1] > 0
    has_forced = forced.shape[1] > 0
    for tt in range(T):
        t = t0 + tt
        for i in range(R):
            for w in range(W):
                x[i, w] = p_embed[lane_prev[w], i]
        for i in range(S):
            for w in range(W):
                skip[i, w] = _ZERO
        for l in range(n_layers):
            d = dil[l]
            ctx = (kernel - 1) * d
            for o in range(2 * R):
                for w in range(W):
                    h[o, w] = conv_b[l, o]
            if has_cond:
                for w in range(nb):
                    for o in range(2 * R):
                        h[o, w] = conv_b[l, o] + cond[b0 + w, tt, l, o]
            for j in range(kernel):
                back = (kernel - 1 - j) * d
                if back == 0:
                    _mm_lanes(h, conv_w[l, j], x)
                else:
                    _mm_lanes(h, conv_w[l, j], cache[off[l] + (t - back) % ctx])
            if ctx > 0:
                dst = cache[off[l] + t % ctx]
                for i in range(R):
                    for w in range(W):
                        dst[i, w] = x[i, w]
            for k in range(R * W):
                zf[k] = _gate(hf[k], hf[R * W + k])
            for o in range(R + S):
                for w in range(W):
                    o_acc[o, w] = out_b[l, o]
            _mm_lanes(o_acc, out_w[l], z)
            for o in range(R):
                for w in range(W):
                    x[o, w] = x[o, w] + o_acc[o, w]
            for o in range(S):
                for w in range(W):
                    skip[o, w] = skip[o, w] + o_acc[R + o, w]
        for o in range(S):
            for w in range(W):
                hid[o, w] = h1b[o]
                act[o, w] = max(skip[o, w], _ZERO)
        _mm_lanes(hid, h1w, act)
        for o in range(K):
            for w in range(W):
                lg[o, w] = h2b[o]
        for o in range(S):
            for w in range(W):
                act[o, w] = max(hid[o, w], _ZERO)
        _mm_lanes(lg, h2w, act)
        for w in range(nb):
            b = b0 + w
            for o in range(K):
                one[o] = lg[o, w]
            if keep_logits:
                for o in range(K):
                    logits_out[b, tt, o] = one[o]
            nxt = forced[b, tt] if has_forced else _sample(one, uniforms[b, tt], inv_temp, floor)
            classes[b, tt] = nxt
            lane_prev[w] = nxt
    for w in range(nb):
        prev[b0 + w] = lane_prev[w]


def _run_lanes_py(
    p_embed, conv_w, conv_b, out_w, out_b, h1w, h1b, h2w, h2b, dil, off, kernel,
    caches, t0, cond, prev, forced, uniforms, inv_temp, floor, classes, logits_out,
    keep_logits,
):
    """`_run_group` for every group of LANES sequences, the groups spread over the CPU cores.
    caches (G, cache_len, R, LANES); cond (B, T, L, 2R) or (B, 0, 0, 0); forced (B, T) or
    (B, 0)."""
    for g in prange(caches.shape[0]):
        _run_group(p_embed, conv_w, conv_b, out_w, out_b, h1w, h1b, h2w, h2b, dil, off,
                   kernel, caches[g], g, t0, cond, prev, forced, uniforms, inv_temp, floor,
                   classes, logits_out, keep_logits)


# the default distribution's kernels, compiled once and cached on disk; of fastmath only
# "contract" (CONTRACT): each product fused with the add that follows it (one rounding, an fma
# where the CPU has one), in the one-sequence kernel and in lanes alike; no reordering
_sample = njit(cache=True, fastmath=True, nogil=True)(sample_softmax)
# error_model numpy: no zero-division branch in the gate's p / q (q >= 0.0049), so it vectorizes
_FLAGS = {"nogil": True, "fastmath": set(CONTRACT), "error_model": "numpy"}
_run_one = njit(cache=True, **_FLAGS)(_run_one_py)
_run_batch = njit(cache=True, parallel=True, nogil=True)(_run_batch_py)
_run_group = njit(cache=True, **_FLAGS)(_run_group_py)
_run_lanes = njit(cache=True, parallel=True, nogil=True)(_run_lanes_py)


@cache
def kernels(sample_one: Callable) -> tuple[Callable, Callable, Callable]:
    """(one sequence, batch, batch in lanes) kernels that draw each sample with `sample_one`
    (an output distribution's sampler): the cached ones for the default, else compiled now
    (not cached: numba caches no function whose globals differ from its module's)."""
    if sample_one is sample_softmax:
        return _run_one, _run_batch, _run_lanes

    def rebind(fn, name: str, **names):
        return types.FunctionType(fn.__code__, {**globals(), **names}, name)

    sample = njit(fastmath=True, nogil=True)(sample_one)
    one = njit(**_FLAGS)(rebind(_run_one_py, "_run_one", _sample=sample))
    batch = njit(parallel=True, nogil=True)(rebind(_run_batch_py, "_run_batch", _run_one=one))
    group = njit(**_FLAGS)(rebind(_run_group_py, "_run_group", _sample=sample))
    lanes = njit(parallel=True, nogil=True)(rebind(_run_lanes_py, "_run_lanes",
                                                   _run_group=group))
    return one, batch, lanes


def _blocked(w: np.ndarray) -> np.ndarray:
    """(..., n_out, n_in) -> (..., n_out // LANES, n_in, LANES): blocks of LANES outputs."""
    *lead, n_out, n_in = w.shape
    return np.ascontiguousarray(
        w.reshape(*lead, n_out // LANES, LANES, n_in).swapaxes(-1, -2))


def use_lanes(packed: PackedDecoder, batch: int) -> bool:
    """Whether a batch runs in lanes: every width a multiple of LANES and the lanes at least
    3/4 full (a batch of 2 or 4 runs faster as separate sequences)."""
    widths = (2 * packed.residual, packed.out_w.shape[1], packed.head1_w.shape[0],
              packed.head2_w.shape[0])
    return (batch > 1 and all(w % LANES == 0 for w in widths)
            and 4 * batch >= 3 * LANES * -(-batch // LANES))


class FusedDecoderState:
    """The decoder's cache for a batch, and the loop over chunks of samples."""

    def __init__(self, packed: PackedDecoder, output: Sampling, batch: int) -> None:
        self.p = packed
        self.output = output
        self.prev = np.full(batch, output.silence, np.int64)
        self.t = 0
        self._one, self._batch, self._lanes = kernels(output.sample_one)
        self.lanes = use_lanes(packed, batch)
        p = packed
        if self.lanes:  # (groups, cache_len, R, LANES); weights in blocks of LANES outputs
            groups = -(-batch // LANES)
            self.cache = np.zeros((groups, p.cache_len, p.residual, LANES), np.float32)
            self._weights = (p.embed, _blocked(p.conv_w), p.conv_b, _blocked(p.out_w),
                             p.out_b, _blocked(p.head1_w), p.head1_b, _blocked(p.head2_w),
                             p.head2_b, p.dilations, p.offsets, p.kernel)
        else:
            self.cache = np.zeros((batch, p.cache_len, p.residual), np.float32)
            t = np.ascontiguousarray  # weights (input, output): one loop over outputs per input
            self._weights = (p.embed, t(p.conv_w.transpose(0, 1, 3, 2)), p.conv_b,
                             t(p.out_w.transpose(0, 2, 1)), p.out_b, t(p.head1_w.T),
                             p.head1_b, t(p.head2_w.T), p.head2_b, p.dilations, p.offsets,
                             p.kernel)

    def run(
        self,
        cond: np.ndarray | None,  # (B, T, L, 2R) float32
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
        cond = np.zeros((B, 0, 0, 0), np.float32) if cond is None else cond
        forced = np.zeros((B, 0), np.int64) if forced is None else forced
        if uniforms is None:
            uniforms = np.zeros((B, n, self.output.n_uniforms), np.float64)
        inv_temp = 0.0 if temperature <= 0 else 1.0 / temperature
        cond = np.ascontiguousarray(cond, np.float32)
        forced = np.ascontiguousarray(forced, np.int64)
        uniforms = np.ascontiguousarray(uniforms, np.float64)
        if self.lanes:
            self._lanes(*self._weights, self.cache, self.t, cond, self.prev, forced, uniforms,
                        inv_temp, float(floor), classes, logits, keep_logits)
        elif B == 1:  # no thread pool for a single sequence
            self.prev[0] = self._one(*self._weights, self.cache[0], self.t, cond[0],
                                     self.prev[0], forced[0], uniforms[0], inv_temp,
                                     float(floor), classes[0],
                                     logits[0], keep_logits)
        else:
            self._batch(*self._weights, self.cache, self.t, cond, self.prev, forced, uniforms,
                        inv_temp, float(floor), classes, logits, keep_logits)
        self.t += n
        return classes, (logits if keep_logits else None)
