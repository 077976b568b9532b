"""Read a MIDI file into the piano notes that sound, with the sustain pedal applied.

pretty_midi supplies the tempo map (ticks -> seconds). Notes and control changes are read from
every track with their MIDI channel (pretty_midi drops the channel and the control changes of
tracks without notes, which is where the piano-midi files keep their pedal): the pedal (CC64,
down at value >= 64) acts on every note of its channel, whatever the track.

Pedal modes:
  "extend" (default): a note released while the pedal is down keeps sounding (and stays shown as
      pressed) until the pedal lifts; striking the same key again ends the held note.
  "raw": notes end at their key-up.
"""

from __future__ import annotations

import io
import os
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

import mido
import numpy as np

from deepsynth.config import PedalMode
from deepsynth.errors import DeepSynthError
from deepsynth.sim.keyboard import HIGHEST_PITCH, LOWEST_PITCH

DRUM_CHANNEL = 9
PIANO_PROGRAMS = range(0, 8)  # General MIDI piano family
SUSTAIN_CC = 64
MAX_PIECE_SECONDS = 12 * 3600  # longer is refused (a corrupt delta time, most likely)


@dataclass(frozen=True)
class Notes:
    """Notes as parallel arrays, sorted by (start, pitch). Times in seconds."""

    pitch: np.ndarray  # int16, 21..108
    velocity: np.ndarray  # int16, 1..127
    start: np.ndarray  # float64
    end: np.ndarray  # float64, > start

    def __len__(self) -> int:
        return len(self.pitch)

    @property
    def duration(self) -> float:
        return float(self.end.max()) if len(self) else 0.0

    @classmethod
    def from_columns(cls, pitch, velocity, start, end) -> Notes:
        pitch = np.asarray(pitch, dtype=np.int16)
        velocity = np.asarray(velocity, dtype=np.int16)
        start = np.asarray(start, dtype=np.float64)
        end = np.asarray(end, dtype=np.float64)
        order = np.lexsort((pitch, start))
        return cls(pitch[order], velocity[order], start[order], end[order])


@dataclass(frozen=True)
class Piece:
    """A MIDI file read for the simulator."""

    name: str
    notes: Notes
    pedal: PedalMode
    warnings: tuple[str, ...] = field(default=())


def read_midi(
    path: str | os.PathLike, pedal: PedalMode = "extend", any_instrument: bool = False
) -> Piece:
    """Read the piano notes of a MIDI file.

    Drum-channel notes are always dropped; notes of non-piano programs are dropped unless
    `any_instrument` (then every melodic note is played on the piano). Raises DeepSynthError
    with a one-line reason for a missing, unreadable, empty or pianoless file.
    """
    if pedal not in ("extend", "raw"):
        raise DeepSynthError(f"pedal mode must be 'extend' or 'raw', not {pedal!r}")
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DeepSynthError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DeepSynthError(f"{path}: is a directory, not a MIDI file") from None
    except OSError as e:
        raise DeepSynthError(f"{path}: cannot read ({e.strerror})") from None
    if not data:
        raise DeepSynthError(f"{path}: empty file (0 bytes), not a MIDI file")
    try:
        midi = mido.MidiFile(file=io.BytesIO(_known_chunks(data)))
    except EOFError:
        raise DeepSynthError(f"{path}: truncated or corrupt MIDI file") from None
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise DeepSynthError(f"{path}: not a valid MIDI file ({e})") from None
    return parse_midi(midi, name=path.stem, pedal=pedal, any_instrument=any_instrument,
                      label=str(path))


def _known_chunks(data: bytes) -> bytes:
    """The file without chunks other than MThd and MTrk (the standard says a reader skips
    unknown chunks; mido stops at them). A file whose chunks do not parse is left as it is,
    for mido to name what is wrong."""
    if data[:4] != b"MThd" or len(data) < 14:
        return data
    chunks, pos, dropped = [], 0, False
    while pos + 8 <= len(data):
        kind, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "big")
        if pos + 8 + size > len(data) or not kind.isalnum():
            return data
        if kind in (b"MThd", b"MTrk"):
            chunks.append(data[pos : pos + 8 + size])
        else:
            dropped = True
        pos += 8 + size
    return b"".join(chunks) + data[pos:] if dropped else data


