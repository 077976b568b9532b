"""Listening material: a fixed, seeded choice of excerpts of the songs of one split, each starting
where a key goes down (so notes play from its first sample on), with its ground-truth audio and
the key states its video shows.

Choice: the split's songs long enough for one excerpt are ranked by a hash of (seed, song id);
excerpt i comes from song i (cycling through the ranking when more excerpts than songs are asked
for), and starts at one of that song's key presses that leave room for the excerpt, picked with a
generator seeded by (seed, song id, round). The same store, split, seed, count and length always
give the same excerpts, and adding songs to the store only brings in songs that outrank old ones.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsynth.data import store
from deepsynth.errors import DeepSynthError
from deepsynth.sim.keystates import KeyChanges, changes_from_states, notes_from_key_changes
from deepsynth.sim.midi import Notes


@dataclass(frozen=True)
class Excerpt:
    """Samples [start, start + length) of a stored song."""

    song: str  # song id
    title: str
    start: int
    length: int
    sample_rate: int
    truth: np.ndarray  # int16 (length,): the ground-truth audio
    changes: KeyChanges  # key states over the excerpt (sample 0 = the excerpt's first)
    context: KeyChanges  # key states over [context_start, start + length + lookahead)
    context_start: int  # first song sample of `context` (start minus the video context)

    @property
    def seconds(self) -> float:
        return self.length / self.sample_rate

    @property
    def name(self) -> str:
        return f"{self.song}@{self.start / self.sample_rate:.1f}s"

    def notes(self) -> Notes:
        """What the video shows, as notes (times in seconds from the excerpt's start); a key
        already down at the first sample gives a note starting at 0."""
        return notes_from_key_changes(self.changes)


def cut_changes(changes: KeyChanges, lo: int, hi: int) -> KeyChanges:
    """The key states over song samples [lo, hi), re-timed so sample lo is 0."""
    if not 0 <= lo < hi <= changes.n_samples:
        raise ValueError(f"[{lo}, {hi}) is outside a piece of {changes.n_samples} samples")
    starts = np.asarray(changes.starts)
    r0 = int(np.searchsorted(starts, lo, side="right")) - 1
    r1 = int(np.searchsorted(starts, hi - 1, side="right"))
    new_starts = np.maximum(starts[r0:r1], lo) - lo
    return changes_from_states(new_starts, changes.states[r0:r1], changes.sample_rate, hi - lo)


def press_samples(changes: KeyChanges) -> np.ndarray:
    """Samples where at least one key goes down."""
    states = np.asarray(changes.states)
    before = np.vstack([np.zeros((1, states.shape[1]), bool), states[:-1]])
    pressed = np.any(states & ~before, axis=1)
    return np.asarray(changes.starts)[pressed]


def _rank(seed: int, song_id: str) -> int:
    digest = hashlib.sha256(f"deepsynth-excerpt:{int(seed)}:{song_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def choose_excerpts(
    root: str | os.PathLike, split: str, count: int, seconds: float, seed: int = 0,
    context: int = 0, lookahead: int = 0,
) -> list[Excerpt]:
    """`count` excerpts of `seconds` from the songs of `split` (see the module doc); `context`
    and `lookahead`: samples of key states kept before and after each excerpt for the
    generator's conditioning."""
    if count <= 0:
        return []
    if seconds <= 0:
        raise DeepSynthError(f"excerpt length must be positive, got {seconds} s")
    manifest = store.read_manifest(root)
    sr = int(manifest["sample_rate"])
    length = int(round(seconds * sr))
    rows = [s for s in manifest["songs"] if s["split"] == split]
    if not rows:
        raise DeepSynthError(f"{root}: the {split} split has no songs")
    long_enough = [s for s in rows if s["n_samples"] > length]
    if not long_enough:
        longest = max(s["n_samples"] for s in rows) / sr
        raise DeepSynthError(f"{root}: no {split} song is longer than {seconds:g} s (the longest "
                             f"is {longest:.1f} s): ask for shorter excerpts")
    ranked = sorted(long_enough, key=lambda s: _rank(seed, s["id"]))
    out = []
    for i in range(count):
        row = ranked[i % len(ranked)]
        song = store.open_song(store.song_dir(root, row["id"]))
        changes = song.key_changes()
        presses = press_samples(changes)
        room = presses[presses <= song.n_samples - length]
        seq = np.random.SeedSequence([int(seed), _rank(seed, row["id"]) & 0xFFFFFFFF,
                                      i // len(ranked)])
        rng = np.random.default_rng(seq)
        start = int(rng.choice(room)) if len(room) else int(
            rng.integers(0, song.n_samples - length + 1))
        lo = max(0, start - int(context))
        out.append(Excerpt(
            song=row["id"], title=str(row.get("title") or row["id"]), start=start, length=length,
            sample_rate=sr, truth=np.array(song.audio[start : start + length], dtype=np.int16),
            changes=cut_changes(changes, start, start + length),
            context=cut_changes(changes, lo, min(start + length + int(lookahead),
                                                  song.n_samples)),
            context_start=lo,
        ))
    return out


def sim_config_of(root: str | os.PathLike):
    """The simulator settings a store was built with."""
    from deepsynth.config import SimConfig, from_dict

    return from_dict(SimConfig, store.read_manifest(root)["sim_config"])


def store_soundfont(root: str | os.PathLike,
                    soundfont: str | os.PathLike | None = None) -> tuple[Path, str]:
    """(SoundFont to render the reference path with, a note for the report): `soundfont` when
    given, else the default one; the note says when it is not the one the store was built with
    (the store keeps only the file's name and SHA-256)."""
    from deepsynth.atomic import file_sha256
    from deepsynth.sim.synth import load_soundfont

    manifest = store.read_manifest(root)
    path, _ = load_soundfont(soundfont)
    want = manifest.get("soundfont_sha256")
    if want and file_sha256(path) != want:
        return path, (f"the store was built with {manifest.get('soundfont', '?')}, the reference "
                      f"path renders with {path.name}")
    return path, "" if soundfont is None else f"reference path rendered with {path.name}"
