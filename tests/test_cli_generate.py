"""`deepsynth synthesize` end to end on a tiny random-weight checkpoint."""

import subprocess
import sys

import av
import numpy as np
import pytest
import torch
from midi_factory import TPB, make_midi, save

from deepsynth.audio import read_wav
from deepsynth.checkpoint import save_checkpoint
from deepsynth.model.deepsynth import DeepSynth
from deepsynth.model.presets import get_preset
from deepsynth.sim import keyboard


def run(*args):
    return subprocess.run([sys.executable, "-m", "deepsynth", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, DeepSynth(get_preset("tiny").model, keyboard.layout()),
                    extra={"preset": "tiny"})
    return path


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    d = tmp_path_factory.mktemp("song")
    notes = [(60, 90, 0, TPB), (64, 80, TPB, 2 * TPB), (67, 100, 2 * TPB, 4 * TPB)]
    return save(make_midi(notes), d / "song.mid")  # 2 s + 1 s tail = 12,000 samples


def test_midi_to_wav_reproducible_with_seed(tmp_path, ckpt, song):
    for name in ("a.wav", "b.wav"):
        r = run("synthesize", song, "-o", tmp_path / name, "--checkpoint", ckpt, "--seed", "5")
        assert r.returncode == 0, r.stderr
    a, rate = read_wav(tmp_path / "a.wav")
    b, _ = read_wav(tmp_path / "b.wav")
    assert rate == 4000 and len(a) == 12000 and np.array_equal(a, b)
    assert "x real time" in r.stdout


def test_video_to_mp4_with_generated_sound(tmp_path, ckpt, song):
    assert run("simulate", song, "-o", tmp_path, "-q").returncode == 0
    r = run("synthesize", tmp_path / "song.mp4", "-o", tmp_path / "gen.mp4", "--checkpoint",
            ckpt, "--start", "0.5", "--duration", "1.5", "-q")
    assert r.returncode == 0, r.stderr
    with av.open(str(tmp_path / "gen.mp4")) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
        assert abs(float(c.duration / av.time_base) - 1.5) < 0.1
        assert sum(1 for _ in c.decode(video=0)) >= 2


def test_several_inputs_as_one_batch(tmp_path, ckpt, song):
    other = save(make_midi([(72, 90, 0, 2 * TPB)]), tmp_path / "other.mid")
    r = run("synthesize", song, other, "-o", tmp_path / "out", "--checkpoint", ckpt, "-q")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["other.wav", "song.wav"]
    assert len(read_wav(tmp_path / "out" / "other.wav")[0]) == 8000


def test_an_inputs_audio_is_the_same_alone_and_second_in_a_batch(tmp_path, ckpt, song):
    first = save(make_midi([(72, 90, 0, 2 * TPB)]), tmp_path / "first.mid")
    third = save(make_midi([(48, 70, 0, TPB), (50, 70, TPB, 3 * TPB)]), tmp_path / "third.mid")
    common = ["--checkpoint", ckpt, "--seed", "3", "--duration", "1.5", "-q"]
    r = run("synthesize", first, song, third, "-o", tmp_path / "batch", *common)
    assert r.returncode == 0, r.stderr
    r = run("synthesize", song, "-o", tmp_path / "alone.wav", *common)
    assert r.returncode == 0, r.stderr
    alone, _ = read_wav(tmp_path / "alone.wav")
    assert len(alone) == 6000
    assert np.array_equal(alone, read_wav(tmp_path / "batch" / "song.wav")[0])
    assert len(read_wav(tmp_path / "batch" / "first.wav")[0]) == 6000


@pytest.mark.parametrize("name", ["both.wav", "both.MP4"])
def test_several_inputs_and_one_output_file_is_an_error(tmp_path, ckpt, song, name):
    other = save(make_midi([(72, 90, 0, 2 * TPB)]), tmp_path / "other.mid")
    r = run("synthesize", song, other, "-o", tmp_path / name, "--checkpoint", ckpt)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "2 inputs" in lines[0] and "directory" in lines[0], r.stderr
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize(
    ("case", "match"),
    [("corrupt-ckpt", "checkpoint"), ("missing-input", "no such file"),
     ("bad-suffix", "must be a video"), ("bad-start", "past its end")],
)
def test_bad_input(tmp_path, ckpt, song, case, match):
    args = [song, "-o", tmp_path / "x.wav", "--checkpoint", ckpt]
    if case == "corrupt-ckpt":
        (tmp_path / "bad.pt").write_bytes(b"\x00" * 100)
        args[-1] = tmp_path / "bad.pt"
    elif case == "missing-input":
        args[0] = tmp_path / "nope.mid"
    elif case == "bad-suffix":
        (tmp_path / "notes.txt").write_text("hi")
        args[0] = tmp_path / "notes.txt"
    elif case == "bad-start":
        args += ["--start", "60"]
    r = run("synthesize", *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], r.stderr
    assert not (tmp_path / "x.wav").exists()


def test_demo_end_to_end_with_a_checkpoint(tmp_path, ckpt):
    r = run("demo", "-o", tmp_path / "demo", "--checkpoint", ckpt, "--seed", "1")
    assert r.returncode == 0, r.stderr
    for name in ("demo.mid", "ground_truth.mp4", "ground_truth.wav", "demo.mp4", "generated.wav",
                 "comparison.png", "demo.json"):
        assert (tmp_path / "demo" / name).stat().st_size > 0, name
    truth, _ = read_wav(tmp_path / "demo" / "ground_truth.wav")
    generated, _ = read_wav(tmp_path / "demo" / "generated.wav")
    assert len(truth) == len(generated) > 12 * 4000  # about 15 s
    assert "x real time" in r.stdout and "transcription" in r.stdout
    with av.open(str(tmp_path / "demo" / "demo.mp4")) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]


