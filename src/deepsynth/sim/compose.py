"""A short piece the project writes itself (for the demo and the tests): both hands, block
chords, scale runs and arpeggios, with the sustain pedal on its own track like the corpus files."""

from __future__ import annotations

import io
import os

import mido
import numpy as np

from deepsynth.atomic import atomic_write_bytes

TICKS_PER_BEAT = 480
# I - vi - IV - V in C major: (bass root, chord tones for the left hand, scale for the runs)
PROGRESSION = [
    (36, (48, 52, 55), (60, 62, 64, 65, 67, 69, 71, 72)),
    (33, (45, 48, 52), (57, 59, 60, 62, 64, 65, 67, 69)),
    (41, (53, 57, 60), (65, 67, 69, 70, 72, 74, 76, 77)),
    (43, (55, 59, 62), (67, 69, 71, 72, 74, 76, 77, 79)),
]


def demo_piece(bars: int = 8, bpm: float = 128.0, seed: int = 0) -> mido.MidiFile:
    """A `bars`-bar piece in 4/4 (8 bars at 128 bpm = 15 s)."""
    rng = np.random.default_rng(seed)
    events: list[tuple[int, mido.Message]] = []  # (absolute tick, message) on channel 0
    pedal: list[tuple[int, int]] = []
    beat = TICKS_PER_BEAT

    def note(pitch: int, start: int, length: int, velocity: int) -> None:
        events.append((start, mido.Message("note_on", note=pitch, velocity=velocity)))
        events.append((start + length, mido.Message("note_off", note=pitch, velocity=0)))

    for bar in range(bars):
        bass, chord, scale = PROGRESSION[bar % len(PROGRESSION)]
        t0 = bar * 4 * beat
        pedal += [(t0 + 10, 127), (t0 + 4 * beat - 20, 0)]  # re-pedal every bar
        note(bass, t0, beat, 80)  # left hand: bass, then the chord on beats 2 and 3 and 4
        for b in (1, 2, 3):
            for p in chord:
                note(p, t0 + b * beat, beat // 2, 60 + int(rng.integers(0, 15)))
        if bar % 2 == 0:  # right hand: a sixteenth-note run up the scale and back
            run = list(scale) + list(scale[-2:0:-1])
            for i, p in enumerate(run[:16]):
                note(p + 12, t0 + i * beat // 4, beat // 4, 70 + int(rng.integers(0, 20)))
        else:  # broken-chord arpeggio in eighths, then a held melody note
            arp = [chord[0] + 12, chord[1] + 12, chord[2] + 12, chord[0] + 24]
            for i, p in enumerate(arp + arp[::-1][:2]):
                note(p + 12, t0 + i * beat // 2, beat // 2, 75)
            note(scale[4] + 12, t0 + 3 * beat, beat, 90)
    final = bars * 4 * beat
    for p in (36, 48, 52, 55, 60, 64, 67, 72):  # closing chord
        note(p, final, 2 * beat, 85)
    pedal += [(final, 127), (final + 3 * beat, 0)]

    midi = mido.MidiFile(ticks_per_beat=TICKS_PER_BEAT)
    tempo = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0),
                            mido.MetaMessage("track_name", name="DeepSynth demo", time=0)])
    midi.tracks.append(tempo)
    midi.tracks.append(_track(events, "Piano"))
    ped = [(t, mido.Message("control_change", control=64, value=v)) for t, v in pedal]
    midi.tracks.append(_track(ped, "Pedal"))
    return midi


def _track(events: list[tuple[int, mido.Message]], name: str) -> mido.MidiTrack:
    track = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0)])
    # at one tick, note-offs go first so a repeated note is not cut by its own release
    order = sorted(events, key=lambda e: (e[0], e[1].type == "note_on"))
    now = 0
    for tick, msg in order:
        track.append(msg.copy(time=tick - now))
        now = tick
    return track


def midi_bytes(midi: mido.MidiFile) -> bytes:
    """The file's bytes, with a text event that says DeepSynth made it (on a copy)."""
    midi = mido.MidiFile(type=midi.type, ticks_per_beat=midi.ticks_per_beat,
                         tracks=[mido.MidiTrack(t) for t in midi.tracks])
    if midi.tracks:
        midi.tracks[0].insert(0, mido.MetaMessage("text", text="made by deepsynth", time=0))
    buf = io.BytesIO()
    midi.save(file=buf)
    return buf.getvalue()


def write_demo_midi(path: str | os.PathLike, **kwargs) -> None:
    atomic_write_bytes(path, midi_bytes(demo_piece(**kwargs)))
