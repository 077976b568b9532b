"""The softmax sampler: the fused kernel's numba rule and the PyTorch one (CUDA graph) draw the
same classes, with and without a probability floor; the floor never draws a class rarer than
it and draws the others in proportion to what is left above it; generation takes it."""

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
from deepsynth.samplers import _exp_py, softmax_lanes
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


@pytest.mark.parametrize("inv_temp,floor", [(1.0, 0.0), (1 / 0.6, 0.005), (0.0, 0.0)])
def test_lanes_draw_each_column_as_the_one_row_sampler_does(inv_temp, floor):
    """The fused kernels draw a group of sequences at once (`softmax_lanes`) and one sequence
    with `sample_softmax`: the same class for a column, whatever its lane and the group's width
    (the lanes past `n` left alone)."""
    rng = np.random.default_rng(7)
    for width, n in ((8, 8), (8, 5), (1, 1), (3, 2)):
        for _ in range(40):
            logits = rng.normal(0, 2.5, (256, width)).astype(np.float32)
            u = rng.random(width)
            out = np.full(width, -1, np.int64)
            softmax_lanes(logits, n, u, inv_temp, floor, out)
            one = [SAMPLE_ONE(np.ascontiguousarray(logits[:, w]), u[w : w + 1], inv_temp, floor)
                   for w in range(n)]
            assert out[:n].tolist() == one and (out[n:] == -1).all()


def test_the_samplers_exp_is_exact_to_a_few_ulp():
    x = np.concatenate([np.linspace(-700.0, 0.0, 20001), -np.logspace(-12, 2, 2000), [0.0]])
    got = np.array([p * 2.0 ** e for p, e in map(_exp_py, x)])
    assert np.max(np.abs(got / np.exp(x) - 1.0)) < 4.5e-16
