"""Train / validation / test split by song (60/20/20), seeded and stable.

Each song's split is a function of (song id, seed) alone: the song's id and the seed are hashed
(SHA-256) to a number u in [0, 1), and u < 0.6 is train, u < 0.8 validation, else test. So the split
of a song never depends on which other songs are in the corpus: adding or removing a song moves
no other song between splits. The fractions hold on average (307 songs: within a few songs).
Splitting by song (not by segment) keeps overlapping segments of one song out of two splits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)


def split_hash(song_id: str, seed: int) -> float:
    """A number in [0, 1), uniform over songs, fixed by (song id, seed)."""
    digest = hashlib.sha256(f"deepsynth-split:{int(seed)}:{song_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(
    song_id: str, seed: int = 0, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
) -> str:
    """'train', 'val' or 'test' for one song."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, "
                         f"got {fractions}")
    u = split_hash(song_id, seed)
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


def assign_splits(
    song_ids: Iterable[str], seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> dict[str, str]:
    """{song id: split} for every song."""
    return {s: split_of(s, seed, fractions) for s in song_ids}
