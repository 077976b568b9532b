"""Benchmark the training-data layer: full-corpus store build and DataLoader throughput.

    .venv/bin/python benchmarks/data_build.py [--corpus DIR] [--out data/piano] [--workers 2]
                                              [--fresh] [--loader-seconds 20]

1. Build the store of the corpus (from scratch with --fresh; otherwise an existing store is
   resumed, i.e. verified). Baseline: real time, i.e. the build's speed as audio seconds per wall
   second (target: the full 21.6 h corpus in <= 10 min with 2 workers, 130x real time).
2. Re-run the build on the finished store (verification only): the cost of a resume.
3. DataLoader throughput in loss samples per second (batches of 3 segments of 5 s with the
   27-layer receptive field of left context, 2 loader workers), with frames rendered on the CPU
   and with key states only (for rendering on the GPU). Baseline: the 250,000 samples/s an H100
   training step consumes.

Appends one JSON line to benchmarks/results/data_build.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
H100_SAMPLES_PER_S = 250_000
CONTEXT_27_LAYERS = 1534


def loader_throughput(store: Path, render: bool, seconds: float, workers: int,
                      batch: int = 3) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from deepsynth.data.dataset import SegmentDataset, collate

    ds = SegmentDataset(store, "train", context=CONTEXT_27_LAYERS, render_frames=render)
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                        collate_fn=collate, generator=torch.Generator().manual_seed(0),
                        persistent_workers=False)

    def batches():
        while True:  # epochs, until the time is up
            yield from loader

    it = batches()
    next(it)  # workers started, first batch out
    t0 = time.perf_counter()
    n_batches = samples = frames = 0
    for b in it:
        n_batches += 1
        samples += b["audio"].shape[0] * (b["audio"].shape[1] - b["loss_start"])
        frames += len(b["states"])
        if time.perf_counter() - t0 >= seconds:
            break
    wall = time.perf_counter() - t0
    it.close()
    rate = samples / wall
    return {"render_frames": render, "batches": n_batches, "seconds": round(wall, 2),
            "samples_per_s": round(rate), "frames_per_batch": round(frames / max(n_batches, 1), 1),
            "ratio_vs_h100_step": round(rate / H100_SAMPLES_PER_S, 3)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default="/work/shared/data/piano-midi")
    p.add_argument("--out", default=str(ROOT / "data" / "piano"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--fresh", action="store_true", help="delete the store first (full build)")
    p.add_argument("--loader-seconds", type=float, default=20.0)
    p.add_argument("--loader-workers", type=int, default=2)
    args = p.parse_args()

    from deepsynth.data.build import build_store
    from deepsynth.data.store import store_stats

    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    done = [0]

    def progress(r) -> None:
        done[0] += 1
        if done[0] % 25 == 0:
            print(f"  {done[0]} songs, {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    t0 = time.perf_counter()
    report = build_store(args.corpus, out, workers=args.workers, limit=args.limit,
                         on_result=progress)
    build_s = time.perf_counter() - t0
    stats = store_stats(out)
    audio_s = stats["splits"]["all"]["hours"] * 3600
    print(f"build: {len(report.built)} built, {len(report.verified)} verified, "
          f"{len(report.failed)} failed in {build_s:.1f} s with {args.workers} workers: "
          f"{audio_s / 3600:.2f} h of audio, {audio_s / build_s:.0f}x real time "
          f"(target 10 min: {'met' if build_s <= 600 else 'missed'}, "
          f"{600 / build_s:.2f}x the target speed)")

    t1 = time.perf_counter()
    resume = build_store(args.corpus, out, workers=args.workers, limit=args.limit)
    resume_s = time.perf_counter() - t1
    print(f"resume (verify only): {len(resume.verified)} verified in {resume_s:.1f} s")
    print(f"store: {stats['size_bytes'] / 1e6:.1f} MB on disk, "
          f"{stats['splits']['all']['segments']} segments")

    loaders = []
    for render in (True, False):
        r = loader_throughput(out, render, args.loader_seconds, args.loader_workers)
        loaders.append(r)
        print(f"loader ({'frames rendered on CPU' if render else 'key states only'}, "
              f"{args.loader_workers} workers): {r['samples_per_s']:,} samples/s, "
              f"{r['frames_per_batch']} frames/batch, {r['ratio_vs_h100_step']}x an H100 step's "
              f"{H100_SAMPLES_PER_S:,} samples/s")

    line = {
        "benchmark": "data_build",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": platform.machine(), "cpus": os.cpu_count(),
        "workers": args.workers, "fresh": args.fresh, "limit": args.limit,
        "songs_built": len(report.built), "songs_verified": len(report.verified),
        "songs_failed": len(report.failed),
        "audio_hours": round(audio_s / 3600, 3), "build_seconds": round(build_s, 1),
        "build_x_real_time": round(audio_s / build_s, 1),
        "resume_seconds": round(resume_s, 1),
        "store_bytes": stats["size_bytes"], "segments": stats["splits"]["all"]["segments"],
        "loader": loaders,
    }
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    with open(results / "data_build.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
