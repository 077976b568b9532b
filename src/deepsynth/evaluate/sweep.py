"""`deepsynth sweep table1`: train every row of the paper's Table 1 for the same time budget and
tabulate train and validation CE beside the paper's numbers.

On a GPU the rows are the paper's own presets (paper-15x128-l2e-2 .. paper-27x512). On a CPU
those take 5 to 250 s a step, so by default the sweep trains CPU stand-ins instead: the same L2
strengths and layer counts (the factor the paper found to matter most), channels divided by 8
(128 -> 16, 256 -> 32, 512 -> 64; skip and conditioning widths alike) and the `small-paper` preset's
frame CNN (3x3-averaged frames, (8, 16) channels, 64 features). Their names say what they stand
for: cpu-15x16-l2e-2 for paper-15x128-l2e-2, .., cpu-27x64 for paper-27x512. `presets` overrides
the choice with any preset names (stand-ins included).

Each run lives in SWEEP_DIR/NAME/ (the trainer's run folder: last.pt, best.pt, metrics.csv, ..)
and is resumed when it exists, so running the sweep again trains every row for another budget.
Train CE is the mean logged train CE over the last tenth of the run's steps (at least the last
row); val CE is the best validation CE (the paper keeps the best model). table1.md and
table1.json are rewritten after every row.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

from deepsynth.atomic import atomic_write_text
from deepsynth.errors import DeepSynthError
from deepsynth.evaluate.table1 import PAPER_TABLE1, PaperRow
from deepsynth.model.presets import CPU_CHANNEL_DIVISOR, PRESETS, Preset


def standin_name(row: PaperRow) -> str:
    """The CPU stand-in preset of a Table 1 row (deepsynth.model.presets)."""
    name = f"cpu-{row.layers}x{row.channels // CPU_CHANNEL_DIVISOR}"
    return name + row.preset.removeprefix(f"paper-{row.layers}x{row.channels}")


STANDINS: dict[str, tuple[Preset, PaperRow]] = {
    standin_name(r): (PRESETS[standin_name(r)], r) for r in PAPER_TABLE1}


def paper_row_for(name: str) -> PaperRow | None:
    if name in STANDINS:
        return STANDINS[name][1]
    return next((r for r in PAPER_TABLE1 if r.preset == name), None)


def default_presets(device: str) -> list[str]:
    if device.startswith("cuda"):
        return [r.preset for r in PAPER_TABLE1]
    return list(STANDINS)


def _train_ce(metrics_csv: Path, steps: int) -> float | None:
    from deepsynth.evaluate.plots import read_metrics_csv

    if not metrics_csv.is_file():
        return None
    rows = [r for r in read_metrics_csv(metrics_csv)
            if r.get("train_ce") is not None and r.get("step") is not None]
    if not rows:
        return None
    since = steps - max(steps // 10, 1)
    tail = [r["train_ce"] for r in rows if r["step"] > since] or [rows[-1]["train_ce"]]
    return sum(tail) / len(tail)


def run_sweep(
    data: str | os.PathLike, out: str | os.PathLike, budget_minutes: float,
    presets: list[str] | None = None, device: str = "cpu", seed: int = 0,
    log: Callable[[str], None] | None = None, progress: bool = True,
    config: dict | None = None,
) -> dict:
    """Train each preset for `budget_minutes` (one after the other) and write table1.md /
    table1.json into `out`; returns {"rows": [..], "table_markdown": str, ..}. `config`: extra
    TrainConfig fields for every run (e.g. {"val_segments": 20})."""
    from deepsynth.data.store import read_manifest
    from deepsynth.evaluate.report import _output_dir
    from deepsynth.model.presets import get_preset
    from deepsynth.train import RunOptions, TrainConfig, train

    if not budget_minutes > 0:
        raise DeepSynthError(f"--budget-minutes must be positive, got {budget_minutes}")
    read_manifest(data)  # a missing store fails before any training
    for name in list(presets or []):
        get_preset(name)  # unknown names fail before the first run
    log_every = 10 if device.startswith("cuda") else 1  # short CPU runs: a train CE every step
    try:
        cfg = TrainConfig(**({"seed": seed, "log_every": log_every} | (config or {})))
    except (TypeError, ValueError) as e:
        raise DeepSynthError(f"training recipe: {e}") from None
    out = _output_dir(out)
    names = list(presets) if presets else default_presets(device)
    result: dict = {"format": "deepsynth-sweep", "table": "table1", "data": str(data),
                    "device": device, "budget_minutes": budget_minutes, "seed": seed,
                    "standins": not device.startswith("cuda") and not presets, "rows": []}
    for i, name in enumerate(names):
        if log:
            log(f"[{i + 1}/{len(names)}] training {name} for {budget_minutes:g} min ..")
        t0 = time.monotonic()
        r = train(data, out / name, name, cfg,
                  RunOptions(device=device, resume="auto", max_minutes=budget_minutes,
                             progress=progress, tensorboard=False))
        preset = get_preset(name)
        paper = paper_row_for(name)
        best = r.best_val_ce if math.isfinite(r.best_val_ce) else None
        result["rows"].append({
            "preset": name, "stands_for": paper.preset if paper else None,
            "l2": preset.l2, "layers": preset.model.decoder.layers,
            "channels": preset.model.decoder.residual_channels,
            "steps": r.step, "epochs": r.epoch, "stopped": r.stopped,
            "minutes": (time.monotonic() - t0) / 60,
            "train_ce": _train_ce(out / name / "metrics.csv", r.step),
            "val_ce": best, "best_step": r.best_step if best is not None else None,
            "paper_train_ce": paper.train_ce if paper else None,
            "paper_val_ce": paper.val_ce if paper else None,
            "run": str(out / name),
        })
        _write(result, out)
    return result


def _f(x, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def render_table(result: dict) -> str:
    lines = [
        "| preset | stands for | L2 | layers | channels | steps | train CE | val CE | "
        "paper train CE | paper val CE |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['preset']} | {r['stands_for'] or '–'} | {r['l2']:g} | {r['layers']} | "
            f"{r['channels']} | {r['steps']} | {_f(r['train_ce'], 3)} | {_f(r['val_ce'], 3)} | "
            f"{_f(r['paper_train_ce'])} | {_f(r['paper_val_ce'])} |")
    return "\n".join(lines) + "\n"


def _write(result: dict, out: Path) -> None:
    result["table_markdown"] = render_table(result)
    head = [f"# Table 1 sweep: {result['budget_minutes']:g} min per preset on {result['device']}",
            "", f"Store `{result['data']}`, seed {result['seed']}. CE in nats; train CE: mean "
            "over the last tenth of the steps; val CE: best over the run's validations (the "
            "paper's 100 fixed validation segments). The paper trained 200 epochs."]
    if result["standins"]:
        head += ["", f"CPU stand-ins: the paper's layers and L2, channels / "
                 f"{CPU_CHANNEL_DIVISOR}, the small-paper preset's frame CNN (see "
                 "deepsynth.evaluate.sweep)."]
    atomic_write_text(out / "table1.md", "\n".join(head) + "\n\n" + result["table_markdown"])
    atomic_write_text(out / "table1.json", json.dumps(result, indent=1) + "\n")
