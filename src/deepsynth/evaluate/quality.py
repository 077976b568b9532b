"""`deepsynth quality`: one table comparing evaluated checkpoints (conditioning variants, the
paper baseline, the --no-video ablation) by training budget and by quality.

Each row comes from an evaluation report (`deepsynth evaluate ... -o REPORT_DIR`) and the run
folder its checkpoint lives in (config.json and metrics.csv of `deepsynth train`): the training
budget (steps, samples seen, wall time to the kept checkpoint, device), the best validation CE,
the teacher-forced CE on the report's split, the transcription onset F1 of the generated
excerpts beside the ceiling (the ground-truth audio) and the reference path (video -> notes ->
SoundFont) of the same excerpts, the log-mel distance and the noise floor (generated beside the
ground truth's; reports written before it have none).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from deepsynth.errors import DeepSynthError


def _load_report(folder: Path) -> dict:
    path = folder / "report.json" if folder.is_dir() else folder
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise DeepSynthError(
            f"{path}: no such report (run `deepsynth evaluate -o DIR` first)") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DeepSynthError(f"{path}: not a DeepSynth evaluation report (bad JSON)") from None
    if report.get("format") != "deepsynth-evaluation":
        raise DeepSynthError(f"{path}: not a DeepSynth evaluation report")
    return report


def _run_budget(checkpoint: Path, step: int | None) -> dict:
    """Budget of the run that wrote `checkpoint` (its folder's config.json and metrics.csv);
    empty where the checkpoint is not in a run folder (e.g. a shipped copy)."""
    from deepsynth.train.logs import read_metrics

    run = checkpoint.parent
    config_path, metrics_path = run / "config.json", run / "metrics.csv"
    if not (config_path.exists() and metrics_path.exists()):
        return {}
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DeepSynthError(f"{config_path}: not a run's config.json (bad JSON)") from None
    rows = read_metrics(metrics_path)
    upto = [r for r in rows if step is None or r["step"] <= step]
    if not upto:
        return {}
    train = config.get("train", {})
    from deepsynth.data.store import read_manifest

    try:
        manifest = read_manifest(config["data"])
        seconds = train.get("window_seconds") or manifest["segments"]["window_seconds"]
        window = int(round(seconds * int(manifest["sample_rate"])))
    except (DeepSynthError, KeyError, OSError):
        window = None  # the store is gone: samples seen unknown
    steps = int(step) if step is not None else int(upto[-1]["step"])
    world = int(config.get("world_size", 1))
    samples = steps * int(train.get("batch_size", 3)) * world * window if window else None
    return {"run": str(run), "device": config.get("device"), "steps": steps,
            "no_video": bool(train.get("no_video")),
            "samples_seen": samples, "minutes": float(upto[-1]["time_s"]) / 60.0}


def quality_row(folder: str | os.PathLike, label: str | None = None) -> dict:
    """One row of the table from a report folder (or report.json)."""
    folder = Path(folder)
    report = _load_report(folder)
    ck = report["checkpoint"]
    tf = report.get("teacher_forced") or {}
    f1 = report.get("note_f1") or {}
    dist = report.get("distances") or {}
    row = {
        "label": label or ck.get("preset") or folder.name,
        "report": str(folder),
        "preset": ck.get("preset"),
        "checkpoint": ck.get("path"),
        "val_ce": ck.get("best_val_ce", ck.get("val_ce")),
        "split": report["data"]["split"],
        "test_ce": tf.get("ce_nats"),
        "temperature": report["settings"]["temperature"],
        "floor": report["settings"].get("floor", 0.0),
        "excerpts": report["settings"]["excerpts"],
        "log_mel_db": (dist.get("generated") or {}).get("log_mel_db"),
        "noise_floor_generated": (report.get("noise_floor_db") or {}).get("generated"),
        "noise_floor_truth": (report.get("noise_floor_db") or {}).get("truth"),
    }
    for who in ("generated", "truth", "reference"):
        row[f"f1_{who}"] = (f1.get(who) or {}).get("onset", {}).get("f1")
    if row["f1_generated"] is not None and row["f1_truth"]:
        row["f1_ratio"] = row["f1_generated"] / row["f1_truth"]
    row["steps"] = ck.get("step")
    row.update(_run_budget(Path(ck["path"]), ck.get("step")))
    if label is None and row.get("no_video"):
        row["label"] += " --no-video"
    return row


def _cell(value, spec: str) -> str:
    return "–" if value is None else spec.format(value)


def _noise_cell(generated: float | None, truth: float | None) -> str:
    if generated is None:
        return "–"
    return f"{generated:.1f}" + ("" if truth is None else f" ({truth:.1f})")


def quality_markdown(rows: list[dict]) -> str:
    head = ("| variant | device | steps | samples seen | minutes | val CE | "
            "{split} CE | temperature | onset F1 generated | ceiling (truth) | reference path | "
            "generated / ceiling | log-mel dB | noise floor dB (truth) |")
    split = rows[0]["split"] if rows else "test"
    lines = [head.format(split=split), "|" + "---|" * 14]
    for r in rows:
        samples = r.get("samples_seen")
        lines.append("| " + " | ".join([
            f"`{r['label']}`", str(r.get("device") or "–"), _cell(r.get("steps"), "{:,}"),
            "–" if samples is None else f"{samples / 1e6:,.1f} M",
            _cell(r.get("minutes"), "{:.0f}"), _cell(r["val_ce"], "{:.3f}"),
            _cell(r["test_ce"], "{:.3f}"), _cell(r["temperature"], "{:g}"),
            _cell(r["f1_generated"], "{:.3f}"),
            _cell(r["f1_truth"], "{:.3f}"), _cell(r["f1_reference"], "{:.3f}"),
            _cell(r.get("f1_ratio"), "{:.2f}"), _cell(r["log_mel_db"], "{:.1f}"),
            _noise_cell(r.get("noise_floor_generated"), r.get("noise_floor_truth")),
        ]) + " |")
    return "\n".join(lines) + "\n"
