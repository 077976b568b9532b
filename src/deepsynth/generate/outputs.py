"""Writing what the generator made: the input video with the generated audio as its sound."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from deepsynth.generate.core import Window
from deepsynth.generate.sources import VideoSource


def window_frames(source: VideoSource, window: Window) -> Iterator[tuple[int, np.ndarray]]:
    """(pts relative to the window, frame) of every unique frame shown inside `window`, and the
    last one again on the window's final sample so the video lasts as long as the audio."""
    lo, hi = window.start, window.start + window.length
    ends = np.r_[source.starts[1:], np.iinfo(np.int64).max]
    row, last = 0, None
    for batch in source.frame_batches():
        for img in batch:
            start, end = int(source.starts[row]), int(ends[row])
            row += 1
            if end <= lo or start >= hi:
                continue
            last = (max(start, lo) - lo, img)
            yield last
    if last is not None and last[0] < window.length - 1:
        yield window.length - 1, last[1]


def write_mp4(
    path: str | os.PathLike,
    source: VideoSource,
    window: Window,
    audio: np.ndarray,
    lossless: bool = False,
) -> None:
    """The keyboard video of `window` with `audio` (int16) as its sound track, atomically: in
    the players' format (H.264 High, yuv420p, even size, AAC), or the exact gray stream with
    `lossless` (see deepsynth.sim.video)."""
    from deepsynth.sim.video import write_frames

    write_frames(path, window_frames(source, window), source.sample_rate, window.length, audio,
                 lossless=lossless)
