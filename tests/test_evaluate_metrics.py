"""Evaluation metrics on known cases: spectral distances, note scores, excerpt choice."""

import numpy as np
import pytest

from deepsynth.evaluate.excerpts import cut_changes, press_samples
from deepsynth.evaluate.metrics import (
    fft_sizes,
    log_mel_distance,
    mean_scores,
    mel_filterbank,
    multi_resolution_stft_distance,
    noise_floor_db,
    note_scores,
    spectral_distances,
)
from deepsynth.sim.keystates import KeyChanges, key_changes, notes_from_key_changes
from deepsynth.sim.midi import Notes

SR = 4000


def piano_like(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """Decaying harmonic tones at a few onsets, int16 (something like a piano at 4 kHz)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = np.zeros_like(t)
    for onset in np.arange(0, seconds, 0.5):
        f0 = 110 * 2 ** (rng.integers(0, 24) / 12)
        env = np.where(t >= onset, np.exp(-(t - onset) * 3), 0.0)
        for h in range(1, 6):
            if h * f0 < SR / 2:
                x += env * np.sin(2 * np.pi * h * f0 * (t - onset)) / h
    return np.round(x / np.abs(x).max() * 0.5 * 32767).astype(np.int16)


def notes(pitches, starts, length=0.3) -> Notes:
    starts = np.asarray(starts, float)
    return Notes.from_columns(pitches, np.full(len(starts), 80), starts, starts + length)


def test_identical_audio_has_zero_distances():
    x = piano_like()
    d = spectral_distances(x, x, SR)
    assert d["mrstft"]["spectral_convergence"] == 0.0
    assert d["mrstft"]["log_magnitude_l1"] == 0.0
    assert d["mrstft"]["total"] == 0.0
    assert d["log_mel_db"] == 0.0
    assert d["level_db"] == pytest.approx(0.0, abs=1e-9)
    assert [r["n_fft"] for r in d["mrstft"]["resolutions"]] == [64, 256, 1024]


def test_scaled_copy_is_close_and_noise_is_far():
    x = piano_like()
    scaled = np.round(x * 0.9).astype(np.int16)
    noise = np.random.default_rng(1).normal(0, 0.1, len(x))  # float audio is accepted too
    near, far = spectral_distances(scaled, x, SR), spectral_distances(noise, x, SR)
    # a 0.9 x copy: spectral convergence 0.1, log magnitudes |log 0.9| = 0.105 where not floored
    assert near["mrstft"]["spectral_convergence"] == pytest.approx(0.1, abs=0.005)
    assert 0.01 < near["mrstft"]["log_magnitude_l1"] <= 0.11
    assert 0.05 < near["log_mel_db"] <= 0.93  # 20 log10(0.9) = 0.92 dB where both are audible
    assert near["level_db"] == pytest.approx(20 * np.log10(0.9), abs=0.01)
    assert far["mrstft"]["spectral_convergence"] > 5 * near["mrstft"]["spectral_convergence"]
    assert far["mrstft"]["log_magnitude_l1"] > 10 * near["mrstft"]["log_magnitude_l1"]
    assert far["log_mel_db"] > 10 * near["log_mel_db"]
    # silence is as far as can be in spectral convergence, and has no level
    silent = spectral_distances(np.zeros_like(x), x, SR)
    assert silent["mrstft"]["spectral_convergence"] == pytest.approx(1.0)
    assert silent["level_db"] is None


def test_distances_use_the_common_length_and_scale_with_the_rate():
    x = piano_like()
    assert multi_resolution_stft_distance(x[:-100], x, SR)["total"] == 0.0
    assert log_mel_distance(x, x[:-7], SR) == 0.0
    assert fft_sizes(16000) == [256, 1024, 4096]
    fb = mel_filterbank(SR, 512)
    assert fb.shape == (64, 257) and np.all(fb.sum(axis=1) > 0)  # no empty band


def test_note_f1_of_notes_against_themselves_is_one():
    ref = notes([60, 64, 67, 72, 60], [0.0, 0.5, 1.0, 1.5, 2.0])
    s = note_scores(ref, ref)
    for kind in ("onset", "onset_offset"):
        assert s[kind] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert s["n_reference"] == s["n_estimated"] == 5


def test_onsets_shifted_beyond_the_tolerance_drop_f1():
    ref = notes([60, 64, 67, 72], [0.0, 0.5, 1.0, 1.5])
    within = notes([60, 64, 67, 72], [0.04, 0.54, 1.04, 1.54])
    beyond = notes([60, 64, 67, 72], [0.06, 0.56, 1.06, 1.56])
    assert note_scores(ref, within)["onset"]["f1"] == 1.0
    assert note_scores(ref, beyond)["onset"]["f1"] == 0.0
    half = notes([60, 64, 67, 72], [0.0, 0.5, 1.2, 1.7])
    assert note_scores(ref, half)["onset"]["f1"] == pytest.approx(0.5)
    wrong_pitch = notes([61, 64, 67, 72], [0.0, 0.5, 1.0, 1.5])
    assert note_scores(ref, wrong_pitch)["onset"]["f1"] == pytest.approx(0.75)


def test_offsets_count_only_with_offsets():
    ref = notes([60, 64], [0.0, 1.0], length=1.0)
    short = notes([60, 64], [0.0, 1.0], length=0.3)
    s = note_scores(ref, short)
    assert s["onset"]["f1"] == 1.0 and s["onset_offset"]["f1"] == 0.0


def test_empty_estimate_scores_zero_and_means_skip_missing():
    ref = notes([60], [0.0])
    empty = Notes.from_columns([], [], [], [])
    s = note_scores(ref, empty)
    assert s["onset"]["f1"] == 0.0 and s["n_estimated"] == 0
    m = mean_scores([note_scores(ref, ref), s, None])
    assert m["onset"]["f1"] == 0.5 and m["excerpts"] == 2
    assert mean_scores([None]) is None


def test_video_notes_of_a_cut_give_held_keys_an_onset_at_zero():
    n = notes([60, 64, 67], [0.0, 0.5, 1.0], length=0.8)
    changes = key_changes(n, SR, 3 * SR)
    cut = cut_changes(changes, int(0.9 * SR), int(1.9 * SR))
    assert isinstance(cut, KeyChanges) and cut.n_samples == SR and cut.starts[0] == 0
    got = notes_from_key_changes(cut)
    assert list(got.pitch) == [64, 67]  # 60 ended at 0.8 s; 64 is held from 0.5 s
    assert got.start[0] == 0.0 and got.start[1] == pytest.approx(0.1)
    assert got.end[0] == pytest.approx(0.4) and got.end[1] == pytest.approx(0.9)
    assert list(press_samples(changes)) == [0, int(0.5 * SR), SR]


def _partials(pitch: int, seconds: float, start: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    tone = sum(0.3 / h * np.sin(2 * np.pi * f0 * h * t) for h in range(1, 6))
    return tone * (t >= start) * np.exp(-np.maximum(t - start, 0))


def test_noise_floor_rises_with_noise_and_ignores_the_notes_partials():
    notes = Notes(pitch=np.array([57]), velocity=np.array([64]), start=np.array([0.5]),
                  end=np.array([3.0]))
    clean = _partials(57, 4.0, 0.5)
    rng = np.random.default_rng(0)
    floors = [noise_floor_db(clean + level * rng.standard_normal(len(clean)), notes, SR)
              for level in (0.0, 1e-3, 1e-2, 1e-1)]
    assert floors[0] < -25  # the partials themselves are not noise
    assert all(a < b for a, b in zip(floors, floors[1:], strict=False))  # more noise, higher
    # the same tone judged against another note: its partials are all "away"
    other = Notes(pitch=np.array([62]), velocity=np.array([64]), start=np.array([0.5]),
                  end=np.array([3.0]))
    assert noise_floor_db(clean, other, SR) > -3
    # int16 input reads as float; no sounding note: nothing to judge
    assert noise_floor_db((clean * 32767).astype(np.int16), notes, SR) == \
        pytest.approx(floors[0], abs=0.1)
    none = Notes(pitch=np.array([], int), velocity=np.array([], int), start=np.array([]),
                 end=np.array([]))
    assert noise_floor_db(clean, none, SR) is None
    # silence while a note is shown counts as clean (the floor), not as noise
    assert noise_floor_db(np.zeros(4 * SR), notes, SR) == pytest.approx(-60.0)
