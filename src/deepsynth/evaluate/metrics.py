"""Numbers that compare generated audio with the ground truth (numpy / scipy only).

Spectral distances (every one is 0 for identical signals):

- multi-resolution STFT distance (as in Parallel WaveGAN / DDSP losses), averaged over FFT sizes
  suited to 4 kHz audio (64, 256 and 1024 samples: 16, 64 and 256 ms at 4 kHz; hop = n / 4,
  Hann window): spectral convergence ||S_ref - S_gen||_F / ||S_ref||_F and the mean absolute
  difference of the natural log of the magnitudes, scaled so a full-scale sine's bin is 1 and
  floored at LOG_FLOOR (-80 dB: two silences, or two 16-bit noise floors, agree). The FFT sizes
  scale with the sample rate (they are given in seconds).
- log-mel distance: the mean absolute difference, in dB, of mel power spectrograms (N_MELS bands
  from 0 Hz to Nyquist, 128 ms Hann frames, 32 ms hop at any rate), floored at MEL_FLOOR_DB
  (re full scale): a copy at 0.9 x the amplitude is 0.92 dB away wherever both are above the
  floor, and bands where both are silent count as 0.
- level difference: 20 log10(rms_gen / rms_ref) dB (the paper found its output "quieter").

Noise floor (one signal against the notes it should play, so the ground truth has one too): in
each STFT frame (256 ms Hann frames, 64 ms hop) where a note sounds (shown down, or within
NOISE_RELEASE s of its release), the share of the energy that lies away from the sounding
notes' partials (the first NOISE_HARMONICS multiples of each pitch, +-60 cents, and never
narrower than the window's main lobe), in dB; the mean over those frames. Static noise raises
it; a piano playing only its notes keeps it low. Frames whose energy is below NOISE_QUIET_DB
(re a full-scale sine) count as clean (they hold no noise worth the name).

Note scores: precision / recall / F1 of transcribed notes against reference notes with
mir_eval.transcription.precision_recall_f1_overlap, onset only (offset_ratio=None; 50 ms onset
tolerance, pitch within 50 cents) and with offsets (offset within 20 % of the note or 50 ms).
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np

from deepsynth import partials
from deepsynth.partials import midi_to_hz
from deepsynth.sim.midi import Notes

STFT_SECONDS = (0.016, 0.064, 0.256)  # 64, 256, 1024 samples at 4 kHz
LOG_FLOOR = 1e-4  # magnitude floor for the log: -80 dB re a full-scale sine
MEL_SECONDS, MEL_HOP_SECONDS, N_MELS = 0.128, 0.032, 64
MEL_FLOOR_DB = -80.0
ONSET_TOLERANCE = 0.05  # seconds (mir_eval's default, the MIREX one)
OFFSET_RATIO = 0.2
NOISE_SECONDS, NOISE_HOP_SECONDS = 0.256, 0.064
NOISE_HARMONICS, NOISE_CENTS, NOISE_RELEASE = partials.HARMONICS, partials.CENTS, partials.RELEASE
NOISE_QUIET_DB, NOISE_MIN_DB = -70.0, -60.0


def as_float(audio: np.ndarray) -> np.ndarray:
    """int16 -> float64 in [-1, 1]; float input is taken as already scaled."""
    a = np.asarray(audio)
    if a.dtype == np.int16:
        return a.astype(np.float64) / 32768.0
    return a.astype(np.float64)


def _pair(generated: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    g, t = as_float(generated).ravel(), as_float(truth).ravel()
    n = min(len(g), len(t))  # compare over the common length
    return g[:n], t[:n]


def stft_magnitude(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT| (frames, n_fft // 2 + 1) with a periodic Hann window; the signal is zero-padded by
    n_fft // 2 on both sides (centred frames) and to a whole number of hops."""
    x = np.asarray(x, dtype=np.float64)
    pad = n_fft // 2
    x = np.pad(x, (pad, pad))
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    n_frames = 1 + (len(x) - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop][:n_frames]
    window = np.hanning(n_fft + 1)[:-1]
    return np.abs(np.fft.rfft(frames * window, axis=1))


def fft_sizes(sample_rate: int, seconds: tuple[float, ...] = STFT_SECONDS) -> list[int]:
    """The STFT sizes (powers of two) for a sample rate: 64, 256, 1024 at 4 kHz."""
    return [int(2 ** round(np.log2(max(s * sample_rate, 8)))) for s in seconds]


