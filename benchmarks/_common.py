"""Shared by the benchmark scripts: where the corpus is, and appending a JSON line of results."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "piano-midi"
RESULTS = ROOT / "benchmarks" / "results"


def append_result(name: str, record: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.jsonl"
    record = {
        "benchmark": name,
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        **record,
    }
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
    return path
