"""The judge: transcribe audio into notes with basic-pitch (Spotify's ICASSP 2022 model, its ONNX
file shipped inside the package, run offline with onnxruntime), and score them against the notes
the video shows.

basic-pitch is an optional extra: `make eval-deps`, or by hand
    pip install '.[eval]' && pip install --no-deps basic-pitch==0.4.0
(its declared dependencies pull TensorFlow and pin an old resampy; it runs without them).
Without it `available()` is False, `transcribe` raises TranscriberMissing and
`transcription_f1` returns None.

basic-pitch reads 22,050 Hz audio: the 4 kHz signal is resampled the way its file reader does it
(librosa, soxr), then windowed and unwrapped exactly as basic_pitch.inference.run_inference does
for a file, and turned into notes with predict()'s default thresholds: the notes equal those of
`basic-pitch` run on the same audio written as a wav.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading

import numpy as np

from deepsynth.errors import DeepSynthError
from deepsynth.evaluate.metrics import as_float, note_scores
from deepsynth.sim.midi import Notes

INSTALL_HINT = ("make eval-deps (or: pip install '.[eval]' && "
                "pip install --no-deps basic-pitch==0.4.0)")
N_OVERLAPPING_FRAMES = 30  # basic_pitch.inference.run_inference's value

_lock = threading.Lock()
_model = None


class TranscriberMissing(DeepSynthError):
    """basic-pitch (or onnxruntime / librosa) is not installed."""


def _import_basic_pitch():
    """(basic_pitch.inference, basic_pitch.note_creation, basic_pitch.constants, model path);
    ImportError when the transcriber is not installed."""
    import onnxruntime  # noqa: F401  (basic-pitch falls back to TensorFlow without it)

    # basic_pitch logs a warning per missing backend (TensorFlow, CoreML, TFLite) on import
    root = logging.getLogger()
    was = root.disabled
    root.disabled = True
    try:
        import basic_pitch
        import basic_pitch.constants as constants
        import basic_pitch.inference as inference
        import basic_pitch.note_creation as note_creation
    finally:
        root.disabled = was
    path = basic_pitch.build_icassp_2022_model_path(basic_pitch.FilenameSuffix.onnx)
    return inference, note_creation, constants, path


def missing_reason() -> str | None:
    """None when the transcriber can run, else why not (one line, with the install command)."""
    try:
        _import_basic_pitch()
    except ImportError as e:
        return f"basic-pitch transcriber not installed ({e.name or e}): {INSTALL_HINT}"
    return None


def available() -> bool:
    return missing_reason() is None


def _load():
    global _model
    try:
        inference, note_creation, constants, path = _import_basic_pitch()
    except ImportError as e:
        raise TranscriberMissing(
            f"basic-pitch transcriber not installed ({e.name or e}): {INSTALL_HINT}") from None
    with _lock:
        if _model is None:
            with contextlib.redirect_stdout(io.StringIO()):
                _model = inference.Model(path)
    return inference, note_creation, constants, _model


def resample_for_basic_pitch(audio: np.ndarray, sample_rate: int, target: int) -> np.ndarray:
    """Float32 audio at `target` Hz, resampled as basic-pitch's own file reader does
    (librosa.load -> librosa.resample, soxr 'high quality'), so scores match its CLI's."""
    import librosa

    x = as_float(audio).astype(np.float32)
    if int(sample_rate) == int(target):
        return x
    return librosa.resample(x, orig_sr=int(sample_rate), target_sr=int(target)).astype(np.float32)


def transcribe(audio: np.ndarray, sample_rate: int) -> Notes:
    """Notes (pitch, velocity from basic-pitch's amplitude, start/end seconds) heard in `audio`
    (int16, or float in [-1, 1]). Raises TranscriberMissing without basic-pitch."""
    inference, note_creation, constants, model = _load()
    sr = constants.AUDIO_SAMPLE_RATE
    x = resample_for_basic_pitch(audio, sample_rate, sr)
    overlap = N_OVERLAPPING_FRAMES * constants.FFT_HOP
    hop = constants.AUDIO_N_SAMPLES - overlap
    padded = np.concatenate([np.zeros(overlap // 2, np.float32), x])
    out: dict[str, list] = {"note": [], "onset": [], "contour": []}
    for window, _ in inference.window_audio_file(padded, hop):
        for k, v in model.predict(window[None]).items():
            out[k].append(v)
    unwrapped = {k: inference.unwrap_output(np.concatenate(v), len(x), N_OVERLAPPING_FRAMES)
                 for k, v in out.items()}
    min_note_len = int(np.round(127.70 / 1000 * (sr / constants.FFT_HOP)))  # predict()'s default
    with np.errstate(invalid="ignore", divide="ignore"):  # silence: 0 / 0 in its rescaling
        _, events = note_creation.model_output_to_notes(
            unwrapped, onset_thresh=0.5, frame_thresh=0.3, min_note_len=min_note_len,
            min_freq=None, max_freq=None, multiple_pitch_bends=False, melodia_trick=True)
    if not events:
        return Notes.from_columns([], [], [], [])
    start, end, pitch, amp = (np.array([e[i] for e in events]) for i in range(4))
    velocity = np.clip(np.round(amp * 127), 1, 127)
    return Notes.from_columns(pitch, velocity, start, end)


def transcription_f1(audio: np.ndarray, sample_rate: int, notes: Notes) -> dict | None:
    """Transcribe `audio` and score it against `notes` (what the video shows): the note_scores
    dict {"onset": {precision, recall, f1}, "onset_offset": {..}, "n_reference", "n_estimated"},
    or None when basic-pitch is not installed."""
    try:
        estimated = transcribe(audio, sample_rate)
    except TranscriberMissing:
        return None
    return note_scores(notes, estimated)
