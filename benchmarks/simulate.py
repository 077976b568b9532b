"""Simulator throughput: seconds of music simulated (mp4 video + wav + json written) per second
of wall time, on 10 corpus pieces.

Baseline measured in the same run: the same pieces simulated by one process. The headline is the
parallel run (`--workers`, default: all cores) in x real time; target >= 100x on 2 cores.

    python benchmarks/simulate.py [--corpus DIR] [--pieces 10] [--workers N]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from _common import DEFAULT_CORPUS, append_result

from deepsynth.sim.simulate import simulate_to_files


def pick_pieces(corpus: Path, n: int, seed: int = 0) -> list[Path]:
    with (corpus / "metadata.csv").open() as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["midi"])
    random.Random(seed).shuffle(rows)
    return [corpus / r["midi"] for r in rows[:n]]


def _one(job: tuple[Path, Path]) -> float:
    midi, out = job
    return simulate_to_files(midi, out)["seconds"]


def run(pieces: list[Path], workers: int) -> tuple[float, float]:
    """(seconds of music, wall seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(p, Path(tmp)) for p in pieces]
        start = time.perf_counter()
        if workers == 1:
            music = sum(map(_one, jobs))
        else:
            with ProcessPoolExecutor(workers) as pool:
                music = sum(pool.map(_one, jobs))
        return music, time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--pieces", type=int, default=10)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    if not (args.corpus / "metadata.csv").exists():
        print(f"corpus not found at {args.corpus} (pass --corpus)", file=sys.stderr)
        return 2
    pieces = pick_pieces(args.corpus, args.pieces)
    music, serial = run(pieces, 1)
    _, parallel = run(pieces, args.workers)
    record = {
        "pieces": len(pieces),
        "music_seconds": round(music, 1),
        "serial_wall_s": round(serial, 2),
        "serial_x_realtime": round(music / serial, 1),
        "workers": args.workers,
        "parallel_wall_s": round(parallel, 2),
        "x_realtime": round(music / parallel, 1),
        "speedup_vs_serial": round(serial / parallel, 2),
        "target_x_realtime": 100,
    }
    print(f"{len(pieces)} pieces, {music / 60:.1f} min of music")
    print(f"  1 process:   {serial:6.1f} s  = {music / serial:6.1f}x real time (baseline)")
    print(f"  {args.workers} processes: {parallel:6.1f} s  = {music / parallel:6.1f}x real time "
          f"({serial / parallel:.2f}x the baseline; target >= 100x real time)")
    print(f"appended to {append_result('simulate', record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