def _tick_to_seconds(midi: mido.MidiFile):
    """The tempo map of `midi` as a vectorised function: pretty_midi's reading of it (set_tempo
    events of the first track; one at tick 0 replaces the default 120 bpm), computed for the
    ticks asked for only, so a huge delta time costs nothing (pretty_midi allocates a float
    per tick, and refuses files past 10 million ticks)."""
    resolution = midi.ticks_per_beat
    if isinstance(resolution, int) and resolution < 0:  # SMPTE: frames a second x ticks a frame
        division = resolution & 0xFFFF
        fps, per_frame = 256 - (division >> 8), division & 0xFF
        if fps not in (24, 25, 29, 30) or per_frame == 0:
            raise DeepSynthError(f"unusable SMPTE time division ({fps} fps, {per_frame} ticks "
                                 "a frame)")
        second = 1.0 / ((29.97 if fps == 29 else fps) * per_frame)
        return lambda ticks: np.asarray(ticks, dtype=np.float64) * second
    if not isinstance(resolution, int) or resolution <= 0:
        raise DeepSynthError(f"unusable time division ({resolution} ticks per beat)")
    scales = [(0, 60.0 / (120.0 * resolution))]
    tick = 0
    for event in midi.tracks[0] if midi.tracks else []:
        tick += event.time
        if event.type != "set_tempo" or event.tempo <= 0:
            continue
        if tick == 0:
            scales = [(0, 60.0 / ((6e7 / event.tempo) * resolution))]
        else:
            scale = 60.0 / ((6e7 / event.tempo) * resolution)
            if scale != scales[-1][1]:
                scales.append((tick, scale))
    starts = np.array([t for t, _ in scales], dtype=np.int64)
    rates = np.array([r for _, r in scales], dtype=np.float64)
    begins = np.zeros(len(scales), dtype=np.float64)  # the time at each tempo's first tick
    for i in range(1, len(scales)):
        begins[i] = begins[i - 1] + rates[i - 1] * (starts[i] - starts[i - 1])

    def convert(ticks: np.ndarray) -> np.ndarray:
        ticks = np.asarray(ticks, dtype=np.int64)
        i = np.searchsorted(starts, ticks, side="right") - 1
        return begins[i] + rates[i] * (ticks - starts[i])

    return convert


def _merged_events(midi: mido.MidiFile) -> list[tuple[int, mido.Message]]:
    """(absolute tick, message) of every channel message of every track, in time order."""
    events = []
    for track in midi.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if not msg.is_meta and hasattr(msg, "channel"):
                events.append((tick, msg))
    events.sort(key=lambda e: e[0])  # stable: same-tick order within a track is kept
    return events


def parse_midi(
    midi: mido.MidiFile,
    name: str = "song",
    pedal: PedalMode = "extend",
    any_instrument: bool = False,
    label: str | None = None,
) -> Piece:
    label = label or name
    notes_out: list[tuple[int, int, int, int, int]] = []  # channel, pitch, vel, on, off (ticks)
    pedal_events: dict[int, list[tuple[int, bool]]] = defaultdict(list)
    program = defaultdict(int)
    open_notes: dict[tuple[int, int], deque] = defaultdict(deque)
    dropped_drums = dropped_program = zero_length = unclosed = 0
    last_tick = 0
    for tick, msg in _merged_events(midi):
        last_tick = tick
        if msg.type == "program_change":
            program[msg.channel] = msg.program
        elif msg.type == "control_change" and msg.control == SUSTAIN_CC:
            pedal_events[msg.channel].append((tick, msg.value >= 64))
        elif msg.type == "note_on" and msg.velocity > 0:
            open_notes[(msg.channel, msg.note)].append((tick, msg.velocity, program[msg.channel]))
        elif msg.type in ("note_off", "note_on"):
            queue = open_notes.get((msg.channel, msg.note))
            if not queue:
                continue
            on, velocity, prog = queue.popleft()  # first in, first out
            if msg.channel == DRUM_CHANNEL:
                dropped_drums += 1
            elif prog not in PIANO_PROGRAMS and not any_instrument:
                dropped_program += 1
            elif tick == on:
                zero_length += 1
            else:
                notes_out.append((msg.channel, msg.note, velocity, on, tick))
    for (channel, pitch), queue in open_notes.items():
        for on, velocity, prog in queue:  # never released: end them with the file
            if channel == DRUM_CHANNEL or (prog not in PIANO_PROGRAMS and not any_instrument):
                continue
            if last_tick > on:
                unclosed += 1
                notes_out.append((channel, pitch, velocity, on, last_tick))
            else:
                zero_length += 1

    notes_warn = []
    if not notes_out:
        if dropped_drums and not dropped_program:
            raise DeepSynthError(f"{label}: drums only, no piano notes")
        if dropped_program:
            raise DeepSynthError(
                f"{label}: no piano notes ({dropped_program} notes on non-piano instruments; "
                "pass any_instrument / --any-instrument to play them on the piano)"
            )
        if zero_length:
            raise DeepSynthError(f"{label}: no notes of non-zero length ({zero_length} empty)")
        raise DeepSynthError(f"{label}: no notes")
    if dropped_drums:
        notes_warn.append(f"dropped {dropped_drums} drum notes")
    if dropped_program:
        notes_warn.append(f"dropped {dropped_program} notes of non-piano instruments")
    if zero_length:
        notes_warn.append(f"dropped {zero_length} notes of zero length")
    if unclosed:
        notes_warn.append(f"{unclosed} notes never released: ended at the end of the file")

    arr = np.array(notes_out, dtype=np.int64)
    channel, pitch, velocity, on, off = arr.T
    try:
        to_sec = _tick_to_seconds(midi)
    except DeepSynthError as e:
        raise DeepSynthError(f"{label}: {e}") from None
    if pedal == "extend":
        off = _extend_by_pedal(channel, off, pedal_events, last_tick)
    outside = (pitch < LOWEST_PITCH) | (pitch > HIGHEST_PITCH)
    if outside.any():
        notes_warn.append(
            f"clipped {int(outside.sum())} pitches outside the 88 keys "
            f"(MIDI {int(pitch.min())}..{int(pitch.max())}) to {LOWEST_PITCH}..{HIGHEST_PITCH}"
        )
        pitch = np.clip(pitch, LOWEST_PITCH, HIGHEST_PITCH)
    start, end = to_sec(on), to_sec(off)
    if end.max() > MAX_PIECE_SECONDS:
        raise DeepSynthError(f"{label}: lasts {end.max() / 3600:,.1f} h; the simulator takes "
                             f"pieces of up to {MAX_PIECE_SECONDS // 3600} h (a corrupt time?)")
    notes = _one_note_per_key_at_a_time(Notes.from_columns(pitch, velocity, start, end))
    return Piece(name=name, notes=notes, pedal=pedal, warnings=tuple(notes_warn))


