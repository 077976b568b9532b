"""`deepsynth sweep table1`: train every row of the paper's Table 1 for the same budget (minutes,
or steps) and tabulate train and validation CE beside the paper's numbers.

On a GPU the rows are the paper's own presets (paper-15x128-l2e-2 .. paper-27x512). On a CPU
those take 5 to 250 s a step, so by default the sweep trains CPU stand-ins instead: the same L2
strengths and layer counts (the factor the paper found to matter most), channels divided by 8
(128 -> 16, 256 -> 32, 512 -> 64; skip and conditioning widths alike) and the `small-paper` preset's
frame CNN (3x3-averaged frames, (8, 16) channels, 64 features). Their names say what they stand
for: cpu-15x16-l2e-2 for paper-15x128-l2e-2, .., cpu-27x64 for paper-27x512. `presets` overrides
the choice with any preset names (stand-ins included).

Each run lives in SWEEP_DIR/NAME/ (the trainer's run folder: last.pt, best.pt, metrics.csv, ..;
SWEEP_DIR/NAME-seedS/ for every seed after the first) and is resumed when it exists: with
`budget_minutes` a second sweep trains every row for another budget; with `steps` every row
trains until it has taken that many steps in all. After every row the table is made again from
all the run folders in SWEEP_DIR (deepsynth.evaluate.table1: table1.md, table1.json, table1.png),
so several sweeps may fill one SWEEP_DIR side by side.

Slices (`slice_minutes`, with `steps`): the invocation ends within that many minutes, at a
validation step (a multiple of val_every), and the next invocation resumes where it stopped,
so a sliced run ends identical to an uncut one. A slice trains in chunks of val_every steps and
starts a chunk only when the longest chunk recorded so far fits in the time left; the trainer's
own max_minutes cuts a chunk that still runs over. Every run folder gets throughput.json: per
chunk its steps, wall and training seconds, samples/s, achieved FLOP/s (FLOPs of one step by
torch's flop counter on a batch of the store) and, given a peak, model FLOPs utilisation.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from deepsynth.atomic import atomic_write_text
from deepsynth.errors import DeepSynthError
from deepsynth.evaluate.table1 import (
    COMMANDS_TXT,
    PAPER_TABLE1,
    THROUGHPUT_JSON,
    PaperRow,
    read_run,
    standin_of,
    tabulate,
)
from deepsynth.model.presets import CPU_CHANNEL_DIVISOR, PRESETS, Preset

SLICE_SAFETY = 1.1  # a chunk starts when 1.1 x the longest recorded chunk fits in the time left


def standin_name(row: PaperRow) -> str:
    """The CPU stand-in preset of a Table 1 row (deepsynth.model.presets)."""
    return standin_of(row, CPU_CHANNEL_DIVISOR)


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


def run_folder(out: Path, name: str, seed: int, first_seed: int) -> Path:
    """SWEEP_DIR/NAME for the first seed, SWEEP_DIR/NAME-seedS for the others."""
    return out / (name if seed == first_seed else f"{name}-seed{seed}")


def _now() -> float:
    """The slices' clock (a test replaces it)."""
    return time.monotonic()


