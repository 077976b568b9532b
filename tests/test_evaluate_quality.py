"""`deepsynth quality`: rows from an evaluation report and the run folder of its checkpoint."""

import json
import subprocess
import sys

import pytest

from deepsynth.errors import DeepSynthError
from deepsynth.evaluate.quality import quality_markdown, quality_row
from deepsynth.train.logs import COLUMNS


def fake_run(tmp_path, store, no_video=False):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"")
    (run / "config.json").write_text(json.dumps({
        "data": str(store), "device": "cpu", "world_size": 1,
        "train": {"batch_size": 3, "window_seconds": None, "no_video": no_video}}))
    lines = [",".join(COLUMNS)]
    for step, t in [(10, 60.0), (20, 120.0), (30, 180.0)]:
        row = {c: "" for c in COLUMNS} | {"step": step, "time_s": t, "train_ce": 5.0}
        lines.append(",".join(str(row[c]) for c in COLUMNS))
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    report = tmp_path / "report"
    report.mkdir()
    f1 = {who: {"onset": {"f1": v}} for who, v in
          [("generated", 0.3), ("truth", 0.6), ("reference", 0.55)]}
    (report / "report.json").write_text(json.dumps({
        "format": "deepsynth-evaluation",
        "checkpoint": {"path": str(run / "best.pt"), "preset": "small", "step": 20,
                       "best_val_ce": 3.5},
        "data": {"split": "test"}, "settings": {"temperature": 1.0, "excerpts": 8},
        "teacher_forced": {"ce_nats": 3.6}, "note_f1": f1,
        "distances": {"generated": {"log_mel_db": 7.25}},
        "noise_floor_db": {"generated": -13.04, "truth": -20.4, "reference": -19.0},
    }))
    return report


def test_row_reads_the_budget_up_to_the_kept_step(tmp_path, store):
    row = quality_row(fake_run(tmp_path, store))
    seg = json.loads((store / "manifest.json").read_text())
    window = round(seg["segments"]["window_seconds"] * seg["sample_rate"])
    assert row["steps"] == 20 and row["minutes"] == pytest.approx(2.0)
    assert row["samples_seen"] == 20 * 3 * window
    assert row["f1_ratio"] == pytest.approx(0.5) and row["val_ce"] == 3.5
    table = quality_markdown([row])
    assert "| `small` | cpu | 20 |" in table
    assert "| 1 | 0.300 | 0.600 | 0.550 | 0.50 | 7.2 | -13.0 (-20.4) |" in table


def test_no_video_runs_are_labelled_and_labels_can_be_given(tmp_path, store):
    report = fake_run(tmp_path, store, no_video=True)
    assert quality_row(report)["label"] == "small --no-video"
    assert quality_row(report, "twin")["label"] == "twin"


def test_bad_reports_are_one_line_errors(tmp_path):
    with pytest.raises(DeepSynthError, match="no such report"):
        quality_row(tmp_path / "missing")
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(DeepSynthError, match="bad JSON"):
        quality_row(tmp_path)
    r = subprocess.run([sys.executable, "-m", "deepsynth", "quality", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
