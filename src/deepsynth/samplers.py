"""The output distributions' one-sample samplers, in plain Python over numpy arrays that numba
compiles for the fused decoder step (`generate/fused.py`). No torch here: the generator that
runs without it (`generate/packed.py`) draws with the same compiled code as the one with it.
`model/output.py` gives each distribution its sampler from this module."""

from __future__ import annotations

import numpy as np


def sample_softmax(logits: np.ndarray, uniforms: np.ndarray, inv_temp: float,
                    floor: float) -> int:
    """Inverse-CDF sampling from softmax(logits * inv_temp) with `floor` subtracted from every
    probability (those below it dropped) and the rest renormalised, as LPCNet does: the rare
    classes that make a noise floor are never drawn (floor 0: plain sampling); inv_temp <= 0:
    the argmax. Written for numba (loops over arrays); the first maximum wins, as in
    `argmax`."""
    K = logits.shape[0]
    best = 0
    for o in range(K):
        if logits[o] > logits[best]:
            best = o
    if inv_temp <= 0.0:
        return best
    top = logits[best]
    weights = np.empty(K)  # each class's exp once (the same numbers, summed in the same order)
    total = 0.0
    for o in range(K):
        weights[o] = np.exp((logits[o] - top) * inv_temp)
        total += weights[o]
    if floor > 0.0:  # p - floor for the classes above it: weights - floor x total
        cut = floor * total
        total = 0.0
        for o in range(K):
            weights[o] = weights[o] - cut if weights[o] > cut else 0.0
            total += weights[o]
    target = uniforms[0] * total
    acc = 0.0
    for o in range(K):
        acc += weights[o]
        if acc > target:
            return o
    return K - 1


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
