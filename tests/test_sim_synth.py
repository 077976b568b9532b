import numpy as np
import pytest

from deepsynth.config import SimConfig
from deepsynth.errors import DeepSynthError
from deepsynth.sim.midi import Notes
from deepsynth.sim.synth import load_soundfont, render_notes

SR = 4000


def _one_note(velocity: int, start: float = 0.25, end: float = 0.75, pitch: int = 60) -> Notes:
    return Notes.from_columns([pitch], [velocity], [start], [end])


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def test_audio_format_and_length():
    r = render_notes(_one_note(100))
    assert r.audio.dtype == np.int16
    assert len(r.audio) == int((0.75 + SimConfig().tail_seconds) * SR)
    assert r.scale == 1.0 and 0 < r.peak < 1


def test_velocity_reaches_the_audio():
    soft = render_notes(_one_note(30)).audio
    loud = render_notes(_one_note(120)).audio
    assert _rms(loud) > 2 * _rms(soft)


def test_note_on_lands_on_its_sample():
    audio = render_notes(_one_note(110, start=0.5, end=1.0)).audio.astype(float)
    onset = 2000
    before = np.abs(audio[: onset - 8]).max()
    after = np.abs(audio[onset : onset + 200]).max()
    assert before < 0.01 * after  # silence until the strike (only the resampler's ringing)
    first_loud = int(np.argmax(np.abs(audio) > 0.1 * after))
    assert onset - 8 <= first_loud <= onset + 40


def test_pitch_is_right():
    audio = render_notes(_one_note(100, start=0.0, end=1.0, pitch=69)).audio[:4000]  # A4
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    assert abs(np.argmax(spectrum) * SR / len(audio) - 440) < 3


def test_a_song_that_would_clip_is_scaled_down():
    chord = Notes.from_columns(range(40, 90), [127] * 50, [0.0] * 50, [1.0] * 50)
    r = render_notes(chord, SimConfig(gain_db=30.0))
    assert r.peak > 1 and r.scale < 1
    assert np.abs(r.audio.astype(int)).max() <= 32767
    assert np.abs(r.audio.astype(int)).max() > 30000  # scaled to full scale, not squashed


def test_other_sample_rate():
    from deepsynth.config import AudioConfig

    r = render_notes(_one_note(100), SimConfig(audio=AudioConfig(sample_rate=16000)))
    assert len(r.audio) == int((0.75 + 1.0) * 16000)


def test_bad_soundfonts(tmp_path):
    (tmp_path / "empty.sf2").write_bytes(b"")
    with pytest.raises(DeepSynthError, match="not a SoundFont"):
        load_soundfont(tmp_path / "empty.sf2")
    with pytest.raises(DeepSynthError, match="no such SoundFont"):
        load_soundfont(tmp_path / "missing.sf2")
    (tmp_path / "fake.sf2").write_bytes(b"RIFF\x00\x00\x00\x00sfbk" + b"\x00" * 64)
    with pytest.raises(DeepSynthError, match="cannot be used"):
        render_notes(_one_note(100), soundfont=tmp_path / "fake.sf2")