def _extend_by_pedal(channel, off, pedal_events, last_tick) -> np.ndarray:
    """Move each key-up that happens with the pedal down to the moment the pedal lifts."""
    off = off.copy()
    for ch, events in pedal_events.items():
        ticks = np.array([t for t, _ in events], dtype=np.int64)
        down = np.array([d for _, d in events], dtype=bool)
        sel = np.flatnonzero(channel == ch)
        if not len(sel) or not down.any():
            continue
        # pedal state at a key-up: the last pedal event at or before it (an up at the same tick
        # as the key-up releases the note)
        last = np.searchsorted(ticks, off[sel], side="right") - 1
        held = (last >= 0) & down[np.maximum(last, 0)]
        # the first pedal-up strictly after the key-up
        up_ticks = ticks[~down]
        nxt = np.searchsorted(up_ticks, off[sel], side="right")
        lift = np.where(nxt < len(up_ticks), up_ticks[np.minimum(nxt, len(up_ticks) - 1)],
                        max(last_tick, int(off[sel].max())))
        off[sel] = np.where(held, np.maximum(lift, off[sel]), off[sel])
    return off


def _one_note_per_key_at_a_time(notes: Notes) -> Notes:
    """A key sounds one note at a time: a new strike ends the previous note of that key.

    Notes of one key that start together (doubled on two channels, or after pitch clipping)
    become one note with the longer end and the larger velocity.
    """
    order = np.lexsort((notes.start, notes.pitch))
    pitch, vel = notes.pitch[order], notes.velocity[order]
    start, end = notes.start[order], notes.end[order].copy()
    same_key_next = np.r_[pitch[1:] == pitch[:-1], False]
    duplicate = np.r_[same_key_next[:-1] & (start[1:] == start[:-1]), False]
    if duplicate.any():  # fold each duplicate into the note after it (same key, same start)
        for i in np.flatnonzero(duplicate)[::-1]:
            end[i + 1] = max(end[i + 1], end[i])
            vel[i + 1] = max(vel[i + 1], vel[i])
        keep = ~duplicate
        pitch, vel, start, end = pitch[keep], vel[keep], start[keep], end[keep]
        same_key_next = np.r_[pitch[1:] == pitch[:-1], False]
    next_start = np.r_[start[1:], np.inf]
    end = np.where(same_key_next, np.minimum(end, next_start), end)
    return Notes.from_columns(pitch, vel, start, end)


def write_midi(notes: Notes, path: str | os.PathLike, sample_rate: int | None = None) -> None:
    """Write notes as a one-track piano MIDI file (atomically).

    With `sample_rate`, the file's resolution is one tick per audio sample (at 120 bpm), so note
    times on the sample grid survive the round trip exactly.
    """
    import pretty_midi

    from deepsynth.atomic import atomic_write_bytes

    # one tick per sample where MIDI allows it (above 65 kHz: the finest resolution there is)
    resolution = 220 if sample_rate is None else min(int(sample_rate) // 2, 32767)
    if not 1 <= resolution <= 32767:
        raise DeepSynthError(f"sample rate {sample_rate} cannot be a MIDI resolution")
    pm = pretty_midi.PrettyMIDI(resolution=resolution, initial_tempo=120.0)
    piano = pretty_midi.Instrument(program=0, name="Piano")
    for p, v, s, e in zip(notes.pitch, notes.velocity, notes.start, notes.end, strict=True):
        piano.notes.append(pretty_midi.Note(int(v), int(p), float(s), float(e)))
    pm.instruments.append(piano)
    pm.text_events.append(pretty_midi.Text("made by deepsynth", 0.0))  # how ours is recognised
    buf = io.BytesIO()
    pm.write(buf)
    atomic_write_bytes(path, buf.getvalue())
