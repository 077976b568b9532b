"""The harmonic post-filter (generate/postfilter.py): an identity at gain 1, the notes' partials
kept and the rest turned down, the same output however the audio is fed, and generation,
the API and the command line applying it as documented."""

import numpy as np
import pytest
from midi_factory import random_midi, save

import deepsynth
from deepsynth import partials
from deepsynth.audio import read_wav
from deepsynth.cli import main
from deepsynth.evaluate import metrics
from deepsynth.generate.generator import Window, generate
from deepsynth.generate.postfilter import HarmonicFilter, harmonic_filter, window_notes
from deepsynth.generate.sources import open_source
from deepsynth.sim.midi import Notes

SR = 4000


def notes(*rows) -> Notes:  # (pitch, start s, end s)
    p, s, e = (np.array(c) for c in zip(*rows, strict=True))
    return Notes.from_columns(p, np.full(len(p), 64), s, e)


def test_gain_one_is_the_identity_and_near_one_reconstructs():
    x = (np.random.default_rng(0).standard_normal(20011) * 4000).astype(np.int16)
    n = notes((60, 0.5, 1.5), (72, 2.0, 4.0))
    assert np.array_equal(harmonic_filter(x, n, SR, 1.0), x)
    y = harmonic_filter(x, n, SR, 1.0 - 1e-9)  # the full STFT / overlap-add path
    assert len(y) == len(x) and np.array_equal(y, x)
    assert len(harmonic_filter(x[:5], n, SR)) == 5 and len(harmonic_filter(x[:0], n, SR)) == 0


def test_keeps_the_partials_and_turns_the_rest_down():
    rng = np.random.default_rng(1)
    t = np.arange(8 * SR) / SR
    f0 = float(partials.midi_to_hz(57))  # A3, 220 Hz
    tone = 6000 * np.sin(2 * np.pi * f0 * t) * (t < 4.0)
    noise = 1500 * rng.standard_normal(len(t))
    n = notes((57, 0.0, 3.75))  # sounds until 4.0 s with the release
    y = harmonic_filter((tone + noise).astype(np.int16), n, SR, 0.2).astype(np.float64)
    mid = slice(SR // 2, 3 * SR)  # while the note sounds
    freqs = np.fft.rfftfreq(mid.stop - mid.start, 1 / SR)
    away = np.abs(freqs[:, None] - f0 * np.arange(1, 9)[None, :]).min(axis=1) > 80  # Hz
    resid = np.abs(np.fft.rfft(y[mid] - tone[mid]))[away]
    assert np.sqrt(np.mean(resid**2) / np.mean(np.abs(np.fft.rfft(noise[mid]))[away] ** 2)) \
        == pytest.approx(0.2, abs=0.03)  # the noise away from the partials: at the gain
    gain_at_f0 = np.abs(np.fft.rfft(y[mid])).max() / np.abs(np.fft.rfft(tone[mid])).max()
    assert 0.95 < gain_at_f0 < 1.05  # the note, kept
    quiet = slice(5 * SR, 8 * SR)  # nothing sounds: everything at the gain
    assert metrics.rms(y[quiet]) == pytest.approx(0.2 * metrics.rms(noise[quiet]), rel=0.05)
    before = metrics.noise_floor_db((tone + noise).astype(np.int16), n, SR)
    after = metrics.noise_floor_db(y.astype(np.int16), n, SR)
    assert after < before - 10


def test_the_same_however_it_is_fed():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(30000) * 3000).astype(np.int16)
    n = notes((40, 0.1, 2.0), (64, 1.0, 1.2), (88, 3.0, 6.0))
    whole = harmonic_filter(x, n, SR, 0.3)
    for sizes in ([1] * 300 + [29700], list(rng.integers(1, 4000, 40))):
        f, got, a = HarmonicFilter(n, SR, 0.3), [], 0
        for m in sizes:
            got.append(f.feed(x[a : a + int(m)]))
            a += int(m)
        got.append(f.feed(x[a:]))
        got.append(f.finish())
        assert np.array_equal(np.concatenate(got), whole)
    with pytest.raises(ValueError):
        HarmonicFilter(n, SR, 1.5)


@pytest.fixture(scope="module")
def piece(tmp_path_factory):
    return save(random_midi(5, n_notes=30), tmp_path_factory.mktemp("pf") / "p.mid")


def test_generation_applies_it_to_its_own_output(piece):
    synth = deepsynth.load()
    src = open_source(piece, SR)
    win = Window(2000, 9000)
    got_chunks = []
    raw = generate(synth.model, [src], [win], 0.6, 3, chunk=700, postfilter=1.0)[0]
    cleaned = generate(synth.model, [src], [win], 0.6, 3, chunk=700, postfilter=0.2,
                       on_chunk=lambda pieces: got_chunks.append(pieces[0]))[0]
    shown = window_notes(src, win.start, win.length, synth.model.layout)
    assert np.array_equal(cleaned, harmonic_filter(raw, shown, SR, 0.2))
    assert np.array_equal(np.concatenate(got_chunks), cleaned) and len(cleaned) == win.length
    # the API: post-filtered by default, raw with postfilter=1
    assert np.array_equal(synth.synthesize(piece, seed=3, temperature=0.6, postfilter=1),
                          generate(synth.model, [src], None, 0.6, 3,
                                   floor=synth.floor)[0])
    # a video's notes, read from its frames (the simulator's picture), are the MIDI file's
    video = open_source(piece, SR)
    frames_only = type(video)(video.path, "video", video.starts, video.n_samples, SR,
                              video.frames_fn)
    a = window_notes(frames_only, 0, video.n_samples, synth.model.layout)
    b = window_notes(video, 0, video.n_samples, synth.model.layout)
    assert np.array_equal(a.pitch, b.pitch) and np.allclose(a.start, b.start)


def test_synthesize_command_line(piece, tmp_path, capsys):
    raw, filt = tmp_path / "raw.wav", tmp_path / "filt.wav"
    assert main(["synthesize", str(piece), "-o", str(raw), "--postfilter", "1", "-q",
                 "--duration", "2"]) == 0
    assert main(["synthesize", str(piece), "-o", str(filt), "-q", "--duration", "2"]) == 0
    a, _ = read_wav(raw)
    b, _ = read_wav(filt)
    shown = window_notes(open_source(piece, SR), 0, len(a), None)
    assert len(a) == len(b) == 2 * SR and np.array_equal(b, harmonic_filter(a, shown, SR, 0.2))
    capsys.readouterr()
    assert main(["synthesize", str(piece), "-o", str(tmp_path / "x.wav"), "--postfilter",
                 "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "postfilter" in err[0]
