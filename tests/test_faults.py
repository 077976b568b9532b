"""The fault corpus: bad inputs of every class for every command, and interruptions.

Each refused case is checked the same way (tests/faults.py, Outcome.assert_refused): exit code
2, exactly one line on stderr, no traceback, nothing new left behind, and every file that was
there before (inputs and earlier outputs) byte-identical afterwards. The fast cases run the
command in this process (deepsynth.cli.main); signals need a process (slow-marked).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
import wave
from pathlib import Path

import pytest
from faults import (
    BAD_MIDI,
    UNUSUAL_MIDI,
    deepsynth_process,
    kill_when,
    parts_under,
    run_cli,
    run_process,
    snapshot,
)
from midi_factory import make_midi, save

from deepsynth.cli import build_parser
from deepsynth.cli.common import RANGES

SHIPPED = Path(__file__).resolve().parents[1] / "src/deepsynth/checkpoints/small.pt"
QUICK = ["--duration", "0.05", "-q"]  # a synthesize that generates 200 samples


# --- shared inputs ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A short MIDI file, its simulated video, and an exported copy of the shipped model (with
    a checksum): read only; each test copies what it needs into its own folder."""
    from deepsynth.checkpoint import export_checkpoint
    from deepsynth.cli import main

    root = tmp_path_factory.mktemp("fault-inputs")
    song = save(make_midi([(60, 80, 0, 480), (64, 80, 480, 960), (67, 80, 960, 1920)]),
                root / "song.mid")
    assert main(["simulate", str(song), "-o", str(root), "-q"]) == 0
    export_checkpoint(SHIPPED, root / "model.pt", half=True)
    return root


def copy(src: Path, dst_dir: Path, name: str | None = None) -> Path:
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / (name or src.name)
    shutil.copy2(src, dst)
    return dst


# --- every number of every option ---------------------------------------------------------------


