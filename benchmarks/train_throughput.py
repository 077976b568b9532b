"""Training throughput: samples/s of one training step (forward + backward + clip + Adam) on a
batch of 3 segments of 20,000 scored samples plus one receptive field of context, per preset.

Samples/s counts the scored samples (3 x 20,000 a step), as the paper's 5 s segments do.
The batch is synthetic but realistic: FRAMES distinct keyboard pictures (default 150, about
10 key-state changes a second) drawn by the keyboard renderer, held over sorted frame indices.

Baseline measured in the same run, per preset: the bare step (eager, fp32: forward, CE over the
whole sequence, backward, Adam; no clipping, no L2). Measured against it:
  - CPU:  the training step as `deepsynth train` runs it (eager fp32, CE over the segment only,
          L2 penalty, clipping): the ratio is the cost of the recipe's extras (about 1.0)
  - CUDA: the same step with bf16 autocast and torch.compile (the defaults there): the ratio is
          the speed-up; also model FLOPs utilisation (FLOPs of a step from
          torch.utils.flop_counter / step time / --peak-tflops, 989 dense bf16 for an H100 SXM)

    python benchmarks/train_throughput.py [--presets tiny small paper-15x128] [--steps 2]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

import numpy as np
import torch
from _common import append_result
from torch.utils.flop_counter import FlopCounterMode

from deepsynth.model import DeepSynth, get_preset
from deepsynth.sim import keyboard
from deepsynth.train.data import DeviceBatch
from deepsynth.train.objective import decayed_parameters
from deepsynth.train.step import train_step

BATCH = 3
WINDOW = 20_000


def make_batch(model: DeepSynth, frames: int, device: torch.device, seed: int = 0) -> DeviceBatch:
    rng = np.random.default_rng(seed)
    spans = model.item_spans()  # audio context; video before it and after the window
    context = spans["context"]
    T = context + WINDOW
    Tv = spans["video_context"] + T + spans["lookahead"]
    states = rng.random((frames, keyboard.N_KEYS)) < 0.08
    pictures = torch.from_numpy(keyboard.render(states))
    per_item = frames // BATCH
    rows = []
    for b in range(BATCH):  # each item shows its own per_item frames, changing at sorted times
        cuts = np.sort(rng.choice(np.arange(1, Tv), per_item - 1, replace=False))
        rows.append(np.repeat(np.arange(per_item) + b * per_item,
                              np.diff(np.concatenate([[0], cuts, [Tv]]))))
    index = torch.from_numpy(np.stack(rows).astype(np.int64))
    audio = torch.from_numpy(rng.uniform(-1, 1, (BATCH, T)).astype(np.float32))
    video = not model.cfg.no_video
    return DeviceBatch(pictures.to(device) if video else None, index.to(device) if video else None,
                       audio.to(device), context)


def bare_step(model, batch: DeviceBatch, opt) -> None:
    opt.zero_grad(set_to_none=True)
    classes = model.output.encode(batch.audio)
    model.output.loss(model(batch.frames, batch.frame_index, classes), classes).backward()
    opt.step()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(steps_to_time: list, device: torch.device, warmup: int,
               steps: int) -> list[float]:
    """Median seconds of one step of each function, after `warmup` untimed ones of each; the
    functions take turns, so a machine shared with other work slows them alike."""
    for step in steps_to_time:
        for _ in range(warmup):
            step()
    sync(device)
    times: list[list[float]] = [[] for _ in steps_to_time]
    for _ in range(steps):
        for step, spent in zip(steps_to_time, times, strict=True):
            t = time.perf_counter()
            step()
            sync(device)
            spent.append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def step_flops(model, batch: DeviceBatch) -> int:
    """FLOPs of one forward + backward (convolutions and matrix products), by flop_counter."""
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        classes = model.output.encode(batch.audio)
        model.output.loss(model(batch.frames, batch.frame_index, classes), classes).backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def measure(preset: str, device: torch.device, args) -> dict:
    torch.manual_seed(0)
    model = DeepSynth(get_preset(preset).model, keyboard.layout()).to(device).train()
    batch = make_batch(model, args.frames, device)
    params = list(model.parameters())
    decayed = decayed_parameters(model)
    l2 = get_preset(preset).l2
    opt = torch.optim.Adam(params, lr=1e-4, fused=device.type == "cuda" or None)
    flops = step_flops(model, batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    bare = lambda: bare_step(model, batch, opt)  # noqa: E731
    rec = {"preset": preset, "device": str(device), "batch": BATCH, "window": WINDOW,
           "context": batch.loss_start, "frames": args.frames,
           "params": sum(p.numel() for p in params), "flops_per_step": flops,
           "baseline": "bare eager fp32 step"}
    if device.type == "cuda":
        fwd = torch.compile(model) if not args.no_compile else model
        variant = f"{'compiled' if not args.no_compile else 'eager'} {args.precision}"

        def step():
            train_step(fwd, model.output, batch, opt, params, decayed, l2, 10.0, args.precision)

        for _ in range(0 if args.no_compile else 2):  # compile before timing
            step()
        base_s, s = time_steps([bare, step], device, args.warmup, args.steps)
        peak = args.peak_tflops * 1e12
        rec |= {"variant": f"training step, {variant}", "mfu_baseline": flops / base_s / peak,
                "peak_tflops": args.peak_tflops, "max_memory_gb":
                round(torch.cuda.max_memory_allocated(device) / 1e9, 2)}
    else:
        def step():
            train_step(model, model.output, batch, opt, params, decayed, l2, 10.0, "fp32")

        base_s, s = time_steps([bare, step], device, args.warmup, args.steps)
        rec |= {"variant": "training step, eager fp32 (CE over the segment, L2, clip)"}
    rec |= {"baseline_step_s": round(base_s, 4),
            "baseline_samples_per_s": round(BATCH * WINDOW / base_s, 1),
            "step_s": round(s, 4), "samples_per_s": round(BATCH * WINDOW / s, 1),
            "samples_per_s_with_context": round(BATCH * (WINDOW + batch.loss_start) / s, 1),
            "ratio_vs_baseline": round(base_s / s, 3),
            "achieved_tflops": round(flops / s / 1e12, 4)}
    if device.type == "cuda":
        rec["mfu"] = round(flops / s / (args.peak_tflops * 1e12), 4)
        rec["mfu_baseline"] = round(rec["mfu_baseline"], 4)
    return rec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", help="default: tiny small paper-15x128 "
                    "(+ paper-27x256 on CUDA)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--frames", type=int, default=150, help="distinct frames in a batch")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default torch's)")
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16", help="CUDA only")
    ap.add_argument("--no-compile", action="store_true", help="CUDA: eager training step")
    ap.add_argument("--peak-tflops", type=float, default=989.0,
                    help="dense bf16 peak of the GPU for MFU (H100 SXM: 989)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    presets = args.presets or ["tiny", "small", "paper-15x128"] + (
        ["paper-27x256"] if device.type == "cuda" else [])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"CPU, {torch.get_num_threads()} threads")
    print(f"training throughput on {name}: batch {BATCH} x ({WINDOW:,} + context) samples, "
          f"{args.frames} frames; median of {args.steps} steps after {args.warmup} warm-up")
    results = []
    for preset in presets:
        rec = measure(preset, device, args)
        results.append(rec)
        line = (f"{preset:>14}: {rec['samples_per_s']:>10,.0f} samples/s "
                f"({rec['step_s']:.3f} s/step, {rec['achieved_tflops'] * 1e3:.1f} GFLOP/s); "
                f"bare eager step {rec['baseline_samples_per_s']:,.0f} samples/s; "
                f"ratio {rec['ratio_vs_baseline']:.2f}x")
        if "mfu" in rec:
            line += f"; MFU {rec['mfu']:.1%} (baseline {rec['mfu_baseline']:.1%})"
        print(line, flush=True)
        with contextlib.suppress(Exception):
            torch.cuda.empty_cache()
    path = append_result("train_throughput", {"device_name": name, "results": results,
                                              "steps": args.steps, "warmup": args.warmup})
    print(f"appended to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
