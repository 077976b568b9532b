"""Segments per song (the formula) and the split by song (stable, disjoint)."""

import numpy as np
import pytest

from deepsynth.data.segments import SegmentConfig, n_segments, segment_starts
from deepsynth.data.splits import SPLITS, assign_splits, split_hash, split_of


def test_paper_window_and_hop_at_4khz():
    cfg = SegmentConfig()
    assert (cfg.window(4000), cfg.hop(4000)) == (20_000, 12_000)
    assert (cfg.window(16000), cfg.hop(16000)) == (80_000, 48_000)


@pytest.mark.parametrize("window_s, overlap_s", [(0, 0), (5, 5), (5, -1), (5, 6)])
def test_bad_segment_config(window_s, overlap_s):
    with pytest.raises(ValueError):
        SegmentConfig(window_s, overlap_s)


def test_segment_formula_edges():
    w, h = 20_000, 12_000
    assert n_segments(0, w, h) == 0
    assert n_segments(w - 1, w, h) == 0  # shorter than one window: no segment
    assert n_segments(w, w, h) == 1
    assert n_segments(w + h - 1, w, h) == 1
    assert n_segments(w + h, w, h) == 2
    assert n_segments(150 * 4000, w, h) == 49  # a 2.5 min song


def test_segment_formula_matches_enumeration():
    rng = np.random.default_rng(0)
    for w, h in [(20_000, 12_000), (10, 3), (7, 7), (5, 1)]:
        for n in rng.integers(0, 20 * w, 200):
            # every k whose window fits inside the song
            brute = [k * h for k in range(n // h + 2) if k * h + w <= n]
            assert n_segments(n, w, h) == len(brute)
            assert segment_starts(n, w, h).tolist() == brute


def test_split_is_one_of_three_and_deterministic():
    ids = [f"Composer{i % 7}-piece{i}" for i in range(300)]
    a, b = assign_splits(ids, seed=3), assign_splits(ids, seed=3)
    assert a == b
    assert set(a.values()) <= set(SPLITS)
    # each song is in exactly one split
    members = {s: {i for i in ids if a[i] == s} for s in SPLITS}
    assert sum(len(m) for m in members.values()) == len(ids)
    assert not (members["train"] & members["val"] or members["train"] & members["test"]
                or members["val"] & members["test"])


def test_split_stable_when_songs_are_added_or_removed():
    ids = [f"c-song{i}" for i in range(200)]
    before = assign_splits(ids, seed=0)
    after_add = assign_splits([*ids[:50], "new-song", "another-new", *ids[50:]], seed=0)
    after_remove = assign_splits(ids[::2], seed=0)
    assert all(after_add[i] == before[i] for i in ids)
    assert all(after_remove[i] == before[i] for i in ids[::2])


def test_split_fractions_and_seed():
    ids = [f"song{i}" for i in range(5000)]
    counts = {s: 0 for s in SPLITS}
    for s in assign_splits(ids, seed=0).values():
        counts[s] += 1
    assert abs(counts["train"] / 5000 - 0.6) < 0.03
    assert abs(counts["val"] / 5000 - 0.2) < 0.03
    assert abs(counts["test"] / 5000 - 0.2) < 0.03
    other = assign_splits(ids, seed=1)
    assert sum(other[i] != s for i, s in assign_splits(ids, seed=0).items()) > 1000
    assert 0 <= split_hash("x", 0) < 1
    assert split_of("x", 0, (1.0, 0.0, 0.0)) == "train"
    with pytest.raises(ValueError):
        split_of("x", 0, (0.5, 0.2, 0.2))
