"""The output ablations of issue 17: pre-emphasis of the modelled audio (undone on output, chunk
after chunk, the same whatever the chunks, in every generator) and the discretized mixture of
logistics over the mu-law classes (a proper distribution over the classes; its numba and torch
samplers draw alike and in proportion; that it trains, scores and generates is checked beside
the other distributions in tests/test_extension_points.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from numba import njit

from deepsynth.api import array_source, checkpoint_path
from deepsynth.audio import PcmStream, deemphasize, float_to_int16, preemphasize
from deepsynth.checkpoint import load_checkpoint
from deepsynth.config import AudioConfig, ModelConfig
from deepsynth.generate import packed
from deepsynth.generate.generator import (
    Window,
    generate,
)
from deepsynth.generate.live import ChangesInput, LiveGenerator, Session, SimulatedClock
from deepsynth.model.deepsynth import DeepSynth
from deepsynth.model.output import MuLawLogistic, MuLawSoftmax
from deepsynth.sim import keyboard

# --- pre-emphasis ------------------------------------------------------------------------


def test_deemphasis_inverts_preemphasis_and_any_chunking_gives_the_same_samples():
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 3000)
    y = preemphasize(x, 0.85)
    assert y[0] == x[0] and np.allclose(y[1:], x[1:] - 0.85 * x[:-1])
    back, _ = deemphasize(y, 0.85)
    np.testing.assert_allclose(back, x, atol=1e-12)
    t = torch.from_numpy(x)[None]
    assert torch.allclose(preemphasize(t, 0.85)[0], torch.from_numpy(y))
    assert preemphasize(x, 0.0) is x
    levels = MuLawSoftmax(AudioConfig()).dequantize(np.arange(256))
    classes = np.random.default_rng(1).integers(0, 256, 5000)
    whole = PcmStream(levels, 0.85)(classes)
    stream = PcmStream(levels, 0.85)
    cuts = [0, 1, 2, 40, 41, 1000, 3333, 5000]
    parts = np.concatenate([stream(classes[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)])
    assert np.array_equal(parts, whole)
    assert np.array_equal(whole, float_to_int16(deemphasize(levels[classes], 0.85)[0]))
    assert np.array_equal(PcmStream(levels)(classes), float_to_int16(levels[classes]))


def test_the_output_distribution_preemphasises_on_encode_and_undoes_it_on_decode():
    plain, pe = MuLawSoftmax(AudioConfig()), MuLawSoftmax(AudioConfig(), 0.85)
    x = (0.4 * np.sin(np.arange(4000) * 2 * np.pi * 220 / 4000)).astype(np.float32)
    assert np.array_equal(pe.encode(x), plain.encode(preemphasize(x, 0.85)))
    assert np.array_equal(pe.encode(torch.from_numpy(x)).numpy(), pe.encode(x))
    back = pe.decode(pe.encode(x))
    assert np.abs(back - x).max() < 0.05  # quantization error through the de-emphasis
    assert np.array_equal(pe.decode(torch.from_numpy(pe.encode(x))).numpy(), back)
    assert pe.silence == plain.silence
    with pytest.raises(ValueError, match="preemphasis"):
        ModelConfig(preemphasis=1.0)


@pytest.fixture(scope="module")
def emphasised():
    """The shipped model's weights in a model that de-emphasises by 0.85 on output."""
    path = checkpoint_path(None)
    model, _ = load_checkpoint(path)
    pe = DeepSynth(dataclasses.replace(model.cfg, preemphasis=0.85), model.layout)
    pe.load_state_dict(model.state_dict())
    return model.eval(), pe.eval()


def piece(n: int = 8000):
    """Key changes with presses, releases and chords: (starts, states, n) and its source."""
    rng = np.random.default_rng(5)
    starts = np.r_[0, np.sort(rng.choice(np.arange(1, n - 1000), 20, replace=False))]
    states = rng.random((len(starts), 88)) < 0.05
    states[0] = False
    return (starts, states, n), array_source(states, starts, 4000, keyboard.layout(), n)


class Collect:
    def __init__(self):
        self.blocks = []

    def write(self, pcm):
        self.blocks.append(pcm.copy())


