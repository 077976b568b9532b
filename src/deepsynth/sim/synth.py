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


def render_notes(
    notes: Notes, cfg: SimConfig = SimConfig(), soundfont: str | os.PathLike | None = None,
    n_samples: int | None = None,
) -> Rendered:
    """Synthesize `notes` to int16 audio at the configured sample rate."""
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
    mono = np.zeros(n_render, dtype=np.float32)
    pos = 0
    for i in order:
        t = min(int(times[i]), n_render)
        if t > pos:
            block = np.frombuffer(synth.generate_simple(t - pos), dtype=np.float32)
            mono[pos:t] = block.reshape(-1, 2).mean(axis=1)
            pos = t
        if kind[i]:
            synth.noteon(0, int(pitch[i]), int(vel[i]))
        else:
            synth.noteoff(0, int(pitch[i]))
    if pos < n_render:
        block = np.frombuffer(synth.generate_simple(n_render - pos), dtype=np.float32)
        mono[pos:] = block.reshape(-1, 2).mean(axis=1)
    from scipy.signal import resample_poly  # scipy.signal takes a second to import: when used

    audio = resample_poly(mono, ratio.numerator, ratio.denominator)[:n_out]
    if len(audio) < n_out:
        audio = np.pad(audio, (0, n_out - len(audio)))
    peak = float(np.abs(audio).max()) if len(audio) else 0.0
    scale = 1.0 if peak <= FULL_SCALE else FULL_SCALE / peak
    return Rendered(float_to_int16(audio * scale), scale, peak)
