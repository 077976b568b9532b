"""The fused decoder kernel: a sequence's samples and logits are bit-identical alone and at any
position of a batch of any size, whatever the width of the groups the batch runs in (see
`group_width`), and its gate's tanh is within float32 rounding of the true one."""

import dataclasses

import numpy as np
import pytest
import torch
from numba import njit

from deepsynth.config import AudioConfig
from deepsynth.generate.fused import (
    FusedDecoderState,
    _gate,
    _tanh,
    group_width,
    pack_decoder,
)
from deepsynth.generate.simd import FAST_HALF
from deepsynth.model.deepsynth import DeepSynth
from deepsynth.model.output import MuLawSoftmax
from deepsynth.model.presets import get_preset
from deepsynth.sim import keyboard


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(3)
    return DeepSynth(get_preset("small").model, keyboard.layout()).eval()


def _run(model, cond, uniforms, rows, forced=None, width=None):
    state = FusedDecoderState(pack_decoder(model.decoder), model.output, len(rows), width)
    n = cond.shape[1]
    f = None if forced is None else forced[rows]
    classes, logits = state.run(cond[rows], n // 2, uniforms[rows], 0.9,
                                None if f is None else f[:, : n // 2], keep_logits=True)
    more, logits2 = state.run(cond[rows][:, n // 2 :], n - n // 2, uniforms[rows][:, n // 2 :],
                              0.9, None if f is None else f[:, n // 2 :], keep_logits=True)
    return np.concatenate([classes, more], 1), np.concatenate([logits, logits2], 1)


@pytest.mark.parametrize("teacher_forced", [False, True])
def test_a_sequence_is_bit_identical_alone_and_anywhere_in_a_batch(small, teacher_forced):
    channels = pack_decoder(small.decoder).cond_channels
    rng = np.random.default_rng(0)
    n = 700  # past the largest dilation (256) twice
    cond = (0.3 * rng.standard_normal((9, n, channels))).astype(np.float32)
    uniforms = rng.random((9, n, 1))
    forced = rng.integers(0, 256, (9, n)) if teacher_forced else None
    alone = {r: _run(small, cond, uniforms, [r], forced) for r in (0, 4, 8)}
    # (rows, group width): one group or several, full or padded, of every width the kernel
    # has code for (8, 4, 2, 1) and of widths it makes from them (3, 7: 2 + 1, 4 + 2 + 1)
    batches = (([0, 4], 2), ([0, 4], 1), ([4, 1, 2, 0], 4), ([4, 1, 2, 0], 3),
               ([8, 7, 6, 5, 4, 3, 2, 1], 8), ([2, 8, 4, 0, 6, 1], 4),
               ([8, 7, 6, 5, 4, 3, 2, 1, 0], 7), (list(range(9)) + [8, 4, 0] * 2 + [5], 8),
               ([3, 0, 8], None))
    for rows, width in batches:
        classes, logits = _run(small, cond, uniforms, rows, forced, width)
        for pos, r in enumerate(rows):
            if r in alone:
                assert np.array_equal(classes[pos], alone[r][0][0])
                assert np.array_equal(logits[pos], alone[r][1][0])
    assert len({alone[r][0][0].tobytes() for r in alone}) == 3  # the inputs do matter


def test_a_batch_is_split_into_groups_that_keep_every_core_busy():
    assert [group_width(b, 2) for b in (1, 2, 3, 4, 5, 8, 9, 16, 64)] == [1, 1, 2, 2, 4, 4, 8,
                                                                          8, 8]
    assert [group_width(b, 1) for b in (1, 2, 3, 8, 9)] == [1, 2, 4, 8, 8]
    assert group_width(8, 0) == 8  # no threads reported: one core


def test_the_gate_is_tanh_times_sigmoid_to_float32_precision():
    @njit
    def gates(a, b):
        t, g = np.empty_like(a), np.empty_like(a)
        for i in range(a.size):
            t[i] = _tanh(a[i])
            g[i] = _gate(a[i], b[i])
        return t, g

    a = np.linspace(-12, 12, 100_001).astype(np.float32)
    b = a[::-1].copy()
    t, g = gates(a, b)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    assert np.abs(t - np.tanh(a64)).max() < 1e-6
    assert np.abs(g - np.tanh(a64) / (1 + np.exp(-b64))).max() < 1e-6
    assert t.dtype == np.float32 and np.all(np.abs(t) <= 1)


def test_a_layer_without_a_projection_of_the_conditioning_is_skipped_and_that_changes_nothing():
    packed = pack_decoder(DeepSynth(get_preset("small").model, keyboard.layout()).decoder)
    # `small` reads the conditioning in its first three layers only
    assert packed.conditioned_layers.tolist() == [True] * 3 + [False] * 9
    rng = np.random.default_rng(1)
    n = 300
    cond = (0.3 * rng.standard_normal((2, n, packed.cond_channels))).astype(np.float32)
    uniforms = rng.random((2, n, 1))

    def run(packed, read_all=False):
        state = FusedDecoderState(packed, MuLawSoftmax(AudioConfig()), 2)
        if read_all:
            state.cond_on[:] = True
        return state.run(cond, n, uniforms, 0.9, keep_logits=True)

    skipped, every = run(packed), run(packed, read_all=True)
    assert np.array_equal(skipped[0], every[0]) and np.array_equal(skipped[1], every[1])
    weights = packed.cond_w.copy()
    weights[5] = 0.2 * rng.standard_normal(weights[5].shape)  # a sixth layer conditioned
    more = dataclasses.replace(packed, cond_w=weights)
    assert more.conditioned_layers.tolist() == [True] * 3 + [False, False, True] + [False] * 6
    assert not np.array_equal(run(more)[1], skipped[1])
    # the conditioning's shape is checked: the kernel indexes it unchecked
    state = FusedDecoderState(packed, MuLawSoftmax(AudioConfig()), 2)
    with pytest.raises(ValueError, match="cond must be"):
        state.run(cond[:, :, :-1], n, uniforms)
    with pytest.raises(ValueError, match="cond must be"):
        state.run(cond[:1], n, uniforms)


def test_weights_that_are_float16_values_stream_as_float16_with_the_same_bits():
    torch.manual_seed(5)
    model = DeepSynth(get_preset("small").model, keyboard.layout()).eval()
    packed32 = pack_decoder(model.decoder)
    assert not FusedDecoderState(packed32, model.output, 1).half  # float32 weights stay
    with torch.no_grad():  # as the shipped checkpoint's (stored in float16)
        for p in model.parameters():
            p.copy_(p.half().float())
    packed = pack_decoder(model.decoder)
    rng = np.random.default_rng(2)
    n = 600
    cond = (0.3 * rng.standard_normal((3, n, packed.cond_channels))).astype(np.float32)
    uniforms = rng.random((3, n, 1))
    for batch, width in ((1, None), (3, 2), (3, 4)):
        runs = []
        for half in (None if FAST_HALF else True, False):
            state = FusedDecoderState(packed, model.output, batch, width, half=half)
            assert state.half is (half is not False)
            runs.append(state.run(cond[:batch], n, uniforms[:batch], 0.9, keep_logits=True))
        (c16, l16), (c32, l32) = runs
        assert np.array_equal(c16, c32) and np.array_equal(l16, l32)
        assert len(np.unique(c16)) > 10
