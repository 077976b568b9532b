"""What the generator conditions on: a video's unique frames (as CNN features) and their start
samples, read from a keyboard mp4 or simulated from a MIDI file, frames streamed in batches so
memory stays flat however long the piece."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsynth.errors import DeepSynthError
from deepsynth.sim.keystates import KeyChanges

FRAME_BATCH = 256
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm")
MIDI_SUFFIXES = (".mid", ".midi")


@dataclass
class VideoSource:
    """A keyboard video to generate audio for."""

    path: Path
    kind: str  # "video" or "midi"
    starts: np.ndarray  # (N,) int64: sample where each unique frame starts
    n_samples: int
    sample_rate: int
    frames_fn: Callable[[], Iterator[np.ndarray]]  # batches (M, 57, 780) of the unique frames
    changes: KeyChanges | None = None  # key states, for sources simulated from MIDI
    warnings: tuple[str, ...] = ()  # the key reader's doubts about the video (one line each)

    def frame_batches(self) -> Iterator[np.ndarray]:
        return self.frames_fn()

    def frame_index(self, start: int, stop: int) -> np.ndarray:
        """Row of the frame shown at each sample in [start, stop) (clamped to the piece)."""
        t = np.clip(np.arange(start, stop), 0, None)
        return np.searchsorted(self.starts, t, side="right") - 1


def open_source(path: str | os.PathLike, sample_rate: int) -> VideoSource:
    """A keyboard video (mp4 from the simulator, or any 780x57 video) or a MIDI file, timed at
    `sample_rate` (the model's): a MIDI file is simulated at it, a video DeepSynth did not write
    is timed at it (one it wrote keeps the rate it was tagged with)."""
    p = Path(path)
    if not p.exists():
        raise DeepSynthError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix in MIDI_SUFFIXES:
        return _midi_source(p, sample_rate)
    if suffix in VIDEO_SUFFIXES:
        return _video_source(p, sample_rate)
    raise DeepSynthError(
        f"{p}: input must be a video ({', '.join(VIDEO_SUFFIXES)}) or a MIDI "
        f"file ({', '.join(MIDI_SUFFIXES)})"
    )


def _midi_source(path: Path, sample_rate: int) -> VideoSource:
    from deepsynth.config import AudioConfig, SimConfig
    from deepsynth.sim.simulate import read_piece

    _, changes = read_piece(path, SimConfig(audio=AudioConfig(sample_rate=sample_rate)))
    return source_from_changes(changes, path, kind="midi")


def source_from_changes(
    changes: KeyChanges, path: str | os.PathLike | None = None, kind: str = "keys"
) -> VideoSource:
    """A source whose frames are drawn from key states (a simulated MIDI file, a stored song)."""
    from deepsynth.sim import keyboard

    def frames() -> Iterator[np.ndarray]:
        for lo in range(0, len(changes), FRAME_BATCH):
            yield keyboard.layout().render(changes.states[lo : lo + FRAME_BATCH])

    return VideoSource(
        Path(path) if path is not None else None,
        kind,
        changes.starts,
        changes.n_samples,
        changes.sample_rate,
        frames,
        changes,
    )


def _video_source(path: Path, sample_rate: int) -> VideoSource:
    from deepsynth.sim.video import (
        is_simulator_picture,
        iter_frames,
        piece_length,
        read_keys,
        video_info,
    )

    if not is_simulator_picture(path):  # any other keyboard: read its keys, draw them anew
        reading = read_keys(path, sample_rate)
        source = source_from_changes(reading.changes, path, kind="video")
        return dataclasses.replace(source, warnings=reading.warnings)

    info = video_info(path, sample_rate)
    starts = []
    for start, _ in iter_frames(path, sample_rate):  # one pass for the timing only
        starts.append(start)
    if not starts:
        raise DeepSynthError(f"{path}: video has no frames")
    starts_a = np.asarray(starts, np.int64) - starts[0]
    n = piece_length(info, starts_a)

    def frames() -> Iterator[np.ndarray]:
        batch = []
        for _, img in iter_frames(path, sample_rate):
            batch.append(img)
            if len(batch) == FRAME_BATCH:
                yield np.stack(batch)
                batch = []
        if batch:
            yield np.stack(batch)

    return VideoSource(path, "video", starts_a, n, info.sample_rate, frames)