def _leaves(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for action in subs:
        for name, sub in action.choices.items():
            yield from _leaves(sub, (*prefix, name))


def _minimal_argv(parser: argparse.ArgumentParser) -> list[str]:
    argv: list[str] = []
    for a in parser._actions:
        if a.option_strings:
            if a.required:
                argv += [a.option_strings[-1], a.choices[0] if a.choices else "x"]
        elif a.nargs != 0:
            argv.append(list(a.choices)[0] if a.choices else "x")
    return argv


def _number_cases():
    cases = []
    for prefix, parser in _leaves(build_parser()):
        base = _minimal_argv(parser)
        for a in parser._actions:
            if not a.option_strings or getattr(a.type, "__name__", "") not in ("int", "float"):
                continue
            flag = a.option_strings[-1]
            bad = ["nan", "inf", "1e999", "x", ""] if a.type.__name__ == "float" else \
                ["nan", "1.5", "x", "99999999999999999999999"]
            if a.dest in RANGES or a.type.__name__ == "int":
                bad.append("-1")
            cases += [pytest.param([*prefix, *base, flag, v], id=f"{' '.join(prefix)} {flag} {v}")
                      for v in bad]
    return cases


@pytest.mark.parametrize("argv", _number_cases())
def test_every_number_option_refuses_bad_values(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outcome = run_cli(argv, [tmp_path], capsys)
    outcome.assert_refused(argv[-2])


def test_the_corpus_covers_every_command():
    names = {" ".join(prefix) for prefix, _ in _leaves(build_parser())}
    for command in ("simulate", "video2midi", "data build", "data stats", "train", "export",
                    "synthesize", "evaluate", "demo", "info", "sweep", "quality"):
        assert command in names
    assert len(_number_cases()) > 200


def test_a_usage_error_is_one_line(tmp_path, capsys):
    for argv in (["synthesize"], ["nope"], ["train", "--data"], ["synthesize", "a.mid", "-o",
                                                                    "x.wav", "--format", "ogg"]):
        run_cli(argv, [tmp_path], capsys).assert_refused()


# --- MIDI files: unusual but legal ones work, bad ones are one line ----------------------------

SLOW_MIDI = {"hour_of_silence"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_MIDI
                                  else n for n in UNUSUAL_MIDI])
def test_unusual_midi_files_simulate(name, tmp_path, capsys):
    midi = tmp_path / f"{name}.mid"
    midi.write_bytes(UNUSUAL_MIDI[name])
    out = tmp_path / "out"
    outcome = run_cli(["simulate", str(midi), "-o", str(out), "-q"], [midi], capsys)
    if outcome.code == 2:  # a piece that cannot be: one clear line, and nothing written
        outcome.assert_refused(str(midi))
        assert not out.exists() or not any(out.iterdir())
        return
    assert outcome.code == 0, outcome.err
    assert "Traceback" not in outcome.err
    outcome.assert_kept()
    assert sorted(p.name for p in out.iterdir()) == [f"{name}.json", f"{name}.mp4",
                                                      f"{name}.wav"]
    meta = json.loads((out / f"{name}.json").read_text())
    assert meta["n_notes"] >= 1 and meta["seconds"] > 0


@pytest.mark.parametrize("name", list(BAD_MIDI))
@pytest.mark.parametrize("command", ["simulate", "synthesize"])
def test_bad_midi_files_are_one_line(name, command, tmp_path, capsys):
    midi = tmp_path / f"{name}.mid"
    midi.write_bytes(BAD_MIDI[name])
    out = tmp_path / "out"
    argv = (["simulate", str(midi), "-o", str(out), "-q"] if command == "simulate" else
            ["synthesize", str(midi), "-o", str(out / "x.wav"), *QUICK])
    run_cli(argv, [tmp_path], capsys).assert_refused()


def test_a_huge_delta_time_is_refused_without_memory(tmp_path, capsys):
    midi = tmp_path / "huge.mid"
    midi.write_bytes(UNUSUAL_MIDI["huge_delta"])
    run_cli(["simulate", str(midi), "-o", str(tmp_path / "o")], [tmp_path],
            capsys).assert_refused("12 h")


def test_the_tempo_map_is_pretty_midis():
    """The tempo map is read without pretty_midi's per-tick array, to the same values."""
    import pretty_midi
    from midi_factory import random_midi

    from deepsynth.sim.midi import _tick_to_seconds

    for seed in range(5):
        midi = random_midi(seed)
        ticks = [0, 1, 479, 480, 1000, 3999, 4000, 12345, 99999]
        ours = _tick_to_seconds(midi)(ticks)
        pm = pretty_midi.PrettyMIDI(mido_object=random_midi(seed))
        assert list(ours) == [pm.tick_to_time(t) for t in ticks]


# --- output paths -----------------------------------------------------------------------------


def test_synthesize_never_replaces_its_input(inputs, tmp_path, capsys):
    """`synthesize in.mp4 -o DIR --format mp4` where DIR holds in.mp4 (the reported loss)."""
    video = copy(inputs / "song.mp4", tmp_path)
    run_cli(["synthesize", str(video), "-o", str(tmp_path), "--format", "mp4", *QUICK],
            [tmp_path], capsys).assert_refused("input")
    link = tmp_path / "other"
    link.mkdir()
    (link / "song.mp4").symlink_to(video)
    run_cli(["synthesize", str(video), "-o", str(link / "song.mp4"), *QUICK], [tmp_path],
            capsys).assert_refused("input")


@pytest.mark.parametrize("suffix", [".wav", ".WAV", ".mp4", ".Mp4"])
def test_an_existing_file_deepsynth_did_not_make_is_kept(suffix, inputs, tmp_path, capsys):
    song = copy(inputs / "song.mid", tmp_path)
    mine = tmp_path / f"recording{suffix}"
    mine.write_bytes(b"RIFF my own recording, not DeepSynth's")
    run_cli(["synthesize", str(song), "-o", str(mine), *QUICK], [tmp_path],
            capsys).assert_refused("--overwrite")
    outcome = run_cli(["synthesize", str(song), "-o", str(mine), *QUICK, "--overwrite"],
                      [tmp_path], capsys)
    assert outcome.code == 0, outcome.err
    outcome = run_cli(["synthesize", str(song), "-o", str(mine), *QUICK], [tmp_path], capsys)
    assert outcome.code == 0, outcome.err  # now it is DeepSynth's own: replaced when done


def test_simulate_and_demo_keep_a_users_files(inputs, tmp_path, capsys):
    song = copy(inputs / "song.mid", tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "song.wav").write_bytes(b"a user's own wav")
    run_cli(["simulate", str(song), "-o", str(out), "-q"], [tmp_path],
            capsys).assert_refused("song.wav")
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "ground_truth.mp4").write_bytes(b"a user's video")
    run_cli(["demo", "-o", str(demo)], [tmp_path], capsys).assert_refused("ground_truth.mp4")


