"""The harmonic post-filter: generated audio cleaned with what the video shows (numpy only).

The model plays the notes over a broadband noise floor (issue 17). The video says which keys
sound at every moment, so the energy that cannot belong to them can be turned down: in each STFT
frame (128 ms Hann frames, 32 ms hop: 512 / 128 samples at 4 kHz), the bins near a partial of a
sounding note (`deepsynth.partials`: the first 8 multiples of each pitch, +-60 cents, a note
sounding until 0.25 s after its key is released) keep their level, every other bin is scaled by
`gain` (0.2 = -14 dB by default; 1 turns the filter off), and frames where nothing sounds keep
`gain` of everything (letting a bin take its neighbouring frames' gain, 1 or 2 frames, measured
no better). Weighted overlap-add with the same window resynthesises it:
with a gain of 1 the audio comes back unchanged.

Measured on the 8 test excerpts of docs/quality.md: see the "post-filter" section there. Note
that the noise-floor figure looks at the same partials, so it improves by construction; the
transcription F1 and the log-mel distance are the independent checks.

It looks 64 ms ahead, so it is for offline audio (synthesize, the API, the demo, evaluate);
live play (`deepsynth play`) gives the model's raw output, which `synthesize --postfilter 1`
gives too. It runs as the audio is generated (`HarmonicFilter.feed`), its memory bounded by a
chunk, and costs about 5 % of the generation time (evaluate's 8 excerpts in one batch: 54,462
samples/s raw, 51,841 post-filtered).
"""

from __future__ import annotations

import numpy as np

from deepsynth import partials
from deepsynth.generate.defaults import POSTFILTER_GAIN
from deepsynth.layout import KeyboardLayout
from deepsynth.sim.keystates import changes_from_states, notes_from_key_changes
from deepsynth.sim.midi import Notes

FRAME_SECONDS = 0.128


def _window(n: int) -> np.ndarray:
    return np.hanning(n + 1)[:-1]  # periodic Hann