def test_an_emphasised_model_generates_the_same_classes_de_emphasised_everywhere(emphasised):
    """Same weights, same classes: the emphasised model's audio is the plain one's classes run
    through the de-emphasis; the torch generator, the packed one (any chunking) and live play
    give it sample for sample."""
    plain, pe = emphasised
    (starts, states, n), src = piece()
    a = generate(plain, [src], temperature=0.6, seed=2, floor=0.005)[0]
    b = generate(pe, [src], temperature=0.6, seed=2, floor=0.005)[0]
    table = float_to_int16(plain.output.dequantize(np.arange(256)))
    classes = np.array([{v: c for c, v in enumerate(table.tolist())}[v] for v in a.tolist()])
    assert np.array_equal(b, PcmStream(plain.output.dequantize(np.arange(256)), 0.85)(classes))
    assert not np.array_equal(a, b) and np.abs(b.astype(int)).max() > 0
    pack = packed.pack_model(pe, "0" * 64)
    for chunk in (None, 333):
        got = packed.generate_packed(pack, [src], [Window(0, n)], 0.6, 2, chunk=chunk,
                                     floor=0.005)[0]
        assert np.array_equal(got, b)
    out = Collect()
    with LiveGenerator(pe, 0.6, 2, block=7, floor=0.005) as gen:
        Session(gen, ChangesInput(starts, states, n), [out], SimulatedClock()).run()
    assert np.array_equal(np.concatenate(out.blocks)[:n], b)


# --- the mixture of logistics ---------------------------------------------------------------

MIX = MuLawLogistic(AudioConfig())
MIX_ONE = njit(MuLawLogistic.sample_one)


def mix_params(rows: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    M = MIX.components
    return np.concatenate([rng.normal(0, 1.5, (rows, M)), rng.uniform(-0.9, 0.9, (rows, M)),
                           rng.uniform(-5.0, -1.5, (rows, M))], axis=1).astype(np.float32)


def class_probs(params: np.ndarray) -> np.ndarray:
    """(rows, 256): every class's probability, from the loss."""
    p = torch.from_numpy(params)[:, :, None].expand(-1, -1, 256)
    targets = torch.arange(256)[None].expand(len(params), -1)
    return torch.exp(-MIX.loss(p, targets, "none")).numpy()


def test_the_mixture_is_a_distribution_over_the_classes():
    probs = class_probs(mix_params(50))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    assert MIX.n_params == 30 and MIX.n_uniforms == 2 and MIX.silence == 128
    # one narrow component at a class's centre: its bin holds the logistic's mass over +-1/255
    p = np.zeros((1, 30), np.float32)
    p[0, :10] = -20.0
    p[0, 0], p[0, 10], p[0, 20] = 0.0, 100 * 2 / 255 - 1, -7.0
    inside = 2.0 / (1.0 + np.exp(-(1 / 255) / np.exp(-7.0))) - 1.0  # 0.973
    assert abs(class_probs(p)[0, 100] - inside) < 1e-3
    assert MIX.most_likely(torch.from_numpy(p)[:, :, None])[0, 0] == 100


def draw(fn, params, uniforms, inv_temp, floor):
    return np.array([fn(r, u, inv_temp, floor) for r, u in zip(params, uniforms, strict=True)])


@pytest.mark.parametrize("inv_temp,floor", [(1.0, 0.0), (1.6, 0.0), (1.0, 0.01), (0.0, 0.0)])
def test_mixture_samplers_agree_and_draw_in_proportion(inv_temp, floor):
    params = mix_params(400, 1)
    u = np.random.default_rng(2).random((400, 2))
    a = draw(MIX_ONE, params, u, inv_temp, floor)
    b = MIX.sample(torch.from_numpy(params), torch.from_numpy(u), torch.tensor(inv_temp),
                   torch.tensor(floor)).numpy()
    assert np.mean(a == b) > 0.99
    if inv_temp == 0:
        assert np.array_equal(a, MIX.most_likely(torch.from_numpy(params)[:, :, None])[:, 0])
    if inv_temp == 1.0 and floor == 0.0:  # one row drawn many times: its class probabilities
        row = np.broadcast_to(params[0], (40_000, 30))
        many = draw(MIX_ONE, row, np.random.default_rng(3).random((40_000, 2)), 1.0, 0.0)
        freq = np.bincount(many, minlength=256) / len(many)
        np.testing.assert_allclose(freq, class_probs(params[:1])[0], atol=0.01)


def test_packs_of_an_emphasised_and_of_a_mixture_model_round_trip(emphasised, tmp_path):
    """Both ablations pack, save, load back (their shapes checked) and generate the same."""
    _, pe = emphasised
    mix = DeepSynth(dataclasses.replace(pe.cfg, preemphasis=0.0, output="mulaw-logistic"),
                    pe.layout).eval()
    (_, _, n), src = piece(3000)
    for model in (pe, mix):
        pack = packed.pack_model(model, "1" * 64)
        packed.save(pack, tmp_path / "p.npz")
        back = packed.load(tmp_path / "p.npz", "1" * 64)
        assert back.output == model.cfg.output and back.preemphasis == model.cfg.preemphasis
        a, b = (packed.generate_packed(p, [src], [Window(0, n)], 0.6, 4)[0] for p in (pack, back))
        assert np.array_equal(a, b) and np.array_equal(a, generate(model, [src], [Window(0, n)],
                                                                   0.6, 4)[0])