def test_outputs_where_a_folder_or_a_file_is(inputs, tmp_path, capsys):
    song = copy(inputs / "song.mid", tmp_path)
    video = copy(inputs / "song.mp4", tmp_path)
    model = copy(inputs / "model.pt", tmp_path)
    folder = tmp_path / "taken.wav"
    folder.mkdir()
    afile = tmp_path / "afile"
    afile.write_bytes(b"x")
    cases = [
        ["synthesize", str(song), "-o", str(folder), *QUICK],
        ["synthesize", str(song), "-o", str(afile / "x.wav"), *QUICK],
        ["synthesize", str(song), "-o", str(tmp_path / "x.ogg"), *QUICK],
        ["synthesize", str(song), str(video), "-o", str(tmp_path / "x.wav"), *QUICK],
        ["simulate", str(song), "-o", str(afile)],
        ["video2midi", str(video), "-o", str(tmp_path / "x.txt")],
        ["video2midi", str(video), "-o", str(afile / "x.mid")],
        ["export", str(model), "-o", str(model)],
        ["export", str(model), "-o", str(tmp_path / "m.PT.bak")],
        ["export", str(model), "-o", str(afile / "m.pt")],
        ["train", "--data", str(tmp_path), "--preset", "tiny", "--out", str(afile)],
        ["train", "--data", str(tmp_path), "--preset", "tiny", "--out", str(afile / "run")],
        ["train", "--data", str(tmp_path), "--preset", "tiny", "--out", "/proc/deepsynth-run"],
        ["data", "build", "--corpus", str(tmp_path), "--out", str(afile)],
        ["evaluate", "--checkpoint", str(model), "--data", str(tmp_path), "-o", str(afile)],
        ["demo", "-o", str(afile)],
        ["sweep", "table1", "--tabulate", "-o", str(afile)],
    ]
    for argv in cases:
        run_cli(argv, [tmp_path], capsys).assert_refused()


def test_failed_commands_leave_no_folder(inputs, tmp_path, capsys):
    """Each of these fails after its output folder would have been made: none is left."""
    song = copy(inputs / "song.mid", tmp_path / "in")
    model = copy(inputs / "model.pt", tmp_path / "in")
    missing = tmp_path / "in" / "missing"
    cases = [
        ["data", "build", "--corpus", str(missing), "--out", str(tmp_path / "store")],
        ["data", "build", "--corpus", str(tmp_path / "in"), "--out", str(tmp_path / "s2"),
         "--soundfont", str(song)],
        ["train", "--data", str(missing), "--preset", "tiny", "--out", str(tmp_path / "run")],
        ["train", "--data", str(tmp_path / "in"), "--preset", "nope", "--out",
         str(tmp_path / "r2" / "deep")],
        ["evaluate", "--checkpoint", str(model), "--data", str(missing), "-o",
         str(tmp_path / "report")],
        ["simulate", str(missing), "-o", str(tmp_path / "sim")],
        ["simulate", str(song), "-o", str(tmp_path / "sim2"), "--soundfont", str(model)],
        ["synthesize", str(song), "-o", str(tmp_path / "gen" / "x.wav"), "--checkpoint",
         str(missing), *QUICK],
        ["demo", "-o", str(tmp_path / "demo"), "--checkpoint", str(missing)],
        ["sweep", "table1", "--data", str(missing), "--steps", "1", "-o", str(tmp_path / "sw")],
    ]
    for argv in cases:
        run_cli(argv, [tmp_path], capsys).assert_refused()


