"""The softmax sampler: the fused kernel's numba rule and the PyTorch one (CUDA graph) draw the
same classes, with and without a probability floor; the floor never draws a class rarer than
it and draws the others in proportion to what is left above it; generation takes it."""

import math

import numpy as np
import pytest
import torch
from numba import njit

from deepsynth.config import AudioConfig
from deepsynth.errors import DeepSynthError
from deepsynth.generate.generator import generate
from deepsynth.generate.sources import source_from_changes
from deepsynth.model.deepsynth import DeepSynth
from deepsynth.model.output import MuLawSoftmax
from deepsynth.model.presets import get_preset
from deepsynth.sim import keyboard
from deepsynth.sim.keystates import KeyChanges

OUT = MuLawSoftmax(AudioConfig())
SAMPLE_ONE = njit(MuLawSoftmax.sample_one)


def draw_numba(logits, uniforms, inv_temp, floor):
    return np.array([SAMPLE_ONE(row, u, inv_temp, floor) for row, u in zip(logits, uniforms,
                                                                              strict=True)])


def draw_torch(logits, uniforms, inv_temp, floor):
    return OUT.sample(torch.from_numpy(logits), torch.from_numpy(uniforms),
                      torch.tensor(inv_temp), torch.tensor(floor)).numpy()


@pytest.mark.parametrize("inv_temp,floor", [(1.0, 0.0), (1.25, 0.0), (1.0, 0.005),
                                            (1.6, 0.01), (0.0, 0.01)])
def test_numba_and_torch_samplers_draw_the_same(inv_temp, floor):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2.5, (400, 256)).astype(np.float32)
    uniforms = rng.random((400, 1))
    a, b = draw_numba(logits, uniforms, inv_temp, floor), draw_torch(logits, uniforms,
                                                                      inv_temp, floor)
    assert np.mean(a == b) > 0.99  # float32 vs float64 sums may part at a boundary


def test_the_floor_drops_rare_classes_and_keeps_the_rest_in_proportion():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.04, 0.01], np.float32))
    rng = np.random.default_rng(1)
    u = rng.random((40_000, 1))
    rows = np.broadcast_to(logits, (len(u), 5))
    plain = np.bincount(draw_numba(rows, u, 1.0, 0.0), minlength=5) / len(u)
    np.testing.assert_allclose(plain, np.exp(logits), atol=0.01)
    floored = np.bincount(draw_numba(rows, u, 1.0, 0.05), minlength=5) / len(u)
    kept = np.array([0.45, 0.25, 0.10, 0.0, 0.0]) / 0.80  # p - 0.05 where above, renormalised
    assert floored[3] == floored[4] == 0
    np.testing.assert_allclose(floored, kept, atol=0.01)


def test_generation_takes_the_floor_and_refuses_a_bad_one():
    torch.manual_seed(0)
    model = DeepSynth(get_preset("tiny").model, keyboard.layout())
    states = np.zeros((2, 88), bool)
    states[1, 40] = True
    source = source_from_changes(KeyChanges(np.array([0, 500]), states, 4000, 2000))
    plain = generate(model, [source], temperature=1.0, seed=3)[0]
    assert np.array_equal(plain, generate(model, [source], temperature=1.0, seed=3,
                                          floor=0.0)[0])
    assert not np.array_equal(plain, generate(model, [source], temperature=1.0, seed=3,
                                              floor=0.02)[0])
    for bad in (float("nan"), -0.1, 0.5):
        with pytest.raises(DeepSynthError, match="floor"):
            generate(model, [source], floor=bad)


def _reference_draw(row, u, inv_temp, floor):
    """The softmax sampler's rule in float64 numpy, with the C library's exp and exact sums."""
    w = np.exp((row.astype(np.float64) - row.max()) * inv_temp)
    if floor > 0:
        w = np.where(w > floor * math.fsum(w), w - floor * math.fsum(w), 0.0)
    return int(np.searchsorted(np.cumsum(w), u[0] * math.fsum(w), side="right"))


@pytest.mark.parametrize("inv_temp,floor", [(1.0, 0.0), (1 / 0.6, 0.005), (3.0, 0.02)])
def test_the_samplers_own_exp_draws_what_the_c_librarys_would(inv_temp, floor):
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 4.0, (3000, 256)).astype(np.float32)
    logits[::7, 5] -= 3000.0  # far below the rest: exp's clamp
    logits[::11, :128] += 40.0  # a wide range of exponents
    uniforms = rng.random((3000, 1))
    got = draw_numba(logits, uniforms, inv_temp, floor)
    want = [_reference_draw(r, u, inv_temp, floor) for r, u in zip(logits, uniforms,
                                                                    strict=True)]
    assert np.mean(got == np.array(want)) > 0.999  # parting only within a rounding of a bound
