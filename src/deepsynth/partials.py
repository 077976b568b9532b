"""Where a piano's notes put their energy: the partials of the notes sounding at a moment
(numpy only). One definition, used by the noise-floor figure (evaluate.metrics) and by the
harmonic post-filter (generate.postfilter).

A note sounds from its start until RELEASE seconds after its end (the dampers need a moment);
its partials are the first HARMONICS multiples of its pitch below Nyquist, each +-CENTS wide and
never narrower than the analysis window's main lobe (a Hann window: 2 bins either side).
"""

from __future__ import annotations

import numpy as np

HARMONICS, CENTS, RELEASE = 8, 60.0, 0.25


def midi_to_hz(pitch) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(pitch, dtype=np.float64) - 69.0) / 12.0)


def sounding(start: np.ndarray, end: np.ndarray, centre: float, half: float,
             release: float = RELEASE) -> np.ndarray:
    """(n,) bool: the notes (start, end seconds) that sound within [centre - half,
    centre + half]."""
    return (start < centre + half) & (end + release > centre - half)


def near_partials(pitches: np.ndarray, sample_rate: int, n_fft: int,
                  harmonics: int = HARMONICS, cents: float = CENTS) -> np.ndarray:
    """(n_fft // 2 + 1,) bool: the STFT bins (Hann window of n_fft) near a partial of any of
    `pitches` (MIDI numbers)."""
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    k = np.arange(1, harmonics + 1)
    f = (midi_to_hz(np.unique(np.asarray(pitches)))[:, None] * k[None, :]).ravel()
    f = f[f < sample_rate / 2]
    lobe = 2.0 * sample_rate / n_fft  # the Hann window's main-lobe half width, Hz
    width = np.maximum(f * (2 ** (cents / 1200) - 1), lobe)
    return (np.abs(freqs[None, :] - f[:, None]) <= width[:, None]).any(axis=0)
