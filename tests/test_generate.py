import dataclasses
import wave

import numpy as np
import pytest
import torch

from deepsynth.audio import StreamingWavWriter
from deepsynth.generate.core import chunk_starts
from deepsynth.generate.generator import (
    Conditioner,
    Window,
    frame_features,
    generate,
    score_incremental,
)
from deepsynth.generate.sources import VideoSource
from deepsynth.model.deepsynth import DeepSynth
from deepsynth.model.presets import get_preset
from deepsynth.sim import keyboard


def scaled(m: DeepSynth) -> DeepSynth:
    with torch.no_grad():  # larger random weights than the init, so differences would show
        for p in m.parameters():
            p.mul_(1.5)
    return m


def model(name: str, seed: int = 0) -> DeepSynth:
    torch.manual_seed(seed)
    return scaled(DeepSynth(get_preset(name).model, keyboard.layout()).eval())


def random_video(n_frames: int, n_samples: int, seed: int = 0) -> VideoSource:
    rng = np.random.default_rng(seed)
    states = rng.random((n_frames, 88)) < 0.1
    starts = np.r_[0, np.sort(rng.choice(np.arange(1, n_samples), n_frames - 1, replace=False))]

    def frames():
        yield keyboard.render(states)

    return VideoSource(
        path=None,
        kind="test",
        starts=starts.astype(np.int64),
        n_samples=n_samples,
        sample_rate=4000,
        frames_fn=frames,
    )


@pytest.mark.parametrize("name", ["tiny", "small-paper", "small", "small-video", "small-traces",
                                  "small-keys", "paper-15x128"])
def test_cached_step_logits_equal_parallel_forward(name):
    m = model(name)
    T = 3 * m.receptive_field + 100  # over three receptive fields
    src = random_video(12, T)
    frames = torch.from_numpy(keyboard.render(np.random.default_rng(1).random((12, 88)) < 0.1))
    index = torch.from_numpy(src.frame_index(0, T + m.lookahead))[None].repeat(2, 1)
    audio = torch.randint(0, 256, (2, T), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        parallel = m(frames, index, audio)
    cached = score_incremental(m, frames, index, audio, chunk=777)
    assert cached.shape == parallel.shape
    assert (cached - parallel).abs().max().item() <= 1e-4
    assert parallel.std() > 0.1  # the comparison is not between near-constant outputs


@pytest.mark.slow
@pytest.mark.parametrize("name", ["paper-27x256"])
def test_cached_step_exact_for_big_presets(name):
    test_cached_step_logits_equal_parallel_forward(name)


LONG_WINDOW = dataclasses.replace(  # the key window, not the encoder, sets the context
    get_preset("small").model,
    keys=dataclasses.replace(get_preset("small").model.keys, window=5000))


@pytest.mark.parametrize("name", ["small-paper", "small", "small-video", "small-traces",
                                  "small-keys", LONG_WINDOW])
def test_chunked_conditioning_equals_the_conditioning_of_the_whole_piece(name):
    m = model(name) if isinstance(name, str) else scaled(DeepSynth(name, keyboard.layout()).eval())
    T = 12_000  # about three conditioning contexts of the variants
    src = random_video(60, T)
    feats = frame_features(m, src)
    cond = Conditioner(m, [feats])  # its features end with the empty keyboard's row
    # the whole piece, after enough empty keyboard (a whole number of encoder blocks)
    hop = m.condition_hop
    pre = m.condition_context + (-m.condition_context) % hop
    index = np.concatenate([np.full(pre, len(feats[0])), src.frame_index(0, T + m.lookahead)])
    with torch.no_grad():
        full = m.condition_from_features(cond.features[0], torch.from_numpy(index)[None],
                                         pre + T)[0, :, pre:]
    for start, n in [(0, 300), (1003, 700), (5000, 1000), (10_999, 1001)]:
        chunk = cond.chunk([src], [start], n)[0]  # (n, C)
        assert chunk.shape == (n, m.cfg.cond_channels)
        np.testing.assert_allclose(chunk, full[:, start : start + n].T.numpy(), atol=1e-5)


def test_a_piece_starts_from_the_empty_keyboard():
    """A key down at sample 0 is a press, as in training items: the conditioning of a piece
    that starts with the key down equals that of the same piece after some empty keyboard."""
    m = model("small")
    states = np.zeros((2, 88), dtype=bool)
    states[0, 40] = True  # down from sample 0 to 2000
    empty = np.zeros((1, 88), dtype=bool)
    delay = 2 * (m.condition_context + 1)  # the chunk then sees only real video before it
    at_start = VideoSource(None, "test", np.array([0, 2000]), 4000, 4000,
                           lambda: iter([keyboard.render(states)]))
    later = VideoSource(None, "test", np.array([0, delay, delay + 2000]), delay + 4000, 4000,
                        lambda: iter([keyboard.render(np.concatenate([empty, states]))]))
    assert delay % m.cfg.encoder_hop == 0
    a = Conditioner(m, [frame_features(m, at_start)]).chunk([at_start], [0], 3000)
    b = Conditioner(m, [frame_features(m, later)]).chunk([later], [delay], 3000)
    np.testing.assert_allclose(a, b, atol=1e-5)
    # without the empty keyboard before it, the key would have no press to remember
    levels = m.keys.key_levels(torch.from_numpy(keyboard.render(states)))
    no_press = m.keys.features(levels, torch.zeros(1, 10, dtype=torch.long))[0]
    assert no_press[88 + 40].abs().sum() == 0


def test_same_seed_same_audio_whatever_the_chunk_or_batch():
    m = model("tiny")
    a, b = random_video(6, 3000, 0), random_video(9, 2500, 1)
    alone = generate(m, [a], seed=7, chunk=500)[0]
    batched = generate(m, [a, b], seed=7, chunk=333)
    assert np.array_equal(alone, batched[0])
    assert len(batched[1]) == 2500
    other = generate(m, [a], seed=8, chunk=500)[0]
    assert not np.array_equal(alone, other)
    assert alone.dtype == np.int16 and len(alone) == 3000


def test_the_default_chunks_start_short_and_change_no_sample():
    assert chunk_starts(5000, 4000, ramp=True) == [0, 256, 768, 1792, 3840]
    assert chunk_starts(5000, 4000) == [0, 4000]
    assert chunk_starts(100, 64, ramp=True) == [0, 64] and chunk_starts(0, 64) == []
    m = model("tiny")
    a, b = random_video(6, 3000, 0), random_video(9, 2500, 1)
    got = []
    ramped = generate(m, [a, b], seed=[7, 8], on_chunk=lambda pieces: got.append(len(pieces[0])))
    assert got[:4] == [256, 512, 1024, 1208]  # the first 256 samples come on their own
    fixed = generate(m, [a, b], seed=[7, 8], chunk=1000)
    assert all(np.array_equal(x, y) for x, y in zip(ramped, fixed, strict=True))


def test_temperature_zero_is_greedy_and_window_is_respected():
    m = model("tiny")
    src = random_video(6, 4000)
    g1 = generate(m, [src], [Window(1000, 1500)], temperature=0.0, seed=1)[0]
    g2 = generate(m, [src], [Window(1000, 1500)], temperature=0.0, seed=2)[0]
    assert np.array_equal(g1, g2) and len(g1) == 1500


def test_streaming_chunks_match_the_result():
    m = model("tiny")
    src = random_video(5, 2000)
    got = []
    out = generate(m, [src], seed=3, chunk=300, on_chunk=lambda pieces: got.append(pieces[0]))
    assert len(got) == 7 and np.array_equal(np.concatenate(got), out[0])


def test_model_without_video_generates():
    cfg = get_preset("tiny").model
    from dataclasses import replace

    m = DeepSynth(replace(cfg, no_video=True)).eval()
    assert len(generate(m, [random_video(3, 800)], seed=0)[0]) == 800


def _wav_frames(path) -> int:
    with wave.open(str(path)) as w:
        return w.getnframes()


def test_streaming_wav_keeps_partial_audio_on_ctrl_c(tmp_path):
    path = tmp_path / "out.wav"
    with pytest.raises(KeyboardInterrupt), StreamingWavWriter(path, 4000) as w:
        w.write(np.ones(1000, np.int16))
        assert _wav_frames(next(tmp_path.glob(".out.wav.*"))) == 1000  # valid while writing
        raise KeyboardInterrupt
    assert _wav_frames(path) == 1000
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]


