"""Key states on the audio sample grid: the sequence of changes of the set of pressed keys.

`KeyChanges` is what the video shows, in compact form: one row of 88 booleans per change and the
audio sample index where it starts. The frame for audio sample t is the last change at or before
t. The first change is always at sample 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepsynth.sim.keyboard import LOWEST_PITCH, N_KEYS
from deepsynth.sim.midi import Notes


def seconds_to_samples(t, sample_rate: int) -> np.ndarray:
    """Exact rounding to the nearest sample (half up), the one rule used everywhere."""
    return np.floor(np.asarray(t, dtype=np.float64) * sample_rate + 0.5).astype(np.int64)


@dataclass(frozen=True)
class KeyChanges:
    starts: np.ndarray  # (N,) int64, strictly increasing, starts[0] == 0
    states: np.ndarray  # (N, 88) bool, consecutive rows differ
    sample_rate: int
    n_samples: int  # length of the piece's audio in samples

    def __post_init__(self):
        if len(self.starts) == 0 or self.starts[0] != 0:
            raise ValueError("key changes must start at sample 0")
        if np.any(np.diff(self.starts) <= 0):
            raise ValueError("key change samples must be strictly increasing")
        if self.states.shape != (len(self.starts), N_KEYS):
            raise ValueError(f"states must be (N, {N_KEYS}), got {self.states.shape}")
        if self.n_samples <= self.starts[-1]:
            raise ValueError("the audio must extend past the last key change")

    def __len__(self) -> int:
        return len(self.starts)

    def frame_index(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """For every sample in [start, stop): the row of the change shown at that sample."""
        stop = self.n_samples if stop is None else stop
        return np.searchsorted(self.starts, np.arange(start, stop), side="right") - 1

    def equals(self, other: KeyChanges) -> bool:
        return (
            self.sample_rate == other.sample_rate
            and np.array_equal(self.starts, other.starts)
            and np.array_equal(self.states, other.states)
        )


def changes_from_spans(
    key: np.ndarray, on: np.ndarray, off: np.ndarray, sample_rate: int, n_samples: int
) -> KeyChanges:
    """Pressed spans [on, off) of keys 0..87 (sample indices) -> the sequence of distinct states."""
    key = np.asarray(key, dtype=np.int64)
    on, off = np.asarray(on, dtype=np.int64), np.asarray(off, dtype=np.int64)
    keep = off > on
    key, on, off = key[keep], on[keep], off[keep]
    times = np.unique(np.concatenate([[0], on, off]))
    delta = np.zeros((len(times), N_KEYS), dtype=np.int32)
    np.add.at(delta, (np.searchsorted(times, on), key), 1)
    np.add.at(delta, (np.searchsorted(times, off), key), -1)
    return changes_from_states(times, np.cumsum(delta, axis=0) > 0, sample_rate, n_samples)


def key_changes(notes: Notes, sample_rate: int, n_samples: int | None = None) -> KeyChanges:
    """The key states the video shows for `notes`.

    A key struck again at the very sample its previous note ends is shown released for that one
    sample before, so every strike is a visible change (otherwise a re-strike under the pedal
    would be invisible and the video would not determine the audio).
    """
    on = seconds_to_samples(notes.start, sample_rate)
    off = seconds_to_samples(notes.end, sample_rate)
    key = notes.pitch.astype(np.int64) - LOWEST_PITCH
    order = np.lexsort((on, key))
    key_o, on_o, off_o = key[order], on[order], off[order]
    restruck = np.r_[(key_o[1:] == key_o[:-1]) & (on_o[1:] <= off_o[:-1]), False]
    off_o = np.where(restruck, np.maximum(np.r_[on_o[1:], 0] - 1, on_o + 1), off_o)
    if n_samples is None:
        n_samples = int(off.max()) + 1 if len(off) else 1
    return changes_from_spans(key_o, on_o, off_o, sample_rate, max(n_samples, int(off.max()) + 1))


def changes_from_states(
    starts: np.ndarray, states: np.ndarray, sample_rate: int, n_samples: int
) -> KeyChanges:
    """A sequence of (start, state) rows -> KeyChanges, merging rows equal to the one before."""
    states = np.asarray(states, dtype=bool)
    changed = np.r_[True, np.any(states[1:] != states[:-1], axis=1)]
    return KeyChanges(np.asarray(starts, np.int64)[changed], states[changed], sample_rate,
                      int(n_samples))


def spans_from_changes(changes: KeyChanges) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(key, on, off): every maximal run [on, off) of a pressed key, in sample indices."""
    blank = np.zeros((1, N_KEYS), np.int8)
    edges = np.diff(np.concatenate([blank, changes.states.astype(np.int8), blank]), axis=0)
    bounds = np.r_[changes.starts, changes.n_samples]
    # walking the transpose goes key by key, rows in order: presses and releases pair up
    key_on, row_on = np.nonzero(edges.T == 1)
    _, row_off = np.nonzero(edges.T == -1)
    return key_on, bounds[row_on], bounds[row_off]


def notes_from_key_changes(changes: KeyChanges, velocity: int = 64) -> Notes:
    """Each maximal run of a pressed key becomes one note (a video shows no velocity)."""
    key, on, off = spans_from_changes(changes)
    sr = changes.sample_rate
    return Notes.from_columns(key + LOWEST_PITCH, np.full(len(key), velocity), on / sr, off / sr)
