"""Live play (issue 20): a piece fed in real time to `deepsynth play`'s generator for 5 minutes,
with no sound card (--null), pinned to one core, with the shipped model: the latency of every key
change (arrival to the moment the sample at the change is ready), the compute time of every
block, underruns against a 10 ms output delay, and the headroom (compute time / block time).

In the same run, as baselines: offline generation (`generate`, what `synthesize` runs) of the
same 5 minutes on the same core, its speed and whether the live audio equals it sample for
sample; and the same session on a CPU-time clock (time passes only while this process computes
or waits), which times it as if the core were its own: on a machine shared with other work the
real-time run also measures the others.

And the machine alone (`machine_noise`): a fixed ~30 us unit of work timed back to back on the
same core for a minute; on a virtual machine some units take milliseconds, in CPU time too, the
host's stalls that make late blocks on either clock.

Targets: latency p99 <= 10 ms; no underrun in 5 minutes on one core; live == offline audio.

    python benchmarks/play.py [--midi FILE] [--seconds 300] [--block 4] [--core 1]
    python benchmarks/play.py --only real          # the real-time session alone
    python benchmarks/play.py --only noise --noise-seconds 300   # the machine's stalls alone
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from _common import DEFAULT_CORPUS, append_result

import deepsynth
from deepsynth.api import open_input
from deepsynth.generate import live
from deepsynth.generate.generator import Window, generate

PIECE = DEFAULT_CORPUS / "midis" / "Chopin" / "chp_op18.mid"  # 310 s, a fast waltz


class Keep:
    """A sink that keeps the audio (to compare with offline generation)."""

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []

    def write(self, pcm: np.ndarray) -> None:
        self.blocks.append(pcm)


def session(synth, changes, n: int, clock, block: int, seed: int, background: bool,
            horizon: int = live.DEFAULT_HORIZON) -> dict:
    """One live session over the first n samples of the piece; its report and audio."""
    keep = Keep()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with live.LiveGenerator(synth.model, synth.temperature, seed, block=block, horizon=horizon,
                            background=background, floor=synth.floor) as gen:
        gen.warm_up()
        source = live.ChangesInput(changes.starts, changes.states, n)
        report = live.Session(gen, source, [keep], clock).run()
        report["conditioning_calls"] = gen.cond_calls
    report["cpu_seconds"] = round(time.process_time() - cpu0, 2)
    report["wall_seconds"] = round(time.perf_counter() - wall0, 2)
    report["cpu_x_real_time"] = round(n / synth.sample_rate / report["cpu_seconds"], 2)
    return report, np.concatenate(keep.blocks)


def machine_noise(seconds: float, unit_us: float = 30.0) -> dict:
    """The machine's own stalls, as a baseline: a fixed unit of compiled work (~unit_us of CPU)
    run back to back for `seconds` on this core, each unit timed in this thread's CPU time (the
    CPU-time clock's time) and on the wall clock. On a core of one's own a unit never takes
    milliseconds; on a virtual machine whose host takes the core, some do, in CPU time too (the
    guest counts the time it lost as the thread's): such a stall makes late blocks that no
    setting in the session can prevent."""
    from numba import njit

    @njit(cache=False, nogil=True)
    def unit(a, k):
        s = 0.0
        for _ in range(k):
            for i in range(a.shape[0]):
                s += a[i] * 1.0000001
        return s

    a = np.random.default_rng(0).random(1000)
    k = 1
    unit(a, 1)
    while True:  # k: repetitions of the inner loop that make one unit (~unit_us)
        t0 = time.thread_time()
        unit(a, 64 * k)
        if (time.thread_time() - t0) / 64 >= unit_us * 1e-6 or k > 1 << 16:
            break
        k *= 2
    cpu, wall = [], []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0, w0 = time.thread_time(), time.perf_counter()
        unit(a, k)
        cpu.append(time.thread_time() - t0)
        wall.append(time.perf_counter() - w0)
    cpu_ms, wall_ms = np.asarray(cpu) * 1000, np.asarray(wall) * 1000
    return {"seconds": seconds, "units": len(cpu),
            "unit_ms_p50": round(float(np.median(cpu_ms)), 4),
            "cpu_over_1ms": int((cpu_ms > 1).sum()), "cpu_over_5ms": int((cpu_ms > 5).sum()),
            "cpu_max_ms": round(float(cpu_ms.max()), 2),
            "wall_over_1ms": int((wall_ms > 1).sum()), "wall_over_5ms": int((wall_ms > 5).sum()),
            "wall_max_ms": round(float(wall_ms.max()), 2)}


def brief(report: dict) -> str:
    lat, head = report["latency_ms"], report["headroom"]
    return (f"latency p50 {lat.get('p50')} p99 {lat.get('p99')} max {lat.get('max')} ms; "
            f"underruns {report['underruns']} of {report['blocks']} blocks"
            + (f" ({report['underruns_stalled']} stalled, {report['off_cpu_ms']} ms off the "
               "core)" if "underruns_stalled" in report else "")
            + f"; headroom mean "
            f"{head.get('mean')} p99 {head.get('p99')}; {report['cpu_x_real_time']}x real time "
            "(CPU)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--midi", type=Path, default=PIECE)
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--block", type=int, default=live.DEFAULT_BLOCK)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--core", type=int, default=(os.cpu_count() or 1) - 1,
                    help="the one core to run on (default: the last)")
    ap.add_argument("--background", action="store_true",
                    help="the conditioning in a thread of its own (play --background)")
    ap.add_argument("--horizon", type=int, default=live.DEFAULT_HORIZON,
                    help="samples of conditioning computed ahead per call (play --horizon)")
    ap.add_argument("--spin", default="all",
                    help="the real clock's polling before each deadline: 'all' or ms (0: sleep)")
    ap.add_argument("--only", nargs="+", choices=("real", "cpu", "offline", "noise"),
                    default=["real", "cpu", "offline", "noise"])
    ap.add_argument("--noise-seconds", type=float, default=60.0,
                    help="how long the machine's own stalls are measured (see machine_noise)")
    args = ap.parse_args()

    os.sched_setaffinity(0, {args.core})
    torch.set_num_threads(1)
    import numba

    numba.set_num_threads(1)
    synth = deepsynth.load()
    sr = synth.sample_rate
    changes = open_input(args.midi, sr).changes
    n = min(int(args.seconds * sr), changes.n_samples)
    background = args.background
    spin = None if args.spin == "all" else float(args.spin) / 1000.0
    record = {
        "piece": str(args.midi.name), "seconds": n / sr, "block": args.block,
        "block_ms": args.block / sr * 1000, "lookahead_samples": synth.model.lookahead,
        "background": background, "seed": args.seed, "core": args.core, "spin": args.spin,
        "horizon": args.horizon,
        "python": platform.python_version(), "torch": torch.__version__,
        "load_average_before": [round(v, 2) for v in os.getloadavg()],
        "key_changes": int(np.sum(changes.starts < n)),
    }
    audio = {}
    if "real" in args.only:
        rep, audio["real"] = session(synth, changes, n, live.RealClock(spin), args.block, args.seed,
                                     background, args.horizon)
        record["real"] = rep
        print("real time:", brief(rep), f"(load {record['load_average_before']})", flush=True)
    if "cpu" in args.only:
        rep, audio["cpu"] = session(synth, changes, n, live.CpuClock(), args.block, args.seed,
                                    False, args.horizon)
        record["cpu_clock"] = rep
        print("CPU-time clock (a core of its own):", brief(rep), flush=True)
    if "offline" in args.only:
        src = open_input(args.midi, sr)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        want = generate(synth.model, [src], [Window(0, n)], synth.temperature, args.seed,
                        floor=synth.floor)[0]
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        record["offline"] = {"cpu_seconds": round(cpu, 2), "wall_seconds": round(wall, 2),
                             "cpu_x_real_time": round(n / sr / cpu, 2),
                             "wall_x_real_time": round(n / sr / wall, 2)}
        for name, got in audio.items():
            equal = bool(len(got) == len(want) and np.array_equal(got, want))
            record[f"{name}_equals_offline"] = equal
            if not equal:
                diff = np.flatnonzero(got[: len(want)] != want[: len(got)])
                record[f"{name}_first_difference"] = int(diff[0]) if len(diff) else None
        live_cpu = record.get("real", record.get("cpu_clock", {})).get("cpu_seconds")
        if live_cpu:
            record["live_cpu_over_offline_cpu"] = round(live_cpu / cpu, 3)
        print(f"offline: {record['offline']['cpu_x_real_time']}x real time (CPU); live == "
              f"offline: {[record.get(f'{k}_equals_offline') for k in audio]}", flush=True)
    if "noise" in args.only:
        record["machine_noise"] = noise = machine_noise(args.noise_seconds)
        print(f"the machine alone ({args.noise_seconds:g} s of {noise['unit_ms_p50']} ms units on "
              f"this core): {noise['cpu_over_1ms']} units over 1 ms and {noise['cpu_over_5ms']} "
              f"over 5 ms in CPU time (max {noise['cpu_max_ms']} ms), {noise['wall_over_1ms']} "
              f"and {noise['wall_over_5ms']} on the wall clock (max {noise['wall_max_ms']} ms)",
              flush=True)
    record["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    path = append_result("play", record)
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
