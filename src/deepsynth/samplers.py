"""The output distributions' one-sample samplers, in plain Python over numpy arrays that numba
compiles for the fused decoder step (`generate/fused.py`). No torch here: the generator that
runs without it (`generate/packed.py`) draws with the same compiled code as the one with it.
`model/output.py` gives each distribution its sampler from this module. The softmax sampler
computes its 256 exponentials with an exp of its own, in float32, that vectorizes (below): the
sampler draws what one with the C library's exp in float64 would, but at a rounding of a
bound (tests/test_sampling.py), in about a third of the time (measured)."""

from __future__ import annotations

import numpy as np
from numba import njit

# exp(x) for x <= 0 as the softmax sampler needs it: 256 of them per sample, where the C
# library's exp, called once per class, cost three quarters of the sampler (measured). In float32
# (as the PyTorch sampler's softmax): range reduction x = k ln 2 + r (Cody-Waite: ln 2 in two
# parts, the first of 9 bits, so k ln 2 is exact), exp(r) by its Taylor series to r^7
# (|r| <= ln(2)/2: truncation < 6e-9), 2^k written into a float32's exponent bits. Only + * and
# a rounding trick, so the loop vectorizes. It needs its operations in the order written:
# compile it with SAMPLER_FASTMATH (no reassociation), never fastmath=True.
SAMPLER_FASTMATH = {"nnan", "ninf", "nsz", "arcp", "contract", "afn"}
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)  # 355/512: k * _LN2_HI is exact for |k| < 2^15
_LN2_LO = np.float32(-2.12194440e-4)  # ln 2 - _LN2_HI
_ROUND = np.float32(12582912.0)  # 1.5 * 2^23: x + _ROUND rounds x to an integer in the low bits
_ROUND_BITS = int(np.float32(_ROUND).view(np.int32))
_EXP_MIN = np.float32(-87.0)  # exp(-87) is still a normal float32 (such classes weigh ~0)
_E = [np.float32(1.0 / float(np.prod(np.arange(1, n + 1, dtype=np.float64)))) for n in range(8)]
(_E0, _E1, _E2, _E3, _E4, _E5, _E6, _E7) = _E


@njit(inline="always", fastmath=SAMPLER_FASTMATH, nogil=True)
def _sum8(w: np.ndarray) -> float:
    """The sum of an array in float64, in eight interleaved partial sums added pairwise: one
    fixed order (the same on every CPU), and a loop that vectorizes without reassociation."""
    K = w.shape[0]
    n = K - K % 8
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    for o in range(0, n, 8):
        s0 += w[o]
        s1 += w[o + 1]
        s2 += w[o + 2]
        s3 += w[o + 3]
        s4 += w[o + 4]
        s5 += w[o + 5]
        s6 += w[o + 6]
        s7 += w[o + 7]
    total = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    for o in range(n, K):
        total += w[o]
    return total


@njit(inline="always", fastmath=SAMPLER_FASTMATH, nogil=True)
def _max8(x: np.ndarray):
    """The largest element of a non-empty array without NaNs, in eight interleaved running
    maxima (numba's max over one running value stays scalar, 4x slower, measured)."""
    K = x.shape[0]
    n = K - K % 8
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = x[0]
    for o in range(0, n, 8):
        m0 = max(m0, x[o])
        m1 = max(m1, x[o + 1])
        m2 = max(m2, x[o + 2])
        m3 = max(m3, x[o + 3])
        m4 = max(m4, x[o + 4])
        m5 = max(m5, x[o + 5])
        m6 = max(m6, x[o + 6])
        m7 = max(m7, x[o + 7])
    top = max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))
    for o in range(n, K):
        top = max(top, x[o])
    return top


