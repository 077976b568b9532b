"""The simulator on real corpus pieces (slow; skipped when ../shared is absent)."""

import csv
from pathlib import Path

import numpy as np
import pytest

from deepsynth.audio import read_wav
from deepsynth.sim.keystates import key_changes
from deepsynth.sim.midi import read_midi
from deepsynth.sim.simulate import simulate_to_files
from deepsynth.sim.video import read_key_changes

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "piano-midi"


def corpus_pieces(n: int) -> list[Path]:
    if not (CORPUS / "metadata.csv").exists():
        pytest.skip("the piano-midi corpus is not at ../shared/data/piano-midi")
    with (CORPUS / "metadata.csv").open() as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["midi"])
    step = max(len(rows) // n, 1)
    return [CORPUS / r["midi"] for r in rows[::step][:n]]


@pytest.mark.slow
@pytest.mark.parametrize("index", range(4))
def test_corpus_piece_video_decodes_to_its_sounding_notes(tmp_path, index):
    midi = corpus_pieces(4)[index]
    meta = simulate_to_files(midi, tmp_path)
    audio, rate = read_wav(tmp_path / f"{midi.stem}.wav")
    assert rate == 4000 and len(audio) == meta["n_samples"]
    piece = read_midi(midi)
    assert abs(len(audio) / rate - (piece.notes.duration + 1.0)) < 1e-3
    decoded = read_key_changes(tmp_path / f"{midi.stem}.mp4")
    assert decoded.equals(key_changes(piece.notes, 4000, meta["n_samples"]))
    assert np.abs(audio).max() > 1000