def test_the_checkpoint_recommends_a_temperature_and_the_user_overrides_it(tmp_path, ckpt, song):
    r = run("export", ckpt, "-o", tmp_path / "cool.pt", "--temperature", "0.5")
    assert r.returncode == 0, r.stderr
    for name, extra in [("cool.wav", []), ("same.wav", ["--temperature", "0.5"]),
                        ("hot.wav", ["--temperature", "1"])]:
        r = run("synthesize", song, "-o", tmp_path / name, "--checkpoint", tmp_path / "cool.pt",
                *extra)
        assert r.returncode == 0, r.stderr
    cool, _ = read_wav(tmp_path / "cool.wav")
    assert np.array_equal(cool, read_wav(tmp_path / "same.wav")[0])
    assert not np.array_equal(cool, read_wav(tmp_path / "hot.wav")[0])
    bad = run("export", ckpt, "-o", tmp_path / "bad.pt", "--temperature", "-1")
    assert bad.returncode == 2 and not (tmp_path / "bad.pt").exists()


def test_the_checkpoint_recommends_a_floor_and_the_user_overrides_it(tmp_path, ckpt, song):
    r = run("export", ckpt, "-o", tmp_path / "clean.pt", "--floor", "0.01")
    assert r.returncode == 0, r.stderr
    for name, extra in [("clean.wav", []), ("same.wav", ["--floor", "0.01"]),
                        ("plain.wav", ["--floor", "0"])]:
        r = run("synthesize", song, "-o", tmp_path / name, "--checkpoint",
                tmp_path / "clean.pt", *extra)
        assert r.returncode == 0, r.stderr
    clean, _ = read_wav(tmp_path / "clean.wav")
    assert np.array_equal(clean, read_wav(tmp_path / "same.wav")[0])
    assert not np.array_equal(clean, read_wav(tmp_path / "plain.wav")[0])
    for bad in ("0.2", "nan", "-0.01"):
        r = run("synthesize", song, "-o", tmp_path / "bad.wav", "--checkpoint", ckpt,
                "--floor", bad)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "bad.wav").exists()
