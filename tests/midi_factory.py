"""MIDI files the tests write themselves (no corpus needed)."""

from __future__ import annotations

from pathlib import Path

import mido
import numpy as np

TPB = 480


def make_midi(
    notes: list[tuple[int, int, int, int]] | None = None,  # (pitch, velocity, on tick, off tick)
    channel: int = 0,
    pedal: list[tuple[int, int]] | None = None,  # (tick, value), written on a note-less track
    pedal_channel: int = 0,
    bpm: float = 120.0,
    tempo_changes: list[tuple[int, float]] | None = None,  # (tick, bpm)
    program: int = 0,
    extra_tracks: list[list[tuple[int, mido.Message]]] | None = None,
) -> mido.MidiFile:
    midi = mido.MidiFile(ticks_per_beat=TPB)
    meta = [(0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)))]
    meta += [(t, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(b)))
             for t, b in tempo_changes or []]
    midi.tracks.append(_track(meta))
    events = [(0, mido.Message("program_change", program=program, channel=channel))]
    for pitch, vel, on, off in notes or []:
        events.append((on, mido.Message("note_on", note=pitch, velocity=vel, channel=channel)))
        events.append((off, mido.Message("note_off", note=pitch, velocity=0, channel=channel)))
    midi.tracks.append(_track(events))
    if pedal:
        midi.tracks.append(_track([(t, mido.Message("control_change", control=64, value=v,
                                                    channel=pedal_channel)) for t, v in pedal]))
    for extra in extra_tracks or []:  # a MidiTrack is taken as it is
        midi.tracks.append(extra if isinstance(extra, mido.MidiTrack) else _track(extra))
    return midi


def _track(events) -> mido.MidiTrack:
    track = mido.MidiTrack()
    now = 0
    for tick, msg in sorted(events, key=lambda e: (e[0], getattr(e[1], "type", "") == "note_on")):
        track.append(msg.copy(time=tick - now))
        now = tick
    return track


def random_midi(seed: int, n_notes: int = 60, with_pedal: bool = True) -> mido.MidiFile:
    """Random notes on two channels (two tracks), random pedal, a tempo change."""
    rng = np.random.default_rng(seed)
    midi = mido.MidiFile(ticks_per_beat=TPB)
    midi.tracks.append(_track([
        (0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(float(rng.uniform(60, 180))))),
        (int(rng.integers(1000, 4000)),
         mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(float(rng.uniform(60, 180))))),
    ]))
    for channel in (0, 1):
        events = []
        for _ in range(n_notes // 2):
            on = int(rng.integers(0, 8000))
            off = on + int(rng.integers(1, 1500))
            pitch = int(rng.integers(21, 109))
            vel = int(rng.integers(1, 128))
            events.append((on, mido.Message("note_on", note=pitch, velocity=vel,
                                            channel=channel)))
            events.append((off, mido.Message("note_off", note=pitch, channel=channel)))
        midi.tracks.append(_track(events))
    if with_pedal:
        ticks = np.sort(rng.choice(9000, size=8, replace=False))
        midi.tracks.append(_track([
            (int(t), mido.Message("control_change", control=64, value=127 if i % 2 == 0 else 0))
            for i, t in enumerate(ticks)
        ]))
    return midi


def save(midi: mido.MidiFile, path: Path) -> Path:
    midi.save(str(path))
    return path
