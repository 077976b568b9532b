"""Audio basics: mu-law quantisation and 16-bit mono wav io (numpy; torch tensors also work
for the mu-law functions, which use only operations both libraries share)."""

from __future__ import annotations

import io
import os
import wave

import numpy as np

from deepsynth.atomic import atomic_write_bytes
from deepsynth.errors import DeepSynthError

INT16_SCALE = 32768.0


def _lib(x):
    """numpy or torch, whichever `x` belongs to."""
    if isinstance(x, np.ndarray | np.generic | float | int):
        return np
    import torch

    return torch


def mu_law_encode(x, mu: int = 255):
    """Float audio in [-1, 1] -> integer classes 0..mu (mu + 1 levels)."""
    lib = _lib(x)
    x = lib.clip(x, -1.0, 1.0) if lib is np else x.clamp(-1.0, 1.0)
    y = lib.sign(x) * lib.log1p(mu * lib.abs(x)) / np.log1p(mu)
    q = lib.floor((y + 1.0) / 2.0 * mu + 0.5)
    return q.astype(np.int64) if lib is np else q.long()


def mu_law_decode(q, mu: int = 255):
    """Integer classes 0..mu -> float audio in [-1, 1] (the centre of each level)."""
    lib = _lib(q)
    y = (q.astype(np.float64) if lib is np else q.double()) * (2.0 / mu) - 1.0
    x = lib.sign(y) * ((1.0 + mu) ** lib.abs(y) - 1.0) / mu
    return x.astype(np.float32) if lib is np else x.float()


def preemphasize(x, coef: float):
    """x[n] - coef * x[n - 1] along the last axis, the sample before the first taken as 0
    (numpy or torch, the same dtype; coef 0: `x` itself)."""
    if not coef:
        return x
    if _lib(x) is np:
        y = np.array(x, copy=True)
        y[..., 1:] -= (coef * x[..., :-1]).astype(y.dtype)
        return y
    import torch

    return torch.cat([x[..., :1], x[..., 1:] - coef * x[..., :-1]], dim=-1)


def deemphasize(x: np.ndarray, coef: float, state: float = 0.0) -> tuple[np.ndarray, float]:
    """The inverse of `preemphasize` for one signal, y[n] = x[n] + coef * y[n - 1], in float64
    sample by sample from y[-1] = `state` -> (y, its last sample). Chunks given one after the
    other with the state carried give the same numbers as the whole signal at once."""
    out = np.empty(len(x), np.float64)
    y = float(state)
    for i, v in enumerate(np.asarray(x, np.float64).tolist()):
        y = v + coef * y
        out[i] = y
    return out, y


class PcmStream:
    """A decoder's classes -> int16 audio, chunk after chunk: each class's level (`levels`, the
    output distribution's decoding of every class), de-emphasised if the model was trained on
    pre-emphasised audio (the filter's state carried from chunk to chunk, so any chunking gives
    the same samples)."""

    def __init__(self, levels: np.ndarray, preemphasis: float = 0.0) -> None:
        self.levels = np.asarray(levels, np.float64)
        self.table = float_to_int16(self.levels)
        self.coef = float(preemphasis)
        self.state = 0.0

    def __call__(self, classes: np.ndarray) -> np.ndarray:
        if not self.coef:
            return self.table[classes]
        y, self.state = deemphasize(self.levels[classes], self.coef, self.state)
        return float_to_int16(y)


def float_to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * INT16_SCALE), -32768, 32767).astype(
        np.int16
    )


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono 16-bit PCM atomically. `audio` is int16, or float in [-1, 1]."""
    audio = np.asarray(audio)
    if audio.dtype != np.int16:
        audio = float_to_int16(audio)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(audio.astype("<i2").tobytes())
    append_wav_mark(buf)
    atomic_write_bytes(path, buf.getvalue())


WAV_MARK = b"LIST" + (22).to_bytes(4, "little") + b"INFO" + b"ISFT" + (10).to_bytes(4, "little") \
    + b"deepsynth\0"


def append_wav_mark(f) -> None:
    """End a finished wav with an INFO chunk naming DeepSynth (how an output is recognised as
    ours, deepsynth.atomic.made_by_deepsynth), and patch the RIFF size."""
    f.seek(0, io.SEEK_END)
    f.write(WAV_MARK)
    size = f.tell()
    f.seek(4)
    f.write((size - 8).to_bytes(4, "little"))
    f.seek(0, io.SEEK_END)


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM wav -> (int16 mono samples, sample rate). Stereo is averaged."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                raise DeepSynthError(f"{path}: only 16-bit PCM wav is supported")
            rate, channels = w.getframerate(), w.getnchannels()
            data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    except FileNotFoundError:
        raise DeepSynthError(f"{path}: no such file") from None
    except (wave.Error, EOFError) as e:
        raise DeepSynthError(f"{path}: not a readable wav file ({e})") from None
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).round().astype(np.int16)
    return data.astype(np.int16), rate


class StreamingWavWriter:
    """Write 16-bit mono audio chunk by chunk to a temporary file beside `path`; the header is
    patched after every chunk, so the file is a valid wav at any moment. On success it is
    renamed to `path`; on Ctrl-C or SIGTERM too (what was generated is kept), but only where
    there was no file at `path` (an earlier complete output is never replaced by a fragment);
    on any other error it goes."""

    def __init__(self, path: str | os.PathLike, sample_rate: int) -> None:
        from deepsynth.atomic import atomic_path

        self._atomic = atomic_path(path, suffix=".wav", keep_partial=True)
        self.path = path
        self.replaces = os.path.exists(path)  # an earlier output: kept on an interruption
        self.sample_rate = sample_rate
        self.frames = 0

    def __enter__(self) -> StreamingWavWriter:
        tmp = self._atomic.__enter__()
        self._file = open(tmp, "wb")  # noqa: SIM115 (closed in __exit__)
        self._wav = wave.open(self._file, "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(int(self.sample_rate))
        return self

    def write(self, audio: np.ndarray) -> None:
        audio = np.asarray(audio)
        if audio.dtype != np.int16:
            audio = float_to_int16(audio)
        self._wav.writeframes(audio.astype("<i2").tobytes())  # also patches the header
        self._file.flush()
        self.frames += len(audio)

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._wav.close()
        append_wav_mark(self._file)
        self._file.close()
        if exc_type is None:
            return bool(self._atomic.__exit__(None, None, None))
        return bool(self._atomic.__exit__(exc_type, exc, tb))
