"""The compiled key-feature conditioning (generate/keycond.py): the torch computation's numbers
up to float32 rounding, bit-identical whatever the chunking (down to one sample), and used by
generation for a model whose only conditioning path is the key features."""

import numpy as np
import pytest
import torch

from deepsynth.generate import keycond
from deepsynth.generate.generator import Conditioner
from deepsynth.layout import N_KEYS
from deepsynth.model.deepsynth import DeepSynth
from deepsynth.model.presets import get_preset
from deepsynth.sim import keyboard


def model_of(preset: str, seed: int = 0) -> DeepSynth:
    torch.manual_seed(seed)
    model = DeepSynth(get_preset(preset).model, keyboard.layout()).eval()
    with torch.no_grad():  # trained-looking weights: none of the projections is zero
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def timeline(seed: int, n_samples: int, n_rows: int = 40):
    """Key levels of n_rows frames (partial levels around 0.5 too, as a camera reading gives)
    and the frame shown at each sample (changes every 1..300 samples)."""
    rng = np.random.default_rng(seed)
    levels = np.zeros((n_rows, N_KEYS), np.float32)
    for r in range(1, n_rows):
        keys = rng.choice(N_KEYS, size=rng.integers(1, 8), replace=False)
        levels[r, keys] = rng.choice([1.0, 0.9, 0.51, 0.49, 0.3], size=len(keys))
    rows = np.zeros(n_samples, np.int64)
    t = int(rng.integers(0, 50))
    while t < n_samples:
        rows[t:] = rng.integers(0, n_rows)
        t += int(rng.integers(1, 300))
    return levels, rows


def torch_condition(model: DeepSynth, levels: np.ndarray, rows: np.ndarray, n: int):
    """The conditioning of the last n samples of `rows` (the lookahead after them), by torch."""
    with torch.no_grad():
        cond = model.condition_from_features([torch.from_numpy(levels)],
                                             torch.from_numpy(rows)[None], n)
        return cond[0].T.numpy()  # (n, C)


@pytest.mark.parametrize("preset", ["small", "small-keys"])
def test_equals_the_torch_computation(preset):
    model = model_of(preset)
    packed = keycond.pack(model)
    la = model.lookahead
    for seed in range(3):
        levels, rows = timeline(seed, 9000)
        n = 5000
        ref = torch_condition(model, levels, rows, n)
        got = keycond.condition(packed, levels, rows[la:], len(rows) - n - la, n)
        assert got.shape == ref.shape == (n, model.cfg.cond_channels)
        scale = np.abs(ref).max()
        assert scale > 0.1
        np.testing.assert_allclose(got, ref, atol=2e-5 * scale, rtol=0)


def test_bit_identical_whatever_the_chunks():
    model = model_of("small", seed=1)
    packed = keycond.pack(model)
    levels, rows = timeline(7, 12000)
    ctx, la = model.condition_context, model.lookahead
    start, total = 4000, 3000

    def piece(a: int, n: int) -> np.ndarray:  # samples [a, a + n), reading ctx before them
        return keycond.condition(packed, levels, rows[a - ctx + la : a + n + la], ctx, n)

    whole = piece(start, total)
    rng = np.random.default_rng(0)
    for sizes in ([1] * 40, [7, 1, 33, 2, 500], list(rng.integers(1, 200, 30))):
        got, a = [], start
        for n in sizes:
            n = min(int(n), start + total - a)
            if n == 0:
                break
            got.append(piece(a, n))
            a += n
        got = np.concatenate(got)
        assert np.array_equal(got, whole[: len(got)])


def test_written_into_an_array_it_equals_a_fresh_one():
    model = model_of("small", seed=2)
    packed = keycond.pack(model)
    levels, rows = timeline(3, 6000)
    la, n = model.lookahead, 2500
    fresh = keycond.condition(packed, levels, rows[la:], len(rows) - n - la, n)
    out = np.full((n, packed.channels), 7.0, np.float32)
    got = keycond.condition(packed, levels, rows[la:], len(rows) - n - la, n, out)
    assert got is out
    assert np.array_equal(out, fresh)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        keycond.condition(packed, levels, rows[la:], len(rows) - n - la, n, out[:, ::-1])
    with pytest.raises(ValueError, match="C-contiguous float32"):
        keycond.condition(packed, levels, rows[la:], len(rows) - n - la, n, out[:-1])


def test_generation_uses_it_for_key_features_only():
    assert keycond.supports(model_of("small")) and keycond.supports(model_of("small-keys"))
    for other in ("tiny", "small-video", "small-paper"):
        m = model_of(other)
        assert not keycond.supports(m)
        assert Conditioner(m, []).packed is None
        with pytest.raises(ValueError):
            keycond.pack(m)
    assert Conditioner(model_of("small"), []).packed is not None


def test_a_press_needs_a_frame_change_and_the_window_forgets_it():
    model = model_of("small", seed=2)
    packed = keycond.pack(model)
    levels = np.zeros((2, N_KEYS), np.float32)
    levels[1, 40] = 1.0
    window = packed.window
    rows = np.zeros(window + 400, np.int64)
    rows[100:] = 1  # key 40 pressed at sample 100 and held
    out = keycond.condition(packed, levels, rows, 0, len(rows))
    held_only = keycond.condition(packed, levels, np.ones_like(rows), 0, len(rows))
    # held from the start (no change seen): the frame's level term alone, constant
    assert np.array_equal(held_only, np.broadcast_to(held_only[:1], held_only.shape))
    # pressed at 100: the press terms until the window forgets it, then the held frame's value
    assert not np.allclose(out[100 : 100 + window], held_only[100 : 100 + window])
    assert np.array_equal(out[100 + window :], held_only[100 + window :])
    assert np.array_equal(out[:100], keycond.condition(packed, levels, rows[:100] * 0, 0, 100))