def run_sweep(
    data: str | os.PathLike, out: str | os.PathLike, budget_minutes: float | None = None,
    presets: list[str] | None = None, device: str = "cpu", seed: int = 0,
    log: Callable[[str], None] | None = None, progress: bool = True,
    config: dict | None = None, *, steps: int | None = None, seeds: list[int] | None = None,
    threads: int | None = None, slice_minutes: float | None = None,
    peak_tflops: float | None = None,
) -> dict:
    """Train each preset (for each seed) for `budget_minutes` or up to `steps` steps, one after
    the other, and write table1.md / table1.json / table1.png into `out` from all its run
    folders; returns the table (deepsynth.evaluate.table1.tabulate) with "trained" (the runs of
    this call) and "finished" (False when a slice or a signal ended the sweep before every run
    reached `steps`).
    `config`: extra TrainConfig fields for every run (e.g. {"val_segments": 20})."""
    from deepsynth.data.store import read_manifest
    from deepsynth.evaluate.report import _output_dir
    from deepsynth.model.presets import get_preset
    from deepsynth.train import TrainConfig

    if (budget_minutes is None) == (steps is None):
        raise DeepSynthError("give one budget: --budget-minutes M or --steps N")
    if budget_minutes is not None and not budget_minutes > 0:
        raise DeepSynthError(f"--budget-minutes must be positive, got {budget_minutes}")
    if steps is not None and not steps > 0:
        raise DeepSynthError(f"--steps must be positive, got {steps}")
    if slice_minutes is not None:
        if steps is None:
            raise DeepSynthError("--slice-minutes needs --steps (slices end at validation steps)")
        if not slice_minutes > 0:
            raise DeepSynthError(f"--slice-minutes must be positive, got {slice_minutes}")
    if peak_tflops is not None and not peak_tflops > 0:
        raise DeepSynthError(f"--peak-tflops must be positive, got {peak_tflops}")
    seeds = list(seeds) if seeds else [seed]
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise DeepSynthError(f"--seeds must be distinct and >= 0, got {seeds}")
    read_manifest(data)  # a missing store fails before any training
    for name in list(presets or []):
        get_preset(name)  # unknown names fail before the first run
    log_every = 10 if device.startswith("cuda") else 1  # short CPU runs: a train CE every step
    try:
        cfg = TrainConfig(**({"seed": seeds[0], "log_every": log_every} | (config or {})))
    except (TypeError, ValueError) as e:
        raise DeepSynthError(f"training recipe: {e}") from None
    if slice_minutes is not None and not cfg.val_every:
        raise DeepSynthError("--slice-minutes needs --val-every N (slices end at validations)")
    out = _output_dir(out)
    names = list(presets) if presets else default_presets(device)
    started = _now()
    trained: list[dict] = []
    finished = True
    for i, name in enumerate(names):
        for s in seeds:
            folder = run_folder(out, name, s, seeds[0])
            what = f"{steps:,} steps" if steps is not None else f"{budget_minutes:g} min"
            if log:
                log(f"[{i + 1}/{len(names)}] training {name} (seed {s}) for {what} ..")
            job = _Job(data, folder, name, TrainConfig(**(cfg.to_dict() | {"seed": s})), device,
                       threads, progress, peak_tflops)
            if slice_minutes is None:
                r = job.train(steps, budget_minutes)
                trained.append({"preset": name, "seed": s, "steps": r.step,
                                "stopped": r.stopped, "run": str(folder)})
            else:
                left = 60 * slice_minutes - (_now() - started)
                done = job.train_slice(steps, left, 60 * slice_minutes)
                trained.append({"preset": name, "seed": s, "steps": job.step,
                                "stopped": "max_steps" if done else "signal" if job.signalled
                                else "slice", "run": str(folder)})
                finished = finished and done
            finished = finished and not job.signalled
            tabulate(out)
            if not finished:
                break
        if not finished:
            break
    result = tabulate(out)
    result |= {"trained": trained, "finished": finished, "budget_minutes": budget_minutes,
               "budget_steps": steps}
    return result


def record_command(out: str | os.PathLike, argv: list[str]) -> None:
    """Add the command line to SWEEP_DIR/commands.txt (the table lists them), once."""
    import shlex

    path = Path(out) / COMMANDS_TXT
    line = shlex.join(argv)
    if path.is_file() and line in path.read_text().splitlines():
        return
    with open(path, "a") as f:
        f.write(line + "\n")


def tabulate_only(out: str | os.PathLike) -> dict:
    """The table of the run folders already in `out` (no training)."""
    if not Path(out).is_dir():
        raise DeepSynthError(f"{out}: no such sweep folder")
    result = tabulate(out)
    if not result["rows"]:
        raise DeepSynthError(f"{out}: no run folders (config.json and metrics.csv) in it")
    return result


