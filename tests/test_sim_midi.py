import mido
import numpy as np
import pytest
from midi_factory import TPB, make_midi, random_midi, save

from deepsynth.errors import DeepSynthError
from deepsynth.sim.keystates import key_changes, notes_from_key_changes, seconds_to_samples
from deepsynth.sim.midi import read_midi, write_midi

SR = 4000
BEAT = TPB  # one beat = 0.5 s at 120 bpm = 2000 samples


def _read(tmp_path, midi, **kw):
    return read_midi(save(midi, tmp_path / "t.mid"), **kw)


def test_notes_times_exact_to_the_sample_with_tempo_change(tmp_path):
    # 120 bpm for 2 beats (1 s), then 60 bpm: a beat is 1 s
    midi = make_midi([(60, 100, BEAT, 3 * BEAT), (64, 90, 4 * BEAT, 5 * BEAT)],
                     tempo_changes=[(2 * BEAT, 60.0)])
    piece = _read(tmp_path, midi)
    np.testing.assert_allclose(piece.notes.start, [0.5, 3.0])
    np.testing.assert_allclose(piece.notes.end, [2.0, 4.0])
    changes = key_changes(piece.notes, SR, n_samples=20000)
    assert changes.starts.tolist() == [0, 2000, 8000, 12000, 16000]
    c4, e4 = 60 - 21, 64 - 21
    assert changes.states[1, c4] and changes.states[1].sum() == 1
    assert changes.states[3, e4] and changes.states[3].sum() == 1
    assert not changes.states[[0, 2, 4]].any()
    assert list(piece.notes.velocity) == [100, 90]


def test_pedal_on_a_noteless_track_extends_notes(tmp_path):
    notes = [(60, 80, 0, BEAT), (67, 80, 2 * BEAT, 3 * BEAT), (72, 80, 6 * BEAT, 7 * BEAT)]
    pedal = [(BEAT // 2, 127), (4 * BEAT, 0)]  # down during the first two notes' key-ups
    piece = _read(tmp_path, make_midi(notes, pedal=pedal))
    np.testing.assert_allclose(piece.notes.end, [2.0, 2.0, 3.5])
    raw = _read(tmp_path, make_midi(notes, pedal=pedal), pedal="raw")
    np.testing.assert_allclose(raw.notes.end, [0.5, 1.5, 3.5])


def test_pedal_applies_per_channel(tmp_path):
    notes = [(60, 80, 0, BEAT)]
    piece = _read(tmp_path, make_midi(notes, channel=0, pedal=[(10, 127), (4 * BEAT, 0)],
                                      pedal_channel=1))
    np.testing.assert_allclose(piece.notes.end, [0.5])  # another channel's pedal: no effect


def test_pedal_up_at_key_up_releases(tmp_path):
    piece = _read(tmp_path, make_midi([(60, 80, 0, BEAT)], pedal=[(10, 127), (BEAT, 0)]))
    np.testing.assert_allclose(piece.notes.end, [0.5])


def test_restrike_under_pedal_ends_held_note_and_stays_visible(tmp_path):
    notes = [(60, 80, 0, BEAT // 2), (60, 90, BEAT, BEAT + BEAT // 2)]
    piece = _read(tmp_path, make_midi(notes, pedal=[(10, 127), (4 * BEAT, 0)]))
    np.testing.assert_allclose(piece.notes.start, [0.0, 0.5])
    np.testing.assert_allclose(piece.notes.end, [0.5, 2.0])
    changes = key_changes(piece.notes, SR)
    # pressed at 0, released for one sample at 1999, pressed again at 2000, up at 8000
    assert changes.starts.tolist() == [0, 1999, 2000, 8000]
    assert changes.states[:, 60 - 21].tolist() == [True, False, True, False]


def test_pitches_outside_88_keys_clipped_with_warning(tmp_path):
    piece = _read(tmp_path, make_midi([(10, 80, 0, BEAT), (120, 80, 0, BEAT), (60, 80, 0, BEAT)]))
    assert sorted(piece.notes.pitch.tolist()) == [21, 60, 108]
    assert any("clipped 2 pitches" in w for w in piece.warnings)


def _zero_length_track(pitch: int, tick: int) -> mido.MidiTrack:
    """note-on then note-off at the same tick, in that order (as such files have them)."""
    return mido.MidiTrack([mido.Message("note_on", note=pitch, velocity=80, time=tick),
                           mido.Message("note_off", note=pitch, time=0)])


def test_zero_length_notes_dropped_with_warning(tmp_path):
    piece = _read(tmp_path, make_midi([(62, 80, 0, BEAT)],
                                      extra_tracks=[_zero_length_track(60, BEAT // 2)]))
    assert piece.notes.pitch.tolist() == [62]
    assert any("zero length" in w for w in piece.warnings)


def test_drum_and_nonpiano_notes_dropped(tmp_path):
    drums = [(0, mido.Message("note_on", note=36, velocity=100, channel=9)),
             (BEAT, mido.Message("note_off", note=36, channel=9))]
    piece = _read(tmp_path, make_midi([(60, 80, 0, BEAT)], extra_tracks=[drums]))
    assert piece.notes.pitch.tolist() == [60]
    assert any("drum" in w for w in piece.warnings)
    with pytest.raises(DeepSynthError, match="non-piano"):
        _read(tmp_path, make_midi([(60, 80, 0, BEAT)], program=40))
    assert len(_read(tmp_path, make_midi([(60, 80, 0, BEAT)], program=40),
                     any_instrument=True).notes) == 1


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty file"),
        (b"\x00\x01garbage" * 50, "not a valid MIDI"),
        ("truncated", "truncated or corrupt"),
        ("no-notes", "no notes"),
        ("drums", "drums only"),
        ("zero", "non-zero length"),
    ],
)
def test_bad_midi_raises_one_line(tmp_path, content, match):
    path = tmp_path / "bad.mid"
    if content == "truncated":
        good = tmp_path / "good.mid"
        save(random_midi(0), good)
        path.write_bytes(good.read_bytes()[:300])
    elif content == "no-notes":
        save(make_midi([]), path)
    elif content == "drums":
        save(make_midi([(36, 80, 0, BEAT)], channel=9), path)
    elif content == "zero":
        save(make_midi([], extra_tracks=[_zero_length_track(60, BEAT)]), path)
    else:
        path.write_bytes(content)
    with pytest.raises(DeepSynthError, match=match) as info:
        read_midi(path)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(DeepSynthError, match="no such file"):
        read_midi(tmp_path / "nope.mid")


@pytest.mark.parametrize("seed", range(5))
def test_notes_midi_round_trip_on_the_sample_grid(tmp_path, seed):
    """random MIDI -> key changes -> notes -> MIDI file -> key changes: identical."""
    piece = _read(tmp_path, random_midi(seed))
    changes = key_changes(piece.notes, SR)
    decoded = notes_from_key_changes(changes)
    write_midi(decoded, tmp_path / "decoded.mid", sample_rate=SR)
    again = read_midi(tmp_path / "decoded.mid", pedal="raw")
    assert key_changes(again.notes, SR, changes.n_samples).equals(changes)


def test_seconds_to_samples_rounds_half_up():
    assert seconds_to_samples([0.0, 0.000125, 0.00012499, 1.0], SR).tolist() == [0, 1, 0, 4000]