class HarmonicFilter:
    """The post-filter for one piece, fed as it is generated: `feed(chunk)` returns the
    filtered samples that are final (all but the last ~n_fft / 2 given), `finish()` the rest.
    The output does not depend on how the input was cut into chunks (bit for bit): every
    output segment of `hop` samples is the sum of its four frames' parts in one fixed order.

    `notes`: what the video shows (start, end seconds; pitch), for the whole piece; `gain` from
    0 (only the partials) to 1 (the audio unchanged)."""

    def __init__(self, notes: Notes, sample_rate: int, gain: float = POSTFILTER_GAIN) -> None:
        if not 0.0 <= gain <= 1.0:  # NaN too
            raise ValueError(f"post-filter gain must be from 0 to 1, got {gain}")
        self.gain = float(gain)
        self.sample_rate = sample_rate
        n_fft = int(round(FRAME_SECONDS * sample_rate))
        self.n_fft = n_fft = n_fft + (-n_fft) % 4
        self.hop = n_fft // 4
        self.pad = n_fft // 2  # frame j is centred on sample j * hop of the piece
        self.window = _window(n_fft)
        self._start = np.asarray(notes.start, dtype=np.float64)
        self._end = np.asarray(notes.end, dtype=np.float64)
        self._pitch = np.asarray(notes.pitch)
        self._near: dict[bytes, np.ndarray] = {}
        self._buf = np.zeros(self.pad)  # input not yet framed (the padding before the piece)
        self._frames = 0  # frames computed
        self._tails = np.zeros((3, n_fft))  # the last three frames (oldest first), windowed
        self._given = 0  # input samples given
        self._emitted = 0  # padded-signal samples output (segments * hop)
        w2 = self.window**2
        h = self.hop
        self._norm = [sum(w2[q * h : (q + 1) * h] for q in range(m)) for m in range(1, 5)]

    def feed(self, chunk: np.ndarray) -> np.ndarray:
        chunk = np.asarray(chunk).astype(np.float64).ravel()
        self._given += len(chunk)
        if self.gain == 1.0:
            return self._int16(chunk)
        self._buf = np.concatenate([self._buf, chunk])
        return self._int16(self._run())

    def finish(self) -> np.ndarray:
        """The rest of the piece (the input ended)."""
        if self.gain == 1.0:
            return np.zeros(0, np.int16)
        self._buf = np.concatenate([self._buf, np.zeros(self.n_fft)])
        out = self._run()
        keep = self._given + self.pad - (self._emitted - len(out))  # samples of the piece left
        return self._int16(out[: max(keep, 0)])

    def _run(self) -> np.ndarray:
        """Frame what the buffer holds; the segments that became final (padding cut off)."""
        n_fft, hop = self.n_fft, self.hop
        n_new = max(0, (len(self._buf) - n_fft) // hop + 1)
        if n_new == 0:
            return np.zeros(0)
        idx = (np.arange(n_new) * hop)[:, None] + np.arange(n_fft)[None, :]
        spec = np.fft.rfft(self._buf[idx] * self.window, axis=1)
        masks = self._masks(self._frames, n_new)
        frames = np.fft.irfft(spec * masks, n=n_fft, axis=1) * self.window
        allf = np.concatenate([self._tails, frames])  # frames j0 - 3 .. j0 + n_new - 1
        out = np.empty((n_new, hop))
        for r in range(n_new):  # segment j0 + r: frames j0 + r - 3 .. j0 + r, oldest first
            j = self._frames + r
            seg = np.zeros(hop)
            for q in (3, 2, 1, 0):
                if j - q >= 0:
                    seg = seg + allf[r + 3 - q][q * hop : (q + 1) * hop]
            out[r] = seg / np.maximum(self._norm[min(j, 3)], 1e-12)  # 0 at j = 0's edge
        self._tails = allf[-3:]
        self._frames += n_new
        self._buf = self._buf[n_new * hop :]
        out = out.ravel()
        lo = max(0, self.pad - self._emitted)  # the padding before the piece is not output
        self._emitted += len(out)
        return out[lo:]

    def _masks(self, j0: int, n: int) -> np.ndarray:
        """(n, n_fft // 2 + 1) gains of frames j0 .. j0 + n - 1: 1 near the partials of the
        notes sounding in the frame, `gain` elsewhere."""
        sr, hop = self.sample_rate, self.hop
        half = self.n_fft / sr / 2
        masks = np.full((n, self.n_fft // 2 + 1), self.gain)
        for r in range(n):
            playing = partials.sounding(self._start, self._end, (j0 + r) * hop / sr, half)
            if not playing.any():
                continue
            chord = np.unique(self._pitch[playing])
            near = self._near.get(chord.tobytes())
            if near is None:
                near = self._near[chord.tobytes()] = partials.near_partials(chord, sr, self.n_fft)
            masks[r, near] = 1.0
        return masks

    @staticmethod
    def _int16(x: np.ndarray) -> np.ndarray:
        return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def harmonic_filter(audio: np.ndarray, notes: Notes, sample_rate: int,
                    gain: float = POSTFILTER_GAIN) -> np.ndarray:
    """int16 audio -> int16 audio of the same length, the energy away from the sounding notes'
    partials scaled by `gain` (see the module's docstring)."""
    f = HarmonicFilter(notes, sample_rate, gain)
    return np.concatenate([f.feed(audio), f.finish()])


def window_notes(source, start: int, length: int, layout: KeyboardLayout | None) -> Notes:
    """The notes a source's video shows over samples [start, start + length), timed from
    `start`: its key states (read from its frames through `layout` when it has none of its
    own, as the model's conditioning reads them)."""
    changes = source.changes
    if changes is None:
        if layout is None:
            raise ValueError("a source without key states needs a layout to read its frames")
        states = np.concatenate([layout.read_key_states(b) for b in source.frame_batches()])
        changes = changes_from_states(source.starts, states, source.sample_rate,
                                      source.n_samples)
    notes = notes_from_key_changes(changes)
    sr = source.sample_rate
    t0, t1 = start / sr, (start + length) / sr
    keep = (np.asarray(notes.end) > t0 - 1.0) & (np.asarray(notes.start) < t1 + 1.0)
    return Notes.from_columns(np.asarray(notes.pitch)[keep], np.asarray(notes.velocity)[keep],
                              np.asarray(notes.start)[keep] - t0,
                              np.asarray(notes.end)[keep] - t0)
