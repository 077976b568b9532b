"""Pictures for the report (matplotlib's Agg canvas, no global backend switch; every file written
atomically): waveforms (paper Figure 5), spectrograms of generated vs ground-truth audio, and the
training run's loss curves (paper Figure 6)."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

from deepsynth.atomic import atomic_path
from deepsynth.evaluate.metrics import as_float, stft_magnitude

TRUTH_COLOR, GENERATED_COLOR, REFERENCE_COLOR = "#1f77b4", "#d62728", "#2ca02c"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
    return path


def _loudest(x: np.ndarray, n: int) -> int:
    """Start of the length-n window of x with the most energy."""
    if len(x) <= n:
        return 0
    energy = np.convolve(x**2, np.ones(n), mode="valid")
    return int(np.argmax(energy))


def waveform_plot(
    generated: np.ndarray, truth: np.ndarray, sample_rate: int, path: str | os.PathLike,
    title: str | None = None, zoom_seconds: float = 0.05,
) -> Path:
    """Ground truth and generated waveforms overlaid (paper Figure 5): the whole excerpt above,
    a `zoom_seconds` close-up of the ground truth's loudest moment below."""
    g, t = as_float(generated), as_float(truth)
    fig = _figure(10, 5.5)
    top, bottom = fig.subplots(2, 1)
    for ax, lo, hi in ((top, 0, max(len(g), len(t))), (bottom, None, None)):
        if lo is None:
            n = max(int(round(zoom_seconds * sample_rate)), 2)
            lo = _loudest(t, n)
            hi = lo + n
        span = np.arange(lo, hi)
        ax.plot(span[span < len(g)] / sample_rate, g[lo:hi], color=GENERATED_COLOR, lw=0.8,
                label="generated")
        ax.plot(span[span < len(t)] / sample_rate, t[lo:hi], color=TRUTH_COLOR, lw=0.8,
                alpha=0.8, label="ground truth")
        ax.set_xlim(lo / sample_rate, hi / sample_rate)
        ax.set_ylabel("amplitude")
        ax.grid(alpha=0.3)
    top.set_title(title or "generated vs ground truth")
    top.legend(loc="upper right")
    bottom.set_title(f"close-up: {zoom_seconds * 1000:g} ms at the loudest point")
    bottom.set_xlabel("time (s)")
    return _save(fig, path)


def spectrogram_db(x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float, float]:
    """(dB magnitudes (freqs, frames) re full scale, frame hop s, bin width Hz); 64 ms frames."""
    n_fft = int(2 ** round(math.log2(0.064 * sample_rate)))
    hop = max(n_fft // 8, 1)
    mag = stft_magnitude(as_float(x), n_fft, hop) / (np.hanning(n_fft + 1)[:-1].sum() / 2)
    return 20 * np.log10(np.maximum(mag.T, 1e-6)), hop / sample_rate, sample_rate / n_fft


def spectrogram_comparison_plot(
    generated: np.ndarray, truth: np.ndarray, sample_rate: int, path: str | os.PathLike,
    title: str | None = None, reference: np.ndarray | None = None, floor_db: float = -90.0,
) -> Path:
    """Spectrograms of the ground truth, the generated audio and (optionally) the reference path,
    one above the other on the same dB scale (int16 or float audio; writes a PNG, returns its
    path)."""
    rows = [("ground truth", truth), ("generated", generated)]
    if reference is not None:
        rows.append(("reference path (decoded notes -> SoundFont)", reference))
    fig = _figure(10, 2.4 * len(rows) + 0.6)
    axes = np.atleast_1d(fig.subplots(len(rows), 1, sharex=True, sharey=True))
    image = None
    for ax, (label, audio) in zip(axes, rows, strict=True):
        db, hop_s, _ = spectrogram_db(audio, sample_rate)
        extent = (0, db.shape[1] * hop_s, 0, sample_rate / 2)
        image = ax.imshow(db, origin="lower", aspect="auto", extent=extent, cmap="magma",
                          vmin=floor_db, vmax=0)
        ax.set_ylabel("Hz")
        ax.set_title(label, fontsize=10)
    axes[-1].set_xlabel("time (s)")
    if title:
        fig.suptitle(title)
    fig.colorbar(image, ax=list(axes), label="dB re full scale")
    return _save(fig, path)


def read_metrics_csv(path: str | os.PathLike) -> list[dict[str, float | None]]:
    """Rows of a training run's metrics.csv as numbers (empty cells: None)."""
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out: dict[str, float | None] = {}
            for k, v in row.items():
                if k is None:
                    continue
                try:
                    out[k] = float(v) if v not in ("", None) else None
                except ValueError:
                    out[k] = None
            rows.append(out)
    return rows


def loss_curve_plot(
    rows: list[dict[str, float | None]], path: str | os.PathLike, title: str | None = None,
    paper: tuple[float, float] | None = None,
) -> Path | None:
    """Train and validation CE (nats) against steps (paper Figure 6); `paper`: the paper's
    (train, val) CE drawn as dashed lines. None when the rows hold no CE."""
    def series(key):
        pts = [(r["step"], r[key]) for r in rows
               if r.get("step") is not None and r.get(key) is not None
               and math.isfinite(r[key])]
        return np.asarray(pts, dtype=np.float64).reshape(-1, 2)

    train, val = series("train_ce"), series("val_ce")
    if not len(train) and not len(val):
        return None
    fig = _figure(8, 4.5)
    ax = fig.subplots()
    if len(train):
        ax.plot(train[:, 0], train[:, 1], color=TRUTH_COLOR, lw=0.8, label="train CE")
    if len(val):
        ax.plot(val[:, 0], val[:, 1], "o-", color=GENERATED_COLOR, ms=3, label="validation CE")
    if paper is not None:
        ax.axhline(paper[0], color=TRUTH_COLOR, ls="--", lw=0.8, label=f"paper train {paper[0]}")
        ax.axhline(paper[1], color=GENERATED_COLOR, ls="--", lw=0.8,
                   label=f"paper val {paper[1]}")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title(title or "loss per iteration")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)
