"""`deepsynth` end to end, in a subprocess as a user runs it."""

import json
import subprocess
import sys

import numpy as np
import pytest
from midi_factory import TPB, make_midi, save

from deepsynth.audio import read_wav
from deepsynth.sim.midi import read_midi

SR = 4000


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "deepsynth", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def two_second_midi(path):
    notes = [(60, 90, 0, TPB), (64, 80, TPB // 2, TPB), (67, 100, TPB, 2 * TPB),
             (48, 70, 0, 4 * TPB), (72, 110, 3 * TPB, 4 * TPB)]  # 4 beats at 120 bpm = 2 s
    return save(make_midi(notes, pedal=[(TPB, 127), (3 * TPB, 0)]), path)


def assert_one_line_error(result, match):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("deepsynth: error:") and match in lines[0], lines[0]


def test_simulate_then_video2midi_end_to_end(tmp_path):
    song = two_second_midi(tmp_path / "song.mid")
    r = run("simulate", song, "-o", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["song.json", "song.mp4", "song.wav"]
    meta = json.loads((out / "song.json").read_text())
    audio, rate = read_wav(out / "song.wav")
    assert rate == SR and len(audio) == meta["n_samples"] == 3 * SR  # 2 s + 1 s tail
    assert np.abs(audio).max() > 1000
    r = run("video2midi", out / "song.mp4", "-o", tmp_path / "decoded.mid")
    assert r.returncode == 0, r.stderr
    decoded = read_midi(tmp_path / "decoded.mid", pedal="raw").notes
    original = read_midi(song).notes  # pedal extended: what the video shows
    assert decoded.pitch.tolist() == original.pitch.tolist()
    np.testing.assert_allclose(decoded.start, original.start, atol=0.5 / SR)
    np.testing.assert_allclose(decoded.end, original.end, atol=0.5 / SR)


def test_simulate_constant_fps_and_raw_pedal(tmp_path):
    song = two_second_midi(tmp_path / "song.mid")
    r = run("simulate", song, "-o", tmp_path, "--fps", "30", "--pedal", "raw", "-q")
    assert r.returncode == 0 and r.stdout == "", r.stderr
    meta = json.loads((tmp_path / "song.json").read_text())
    assert meta["fps"] == 30 and meta["pedal"] == "raw"


def test_batch_reports_bad_songs_and_writes_good_ones(tmp_path):
    src = tmp_path / "songs"
    src.mkdir()
    two_second_midi(src / "good.mid")
    (src / "bad.mid").write_bytes(b"not midi at all" * 10)
    r = run("simulate", src, "-o", tmp_path / "out")
    assert r.returncode == 2
    assert "1 of 2 songs failed" in r.stderr and "bad.mid" in r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "good.json", "good.mp4", "good.wav"]


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("missing", "no such file"),
        ("empty-dir", "has no MIDI files"),
        ("random-bytes", "not a valid MIDI file"),
        ("truncated", "truncated or corrupt"),
        ("zero-bytes", "empty file"),
        ("no-notes", "no notes"),
        ("drums-only", "drums only"),
        ("bad-soundfont", "not a SoundFont"),
        ("unwritable-out", "cannot create output directory"),
    ],
)
def test_bad_input_one_line_exit_2_no_output(tmp_path, case, match):
    inp = tmp_path / "in.mid"
    out = tmp_path / "out"
    extra = []
    if case == "missing":
        inp = tmp_path / "missing.mid"
    elif case == "empty-dir":
        inp = tmp_path / "empty"
        inp.mkdir()
    elif case == "random-bytes":
        inp.write_bytes(np.random.default_rng(0).bytes(2000))
    elif case == "truncated":
        two_second_midi(tmp_path / "full.mid")
        inp.write_bytes((tmp_path / "full.mid").read_bytes()[:60])
    elif case == "zero-bytes":
        inp.write_bytes(b"")
    elif case == "no-notes":
        save(make_midi([]), inp)
    elif case == "drums-only":
        save(make_midi([(36, 100, 0, TPB)], channel=9), inp)
    elif case == "bad-soundfont":
        two_second_midi(inp)
        (tmp_path / "empty.sf2").write_bytes(b"")
        extra = ["--soundfont", tmp_path / "empty.sf2"]
    elif case == "unwritable-out":
        two_second_midi(inp)
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "out"
    r = run("simulate", inp, "-o", out, *extra)
    assert_one_line_error(r, match)
    if out.is_dir():
        assert list(out.iterdir()) == []  # no partial output


def test_out_of_range_pitches_warn_and_still_work(tmp_path):
    inp = save(make_midi([(10, 80, 0, TPB), (60, 80, 0, TPB)]), tmp_path / "low.mid")
    r = run("simulate", inp, "-o", tmp_path / "out")
    assert r.returncode == 0
    assert "warning" in r.stderr and "clipped 1 pitches" in r.stderr


def test_video2midi_bad_inputs(tmp_path):
    (tmp_path / "junk.mp4").write_bytes(b"junk" * 100)
    assert_one_line_error(run("video2midi", tmp_path / "junk.mp4", "-o", tmp_path / "o.mid"),
                          "not a readable video")
    assert_one_line_error(run("video2midi", tmp_path / "nope.mp4", "-o", tmp_path / "o.mid"),
                          "no such file")
    assert not (tmp_path / "o.mid").exists()


def test_version_and_help_on_every_command():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("deepsynth ")
    top = run("--help")
    assert top.returncode == 0
    from deepsynth.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"simulate", "video2midi", "demo", "synthesize", "train", "evaluate", "data",
            "info", "sweep"} <= set(sub.choices)
    for name, parser in sub.choices.items():
        assert name in top.stdout
        text = parser.format_help()
        assert text.startswith("usage: deepsynth " + name)
        nested = [a for a in parser._actions if a.dest == "data_command" or
                  type(a).__name__ == "_SubParsersAction"]
        for action in nested:
            for subname, subparser in action.choices.items():
                assert subparser.format_help().startswith(f"usage: deepsynth {name} {subname}")