def test_streaming_wav_removed_on_error(tmp_path):
    with pytest.raises(RuntimeError), StreamingWavWriter(tmp_path / "x.wav", 4000) as w:
        w.write(np.ones(10, np.int16))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def _fused_vs_graphed(device: str, use_graph: bool | None):
    from deepsynth.generate.fused import FusedDecoderState, pack_decoder
    from deepsynth.generate.graphed import GraphedDecoderState

    m = model("small")
    B, n = 2, 600
    rng = np.random.default_rng(0)
    cond = (0.3 * rng.standard_normal((B, n, m.cfg.cond_channels))).astype(np.float32)
    forced = rng.integers(0, 256, (B, n))
    fused = FusedDecoderState(pack_decoder(m.decoder), m.output, B)
    graphed = GraphedDecoderState(m.decoder, m.output, B, 400, device, use_graph)
    _, want = fused.run(cond, n, forced=forced, keep_logits=True)
    _, a = graphed.run(cond[:, :400], 400, forced=forced[:, :400], keep_logits=True)
    _, b = graphed.run(cond[:, 400:], 200, forced=forced[:, 400:], keep_logits=True)
    assert np.abs(np.concatenate([a, b], 1) - want).max() <= 1e-4
    u = rng.random((B, 300, 1))
    fused2 = FusedDecoderState(pack_decoder(m.decoder), m.output, B)
    graphed2 = GraphedDecoderState(m.decoder, m.output, B, 300, device, use_graph)
    c1, _ = fused2.run(cond[:, :300], 300, u, temperature=0.9)
    c2, _ = graphed2.run(cond[:, :300], 300, u, temperature=0.9)
    assert (c1 == c2).mean() > 0.99  # same draws; a rare float tie may differ


def test_torch_step_equals_fused_kernel_on_cpu():
    _fused_vs_graphed("cpu", use_graph=False)


@pytest.mark.gpu
def test_cuda_graph_step_equals_fused_kernel():
    _fused_vs_graphed("cuda", use_graph=True)
