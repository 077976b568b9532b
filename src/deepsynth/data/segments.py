"""How a song is cut into training segments (paper section 4: 5 s windows, 2 s overlap).

Segment k of a song of n samples covers samples [k * hop, k * hop + window), for every k with
k * hop + window <= n. So a song has

    n_segments(n) = (n - window) // hop + 1   if n >= window,   else 0

segments: a song shorter than one window gives none, and the last (n - window) % hop samples of a
song (less than one hop) belong to no segment. At 4 kHz: window = 20,000 and hop = 12,000 samples.

A training item adds `context` samples of left context before its window (the model's receptive
field), so the loss can cover the whole window; before the song starts it is silence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SegmentConfig:
    """Window length and overlap of the training segments, in seconds (sample-rate free)."""

    window_seconds: float = 5.0
    overlap_seconds: float = 2.0

    def __post_init__(self) -> None:
        if self.window_seconds <= 0:
            raise ValueError(f"window must be positive, got {self.window_seconds} s")
        if not 0 <= self.overlap_seconds < self.window_seconds:
            raise ValueError(
                f"overlap must be in [0, window), got {self.overlap_seconds} s "
                f"for a {self.window_seconds} s window"
            )

    def window(self, sample_rate: int) -> int:
        """Window length in samples (20,000 at 4 kHz)."""
        return int(round(self.window_seconds * sample_rate))

    def hop(self, sample_rate: int) -> int:
        """Distance between the starts of consecutive segments, in samples (12,000 at 4 kHz)."""
        return self.window(sample_rate) - int(round(self.overlap_seconds * sample_rate))


def n_segments(n_samples: int, window: int, hop: int) -> int:
    """Segments of a song of `n_samples`: (n - window) // hop + 1 when n >= window, else 0."""
    if window <= 0 or hop <= 0:
        raise ValueError(f"window and hop must be positive, got {window} and {hop}")
    return 0 if n_samples < window else (int(n_samples) - window) // hop + 1


def segment_starts(n_samples: int, window: int, hop: int) -> np.ndarray:
    """First sample of every segment of a song: 0, hop, 2 * hop, .. (int64)."""
    return np.arange(n_segments(n_samples, window, hop), dtype=np.int64) * hop
