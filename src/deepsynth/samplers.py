"""The output distributions' one-sample samplers, in plain Python over numpy arrays that numba
compiles for the fused decoder step (`generate/fused.py`). No torch here: the generator that
runs without it (`generate/packed.py`) draws with the same compiled code as the one with it.
`model/output.py` gives each distribution its sampler from this module."""

from __future__ import annotations

import numpy as np
from numba import njit

_LOG2E = 1.4426950408889634
_LN2_HI = 0.6931471803691238  # ln 2 in two parts (Cody and Waite): n * _LN2_HI is exact
_LN2_LO = 1.9082149292705877e-10
_EXP_MIN = -700.0  # exp of less is taken as exp(-700) (1e-304: nothing a sum of 256 notices)


def _exp_py(x: float) -> tuple[float, float]:
    """exp(x) for x <= 0 (float64, within 2 ulp): 2^n times a degree-13 polynomial of the
    rest, |r| <= ln(2) / 2. Plain arithmetic (and 2^n made from its bits by the caller), so the
    compiler vectorizes a loop of it; each element's operations are the same in any loop, so a
    lane gives the same number as the one-sequence code."""
    x = max(x, _EXP_MIN)
    n = np.floor(x * _LOG2E + 0.5)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p, n


# of no fastmath flag: no sum reordered, no product contracted, the same in every loop
_exp = njit(inline="always")(_exp_py)


def _softmax_lanes_py(logits: np.ndarray, n: int, uniforms: np.ndarray, inv_temp: float,
                  floor: float, out: np.ndarray) -> None:
    """(`softmax_lanes`, compiled.) `sample_softmax` for the first `n` columns of `logits`
    (K, W) float32, each column one sequence (a lane), with uniforms[w] its uniform number:
    writes out[w] (int64). Every loop runs over the lanes (or the classes) with no sum
    reordered, so a column's class is the same whatever W and its place: the fused kernels
    draw with this one function alone (W = 1) and in lanes."""
    K, W = logits.shape
    top = np.empty(W, np.float32)
    best = np.zeros(W, np.int64)
    for w in range(W):
        top[w] = logits[0, w]
    for o in range(1, K):  # the first maximum wins, as in `argmax`
        for w in range(W):
            v = logits[o, w]
            if v > top[w]:
                top[w] = v
                best[w] = o
    if inv_temp <= 0.0:
        for w in range(n):
            out[w] = best[w]
        return
    x = np.empty(K * W, np.float64)
    if W == 1:
        for o in range(K):
            x[o] = (logits[o, 0] - top[0]) * inv_temp
    else:
        for o in range(K):
            for w in range(W):
                x[o * W + w] = (logits[o, w] - top[w]) * inv_temp
    bits = np.empty(K * W, np.int64)
    for k in range(K * W):  # each class's exp once
        p, e = _exp(x[k])
        x[k] = p
        bits[k] = (np.int64(e) + 1023) << 52
    scale = bits.view(np.float64)
    for k in range(K * W):
        x[k] = x[k] * scale[k]
    total = np.zeros(W, np.float64)
    for o in range(K):
        for w in range(W):
            total[w] += x[o * W + w]
    if floor > 0.0:  # p - floor for the classes above it: weights - floor x total
        cut = np.empty(W, np.float64)
        for w in range(W):
            cut[w] = floor * total[w]
            total[w] = 0.0
        for o in range(K):
            for w in range(W):
                v = x[o * W + w] - cut[w]
                v = v if v > 0.0 else 0.0
                x[o * W + w] = v
                total[w] += v
    target = np.empty(W, np.float64)
    acc = np.zeros(W, np.float64)
    pick = np.full(W, K - 1, np.int64)
    for w in range(W):
        target[w] = uniforms[w] * total[w]
    for o in range(K):  # inverse CDF: the first class whose cumulative weight passes the target
        for w in range(W):
            acc[w] += x[o * W + w]
            if acc[w] > target[w] and pick[w] == K - 1 and o < K - 1:
                pick[w] = o
    for w in range(n):
        out[w] = pick[w]


softmax_lanes = njit(cache=True, nogil=True)(_softmax_lanes_py)


def sample_softmax(logits: np.ndarray, uniforms: np.ndarray, inv_temp: float,
                    floor: float) -> int:
    """Inverse-CDF sampling from softmax(logits * inv_temp) with `floor` subtracted from every
    probability (those below it dropped) and the rest renormalised, as LPCNet does: the rare
    classes that make a noise floor are never drawn (floor 0: plain sampling); inv_temp <= 0:
    the argmax (the first maximum). One row of `softmax_lanes`: the same numbers."""
    out = np.empty(1, np.int64)
    softmax_lanes(logits.reshape(logits.shape[0], 1), 1, uniforms[:1], inv_temp, floor, out)
    return out[0]


# the mixture of logistics (model/output.py `MuLawLogistic`): params are M weight logits, M
# means and M log-scales over the mu-law companded value in [-1, 1]
MIX_MU = 255  # its classes: the mu-law levels of mu = 255
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
