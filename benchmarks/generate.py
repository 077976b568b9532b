"""Generation speed: cached incremental sampling (fused kernel) against the naive way (re-running
the whole network over the receptive field for every new sample), at batch 1 and batch 32, for
`small` and `paper-27x256` on the CPU; plus the end-to-end rate of `generate` (conditioning
included) and its memory on a long piece; batched throughput (batch 4 and 8 against batch 1,
end to end and the fused kernel alone, on the same cores, in the same run, the sizes
interleaved, best of 3 and 2 rounds); and the start-up of a 1 s
`synthesize` of a MIDI file with the shipped model, in a fresh process: the time before its
first generated samples, by phase (interpreter and imports, checkpoint, input, kernel load
from numba's on-disk cache and first chunk).

Targets (issue 7): cached >= 50x naive; `small` >= 4,000 samples/s (real time) at batch 1 on
2 cores. Issue 19: batch 8 >= 4x the throughput of batch 1; start-up < 1 s. Random weights
(except for the start-up), rounded to float16 values as the shipped checkpoint's are: the speed
does not depend on what the weights are, only on whether they are float16 values (the fused
kernel then streams them as float16, `fused.FusedDecoderState`).

    python benchmarks/generate.py [--presets small paper-27x256] [--long-minutes 10]
    python benchmarks/generate.py --only batch startup     # the issue-19 figures alone
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import append_result

from deepsynth.generate.fused import FusedDecoderState, pack_decoder
from deepsynth.generate.generator import Window, generate
from deepsynth.generate.sources import VideoSource
from deepsynth.model.deepsynth import DeepSynth
from deepsynth.model.presets import get_preset
from deepsynth.sim import keyboard


def cached_rate(model: DeepSynth, batch: int, n: int) -> float:
    """Samples/s (all sequences together) of the fused decoder step, conditioning given."""
    packed = pack_decoder(model.decoder)
    state = FusedDecoderState(packed, model.output, batch)
    cond = np.random.default_rng(0).standard_normal((batch, n, packed.cond_channels))
    cond = (0.1 * cond).astype(np.float32)
    uniforms = np.random.default_rng(1).random((batch, n, model.output.n_uniforms))
    state.run(cond[:, :8], 8, uniforms[:, :8])  # compile / warm up
    start = time.perf_counter()
    state.run(cond, n, uniforms)
    return batch * n / (time.perf_counter() - start)


@torch.no_grad()
def naive_rate(model: DeepSynth, batch: int, n: int) -> float:
    """Samples/s when each new sample re-runs encoder + decoder over the window it depends on
    (the frame CNN is still run once per unique frame, as any sane baseline would)."""
    window = model.receptive_field + model.video_receptive_field
    feats_frames = torch.from_numpy(keyboard.render(np.zeros((1, 88), bool)))
    index = torch.zeros(batch, window + model.lookahead, dtype=torch.long)
    audio = torch.full((batch, window), model.silence, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(n):
        logits = model(feats_frames, index, audio)[:, :, -1]
        nxt = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=g)[:, 0]
        audio = torch.cat([audio[:, 1:], nxt[:, None]], dim=1)
    return batch * n / (time.perf_counter() - start)


def bench_model(name: str) -> DeepSynth:
    """A preset's model with random weights rounded to float16 values (as shipped)."""
    model = DeepSynth(get_preset(name).model, keyboard.layout()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    return model


def long_source(minutes: float, seed: int = 0) -> VideoSource:
    """A synthetic keyboard video of `minutes`, about 8 key changes a second (as the corpus)."""
    sr = 4000
    n = int(minutes * 60 * sr)
    rng = np.random.default_rng(seed)
    starts = np.r_[0, np.sort(rng.choice(np.arange(1, n), int(minutes * 60 * 8), replace=False))]
    states = rng.random((len(starts), 88)) < 0.06

    def frames():
        for lo in range(0, len(states), 256):
            yield keyboard.render(states[lo : lo + 256])

    return VideoSource(None, "bench", starts.astype(np.int64), n, sr, frames)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """Resident memory now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def batch_rates(model: DeepSynth, seconds: float = 4.0, batches: tuple[int, ...] = (1, 4, 8),
                rounds: int = 3) -> dict:
    """Samples/s (all inputs together) of the fused kernel alone and of `generate` end to end
    (conditioning included; different pieces of `seconds` each) at each batch size, in this
    process: the sizes interleaved, `rounds` times, the best of each (a shared machine's load
    changes within a minute)."""
    n = int(seconds * 4000)
    pieces = [long_source(seconds / 60, seed=s) for s in range(max(batches))]
    for b in batches:  # warm up every kernel
        generate(model, pieces[:b], [Window(0, 500)] * b)
    rates: dict[str, float] = {}
    for r in range(rounds):
        for b in batches:
            kernel = cached_rate(model, b, n // 2)
            rates[f"kernel_b{b}"] = max(rates.get(f"kernel_b{b}", 0.0), kernel)
            if r < 2:  # end to end: two rounds (longer)
                start = time.perf_counter()
                generate(model, pieces[:b], [Window(0, n)] * b)
                rate = b * n / (time.perf_counter() - start)
                rates[f"e2e_b{b}"] = max(rates.get(f"e2e_b{b}", 0.0), rate)
    return rates


STARTUP = """
import sys, time, json
t = {"spawn": float(sys.argv[2])}
t["python"] = time.time()
from deepsynth import api
t["imports"] = time.time()
pack, model, payload, _ = api.generation_model(None)  # what synthesize does on the CPU
t["checkpoint"] = time.time()
sr = pack.sample_rate if pack else model.cfg.audio.sample_rate
src = api.open_input(sys.argv[1], sr)
win = api.source_window(src, 0.0, 1.0)
temperature = api.recommended_temperature(None, payload)
floor = api.recommended_floor(None, payload)
t["input"] = time.time()
first = []
hook = lambda _: first or first.append(time.time())
api.generate_with(pack, model, [src], [win], temperature, chunk=64, floor=floor, on_chunk=hook)
t["first_samples"] = first[0]
t["done"] = time.time()
t["packed"] = pack is not None
t["torch_imported"] = "torch" in sys.modules
print(json.dumps(t))
"""


def startup(repeats: int = 3, cold: bool = False) -> dict:
    """Seconds from spawning a fresh interpreter to the first 64 generated samples of a 1 s
    synthesize of the demo piece (MIDI) with the shipped model, by phase; the median run.
    Warm (default): the shipped model's pack is in the cache (made here first if need be), so
    torch is not imported (generate/packed.py); `cold`: an empty cache, as on a first run,
    which loads the model with torch and writes the pack."""
    from deepsynth.sim.compose import write_demo_midi

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        midi = Path(tmp) / "demo.mid"
        write_demo_midi(midi)
        env = dict(os.environ)
        if cold:
            env["DEEPSYNTH_CACHE"] = str(Path(tmp) / "cache")
        for i in range(repeats + (0 if cold else 1)):
            if cold:
                shutil.rmtree(Path(tmp) / "cache", ignore_errors=True)
            spawn = time.time()
            out = subprocess.run([sys.executable, "-c", STARTUP, str(midi), repr(spawn)],
                                 capture_output=True, text=True, check=True, env=env).stdout
            t = json.loads(out)
            if not cold and i == 0:
                continue  # the run that makes sure the pack is cached
            flags = {k: t.pop(k) for k in ("packed", "torch_imported")}
            names = list(t)
            runs.append({b: round(t[b] - t[a], 3) for a, b in zip(names, names[1:], strict=False)}
                        | {"to_first_samples": round(t["first_samples"] - t["spawn"], 3)}
                        | flags)
    runs.sort(key=lambda r: r["to_first_samples"])
    return runs[len(runs) // 2]


def startup_figures() -> dict:
    out = {}
    for cold in (False, True):
        s = startup(cold=cold)
        phases = ", ".join(f"{k} {v:.2f}" for k, v in s.items()
                           if k not in ("to_first_samples", "packed", "torch_imported"))
        what = "first run, empty cache" if cold else "model packed in the cache"
        print(f"start-up of a 1 s synthesize (MIDI, shipped model; {what}): "
              f"{s['to_first_samples']:.2f} s to the first samples (target < 1 s): {phases}; "
              f"torch imported: {s['torch_imported']}")
        out |= {f"startup{'_cold' if cold else ''}_{k}_s" if k not in ("packed", "torch_imported")
                else f"startup{'_cold' if cold else ''}_{k}": v for k, v in s.items()}
    return out


def batch_figures(batches: tuple[int, ...] = (1, 4, 8)) -> dict:
    model = bench_model("small")
    r = batch_rates(model, batches=batches)
    out = {f"small_batch_{k}": round(v, 1) for k, v in r.items()}
    for b in batches[1:]:
        e2e, kernel = r[f"e2e_b{b}"] / r["e2e_b1"], r[f"kernel_b{b}"] / r["kernel_b1"]
        print(f"        small batch {b} vs batch 1 (samples/s, all inputs): fused kernel "
              f"{r[f'kernel_b{b}']:,.0f} vs {r['kernel_b1']:,.0f} = {kernel:.2f}x; end to end "
              f"{r[f'e2e_b{b}']:,.0f} vs {r['e2e_b1']:,.0f} = {e2e:.2f}x"
              + (" (target >= 4x)" if b == 8 else ""))
        out |= {f"small_batch{b}_vs_1_e2e": round(e2e, 2),
                f"small_batch{b}_vs_1_kernel": round(kernel, 2)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["small", "paper-27x256"])
    ap.add_argument("--long-minutes", type=float, default=10.0)
    ap.add_argument("--only", nargs="+", choices=("batch", "startup"),
                    help="only these measurements (default: all)")
    args = ap.parse_args()
    torch.manual_seed(0)
    record: dict = {"threads": torch.get_num_threads()}
    if args.only:
        if "startup" in args.only:
            record |= startup_figures()
        if "batch" in args.only:
            record |= batch_figures()
        print(f"appended to {append_result('generate', record)}")
        return 0
    record |= startup_figures()
    if "small" in args.presets:  # first, so the peak RSS reflects generation alone
        name = "small"
        model = bench_model(name)
        src = long_source(1.0)
        generate(model, [src], [Window(0, 4000)])  # warm up
        start = time.perf_counter()
        generate(model, [src])
        e2e = src.n_samples / (time.perf_counter() - start)
        rss_1min = peak_rss_mb()
        long = long_source(args.long_minutes, seed=1)
        trace: list[float] = []  # resident memory after each generated chunk
        start = time.perf_counter()
        generate(model, [long], on_chunk=lambda _: trace.append(rss_mb()))
        e2e_long = long.n_samples / (time.perf_counter() - start)
        rss_long = peak_rss_mb()
        print(
            f"{name:>13} end to end (conditioning included), batch 1: {e2e:,.0f} samples/s "
            f"= {e2e / 4000:.1f}x real time (target >= 1x)"
        )
        print(
            f"{name:>13} {args.long_minutes:g}-minute piece: {e2e_long:,.0f} samples/s, "
            f"peak RSS {rss_1min:.0f} MB after 1 min -> {rss_long:.0f} MB after "
            f"{args.long_minutes:g} min; resident memory while generating: {trace[0]:.0f} MB "
            f"after the first chunk, {trace[-1]:.0f} MB after the last ({len(trace)} chunks)"
        )
        record |= {
            "small_e2e_b1": round(e2e, 1),
            "small_e2e_x_realtime": round(e2e / 4000, 2),
            "long_minutes": args.long_minutes,
            "small_long_e2e": round(e2e_long, 1),
            "peak_rss_mb_after_1min": round(rss_1min),
            "peak_rss_mb_after_long": round(rss_long),
            "rss_mb_first_chunk": round(trace[0]),
            "rss_mb_last_chunk": round(trace[-1]),
        }
    record |= batch_figures()
    for name in args.presets:
        model = bench_model(name)
        big = model.decoder.stack.blocks[0].conv.in_channels >= 256
        for batch in (1, 32):
            n_cached = (2000 if big else 20000) // (1 if batch == 1 else 8)
            n_naive = (3 if big else 40) if batch == 1 else (1 if big else 5)
            cached = cached_rate(model, batch, n_cached)
            naive = naive_rate(model, batch, n_naive)
            print(
                f"{name:>13} batch {batch:2d}: cached {cached:10,.0f} samples/s  naive "
                f"{naive:8,.1f} samples/s  -> {cached / naive:7,.0f}x naive "
                f"({cached / batch / 4000:.2f}x real time per stream)"
            )
            record[f"{name}_b{batch}_cached"] = round(cached, 1)
            record[f"{name}_b{batch}_naive"] = round(naive, 2)
            record[f"{name}_b{batch}_ratio"] = round(cached / naive, 1)
    print(f"appended to {append_result('generate', record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