def multi_resolution_stft_distance(
    generated: np.ndarray, truth: np.ndarray, sample_rate: int,
    sizes: list[int] | None = None,
) -> dict:
    """Spectral convergence and log-magnitude L1, per FFT size and their means (see module doc).

    Returns {"spectral_convergence", "log_magnitude_l1", "total" (their sum), "resolutions":
    [{"n_fft", "hop", "spectral_convergence", "log_magnitude_l1"}, ..]}."""
    g, t = _pair(generated, truth)
    rows = []
    for n_fft in sizes or fft_sizes(sample_rate):
        hop = max(n_fft // 4, 1)
        scale = np.hanning(n_fft + 1)[:-1].sum() / 2  # a full-scale sine's peak bin -> 1
        sg, st = stft_magnitude(g, n_fft, hop) / scale, stft_magnitude(t, n_fft, hop) / scale
        diff = np.linalg.norm(st - sg)
        ref = np.linalg.norm(st)
        sc = 0.0 if diff == 0 else float(diff / max(ref, 1e-12))
        logmag = float(np.mean(np.abs(np.log(np.maximum(sg, LOG_FLOOR))
                                      - np.log(np.maximum(st, LOG_FLOOR)))))
        rows.append({"n_fft": n_fft, "hop": hop, "spectral_convergence": sc,
                     "log_magnitude_l1": logmag})
    sc = float(np.mean([r["spectral_convergence"] for r in rows]))
    lm = float(np.mean([r["log_magnitude_l1"] for r in rows]))
    return {"spectral_convergence": sc, "log_magnitude_l1": lm, "total": sc + lm,
            "resolutions": rows}


def hz_to_mel(f):
    """Slaney's mel scale (linear below 1 kHz, logarithmic above), as librosa's default."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-9) / min_log_hz)
                    / logstep, f / f_sp)


def mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int = N_MELS,
                   fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters, area-normalised (librosa's 'slaney' norm)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower = (freqs[None, :] - edges[:-2, None]) / np.diff(edges)[:-1, None]
    upper = (edges[2:, None] - freqs[None, :]) / np.diff(edges)[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    weights.setflags(write=False)
    return weights


def mel_power_db(x: np.ndarray, sample_rate: int, n_mels: int = N_MELS) -> np.ndarray:
    """(n_mels, frames) mel power spectrogram in dB re full scale (a full-scale sine's band
    reads about -4 dB), floored at MEL_FLOOR_DB."""
    n_fft = int(2 ** round(np.log2(MEL_SECONDS * sample_rate)))
    hop = max(int(round(MEL_HOP_SECONDS * sample_rate)), 1)
    mag = stft_magnitude(as_float(x), n_fft, hop)
    window_sum = np.hanning(n_fft + 1)[:-1].sum()
    power = (mag / (window_sum / 2)) ** 2  # a full-scale sine's bin: 1
    mel = mel_filterbank(sample_rate, n_fft, n_mels) @ power.T
    mel *= sample_rate / n_fft  # undo the area normalisation's 1/Hz
    return np.maximum(10.0 * np.log10(np.maximum(mel, 1e-30)), MEL_FLOOR_DB)


def log_mel_distance(generated: np.ndarray, truth: np.ndarray, sample_rate: int) -> float:
    """Mean absolute difference of the two log-mel spectrograms, in dB (0 for identical)."""
    g, t = _pair(generated, truth)
    return float(np.mean(np.abs(mel_power_db(g, sample_rate) - mel_power_db(t, sample_rate))))


def rms(x: np.ndarray) -> float:
    x = as_float(x)
    return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0


def level_db(generated: np.ndarray, truth: np.ndarray) -> float | None:
    """20 log10(rms_generated / rms_truth): negative when the generated audio is quieter; None
    when either is silent."""
    g, t = _pair(generated, truth)
    rg, rt = rms(g), rms(t)
    if rg == 0 or rt == 0:
        return None
    return float(20 * np.log10(rg / rt))


def spectral_distances(generated: np.ndarray, truth: np.ndarray, sample_rate: int) -> dict:
    """All spectral figures for one pair: {"mrstft": {..}, "log_mel_db", "level_db"}."""
    return {
        "mrstft": multi_resolution_stft_distance(generated, truth, sample_rate),
        "log_mel_db": log_mel_distance(generated, truth, sample_rate),
        "level_db": level_db(generated, truth),
    }


# --- noise floor ----------------------------------------------------------------------------


def noise_floor_db(audio: np.ndarray, notes: Notes, sample_rate: int) -> float | None:
    """The energy away from the sounding notes' partials, over the total, in dB (see the module
    doc); None when no frame has a sounding note."""
    x = as_float(audio).ravel()
    n_fft = int(round(NOISE_SECONDS * sample_rate))
    hop = int(round(NOISE_HOP_SECONDS * sample_rate))
    power = stft_magnitude(x, n_fft, hop) ** 2  # frame i is centred on sample i * hop
    centre = np.arange(len(power)) * hop / sample_rate
    start = np.asarray(notes.start, dtype=np.float64)
    end = np.asarray(notes.end, dtype=np.float64)
    pitch = np.asarray(notes.pitch)
    ratio = np.full(len(power), np.nan)
    full_scale = (n_fft / 4) ** 2  # a full-scale sine's peak bin power with a Hann window
    for i in range(len(power)):
        playing = partials.sounding(start, end, centre[i], NOISE_SECONDS / 2, NOISE_RELEASE)
        if not playing.any():
            continue
        total = power[i].sum()
        if 10 * np.log10(max(total, 1e-30) / full_scale) < NOISE_QUIET_DB:
            ratio[i] = 10 ** (NOISE_MIN_DB / 10)
            continue
        near = partials.near_partials(pitch[playing], sample_rate, n_fft, NOISE_HARMONICS,
                                      NOISE_CENTS)
        ratio[i] = max(power[i][~near].sum() / total, 10 ** (NOISE_MIN_DB / 10))
    judged = ratio[~np.isnan(ratio)]
    return float(np.mean(10 * np.log10(judged))) if len(judged) else None


# --- notes ----------------------------------------------------------------------------------


def note_arrays(notes: Notes) -> tuple[np.ndarray, np.ndarray]:
    """(intervals (n, 2) seconds, pitches (n,) Hz) for mir_eval; notes of no duration dropped."""
    start = np.maximum(np.asarray(notes.start, dtype=np.float64), 0.0)
    end = np.asarray(notes.end, dtype=np.float64)
    keep = end > start
    intervals = np.stack([start[keep], end[keep]], axis=1) if keep.any() else np.zeros((0, 2))
    return intervals, midi_to_hz(np.asarray(notes.pitch)[keep])


def _prf(ref: tuple, est: tuple, offset_ratio: float | None, onset_tolerance: float) -> dict:
    import mir_eval

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mir_eval warns about empty note lists
        p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
            ref[0], ref[1], est[0], est[1], onset_tolerance=onset_tolerance,
            offset_ratio=offset_ratio)
    return {"precision": float(p), "recall": float(r), "f1": float(f)}


def note_scores(reference: Notes, estimated: Notes, onset_tolerance: float = ONSET_TOLERANCE,
                offset_ratio: float = OFFSET_RATIO) -> dict:
    """Transcription scores of `estimated` notes against `reference` notes (mir_eval):
    {"onset": {precision, recall, f1}, "onset_offset": {..}, "n_reference", "n_estimated"}.
    Empty note lists score 0 (mir_eval's convention)."""
    ref, est = note_arrays(reference), note_arrays(estimated)
    return {
        "onset": _prf(ref, est, None, onset_tolerance),
        "onset_offset": _prf(ref, est, offset_ratio, onset_tolerance),
        "n_reference": len(ref[1]),
        "n_estimated": len(est[1]),
    }


def mean_scores(rows: list[dict]) -> dict | None:
    """Mean precision / recall / F1 (onset and onset_offset) over excerpts; None if none."""
    rows = [r for r in rows if r]
    if not rows:
        return None
    out: dict = {}
    for kind in ("onset", "onset_offset"):
        out[kind] = {k: float(np.mean([r[kind][k] for r in rows]))
                     for k in ("precision", "recall", "f1")}
    out["n_reference"] = int(sum(r["n_reference"] for r in rows))
    out["n_estimated"] = int(sum(r["n_estimated"] for r in rows))
    out["excerpts"] = len(rows)
    return out
