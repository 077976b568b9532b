"""The paper's Table 1: L2 strength, layers, channels -> train and validation CE (nats), one row
per named preset (deepsynth.model.presets)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperRow:
    preset: str
    l2: float
    layers: int
    channels: int
    train_ce: float
    val_ce: float


PAPER_TABLE1 = (
    PaperRow("paper-15x128-l2e-2", 1e-2, 15, 128, 2.23, 2.87),
    PaperRow("paper-15x128", 1e-4, 15, 128, 1.87, 2.35),
    PaperRow("paper-15x128-l2e-5", 1e-5, 15, 128, 1.65, 2.46),
    PaperRow("paper-20x128", 1e-4, 20, 128, 1.51, 2.26),
    PaperRow("paper-27x128", 1e-4, 27, 128, 1.21, 2.18),
    PaperRow("paper-27x256", 1e-4, 27, 256, 1.16, 2.15),
    PaperRow("paper-27x512", 1e-4, 27, 512, 1.14, 2.16),
)


def paper_row(preset: str | None) -> PaperRow | None:
    return next((r for r in PAPER_TABLE1 if r.preset == preset), None)