class _Job:
    """One row of the sweep (a preset and a seed in its run folder): trained whole or chunk by
    chunk, its throughput recorded in the run folder."""

    def __init__(self, data, folder: Path, preset: str, cfg, device: str,
                 threads: int | None, progress: bool, peak_tflops: float | None) -> None:
        self.data, self.folder, self.preset, self.cfg = data, folder, preset, cfg
        self.device, self.threads, self.progress = device, threads, progress
        self.peak_tflops = peak_tflops
        self.step = _last_step(folder)
        self.signalled = False  # SIGTERM / SIGINT stopped the run: the sweep stops too
        path = folder / THROUGHPUT_JSON
        self.record = json.loads(path.read_text()) if path.is_file() else {"chunks": []}

    def train(self, max_steps: int | None, max_minutes: float | None):
        from deepsynth.train import RunOptions, train

        first = self.step
        t0 = _now()
        r = train(self.data, self.folder, self.preset, self.cfg,
                  RunOptions(device=self.device, resume="auto", max_steps=max_steps,
                             max_minutes=max_minutes, progress=self.progress,
                             tensorboard=False, threads=self.threads))
        self.step = r.step
        self.signalled = r.stopped == "signal"
        if r.step > first:
            self._measure(r, first, _now() - t0)
        return r

    def train_slice(self, steps: int, seconds_left: float, slice_s: float) -> bool:
        """Chunks of val_every steps while the longest chunk so far fits in `seconds_left`;
        True when the run has reached `steps`. A chunk longer than a whole slice (`slice_s`)
        is an error: no slice could take it."""
        every = self.cfg.val_every
        t0 = _now()
        while self.step < steps:
            left = seconds_left - (_now() - t0)
            walls = [c["wall_s"] for c in self.record["chunks"]]
            need = SLICE_SAFETY * max(walls) if walls else 0.0
            if need > slice_s:
                raise DeepSynthError(
                    f"{self.folder}: a chunk of {every} steps took up to {max(walls) / 60:.1f} "
                    f"min, more than a slice: choose a smaller --val-every or longer slices")
            if left <= 0 or need > left:
                return False
            if self.train(min(steps, (self.step // every + 1) * every), left / 60).stopped \
                    == "signal":
                return False
        return True

    def _measure(self, r, first: int, wall_s: float) -> None:
        """throughput.json: this chunk's rates beside the ones before."""
        rows = read_run(self.folder)["rows"]
        chunk = _rates(rows, first, r.step)
        if "flops_per_step" not in self.record:
            self.record |= {"preset": self.preset, "device": str(next(r.model.parameters()).device),
                            "flops_per_step": step_flops(r.model, self.data, r.config),
                            "params": sum(p.numel() for p in r.model.parameters())}
        flops = self.record["flops_per_step"]
        chunk |= {"wall_s": wall_s, "stopped": r.stopped}
        if chunk["steps_per_s"] is not None:
            chunk["achieved_tflops"] = flops * chunk["steps_per_s"] / 1e12
            if self.peak_tflops:
                chunk["mfu"] = chunk["achieved_tflops"] / self.peak_tflops
        self.record["chunks"].append(chunk)
        total = _rates(rows, 0, r.step)
        self.record |= {"steps": r.step, "train_s": total["train_s"],
                        "samples_per_s": total["samples_per_s"],
                        "steps_per_s": total["steps_per_s"], "peak_tflops": self.peak_tflops,
                        "mfu": None}
        if total["steps_per_s"] is not None and self.peak_tflops:
            self.record["mfu"] = flops * total["steps_per_s"] / 1e12 / self.peak_tflops
        atomic_write_text(self.folder / THROUGHPUT_JSON, json.dumps(self.record, indent=1) + "\n")


def _last_step(folder: Path) -> int:
    run = read_run(folder)
    return int(run["rows"][-1]["step"]) if run else 0


def _rates(rows: list[dict], first: int, last: int) -> dict:
    """Training seconds, steps/s and scored samples/s over steps (first, last] of metrics rows
    (time_s: training time so far; a train row's samples_per_s covers the time since the train
    row before it)."""
    def time_at(step: int) -> float | None:
        if step == 0:
            return 0.0
        at = [r.get("time_s") for r in rows if r["step"] == step]
        return at[-1] if at else None

    t0, t1 = time_at(first), time_at(last)
    samples = seconds = 0.0
    before = 0.0
    for r in rows:
        if r.get("samples_per_s") is None or r.get("time_s") is None:
            continue
        if first < r["step"] <= last:
            dt = r["time_s"] - before
            samples += r["samples_per_s"] * dt
            seconds += dt
        before = r["time_s"]
    train_s = None if t0 is None or t1 is None else t1 - t0
    return {"steps": [first, last], "train_s": train_s,
            "steps_per_s": (last - first) / train_s if train_s else None,
            "samples_per_s": samples / seconds if seconds > 0 else None}


def step_flops(model, data, cfg) -> int:
    """FLOPs of one forward + backward of `model` (convolutions and matrix products, by torch's
    flop counter) on the first training batch of the store, as the training step takes it."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from deepsynth.train import data as tdata

    device = next(model.parameters()).device
    video = not model.cfg.no_video
    ds = tdata.open_datasets(data, cfg, model.item_spans(), frames=video, world=1)
    batch = next(iter(tdata.loader(ds.train, [list(range(min(cfg.batch_size, len(ds.train))))],
                                   0, device.type == "cuda")))
    batch = tdata.to_device(batch, device, video)
    was = model.training
    model.train()
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        classes = model.output.encode(batch.audio)
        model.output.loss(model(batch.frames, batch.frame_index, classes), classes).backward()
    model.zero_grad(set_to_none=True)
    model.train(was)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return int(counter.get_total_flops())
