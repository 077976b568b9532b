"""The network: exact receptive fields, causality, one CNN pass per unique frame, presets, info."""

import dataclasses

import pytest
import torch

from deepsynth.config import FrameCNNConfig, ModelConfig, StackConfig
from deepsynth.errors import DeepSynthError
from deepsynth.model import PRESETS, DeepSynth, get_preset, silence_class
from deepsynth.model.info import format_info_table, measure_receptive_field, model_info

TINY_CNN = FrameCNNConfig(channels=(4,), input_pool=(3, 3), features=8)
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
    """Random unique frames and a piecewise-constant, increasing frame index per row."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (N, cfg.frame_height, cfg.frame_width), generator=g)
    frames = frames.to(torch.uint8)
    changes = torch.sort(torch.randint(0, T, (B, N - 1), generator=g), dim=1).values
    t = torch.arange(T)
    frame_index = (t[None, None, :] >= changes[:, :, None]).sum(1)  # 0..N-1
    audio = torch.randint(0, cfg.n_classes, (B, T), generator=g)
    return frames, frame_index, audio


def tiny_model(seed=0, **kw) -> DeepSynth:
    torch.manual_seed(seed)
    return DeepSynth(dataclasses.replace(get_preset("tiny").model, **kw)).eval()


@pytest.mark.parametrize("layers,expected", [(15, 575), (20, 1026), (27, 1534)])
def test_receptive_field_by_gradient_matches_paper(layers, expected):
    torch.manual_seed(0)
    model = DeepSynth(narrow(layers)).double()
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
    assert silence_class(model.cfg.audio) == 128
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


def test_step_equals_forward_for_the_whole_model():
    model = tiny_model()
    frames, index, audio = batch(model.cfg, B=2, T=120)
    with torch.no_grad():
        full = model(frames, index, audio)
        features = model.frame_features(frames)
        state = model.init_state(2)
        previous = torch.full((2,), model.silence)
        steps = []
        for t in range(audio.shape[1]):
            steps.append(model.step(previous, features[index[:, t]], state))
            previous = audio[:, t]
    assert (torch.stack(steps, dim=-1) - full).abs().max() <= 1e-5


def test_presets_match_table_1():
    standins = {name for name in PRESETS if name.startswith("cpu-")}
    assert len(standins) == len(TABLE_1)  # one CPU stand-in per Table 1 row
    assert set(PRESETS) == set(TABLE_1) | {"small", "tiny"} | standins
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
    real = name in ("tiny", "small", "paper-15x128")
    device = "cpu" if real else "meta"  # the big ones: shapes only
    with torch.device(device):
        model = DeepSynth(cfg)
        frames, index, audio = (x.to(device) for x in batch(cfg, B=2, T=64, N=2))
    with torch.no_grad():
        logits = model(frames, index, audio)
    assert logits.shape == (2, 256, 64)
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
    info = model_info(cfg)
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
