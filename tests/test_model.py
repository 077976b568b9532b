"""The network: exact receptive fields, causality, one CNN pass per unique frame, presets, info."""

import dataclasses

import numpy as np
import pytest
import torch

from deepsynth.config import FrameCNNConfig, KeyFeatureConfig, ModelConfig, StackConfig
from deepsynth.errors import DeepSynthError
from deepsynth.model import PRESETS, DeepSynth, get_preset
from deepsynth.model.info import format_info_table, measure_receptive_field, model_info
from deepsynth.sim import keyboard

TINY_CNN = FrameCNNConfig(channels=(4,), input_pool=(3, 3), features=8)
LAYOUT = keyboard.layout()
TABLE_1 = {  # name: (layers, channels, l2)
    "paper-15x128-l2e-2": (15, 128, 1e-2),
    "paper-15x128": (15, 128, 1e-4),
    "paper-15x128-l2e-5": (15, 128, 1e-5),
    "paper-20x128": (20, 128, 1e-4),
    "paper-27x128": (27, 128, 1e-4),
    "paper-27x256": (27, 256, 1e-4),
    "paper-27x512": (27, 512, 1e-4),
}


def narrow(layers: int, enc_layers: int = 2, **kw) -> ModelConfig:
    return ModelConfig(
        cnn=TINY_CNN,
        encoder=StackConfig(layers=enc_layers, residual_channels=8, skip_channels=8),
        decoder=StackConfig(layers=layers, residual_channels=8, skip_channels=8),
        cond_channels=8,
        **kw,
    )


