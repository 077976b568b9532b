"""Piano audio from notes with a SoundFont (tinysoundfont), note-on/off placed at exact samples.

Rendering happens at 44.1 kHz (rendering at 4 kHz would alias), then a polyphase filter brings
it to the target rate. The gain is the same for every song; a song that would clip is scaled
down as a whole, and the scale is reported so it can go into the song's metadata.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np

from deepsynth.audio import float_to_int16
from deepsynth.config import SimConfig
from deepsynth.errors import DeepSynthError
from deepsynth.sim.keystates import seconds_to_samples
from deepsynth.sim.midi import Notes

FULL_SCALE = 32767 / 32768
PIANO_PROGRAM = 0  # General MIDI acoustic grand


def default_soundfont() -> Path:
    """TimGM6mb.sf2, the General MIDI SoundFont that pretty_midi ships."""
    import pretty_midi

    return Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"


@lru_cache(maxsize=4)
def _soundfont_bytes(path: str, mtime_ns: int) -> bytes:
    return Path(path).read_bytes()


def load_soundfont(path: str | os.PathLike | None) -> tuple[Path, bytes]:
    """Check and read a SoundFont (None: the default). Bad files raise DeepSynthError."""
    p = Path(path) if path is not None else default_soundfont()
    try:
        data = _soundfont_bytes(str(p), p.stat().st_mtime_ns)
    except FileNotFoundError:
        raise DeepSynthError(f"{p}: no such SoundFont file") from None
    except IsADirectoryError:
        raise DeepSynthError(f"{p}: is a directory, not a SoundFont file") from None
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] not in (b"sfbk", b"sfpk"):
        raise DeepSynthError(f"{p}: not a SoundFont (.sf2/.sf3) file ({len(data)} bytes)")
    return p, data


def _new_synth(soundfont: bytes, cfg: SimConfig):
    try:
        import tinysoundfont
    except ImportError:
        raise DeepSynthError(
            "tinysoundfont is missing: pip install --no-deps tinysoundfont==0.3.7"
        ) from None
    synth = tinysoundfont.Synth(gain=cfg.gain_db, samplerate=cfg.render_rate)
    try:
        sfid = synth.sfload(soundfont)
        synth.program_select(0, sfid, 0, PIANO_PROGRAM)
    except (RuntimeError, Exception) as e:  # tinysoundfont raises bare RuntimeErrors
        raise DeepSynthError(f"SoundFont cannot be used: {e}") from None
    return synth


@dataclass(frozen=True)
class Rendered:
    audio: np.ndarray  # int16 mono at cfg.audio.sample_rate
    scale: float  # 1.0, or the factor applied so the song does not clip
    peak: float  # peak of the float signal before any scaling (1.0 = full scale)


def n_samples_for(notes: Notes, cfg: SimConfig) -> int:
    """Audio length of a piece: up to its last key-up plus the release tail."""
    return int(seconds_to_samples(notes.duration + cfg.tail_seconds, cfg.audio.sample_rate))


RENDER_BLOCK = 1 << 16  # samples a SoundFont call renders at most (a multiple of its 64)


class StreamingResampler:
    """scipy.signal.resample_poly(x, up, down) (its default Kaiser window, zero padding) of a
    signal given block by block, with memory bounded by a block: the same float32 output,
    sample for sample, as the whole-signal call (each output is the same sum over the same
    inputs; tested)."""

    def __init__(self, up: int, down: int, n_in: int) -> None:
        import math

        from scipy.signal import firwin

        g = math.gcd(up, down)
        self.up, self.down = up // g, down // g
        max_rate = max(self.up, self.down)
        half_len = 10 * max_rate
        h = firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)).astype(np.float32)
        h *= self.up
        n_pre_pad = self.down - half_len % self.down
        self.h = np.concatenate([np.zeros(n_pre_pad, np.float32), h])
        self.n_out = -(-n_in * self.up // self.down)
        self.first = (half_len + n_pre_pad) // self.down  # outputs of the full filter to skip
        self.next = self.first  # next output (index into the full filter's output)
        self.end = self.first + self.n_out
        self.buf = np.zeros(0, np.float32)
        self.buf_start = 0  # input index of buf[0]
        self.n_seen = 0

    def _needs_from(self, m: int) -> int:
        """First input that output m of the full filter reads."""
        lo = m * self.down - (len(self.h) - 1)
        return max(0, -(-lo // self.up))

    def _emit(self, stop: int) -> np.ndarray:
        """Outputs self.next .. stop-1 (all their inputs are in buf)."""
        from scipy.signal import upfirdn

        if stop <= self.next:
            return np.zeros(0, np.float32)
        # start the block at an input whose position on the output grid is whole
        step = self.down  # up and down are coprime: s * up / down is whole
        s = (self._needs_from(self.next) // step) * step
        assert s >= self.buf_start, "resampler lost its context"
        offset = s * self.up // self.down
        y = upfirdn(self.h, self.buf[s - self.buf_start:], self.up, self.down)
        out = y[self.next - offset : stop - offset]
        self.next = stop
        keep = (self._needs_from(self.next) // step) * step
        if keep > self.buf_start:
            self.buf = self.buf[keep - self.buf_start:]
            self.buf_start = keep
        return out.astype(np.float32, copy=False)

    def push(self, block: np.ndarray) -> np.ndarray:
        """Feed input samples; returns the outputs they complete."""
        self.buf = np.concatenate([self.buf, np.asarray(block, np.float32)])
        self.n_seen += len(block)
        # output m is complete once every input it reads (up to m*down/up) has arrived
        ready = min(self.end, (self.n_seen - 1) * self.up // self.down + 1)
        if ready - self.next < 4096:  # small pieces cost more in upfirdn's set-up
            return np.zeros(0, np.float32)
        return self._emit(ready)

    def finish(self) -> np.ndarray:
        return self._emit(self.end)


def render_notes(
    notes: Notes, cfg: SimConfig = SimConfig(), soundfont: str | os.PathLike | None = None,
    n_samples: int | None = None,
) -> Rendered:
    """Synthesize `notes` to int16 audio at the configured sample rate.

    The SoundFont renders at cfg.render_rate in blocks of at most RENDER_BLOCK samples, each
    resampled as it comes (StreamingResampler): the memory used beyond the output itself does
    not grow with the piece (a long quiet piece no longer needs gigabytes)."""
    _, sf_bytes = load_soundfont(soundfont)
    synth = _new_synth(sf_bytes, cfg)
    sr, rr = cfg.audio.sample_rate, cfg.render_rate
    n_out = n_samples_for(notes, cfg) if n_samples is None else int(n_samples)
    ratio = Fraction(sr, rr)
    n_render = int(np.ceil(n_out / ratio)) + 64
    on = seconds_to_samples(notes.start, rr)
    off = seconds_to_samples(notes.end, rr)
    # events sorted by time; at one instant note-offs come before note-ons (a re-strike)
    times = np.concatenate([off, on])
    kind = np.concatenate([np.zeros(len(off), np.int8), np.ones(len(on), np.int8)])
    pitch = np.concatenate([notes.pitch, notes.pitch]).astype(int)
    vel = np.concatenate([notes.velocity, notes.velocity]).astype(int)
    order = np.lexsort((kind, times))
    resampler = StreamingResampler(ratio.numerator, ratio.denominator, n_render)
    audio = np.zeros(n_out, np.float32)
    pos = filled = 0

    def put(y: np.ndarray) -> None:
        nonlocal filled
        y = y[: n_out - filled]
        audio[filled : filled + len(y)] = y
        filled += len(y)

    def render_to(t: int) -> None:
        nonlocal pos
        while pos < t:  # pieces of a multiple of 64 samples: the same output as one call
            n = min(RENDER_BLOCK, t - pos)
            block = np.frombuffer(synth.generate_simple(n), dtype=np.float32)
            put(resampler.push(block.reshape(-1, 2).mean(axis=1)))
            pos += n

    for i in order:
        render_to(min(int(times[i]), n_render))
        if kind[i]:
            synth.noteon(0, int(pitch[i]), int(vel[i]))
        else:
            synth.noteoff(0, int(pitch[i]))
    render_to(n_render)
    put(resampler.finish())
    peak = 0.0
    for lo in range(0, n_out, 1 << 20):
        peak = max(peak, float(np.abs(audio[lo : lo + (1 << 20)]).max()))
    scale = 1.0 if peak <= FULL_SCALE else FULL_SCALE / peak
    out = np.empty(n_out, np.int16)
    for lo in range(0, n_out, 1 << 20):  # in pieces: no float64 copy of the whole piece
        piece = audio[lo : lo + (1 << 20)]
        out[lo : lo + len(piece)] = float_to_int16(piece * scale if scale != 1.0 else piece)
    return Rendered(out, scale, peak)
