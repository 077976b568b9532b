"""`deepsynth evaluate` end to end on a tiny random-weight model and a tiny store (without the
transcriber), its CLI's help and bad input; the transcriber itself when it is installed."""

import json
import os

import numpy as np
import pytest
import torch

from deepsynth.audio import read_wav
from deepsynth.checkpoint import save_checkpoint
from deepsynth.cli import main
from deepsynth.data.build import build_store
from deepsynth.data.toy import write_toy_corpus
from deepsynth.evaluate import transcriber as transcribe_mod
from deepsynth.model.deepsynth import DeepSynth
from deepsynth.model.presets import get_preset
from deepsynth.sim import keyboard


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evalstore")
    write_toy_corpus(tmp / "corpus", n_songs=2, bars=3)  # 8 and 10 s
    build_store(tmp / "corpus", tmp / "store", fractions=(0.0, 0.0, 1.0))  # all in test
    return tmp / "store"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("evalckpt") / "run" / "best.pt"
    save_checkpoint(path, DeepSynth(get_preset("tiny").model, keyboard.layout()),
                    extra={"preset": "tiny", "step": 40, "val_ce": 5.5})
    rows = ["step,epoch,train_ce,train_ce_bits,val_ce,val_ce_bits,val_acc,lr",
            "10,0.5,5.9,8.5,,,,0.001", "20,1,5.7,8.2,5.6,8.1,0.01,0.001",
            "30,1.5,5.6,8.1,,,,0.001", "40,2,5.5,7.9,5.5,7.9,0.02,0.001"]
    (path.parent / "metrics.csv").write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def no_transcriber(monkeypatch):
    def missing():
        raise ImportError("No module named 'basic_pitch'", name="basic_pitch")

    monkeypatch.setattr(transcribe_mod, "_import_basic_pitch", missing)


def test_report_end_to_end_without_the_transcriber(store, checkpoint, tmp_path, no_transcriber,
                                                   capsys):
    out = tmp_path / "report"
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(store),
                 "--segments", "4", "--excerpts", "2", "--seconds", "2", "--seed", "3",
                 "-o", str(out)])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "teacher-forced CE" in stdout and "note F1 left out" in stdout

    r = json.loads((out / "report.json").read_text())
    assert r["format"] == "deepsynth-evaluation" and r["checkpoint"]["preset"] == "tiny"
    tf = r["teacher_forced"]
    assert tf["segments"] == 4 and tf["samples"] == 4 * 20_000  # the 5 s only, no context
    assert tf["context"] >= DeepSynth(get_preset("tiny").model, keyboard.layout()).receptive_field
    # a random model over 256 classes: CE near log 256, accuracy near chance
    assert 4.0 < tf["ce_nats"] < 7.0 and tf["ce_bits"] == pytest.approx(tf["ce_nats"] / np.log(2))
    assert 0 <= tf["accuracy"] < 0.1 and 0 < tf["unigram_ce_nats"] < np.log(256)

    assert r["transcriber"]["available"] is False
    assert "basic-pitch" in r["transcriber"]["reason"] and "eval-deps" in r["transcriber"]["reason"]
    assert r["note_f1"] is None
    assert len(r["excerpts"]) == 2
    for e in r["excerpts"]:
        assert e["note_f1"] is None and e["notes_shown"] > 0
        assert e["video_decodes_to_stored_keys"] is True
        for f in (*e["files"].values(), *e["figures"].values()):
            assert (out / f).stat().st_size > 0, f
        gen, sr = read_wav(out / e["files"]["generated"])
        truth, _ = read_wav(out / e["files"]["truth"])
        assert sr == 4000 and len(gen) == len(truth) == 8000
        d = e["distances"]
        assert d["silence"]["mrstft"]["spectral_convergence"] == pytest.approx(1.0)
        # the reference path (same notes through the same SoundFont) is closer than noise
        assert (d["reference"]["mrstft"]["spectral_convergence"]
                < d["generated"]["mrstft"]["spectral_convergence"])
    assert set(r["distances"]) == {"generated", "reference", "silence"}
    # the noise floor of each audio against the notes shown: the SoundFont's are clean, an
    # untrained model's output is noise
    nf = r["noise_floor_db"]
    assert set(nf) == {"generated", "truth", "reference"}
    assert nf["truth"] < nf["generated"] and nf["reference"] < nf["generated"]
    assert nf["generated"] == pytest.approx(np.mean([e["noise_floor_db"]["generated"]
                                                     for e in r["excerpts"]]))
    assert r["loss_curve"]["figure"] == "figures/loss.png" and r["loss_curve"]["best_val_ce"] == 5.5
    assert (out / "figures" / "loss.png").stat().st_size > 0

    md = (out / "report.md").read_text()
    assert "Note F1 left out" in md and "not installed" in md
    assert "Teacher-forced cross-entropy" in md and "unigram baseline" in md
    assert "## Noise floor" in md and "generated - truth" in md
    assert "![spectrograms](figures/01-" in md and "![loss](figures/loss.png)" in md
    assert not [p for p in os.listdir(out) if p.endswith(".part")]

    # same seed, same excerpts and the same audio
    again = tmp_path / "again"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(store), "-q",
                 "--segments", "0", "--excerpts", "2", "--seconds", "2", "--seed", "3",
                 "-o", str(again)]) == 0
    r2 = json.loads((again / "report.json").read_text())
    assert r2["teacher_forced"] is None
    assert [(e["song"], e["start"]) for e in r2["excerpts"]] == \
        [(e["song"], e["start"]) for e in r["excerpts"]]
    f = r["excerpts"][0]["files"]["generated"]
    assert (again / f).read_bytes() == (out / f).read_bytes()


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--checkpoint", "--data", "--split", "--segments", "--excerpts", "--seconds",
                "--temperature", "--seed", "--output"):
        assert opt in text
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--help"])
    assert e.value.code == 0 and "--budget-minutes" in capsys.readouterr().out


