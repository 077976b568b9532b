"""The sample rate end to end: presets give their spans in milliseconds and resolve them at a
store's rate (exactly today's configs at 4 kHz), `info` costs per second of audio, and at 16 kHz a
store builds, the tiny preset trains on it, and `synthesize`, `evaluate` and `demo` run on what it
trained (without the transcriber)."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from midi_factory import TPB, make_midi, save

from deepsynth.audio import read_wav
from deepsynth.checkpoint import load_checkpoint, read_payload, save_checkpoint
from deepsynth.cli import main
from deepsynth.cli.generate import default_checkpoint
from deepsynth.config import AudioConfig, ModelConfig, from_dict
from deepsynth.data.splits import split_of
from deepsynth.data.store import open_song, read_manifest, song_dir
from deepsynth.evaluate import transcriber as transcribe_mod
from deepsynth.model.deepsynth import DeepSynth
from deepsynth.model.presets import PRESETS, Durations, Preset, get_preset, samples
from deepsynth.sim import keyboard

SR = 16000

# today's (4 kHz) spans of every preset, in samples: (lookahead, encoder_hop, keys.window)
AT_4KHZ = {name: (0, 1, 2048) for name in PRESETS}
AT_4KHZ |= {"small": (15, 1, 2048), "small-keys": (15, 1, 2048), "small-video": (15, 16, 2048),
            "small-traces": (15, 16, 2048), "small-18x32": (15, 1, 2048),
            "small-12x48": (15, 1, 2048), "small-12x24": (15, 1, 2048), "small-pe85": (15, 1, 2048),
            "small-mol": (15, 1, 2048)}


# --- presets in milliseconds ----------------------------------------------------------------


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_at_the_default_rate_is_todays_config(name):
    preset = get_preset(name)
    cfg = preset.model_for(AudioConfig())
    assert cfg == preset.model and cfg.audio == AudioConfig()
    assert (cfg.lookahead, cfg.encoder_hop, cfg.keys.window) == AT_4KHZ[name]
    assert preset.durations is not None  # every shipped preset declares its spans in ms


def test_the_shipped_checkpoint_holds_the_small_preset_at_4khz():
    config = from_dict(ModelConfig, read_payload(default_checkpoint())["config"])
    assert config == get_preset("small").model


def test_spans_resolve_to_samples_at_the_stores_rate():
    video = get_preset("small-video")
    at16 = video.model_for(AudioConfig(sample_rate=SR))
    assert (at16.lookahead, at16.encoder_hop, at16.keys.window) == (60, 64, 8192)
    assert at16.audio.sample_rate == SR
    # the architecture stays in samples: same layers, dilations and widths at every rate
    at4 = video.model
    assert at16.decoder == at4.decoder and at16.encoder == at4.encoder and at16.cnn == at4.cnn
    assert dataclasses.replace(at16, audio=at4.audio, lookahead=15, encoder_hop=16,
                               keys=at4.keys) == at4
    # rounded to whole samples; the hop is at least one sample
    at22 = video.model_for(AudioConfig(sample_rate=22050))
    assert (at22.lookahead, at22.encoder_hop, at22.keys.window) == (83, 88, 11290)
    assert video.model_for(AudioConfig(sample_rate=100)).encoder_hop == 1
    assert get_preset("paper-15x128").model_for(AudioConfig(sample_rate=SR)).encoder_hop == 1
    assert samples(3.75, 4000) == 15 and samples(0.125, 4000) == 1 and samples(0.1, 4000) == 0


def test_a_preset_without_durations_keeps_its_samples_at_any_rate():
    cfg = dataclasses.replace(get_preset("tiny").model, encoder_hop=4, lookahead=3)
    variant = Preset(cfg, 1e-4, "test variant")
    at16 = variant.model_for(AudioConfig(sample_rate=SR))
    assert (at16.lookahead, at16.encoder_hop) == (3, 4) and at16.audio.sample_rate == SR
    assert variant.model == cfg
    ms = Preset(cfg, 1e-4, "in ms", Durations(lookahead_ms=1.0, encoder_hop_ms=1.0))
    assert (ms.model.lookahead, ms.model.encoder_hop) == (4, 4)
    assert (ms.model_for(AudioConfig(sample_rate=SR)).lookahead, ms.model_for(
        AudioConfig(sample_rate=SR)).encoder_hop) == (16, 16)


# --- info per second of audio ---------------------------------------------------------------


def _info(capsys, *args: str) -> dict:
    assert main(["info", "--preset", "tiny", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_info_reports_costs_per_second_at_the_presets_rate(capsys):
    at4, at16 = _info(capsys), _info(capsys, "--sample-rate", str(SR))
    assert at4["sample_rate"] == 4000 and at16["sample_rate"] == SR
    for info in (at4, at16):
        rate = info["sample_rate"]
        assert info["macs_per_second"] == rate * info["macs_per_sample"] > 0
        assert info["macs_decoder_per_second"] == rate * info["macs_decoder_per_sample"]
        assert info["macs_encoder_per_second"] == rate * info["macs_encoder_per_sample"]
        assert info["rf_ms"] == pytest.approx(1000 * info["rf_samples"] / rate, abs=0.1)
    # the same network per sample; four times the samples per second; a quarter of the ms
    assert at16["macs_per_sample"] == at4["macs_per_sample"]
    assert at16["macs_per_second"] == 4 * at4["macs_per_second"]
    assert at16["rf_samples"] == at4["rf_samples"]
    assert at16["train_batch"].startswith(f"3x{5 * SR + at16['rf_samples']} samples")


def test_info_table_shows_the_rate_and_refuses_a_bad_one(capsys):
    assert main(["info", "--preset", "tiny"]) == 0
    assert "MMAC/s" in capsys.readouterr().out
    assert main(["info", "--preset", "tiny", "--sample-rate", "0"]) == 2
    err = capsys.readouterr().err
    assert "--sample-rate" in err and "must be" in err


# --- 16 kHz end to end ----------------------------------------------------------------------


def _song(pitches: list[int]):
    """Quarter notes at 120 bpm (0.5 s each), then the 1 s tail."""
    return make_midi([(p, 90, i * TPB, (i + 1) * TPB) for i, p in enumerate(pitches)])


SONGS = {"a": [60, 64, 67, 72] * 3, "b": [48, 55, 52, 59] * 3, "c": [62, 65, 69, 74, 71] * 3}


def _seed_with_every_split() -> int:
    """A split seed that puts one song in each of train, val and test."""
    return next(s for s in range(1000)
                if sorted(split_of(name, s) for name in SONGS) == ["test", "train", "val"])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus16")
    for name, pitches in SONGS.items():
        save(_song(pitches), folder / f"{name}.mid")
    return folder


@pytest.fixture(scope="module")
def store16(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("store16") / "store"
    argv = ["data", "build", "--corpus", str(corpus), "--out", str(out), "--sample-rate",
            str(SR), "--seed", str(_seed_with_every_split()), "-q"]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def trained16(store16, tmp_path_factory):
    """The tiny preset trained for 2 steps on the 16 kHz store: its last checkpoint."""
    out = tmp_path_factory.mktemp("run16") / "run"
    argv = ["train", "--data", str(store16), "--preset", "tiny", "--out", str(out),
            "--max-steps", "2", "--window-seconds", "1", "--overlap-seconds", "0",
            "--val-segments", "2", "--val-every", "2", "--threads", "1", "-q",
            "--no-tensorboard"]
    assert main(argv) == 0
    return out / "last.pt"


@pytest.fixture
def no_transcriber(monkeypatch):
    def missing():
        raise ImportError("No module named 'basic_pitch'", name="basic_pitch")

    monkeypatch.setattr(transcribe_mod, "_import_basic_pitch", missing)


def test_a_16khz_store_builds(store16):
    manifest = read_manifest(store16)
    assert manifest["sample_rate"] == SR and manifest["sim_config"]["audio"]["sample_rate"] == SR
    assert sorted(s["split"] for s in manifest["songs"]) == ["test", "train", "val"]
    for row in manifest["songs"]:
        song = open_song(song_dir(store16, row["id"]))
        seconds = len(SONGS[row["id"]]) * 0.5 + 1.0  # the notes and the 1 s tail
        assert song.sample_rate == SR and song.n_samples == row["n_samples"] == seconds * SR
        assert np.abs(np.asarray(song.audio)).max() > 1000


def test_the_tiny_preset_trains_on_a_16khz_store_at_its_rate(trained16):
    model, payload = load_checkpoint(trained16)
    assert model.cfg == get_preset("tiny").model_for(AudioConfig(sample_rate=SR))
    assert payload["extra"]["step"] == 2


def test_synthesize_at_16khz(trained16, corpus, tmp_path, capsys):
    # a video simulated at 16 kHz, and a MIDI file the model's rate simulates
    assert main(["simulate", str(corpus / "a.mid"), "-o", str(tmp_path / "sim"),
                 "--sample-rate", str(SR), "-q"]) == 0
    truth, rate = read_wav(tmp_path / "sim" / "a.wav")
    assert rate == SR and len(truth) == 7 * SR  # 6 s of notes + 1 s tail
    video = tmp_path / "sim" / "a.mp4"
    assert main(["synthesize", str(video), "-o", str(tmp_path / "v.wav"), "--checkpoint",
                 str(trained16), "--duration", "1.5", "-q"]) == 0
    audio, rate = read_wav(tmp_path / "v.wav")
    assert rate == SR and len(audio) == 1.5 * SR
    assert main(["synthesize", str(corpus / "a.mid"), "-o", str(tmp_path / "m.wav"),
                 "--checkpoint", str(trained16), "--start", "5", "-q"]) == 0
    audio, rate = read_wav(tmp_path / "m.wav")
    assert rate == SR and len(audio) == len(truth) - 5 * SR  # to the end of the piece


def test_evaluate_at_16khz(trained16, store16, tmp_path, no_transcriber, capsys):
    out = tmp_path / "report"
    assert main(["evaluate", "--checkpoint", str(trained16), "--data", str(store16),
                 "--segments", "2", "--excerpts", "1", "--seconds", "1", "--no-transcribe",
                 "-o", str(out), "-q"]) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["checkpoint"]["sample_rate"] == SR and r["data"]["sample_rate"] == SR
    tf = r["teacher_forced"]
    assert tf["segments"] >= 1 and tf["samples"] == tf["segments"] * 5 * SR  # 5 s segments
    assert np.isfinite(tf["ce_nats"])
    (excerpt,) = r["excerpts"]
    for kind in ("generated", "truth", "reference"):
        audio, rate = read_wav(out / excerpt["files"][kind])
        assert rate == SR and len(audio) == SR, kind
    assert excerpt["video_decodes_to_stored_keys"]


def test_demo_at_16khz(trained16, tmp_path, no_transcriber, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--checkpoint", str(trained16), "--seed", "1"]) == 0
    truth, rate = read_wav(out / "ground_truth.wav")
    assert rate == SR and len(truth) > 12 * SR  # about 15 s, simulated at the model's rate
    generated, rate = read_wav(out / "generated.wav")
    assert rate == SR and len(generated) == len(truth)
    assert "transcription F1: skipped" in capsys.readouterr().out
    assert json.loads((out / "demo.json").read_text())["seconds"] == pytest.approx(
        len(truth) / SR, abs=1e-3)


def test_a_4khz_model_refuses_16khz_inputs(store16, corpus, tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny4k.pt"
    save_checkpoint(ckpt, DeepSynth(get_preset("tiny").model, keyboard.layout()),
                    extra={"preset": "tiny"})
    assert main(["simulate", str(corpus / "b.mid"), "-o", str(tmp_path), "--sample-rate",
                 str(SR), "-q"]) == 0
    capsys.readouterr()
    assert main(["synthesize", str(tmp_path / "b.mp4"), "-o", str(tmp_path / "x.wav"),
                 "--checkpoint", str(ckpt), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "16000 Hz" in err and "4000 Hz" in err
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(store16),
                 "-o", str(tmp_path / "r"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "16000 Hz" in err and "4000 Hz" in err
    assert not (tmp_path / "x.wav").exists()
