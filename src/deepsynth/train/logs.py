"""What a person reads while a run goes and plots afterwards (written by rank 0 only):

    metrics.csv  a row every `log_every` steps (train figures: means over those steps) and at
                 every validation (columns: COLUMNS; empty cells where a figure was not measured
                 at that step); CE in nats and in bits
    tb/          TensorBoard events (the same scalars): `tensorboard --logdir RUN/tb`
    loss.png     train and validation CE against steps (the paper's loss figure), rewritten
                 atomically at every validation
    stderr       a tqdm bar (CE, samples/s, lr) and one line per validation (and warnings)

On resume, rows (and TensorBoard events) after the checkpoint's step are dropped, so the files
read as if the run had never been interrupted.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
from pathlib import Path
from typing import Any

from deepsynth.atomic import atomic_path, atomic_write_text
from deepsynth.train.objective import NATS_TO_BITS

METRICS = "metrics.csv"
PLOT = "loss.png"
TB_DIR = "tb"

COLUMNS = (
    "step",  # optimizer steps taken
    "epoch",  # epochs done, fractional
    "train_ce",  # mean train CE (nats) over the steps since the last row
    "train_ce_bits",
    "val_ce",  # CE (nats) over the fixed validation segments
    "val_ce_bits",
    "val_acc",  # fraction of validation samples whose most likely class is right
    "lr",
    "grad_norm",  # mean global gradient norm before clipping, over the steps since the last row
    "clipped",  # fraction of those steps whose gradient was clipped
    "l2_penalty",  # mean L2 term added to the loss (not part of train_ce)
    "samples_per_s",  # scored audio samples trained per second (all processes)
    "time_s",  # training wall time so far (all invocations, excluding validation)
)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else format(value, ".9g")
    return str(value)


def _number(text: str) -> float | None:
    return None if text == "" else float(text)


class MetricsLog:
    """metrics.csv, TensorBoard and loss.png of one run folder."""

    def __init__(self, out: str | os.PathLike, resume_step: int | None = None,
                 tensorboard: bool = True, title: str = "") -> None:
        self.out = Path(out)
        self.path = self.out / METRICS
        self.title = title
        self.rows: list[dict[str, float | None]] = []
        if resume_step is not None and self.path.is_file():
            self.rows = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
        self._rewrite()
        self._file = open(self.path, "a", newline="")  # noqa: SIM115 (closed in close())
        self._writer = csv.writer(self._file)
        self.tb = None
        self.warnings: list[str] = []  # what could not be written, for the caller to show
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:  # e.g. a GPU machine that installed us with --no-deps
                self.warnings.append(f"no TensorBoard events ({e}; pip install tensorboard)")
            else:
                purge = None if resume_step is None else resume_step + 1
                self.tb = SummaryWriter(log_dir=str(self.out / TB_DIR), purge_step=purge)

    def _rewrite(self) -> None:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(COLUMNS)
        for r in self.rows:
            w.writerow([_cell(r.get(c)) for c in COLUMNS])
        atomic_write_text(self.path, buf.getvalue())

    def log(self, row: dict[str, Any]) -> None:
        row = dict(row)
        for kind in ("train", "val"):
            ce = row.get(f"{kind}_ce")
            if ce is not None:
                row[f"{kind}_ce_bits"] = ce * NATS_TO_BITS
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown metrics columns: {sorted(unknown)}")
        self.rows.append({c: row.get(c) for c in COLUMNS})
        self._writer.writerow([_cell(row.get(c)) for c in COLUMNS])
        self._file.flush()
        if self.tb is not None:
            step = int(row["step"])
            for c in COLUMNS[2:]:
                if row.get(c) is not None and c != "time_s":
                    tag = c.replace("_", "/", 1) if c.startswith(("train_", "val_")) else c
                    self.tb.add_scalar(tag, row[c], step)

    def plot(self) -> None:
        try:
            plot_losses(self.rows, self.out / PLOT, self.title)
        except ImportError as e:
            message = f"no {PLOT} ({e}; pip install matplotlib)"
            if message not in self.warnings:
                self.warnings.append(message)
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        self._file.close()
        if self.tb is not None:
            self.tb.close()


def read_metrics(path: str | os.PathLike) -> list[dict[str, float | None]]:
    """The rows of a metrics.csv as numbers (None for empty cells); a row cut short by a kill
    (the last line, half written) is skipped."""
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            try:
                row = {c: _number(raw[c]) for c in COLUMNS}
            except (KeyError, TypeError, ValueError):
                continue
            if row["step"] is not None:
                rows.append(row)
    return rows


def plot_losses(rows: list[dict[str, float | None]], path: str | os.PathLike,
                title: str = "") -> None:
    """Train and validation CE (nats, bits on the right axis) against steps, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    train = [(r["step"], r["train_ce"]) for r in rows if r.get("train_ce") is not None]
    val = [(r["step"], r["val_ce"]) for r in rows if r.get("val_ce") is not None]
    if train:
        ax.plot(*zip(*train, strict=True), lw=0.8, color="tab:blue", label="train CE")
    if val:
        ax.plot(*zip(*val, strict=True), "o-", ms=3, color="tab:orange",
                label="validation CE (fixed segments)")
        best = min(val, key=lambda sv: sv[1])
        ax.plot(*best, "*", ms=12, color="tab:red",
                label=f"best {best[1]:.3f} nats at step {int(best[0])}")
    ax.set_xlabel("step (batches)")
    ax.set_ylabel("cross-entropy (nats)")
    bits = ax.secondary_yaxis("right", functions=(lambda x: x * NATS_TO_BITS,
                                                  lambda x: x / NATS_TO_BITS))
    bits.set_ylabel("bits")
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend(loc="upper right")
    ax.set_title(title or "training loss")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")


class Progress:
    """The tqdm bar on stderr, and lines for a person (validations, warnings) printed above it.
    Only rank 0 shows anything; `bar=False` keeps the lines and drops the bar."""

    def __init__(self, main: bool, bar: bool, total: int | None, initial: int,
                 desc: str) -> None:
        self.main = main
        self.bar = None
        if main and bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step",
                            file=sys.stderr, dynamic_ncols=True, mininterval=0.5)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def postfix(self, **values: Any) -> None:
        if self.bar is not None:
            self.bar.set_postfix(values, refresh=False)

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        elif self.main:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