def test_a_stale_part_file_is_swept_and_a_live_ones_kept(inputs, tmp_path, capsys):
    song = copy(inputs / "song.mid", tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    dead = out / ".x.wav.999999999-0badf00d.part.wav"  # a killed writer's (no such process)
    live = out / f".x.wav.{os.getpid()}-0badf00d.part.wav"  # a running one's
    dead.write_bytes(b"left by kill -9")
    live.write_bytes(b"being written")
    outcome = run_cli(["synthesize", str(song), "-o", str(out / "x.wav"), *QUICK], [tmp_path],
                      capsys)
    assert outcome.code == 0, outcome.err
    assert not dead.exists() and live.exists()


# --- damaged checkpoints and stores -------------------------------------------------------------


def _flip(path: Path, where: float) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * where)
    data[i] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", [0.3, 0.5, 0.7, 0.9])
def test_a_flipped_byte_in_a_checkpoint_is_refused(where, inputs, tmp_path, capsys):
    song = copy(inputs / "song.mid", tmp_path)
    model = copy(inputs / "model.pt", tmp_path)
    _flip(model, where)
    run_cli(["synthesize", str(song), "-o", str(tmp_path / "x.wav"), "--checkpoint", str(model),
             *QUICK], [tmp_path], capsys).assert_refused(str(model))
    run_cli(["export", str(model), "-o", str(tmp_path / "y.pt")], [tmp_path],
            capsys).assert_refused(str(model))


def test_checkpoint_faults(inputs, tmp_path, capsys):
    import torch

    from deepsynth.checkpoint import load_checkpoint, save_checkpoint

    song = copy(inputs / "song.mid", tmp_path)
    model, payload = load_checkpoint(inputs / "model.pt")
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    bad = tmp_path / "nan.pt"
    save_checkpoint(bad, model, extra=payload["extra"])  # a valid checksum, NaN weights
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    truncated = copy(inputs / "model.pt", tmp_path, "truncated.pt")
    truncated.write_bytes(truncated.read_bytes()[:5000])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    for path, why in ((bad, "not finite"), (empty, ""), (truncated, ""), (foreign, ""),
                      (tmp_path, ""), (tmp_path / "none.pt", "")):
        run_cli(["synthesize", str(song), "-o", str(tmp_path / "x.wav"), "--checkpoint",
                 str(path), *QUICK], [tmp_path], capsys).assert_refused(why)


def test_old_checkpoints_without_a_checksum_still_load(tmp_path):
    import torch

    from deepsynth.checkpoint import load_checkpoint, read_payload

    payload = read_payload(SHIPPED)
    assert "checksum" in payload  # the shipped file is exported with one
    del payload["checksum"]  # as written before checksums
    torch.save(payload, tmp_path / "old.pt")
    old, _ = load_checkpoint(tmp_path / "old.pt")
    new, _ = load_checkpoint(SHIPPED)
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(),
                                                 new.state_dict().values(), strict=True))


def test_temperature_and_seed_that_would_make_garbage(inputs, tmp_path, capsys):
    from deepsynth.api import recommended_temperature

    song = copy(inputs / "song.mid", tmp_path)
    for extra in (["--temperature", "nan"], ["--temperature", "inf"], ["--seed", "-1"],
                  ["--start", "inf"], ["--duration", "nan"], ["--start", "1e9"]):
        run_cli(["synthesize", str(song), "-o", str(tmp_path / "x.wav"), *QUICK, *extra],
                [tmp_path], capsys).assert_refused()
    run_cli(["export", str(SHIPPED), "-o", str(tmp_path / "t.pt"), "--temperature", "nan"],
            [tmp_path], capsys).assert_refused("--temperature")
    assert recommended_temperature(None, {"extra": {"temperature": float("nan")}}) == 1.0


def _altered_store(store: Path, tmp_path: Path, what: str) -> Path:
    copy_of = tmp_path / "store"
    shutil.copytree(store, copy_of)
    song = sorted((copy_of / "songs").iterdir())[0]
    if what == "audio":
        _flip(song / "audio.npy", 0.6)
    elif what == "states":
        _flip(song / "states.npy", 0.9)
    elif what == "meta":
        meta = json.loads((song / "meta.json").read_text())
        meta["arrays"]["audio"]["sha256"] = "0" * 64
        (song / "meta.json").write_text(json.dumps(meta))
    elif what == "missing":
        (song / "starts.npy").unlink()
    return copy_of