def _one_line_error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deepsynth: error:") and match in err[0], err


def test_cli_bad_input_is_one_line_and_exit_2(store, checkpoint, tmp_path, capsys):
    out = str(tmp_path / "r")
    base = ["evaluate", "--data", str(store), "-o", out, "--excerpts", "1", "--segments", "1"]
    _one_line_error(capsys, [*base, "--checkpoint", str(tmp_path / "nope.pt")], "not found")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a checkpoint" * 10)
    _one_line_error(capsys, [*base, "--checkpoint", str(corrupt)], "corrupt")
    _one_line_error(capsys, ["evaluate", "--checkpoint", str(checkpoint), "--data",
                             str(tmp_path / "nostore"), "-o", out], "no such store")
    _one_line_error(capsys, [*base, "--checkpoint", str(checkpoint), "--seconds", "60"],
                    "longer than 60 s")
    _one_line_error(capsys, [*base, "--checkpoint", str(checkpoint), "--split", "val"],
                    "val split has no")
    _one_line_error(capsys, [*base, "--checkpoint", str(checkpoint), "--temperature", "-1"],
                    "temperature")
    assert not (tmp_path / "r").exists()  # nothing written for bad input
    # a user's sound in the excerpts folder is not replaced (nor any file there DeepSynth
    # did not make), unless asked
    mine = tmp_path / "r" / "excerpts" / "01-song.generated.wav"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"RIFF my own recording")
    _one_line_error(capsys, [*base, "--checkpoint", str(checkpoint)], "DeepSynth did not make")
    assert mine.read_bytes() == b"RIFF my own recording"


def test_transcription_f1_returns_none_without_basic_pitch(no_transcriber):
    from deepsynth.evaluate import transcription_f1
    from deepsynth.sim.midi import Notes

    notes = Notes.from_columns([60], [64], [0.0], [0.5])
    assert transcription_f1(np.zeros(4000, np.int16), 4000, notes) is None
    assert not transcribe_mod.available()


def test_basic_pitch_hears_the_simulator(tmp_path):
    pytest.importorskip("basic_pitch")
    pytest.importorskip("onnxruntime")
    from deepsynth.evaluate import note_scores, transcribe, transcription_f1
    from deepsynth.sim.midi import Notes
    from deepsynth.sim.synth import render_notes

    starts = np.arange(8) * 0.5
    pitches = [60, 64, 67, 72, 55, 59, 62, 67]
    notes = Notes.from_columns(pitches, np.full(8, 90), starts, starts + 0.4)
    audio = render_notes(notes).audio
    scores = transcription_f1(audio, 4000, notes)
    assert scores is not None and scores["n_reference"] == 8
    assert scores["onset"]["f1"] >= 0.6, scores
    assert note_scores(notes, transcribe(np.zeros(8000, np.int16), 4000))["n_estimated"] == 0


def test_excerpts_are_fixed_by_the_seed_and_start_at_a_key_press(store):
    from deepsynth.data import store as st
    from deepsynth.evaluate.excerpts import choose_excerpts, press_samples

    a = choose_excerpts(store, "test", 5, 1.5, seed=0, context=100)
    b = choose_excerpts(store, "test", 5, 1.5, seed=0, context=100)
    assert [(e.song, e.start) for e in a] == [(e.song, e.start) for e in b]
    assert len({e.song for e in a}) == 2  # five excerpts cycle through the two songs
    assert len({(e.song, e.start) for e in a}) >= 4
    for e in a:
        song = st.open_song(st.song_dir(store, e.song))
        assert e.start in set(press_samples(song.key_changes()).tolist())
        assert e.length == 6000 and e.start + e.length <= song.n_samples
        assert np.array_equal(e.truth, song.audio[e.start : e.start + e.length])
        assert e.context_start == max(0, e.start - 100) and e.context.n_samples == \
            e.start + e.length - e.context_start
        assert e.notes().start.min() == 0.0  # a key goes down at the first sample
    c = choose_excerpts(store, "test", 5, 1.5, seed=1)
    assert [(e.song, e.start) for e in c] != [(e.song, e.start) for e in a]
