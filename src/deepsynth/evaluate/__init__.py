"""Evaluation: metrics (spectral distances, note F1), the basic-pitch judge, excerpts, plots and
the report of `deepsynth evaluate`; the Table 1 sweep of `deepsynth sweep table1`.

For callers (the demo):
    spectral_distances(generated, truth, sr) -> {"mrstft": {..}, "log_mel_db", "level_db"}
    transcription_f1(audio, sr, notes) -> {"onset": {precision, recall, f1}, "onset_offset": ..,
                                           "n_reference", "n_estimated"} | None (no basic-pitch)
    note_scores(reference_notes, estimated_notes) -> the same dict, for two note lists
    spectrogram_comparison_plot(generated, truth, sr, path, title=None, reference=None) -> path
    waveform_plot(generated, truth, sr, path, title=None) -> path
    evaluate(checkpoint, data, out, ...) -> the report dict (report.md / report.json in out)
"""

from deepsynth.evaluate.metrics import (
    log_mel_distance,
    multi_resolution_stft_distance,
    note_scores,
    spectral_distances,
)
from deepsynth.evaluate.plots import spectrogram_comparison_plot, waveform_plot
from deepsynth.evaluate.transcriber import available as transcriber_available
from deepsynth.evaluate.transcriber import transcribe, transcription_f1

__all__ = [
    "evaluate", "log_mel_distance", "multi_resolution_stft_distance", "note_scores",
    "spectral_distances", "spectrogram_comparison_plot", "transcribe", "transcriber_available",
    "transcription_f1", "waveform_plot",
]


def __getattr__(name: str):
    if name == "evaluate":  # imports torch and the model: only when asked for
        from deepsynth.evaluate.report import evaluate

        return evaluate
    raise AttributeError(f"module 'deepsynth.evaluate' has no attribute {name!r}")