def sample_softmax(logits: np.ndarray, uniforms: np.ndarray, inv_temp: float,
                   floor: float) -> int:
    """Inverse-CDF sampling from softmax(logits * inv_temp) with `floor` subtracted from every
    probability (those below it dropped) and the rest renormalised, as LPCNet does: the rare
    classes that make a noise floor are never drawn (floor 0: plain sampling); inv_temp <= 0:
    the argmax (the first maximum, as in `argmax`). The weights in float32, as the PyTorch
    sampler's, their sums in float64. Written for numba (loops over arrays; compiled with
    SAMPLER_FASTMATH)."""
    K = logits.shape[0]
    top = _max8(logits)
    if inv_temp <= 0.0:
        for o in range(K):
            if logits[o] == top:
                return o
        return 0  # no maximum: NaN logits
    inv = np.float32(inv_temp)
    scratch = np.empty(2 * K, np.float32)
    weights = scratch[:K]  # each class's exp(x): first exp(r), then times 2^k
    rounded = scratch[K:]  # k + _ROUND: k in the low bits
    for o in range(K):
        x = max((logits[o] - top) * inv, _EXP_MIN)
        t = x * _LOG2E + _ROUND
        k = t - _ROUND
        r = (x - k * _LN2_HI) - k * _LN2_LO
        p = _E7 * r + _E6
        p = p * r + _E5
        p = p * r + _E4
        p = p * r + _E3
        p = p * r + _E2
        p = p * r + _E1
        weights[o] = p * r + _E0
        rounded[o] = t
    bits = rounded.view(np.int32)
    for o in range(K):  # 2^k: k + 127 in the exponent field
        bits[o] = (bits[o] - _ROUND_BITS + 127) << 23
    scale = bits.view(np.float32)
    for o in range(K):
        weights[o] = weights[o] * scale[o]
    total = _sum8(weights)
    if floor > 0.0:  # p - floor for the classes above it: weights - floor x total
        cut = floor * total
        for o in range(K):
            weights[o] = weights[o] - cut if weights[o] > cut else 0.0
        total = _sum8(weights)
    target = uniforms[0] * total
    acc = 0.0
    last = 0
    for o in range(K):
        if weights[o] > 0.0:
            acc += weights[o]
            last = o
            if acc > target:
                return o
    return last  # the running sum, in another order than the total, fell short by a rounding


# the mixture of logistics (model/output.py `MuLawLogistic`): params are M weight logits, M
# means and M log-scales over the mu-law companded value in [-1, 1]
MIX_MU = 255  # its classes: the mu-law levels of mu = 255
MIX_COMPONENTS = 10  # logistics in the mixture (3 parameters each)
MIX_LOG_SCALE_MIN = -7.0  # log-scales clamped below (a scale of 1e-3: a fraction of one class)


def sample_logistic_mix(params: np.ndarray, uniforms: np.ndarray, inv_temp: float,
                        floor: float) -> int:
    """One class from the discretized mixture of logistics over the mu + 1 = K classes of the
    companded value: the component by inverse CDF of softmax(weights) with uniforms[0], then
    the value by the logistic's inverse CDF with uniforms[1] squeezed into [floor, 1 - floor]
    (floor > 0 cuts the logistic's tails, the rare values that make a noise floor), its spread
    times the temperature; inv_temp <= 0: the mean of the heaviest component. Rounded to the
    nearest class. float64 throughout; written for numba (the torch `sample` computes the same
    in float64)."""
    M = params.shape[0] // 3
    best = 0
    for m in range(M):
        if params[m] > params[best]:
            best = m
    k = best
    x = np.float64(params[M + best])
    if inv_temp > 0.0:
        top = np.float64(params[best])
        total = 0.0
        for m in range(M):
            total += np.exp(np.float64(params[m]) - top)
        target = uniforms[0] * total
        acc = 0.0
        k = M - 1
        for m in range(M):
            acc += np.exp(np.float64(params[m]) - top)
            if acc > target:
                k = m
                break
        u = floor + (1.0 - 2.0 * floor) * uniforms[1]
        u = min(max(u, 1e-12), 1.0 - 1e-12)
        log_s = max(np.float64(params[2 * M + k]), MIX_LOG_SCALE_MIN)
        x = np.float64(params[M + k]) + np.exp(log_s) / inv_temp * (np.log(u) - np.log(1.0 - u))
    c = np.floor((x + 1.0) * (MIX_MU / 2.0) + 0.5)  # the nearest class
    return int(min(max(c, 0.0), float(MIX_MU)))