@pytest.mark.parametrize("what", ["audio", "states", "meta", "missing"])
def test_an_altered_store_is_refused_when_opened(what, store, tmp_path, capsys):
    from deepsynth.data.dataset import SegmentDataset

    data = _altered_store(store, tmp_path, what)
    with pytest.raises(Exception) as info:
        SegmentDataset(data)
    assert type(info.value).__name__ == "DeepSynthError"
    run_cli(["train", "--data", str(data), "--preset", "tiny", "--out", str(tmp_path / "run"),
             "--max-steps", "1", "--window-seconds", "1", "--overlap-seconds", "0",
             "--val-segments", "2", "-q", "--no-tensorboard"], [tmp_path],
            capsys).assert_refused()


def test_an_intact_store_opens_and_is_hashed_once(store):
    from deepsynth.data import store as st
    from deepsynth.data.dataset import SegmentDataset

    SegmentDataset(store)
    n = len(st._VERIFIED)
    SegmentDataset(store)
    assert len(st._VERIFIED) == n > 0


# --- training: another store, another rate ------------------------------------------------------


SHORT = ["--window-seconds", "1", "--overlap-seconds", "0", "--val-segments", "2",
         "--threads", "1", "-q", "--no-tensorboard"]


def test_a_resume_on_another_store_is_refused(store, tmp_path, capsys):
    from deepsynth.cli import main

    run = tmp_path / "run"
    assert main(["train", "--data", str(store), "--preset", "tiny", "--out", str(run),
                 "--max-steps", "1", *SHORT]) == 0
    other = tmp_path / "other"
    shutil.copytree(store, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["seed"] = 99
    (other / "manifest.json").write_text(json.dumps(manifest))
    run_cli(["train", "--data", str(other), "--out", str(run), "--resume", "--max-steps", "2",
             *SHORT], [tmp_path], capsys).assert_refused("not on")


# --- signals ------------------------------------------------------------------------------------


def _long_song(tmp_path: Path, seconds: int = 40) -> Path:
    notes = [(48 + (i * 7) % 36, 80, i * 240, i * 240 + 200) for i in range(seconds * 4)]
    return save(make_midi(notes), tmp_path / "long.mid")


def _generating(folder: Path) -> bool:
    """A wav being generated there has its first samples (more than its 44-byte header)."""
    for p in parts_under(folder):
        try:
            if p.stat().st_size > 1000:
                return True
        except OSError:
            pass
    return False


def _wav_frames(path: Path) -> int:
    with wave.open(str(path)) as w:
        return w.getnframes()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_synthesize_stopped_keeps_a_valid_wav_then_a_rerun_is_identical(sig, tmp_path):
    song = _long_song(tmp_path)
    out = tmp_path / "x.wav"
    argv = ["synthesize", str(song), "-o", str(out), "--duration", "20"]
    proc = deepsynth_process(argv, tmp_path)
    code, _, err = kill_when(proc, lambda: _generating(tmp_path), sig, random.uniform(0.0, 1.0))
    assert code == (143 if sig == signal.SIGTERM else 130), err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith("terminated" if sig == signal.SIGTERM
                                                 else "interrupted")
    assert not parts_under(tmp_path)
    assert 0 < _wav_frames(out) < 20 * 4000  # what was generated, as a valid wav
    r = run_process([*argv, "-q"], tmp_path, [song])
    assert r.code == 0, r.err
    straight = tmp_path / "straight.wav"
    r = run_process(["synthesize", str(song), "-o", str(straight), "--duration", "20", "-q"],
                    tmp_path, [song])
    assert r.code == 0, r.err
    assert out.read_bytes() == straight.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_an_interrupted_synthesize_leaves_an_earlier_output_alone(sig, tmp_path):
    song = _long_song(tmp_path)
    out = tmp_path / "x.wav"
    r = run_process(["synthesize", str(song), "-o", str(out), "--duration", "2", "-q"],
                    tmp_path, [])
    assert r.code == 0, r.err
    before = snapshot(out)
    proc = deepsynth_process(["synthesize", str(song), "-o", str(out), "--duration", "20"],
                             tmp_path)
    code, _, err = kill_when(proc, lambda: _generating(tmp_path), sig, random.uniform(0.0, 1.0))
    assert "Traceback" not in err
    assert snapshot(out) == before  # the complete earlier output, not the fragment
    if sig == signal.SIGTERM:
        assert code == 143 and not parts_under(tmp_path)
    else:  # kill -9 leaves its temporary file; the next command that writes there sweeps it
        r = run_process(["synthesize", str(song), "-o", str(tmp_path / "y.wav"), "--duration",
                         "0.05", "-q"], tmp_path, [])
        assert r.code == 0, r.err
        assert not parts_under(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_data_build_interrupted_at_a_random_moment_then_resumed(sig, tmp_path):
    from deepsynth.data.toy import write_toy_corpus

    corpus = tmp_path / "corpus"
    write_toy_corpus(corpus, n_songs=5, bars=12)
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    r = run_process(["data", "build", "--corpus", str(corpus), "--out", str(straight), "-q"],
                    tmp_path, [corpus])
    assert r.code == 0, r.err
    proc = deepsynth_process(["data", "build", "--corpus", str(corpus), "--out", str(cut), "-q"],
                             tmp_path)
    code, _, err = kill_when(proc, lambda: (cut / "songs").is_dir(), sig,
                             random.uniform(0.0, 3.0))
    assert "Traceback" not in err
    r = run_process(["data", "build", "--corpus", str(corpus), "--out", str(cut), "-q"],
                    tmp_path, [corpus])
    assert r.code == 0, r.err
    a = {str(Path(p).relative_to(straight)): h for p, h in snapshot(straight).items()}
    b = {str(Path(p).relative_to(cut)): h for p, h in snapshot(cut).items()}
    assert a == b  # the same store, file for file (no leftovers)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_train_interrupted_at_a_random_moment_then_resumed(sig, store, tmp_path):
    from deepsynth.checkpoint import read_payload

    base = ["train", "--data", str(store), *SHORT, "--log-every", "1", "--checkpoint-every",
            "2"]
    cut, straight = tmp_path / "cut", tmp_path / "straight"
    proc = deepsynth_process([*base, "--preset", "tiny", "--out", str(cut), "--max-steps",
                              "400"], tmp_path)
    code, _, err = kill_when(proc, lambda: (cut / "last.pt").exists(), sig,
                             random.uniform(0.0, 2.0))
    assert "Traceback" not in err
    target = read_payload(cut / "last.pt")["extra"]["step"] + 3
    r = run_process([*base, "--out", str(cut), "--resume", "--max-steps", str(target)],
                    tmp_path, [store])
    assert r.code == 0, r.err
    r = run_process([*base, "--preset", "tiny", "--out", str(straight), "--max-steps",
                     str(target)], tmp_path, [store])
    assert r.code == 0, r.err
    wa, wb = (read_payload(run / "last.pt")["model"] for run in (straight, cut))
    assert wa.keys() == wb.keys()
    assert all(bool((wa[k] == wb[k]).all()) for k in wa)
    assert not parts_under(cut)


def test_sigterm_is_an_interruption_in_main(monkeypatch, capsys, tmp_path):
    """The handler main installs raises Terminated: 'terminated', exit 143, handler restored."""
    import deepsynth.cli.sim as sim_cli
    from deepsynth.cli import main

    def stop(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        return 0

    monkeypatch.setattr(sim_cli, "cmd_simulate", stop)  # registered when main builds its parser
    previous = signal.getsignal(signal.SIGTERM)
    assert main(["simulate", "x.mid", "-o", str(tmp_path / "o")]) == 143
    assert capsys.readouterr().err.strip().endswith("terminated")
    assert signal.getsignal(signal.SIGTERM) == previous


def test_wav_outputs_carry_the_mark(tmp_path):
    import numpy as np

    from deepsynth.atomic import made_by_deepsynth
    from deepsynth.audio import StreamingWavWriter, read_wav, write_wav

    a = tmp_path / "a.wav"
    write_wav(a, np.arange(100, dtype=np.int16), 4000)
    with StreamingWavWriter(tmp_path / "b.wav", 4000) as w:
        w.write(np.arange(100, dtype=np.int16))
    for p in (a, tmp_path / "b.wav"):
        assert made_by_deepsynth(p)
        audio, rate = read_wav(p)
        assert rate == 4000 and list(audio) == list(range(100))
        size = struct.unpack("<I", p.read_bytes()[4:8])[0]
        assert size == p.stat().st_size - 8
    other = tmp_path / "c.wav"
    with wave.open(str(other), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(4000)
        w.writeframes(b"\x00\x00" * 10)
    assert not made_by_deepsynth(other)


def test_python_api_refuses_non_finite_numbers(inputs):
    import deepsynth
    from deepsynth.errors import DeepSynthError

    synth = deepsynth.load()
    for kw in ({"start": float("nan")}, {"duration": float("inf")},
               {"temperature": float("nan")}, {"seed": -1}):
        with pytest.raises(DeepSynthError):
            synth.synthesize(str(inputs / "song.mid"), **({"duration": 0.05} | kw))


def test_subprocess_one_line_error(inputs, tmp_path):
    """The same through the installed entry point: one line, exit 2."""
    r = subprocess.run([sys.executable, "-m", "deepsynth", "synthesize",
                        str(inputs / "song.mid"), "-o", str(tmp_path / "x.wav"),
                        "--temperature", "nan"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_data_build_keeps_a_foreign_manifest(tmp_path, capsys):
    from deepsynth.data.toy import write_toy_corpus

    corpus = tmp_path / "corpus"
    write_toy_corpus(corpus, n_songs=1, bars=2)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "manifest.json").write_text('{"my": "own project file"}')
    run_cli(["data", "build", "--corpus", str(corpus), "--out", str(out), "-q"], [tmp_path],
            capsys).assert_refused("manifest.json")


def test_the_journal_rolls_back_only_what_it_created(tmp_path):
    from deepsynth.atomic import Journal, atomic_write_text, ensure_output_dir, mark_durable

    earlier = tmp_path / "earlier.txt"
    earlier.write_text("old")
    with Journal() as journal:
        ensure_output_dir(tmp_path / "new" / "deeper")
        atomic_write_text(tmp_path / "new" / "deeper" / "a.json", "{}")
        atomic_write_text(earlier, "new")
    journal.rollback()
    assert not (tmp_path / "new").exists()
    assert earlier.read_text() == "new"  # replaced by a complete file: stays
    with Journal() as journal:
        atomic_write_text(tmp_path / "b.json", "{}")
        mark_durable()  # e.g. a checkpoint was saved: a resume needs what is there
    journal.rollback()
    assert (tmp_path / "b.json").exists()


def test_train_keeps_a_users_files_in_its_folder(store, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "best.pt").write_bytes(b"my own model")
    run_cli(["train", "--data", str(store), "--preset", "tiny", "--out", str(out),
             "--max-steps", "1", *SHORT], [tmp_path], capsys).assert_refused("best.pt")
    (out / "best.pt").unlink()
    (out / "config.json").write_text('{"my": "settings"}')
    run_cli(["train", "--data", str(store), "--preset", "tiny", "--out", str(out),
             "--max-steps", "1", *SHORT], [tmp_path], capsys).assert_refused("config.json")


def test_export_refuses_a_store_of_another_rate(store, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(store, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["sample_rate"] = 8000
    (other / "manifest.json").write_text(json.dumps(manifest))
    run_cli(["export", str(SHIPPED), "-o", str(tmp_path / "x.pt"), "--data", str(other)],
            [tmp_path], capsys).assert_refused("8000 Hz")
    outcome = run_cli(["export", str(SHIPPED), "-o", str(tmp_path / "x.pt"), "--data",
                       str(store)], [tmp_path], capsys)
    assert outcome.code == 0, outcome.err


@pytest.mark.slow
def test_simulator_memory_is_bounded_by_a_block(tmp_path):
    """An hour of silence between two notes: before, the simulator held the piece at 44.1 kHz
    (a 2-hour one peaked at 5.0 GB); now its peak is the 4 kHz audio plus a block."""
    midi = tmp_path / "quiet.mid"
    midi.write_bytes(UNUSUAL_MIDI["hour_of_silence"])
    code = ("import resource, sys; from deepsynth.cli import main; "
            f"rc = main(['simulate', {str(midi)!r}, '-o', {str(tmp_path / 'o')!r}, '-q']); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr
    peak_mb = int(r.stdout.split()[-1]) / 1024
    assert peak_mb < 600, peak_mb  # 1 h at 44.1 kHz, whole: > 2.5 GB
