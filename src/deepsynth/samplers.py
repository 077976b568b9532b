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