def batch(cfg: ModelConfig, B=2, T=300, N=5, seed=0):
    """Random unique frames and a piecewise-constant, increasing frame index per row (over the
    T audio samples and the model's lookahead after them)."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (N, *LAYOUT.shape), generator=g)
    frames = frames.to(torch.uint8)
    V = T + cfg.lookahead
    changes = torch.sort(torch.randint(0, V, (B, N - 1), generator=g), dim=1).values
    t = torch.arange(V)
    frame_index = (t[None, None, :] >= changes[:, :, None]).sum(1)  # 0..N-1
    audio = torch.randint(0, cfg.n_classes, (B, T), generator=g)
    return frames, frame_index, audio


def tiny_model(seed=0, **kw) -> DeepSynth:
    torch.manual_seed(seed)
    return DeepSynth(dataclasses.replace(get_preset("tiny").model, **kw), LAYOUT).eval()


@pytest.mark.parametrize("layers,expected", [(15, 575), (20, 1026), (27, 1534)])
def test_receptive_field_by_gradient_matches_paper(layers, expected):
    torch.manual_seed(0)
    model = DeepSynth(narrow(layers), LAYOUT).double()
    audio_rf, video_rf = measure_receptive_field(model)
    assert audio_rf == model.receptive_field == expected
    assert model.cfg.decoder.receptive_field == expected
    # held features reach the logits through the encoder, then every block but the first conv
    assert video_rf == model.video_receptive_field == 4 + expected - 1 - 1


def test_no_video_model_is_unconditioned():
    model = tiny_model(no_video=True)
    assert model.frame_cnn is None and model.encoder is None
    audio = torch.randint(0, 256, (2, 100))
    assert model(None, None, audio).shape == (2, 256, 100)
    assert measure_receptive_field(model.double())[1] == 0


def test_logits_shape_and_silence_padding():
    model = tiny_model()
    frames, index, audio = batch(model.cfg)
    logits = model(frames, index, audio)
    assert logits.shape == (2, 256, 300) and logits.dtype == torch.float32
    assert model.silence == 128  # mu-law class of a zero amplitude
    # the first prediction sees only silence: the same for any audio
    other = model(frames, index, torch.randint(0, 256, audio.shape))
    torch.testing.assert_close(logits[:, :, 0], other[:, :, 0], rtol=0, atol=0)


def test_causal_in_audio_and_video():
    model = tiny_model()
    frames, index, audio = batch(model.cfg, T=300)
    t0 = 150
    with torch.no_grad():
        base = model(frames, index, audio)
        later_audio = audio.clone()
        later_audio[:, t0:] = torch.randint(0, 256, (2, 300 - t0))
        a = model(frames, index, later_audio)
        later_video = index.clone()
        later_video[:, t0 + 1 :] = (later_video[:, t0 + 1 :] + 1) % frames.shape[0]
        v = model(frames, later_video, audio)
    # logits at t predict audio[t]: they may use audio < t and frames shown at <= t only
    assert torch.equal(a[:, :, : t0 + 1], base[:, :, : t0 + 1])
    assert torch.equal(v[:, :, : t0 + 1], base[:, :, : t0 + 1])
    assert not torch.allclose(a[:, :, t0 + 1 :], base[:, :, t0 + 1 :])  # not vacuous
    assert not torch.allclose(v[:, :, t0 + 1 :], base[:, :, t0 + 1 :])


def test_frame_cnn_runs_once_per_unique_frame():
    model = tiny_model()
    frames, index, audio = batch(model.cfg, B=3, T=2000, N=7)
    calls = []
    model.frame_cnn.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    model(frames, index, audio)
    assert calls == [7]


def test_presets_match_table_1():
    standins = {name for name in PRESETS if name.startswith("cpu-")}
    assert len(standins) == len(TABLE_1)  # one CPU stand-in per Table 1 row
    small = {"small", "small-video", "small-paper", "small-traces", "small-keys",
             "small-18x32", "small-12x48", "small-12x24", "small-pe85", "small-mol"}
    assert set(PRESETS) == set(TABLE_1) | small | {"tiny"} | standins
    for name, (layers, channels, l2) in TABLE_1.items():
        p = get_preset(name)
        assert p.l2 == l2
        for stack in (p.model.encoder, p.model.decoder):
            assert (stack.layers, stack.residual_channels) == (layers, channels)
            assert stack.kernel_size == 2 and stack.max_dilation == 256


def test_unknown_preset_lists_valid_names():
    with pytest.raises(DeepSynthError, match="paper-27x256.*small"):
        get_preset("paper-27x999")


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_and_runs(name):
    cfg = get_preset(name).model
    real = name in ("tiny", "small", "small-video", "small-traces", "paper-15x128")
    device = "cpu" if real else "meta"  # the big ones: shapes only
    with torch.device(device):
        model = DeepSynth(cfg, LAYOUT)
        frames, index, audio = (x.to(device) for x in batch(cfg, B=2, T=64, N=2))
    with torch.no_grad():
        logits = model(frames, index, audio)
    assert logits.shape == (2, model.output.n_params, 64)
    assert model.output.n_params == (30 if cfg.output == "mulaw-logistic" else 256)
    if real:
        assert torch.isfinite(logits).all()


def test_tiny_forward_on_two_by_2000_samples():
    model = tiny_model()
    frames, index, audio = batch(model.cfg, B=2, T=2000, N=10)
    with torch.no_grad():
        assert model(frames, index, audio).shape == (2, 256, 2000)


@pytest.mark.parametrize("name", ["small", "paper-27x512"])
def test_model_info(name):
    cfg = get_preset(name).model
    info = model_info(cfg, LAYOUT)
    assert info["rf_samples"] == cfg.decoder.receptive_field
    assert info["rf_ms"] == pytest.approx(1000 * info["rf_samples"] / 4000, abs=0.1)
    parts = info["params_frame_cnn"] + info["params_encoder"] + info["params_decoder"]
    assert info["params"] == parts > 0
    assert (
        info["macs_per_sample"] == info["macs_decoder_per_sample"] + info["macs_encoder_per_sample"]
    )
    assert info["train_memory_bytes"] > info["train_memory_activation_bytes"] > 0
    if name == "paper-27x512":
        assert info["rf_samples"] == 1534 and info["params"] > 50_000_000
    if name == "small":
        assert info["checkpoint_bytes_fp16"] <= 20_000_000
    table = format_info_table([{"preset": name, **info}])
    assert name in table and str(info["rf_samples"]) in table


# --- conditioning variants (encoder_hop, lookahead, key features) -----------------------------

KEYS = KeyFeatureConfig(enabled=True, window=64, taus_ms=(1.0, 10.0), harmonics=2, groups=4)


def variant(**kw) -> DeepSynth:
    torch.manual_seed(0)
    return DeepSynth(narrow(3, enc_layers=3, **kw), LAYOUT).eval()


def keyboard_video(T: int, presses: dict[int, list[tuple[int, int]]]) -> tuple[torch.Tensor,
                                                                              torch.Tensor]:
    """Frames and frame_index (1, T) for keys held over [on, off) sample spans."""
    states = np.zeros((T, 88), dtype=bool)
    for key, spans in presses.items():
        for on, off in spans:
            states[on:off, key] = True
    unique, index = np.unique(states, axis=0, return_inverse=True)
    frames = torch.from_numpy(keyboard.render(unique))
    return frames, torch.from_numpy(index.reshape(1, -1).astype(np.int64))


def test_key_levels_read_every_key_of_a_rendered_frame():
    model = variant(keys=KEYS)
    states = np.random.default_rng(0).random((20, 88)) < 0.3
    levels = model.keys.key_levels(torch.from_numpy(keyboard.render(states)))
    assert torch.equal(levels, torch.from_numpy(states).float())


def test_press_traces_start_at_the_press_decay_and_are_forgotten_after_the_window():
    model = variant(keys=dataclasses.replace(KEYS, harmonics=0))
    key, W = 40, KEYS.window
    frames, index = keyboard_video(300, {key: [(10, 30), (31, 100)], 3: [(0, 300)]})
    feats = model.keys.features(model.keys.key_levels(frames), index)[0]  # (F, T)
    level, fast = feats[key], feats[88 + key]  # level, trace with tau = 4 samples (1 ms)
    assert torch.equal(level[:10], torch.zeros(10)) and torch.equal(level[10:30], torch.ones(20))
    assert fast[10] == 1.0 and fast[9] == 0.0
    assert torch.allclose(fast[14], torch.exp(torch.tensor(-1.0)))  # 4 samples = one tau
    assert fast[31] == 1.0  # re-struck after one sample up: a new press
    assert fast[31 + W - 1] > 0 and fast[31 + W] == 0  # forgotten after the window
    assert level[100:].abs().sum() == 0
    # a key already down at the first sample has no press to remember
    assert feats[88 + 3].abs().sum() == 0 and feats[3].min() == 1.0


def test_oscillators_follow_the_key_pitch():
    model = variant(keys=dataclasses.replace(KEYS, oscillator_tau_ms=1e6, window=4000))
    key = 48  # A4, 440 Hz
    frames, index = keyboard_video(2000, {key: [(100, 2000)]})
    feats = model.keys.features(model.keys.key_levels(frames), index)[0]
    n_trace = 88 * (1 + len(KEYS.taus_ms))
    group = key * KEYS.groups // 88
    sine = feats[n_trace + group, 100:].numpy()  # first harmonic, sine, the key's register
    spectrum = np.abs(np.fft.rfft(sine))
    peak_hz = np.argmax(spectrum) * 4000 / len(sine)
    assert abs(peak_hz - 440) < 4000 / len(sine)
    assert feats[n_trace + group, :100].abs().sum() == 0  # silent before the press


@pytest.mark.parametrize("skip", [0, 1, 70, 250])
def test_key_features_press_by_press_equal_the_dense_computation(skip):
    """`forward` computes only where a press is remembered; `_dense_forward` every key at every
    sample: the same conditioning and the same gradient for the projection."""
    torch.manual_seed(0)
    keys = dataclasses.replace(KEYS, harmonics=3, groups=5)
    model = DeepSynth(narrow(3, keys=keys, learned_video=False), LAYOUT)
    rng = np.random.default_rng(skip)
    states = rng.random((30, 88)) < 0.15
    states[:, 40] = np.arange(30) % 2 == 0  # struck again and again: spans cut by the next press
    levels = model.keys.key_levels(torch.from_numpy(keyboard.render(states)))
    T = 600
    cuts = np.sort(rng.choice(np.arange(1, T), 29, replace=False))
    row = np.repeat(np.arange(30), np.diff(np.concatenate([[0], cuts, [T]])))
    index = torch.from_numpy(np.stack([row, row[::-1].copy(), np.zeros(T, np.int64)]))
    grad_out = torch.randn(3, 8, T - skip, generator=torch.Generator().manual_seed(1))
    out, grads = [], []
    for fn in (model.keys.forward, model.keys._dense_forward):
        model.zero_grad()
        y = fn(levels, index, skip)
        (y * grad_out).sum().backward()
        out.append(y.detach())
        grads.append(model.keys.proj.weight.grad.clone())
    assert out[0].shape == (3, 8, T - skip)
    assert (out[0] - out[1]).abs().max() < 1e-5 and out[1].std() > 0.1
    assert (grads[0] - grads[1]).abs().max() < 1e-3 * grads[1].abs().max()


@pytest.mark.parametrize("keys", [dataclasses.replace(KEYS, taus_ms=(), harmonics=0),
                                  dataclasses.replace(KEYS, taus_ms=(), harmonics=1)])
def test_key_features_edge_cases_equal_the_dense_computation(keys):
    """No press columns at all (levels only), and a level the dense computation reads as
    float32 (0.5 + 1e-9 is 0.5 there: not down)."""
    model = DeepSynth(narrow(3, keys=keys, learned_video=False), LAYOUT)
    levels = torch.zeros(2, 88, dtype=torch.float64)
    levels[1, 40] = 0.5 + 1e-9  # a press only where float32 reads the level as above 0.5
    levels[1, 41] = 1.0
    index = torch.zeros(1, 100, dtype=torch.long)
    index[0, 10:] = 1
    with torch.no_grad():
        dense = model.keys._dense_forward(levels, index, 0)
        assert torch.allclose(model.keys(levels, index), dense, atol=1e-6)


def test_cond_layers_condition_the_first_blocks_only():
    base = variant(keys=KEYS, learned_video=False)
    first = variant(keys=KEYS, learned_video=False, cond_layers=1)
    assert [b.cond is not None for b in first.decoder.stack.blocks] == [True, False, False]
    assert first.video_receptive_field == base.video_receptive_field  # block 0 reaches all
    audio_rf, video_rf = measure_receptive_field(first.double())
    assert (audio_rf, video_rf) == measure_receptive_field(base.double())
    weights = first.decoder.stack.cond_weights()
    assert weights.shape == (3, 16, 8) and weights[1:].abs().sum() == 0
    with pytest.raises(ValueError, match="cond_layers"):
        narrow(3, cond_layers=4)


@pytest.mark.parametrize("kw", [{"encoder_hop": 4}, {"lookahead": 5},
                                {"keys": KEYS, "encoder_hop": 4, "lookahead": 3}])
def test_variants_are_causal_up_to_their_lookahead(kw):
    model = variant(**kw)
    L, T, t0 = model.lookahead, 300, 151  # t0 + 1 starts an encoder block
    frames, index = keyboard_video(T + L, {k: [(20 * k, 20 * k + 50)] for k in range(30, 44)})
    audio = torch.randint(0, 256, (1, T), generator=torch.Generator().manual_seed(0))
    noise = torch.randint(0, 256, (1, 57, 780), generator=torch.Generator().manual_seed(1))
    frames = torch.cat([frames, noise.to(torch.uint8)])
    with torch.no_grad():
        base = model(frames, index, audio)
        later = index.clone()
        later[:, t0 + 1 :] = len(frames) - 1  # the video changes after sample t0
        v = model(frames, later, audio)
    # logits at t see the video up to t + lookahead only, and do see it
    assert torch.equal(v[:, :, : t0 + 1 - L], base[:, :, : t0 + 1 - L])
    assert not torch.allclose(v[:, :, t0 + 1 - L], base[:, :, t0 + 1 - L])


@pytest.mark.parametrize("kw", [{"encoder_hop": 4}, {"encoder_hop": 8, "lookahead": 3},
                                {"keys": KEYS, "encoder_hop": 8}])
def test_variant_video_receptive_field_by_gradient(kw):
    model = variant(**kw).double()
    audio_rf, video_rf = measure_receptive_field(model)
    assert audio_rf == model.receptive_field
    hop = model.cfg.encoder_hop
    learned = model.encoder.receptive_field * hop - 1 + model.decoder.cond_receptive_field
    assert video_rf == learned <= model.video_receptive_field


def test_extra_video_context_before_the_audio_is_read_not_scored():
    model = variant(keys=KEYS, encoder_hop=4, lookahead=2)
    V, T = model.video_context, 200
    frames, index = keyboard_video(V + T + 2, {k: [(9 * k - 250, 9 * k - 200)]
                                               for k in range(30, 50)})
    audio = torch.randint(0, 256, (1, T), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(frames, index, audio)
        assert logits.shape == (1, 256, T)
        # the first V columns are read as video only: the same conditioning as over V + T
        assert torch.equal(model.condition(frames, index, T),
                           model.condition(frames, index, V + T)[:, :, V:])
        changed = index.clone()
        changed[:, :V] = len(frames) - 1  # other video before the audio changes the logits
        assert not torch.allclose(model(frames, changed, audio)[:, :, 0], logits[:, :, 0])
        still = index.clone()
        still[:, :] = index[:, :1]  # no key pressed anywhere: the conditioning is a constant
        assert model(frames, still, audio).shape == (1, 256, T)
        with pytest.raises(ValueError, match="lookahead"):
            model(frames, index[:, : T + 1], audio)
