"""A tiny corpus of MIDI files the project writes itself, for tests and quick tries of the
data pipeline (the real corpus is read from its own folder, never copied)."""

from __future__ import annotations

import os
from pathlib import Path

from deepsynth.sim.compose import demo_piece, midi_bytes

CORRUPT_MIDI = b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\x10\x00\x90<"


def write_toy_corpus(
    folder: str | os.PathLike, n_songs: int = 3, bars: int = 4, corrupt: int = 0,
    composer: str = "Toy",
) -> list[Path]:
    """Write n_songs short pieces (`bars` bars each, ~2 s a bar, different seeds and lengths) and
    `corrupt` broken files into folder/<composer>/; returns their paths."""
    out = Path(folder) / composer
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_songs):
        p = out / f"piece{i}.mid"
        p.write_bytes(midi_bytes(demo_piece(bars=bars + i, seed=i)))
        paths.append(p)
    for i in range(corrupt):
        p = out / f"broken{i}.mid"
        p.write_bytes(CORRUPT_MIDI)
        paths.append(p)
    return paths
