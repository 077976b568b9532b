"""The training loop: `train(data, out, preset, config, options)`.

    from deepsynth.train import TrainConfig, RunOptions, train
    result = train("data/piano", "runs/small", "small", TrainConfig(val_every=500),
                   RunOptions(max_minutes=30))
    model, payload = deepsynth.checkpoint.load_checkpoint(result.best)

One process, or one of several under torchrun (DistributedDataParallel; only rank 0 writes).
A run folder holds last.pt (resumable), best.pt, metrics.csv, loss.png, tb/ and config.json.
Stops at the recipe's epochs, or earlier at RunOptions.max_steps / max_minutes / SIGTERM / SIGINT
(the first one: the current step finishes and last.pt is written; a second SIGINT aborts).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepsynth.atomic import atomic_write_text
from deepsynth.config import to_dict
from deepsynth.data.store import manifest_sha256
from deepsynth.errors import DeepSynthError
from deepsynth.model.deepsynth import DeepSynth
from deepsynth.model.presets import get_preset
from deepsynth.train import data as tdata
from deepsynth.train import distributed
from deepsynth.train.config import RESUMABLE_CHANGES, RunOptions, TrainConfig
from deepsynth.train.logs import MetricsLog, Progress
from deepsynth.train.objective import NATS_TO_BITS, decayed_parameters
from deepsynth.train.schedule import lr_at, set_lr
from deepsynth.train.state import (
    BEST,
    LAST,
    TrainState,
    load_training_state,
    save_best,
    save_last,
    seed_everything,
    set_rng_state,
)
from deepsynth.train.step import evaluate_batches, train_step

CONFIG_JSON = "config.json"


@dataclass
class TrainResult:
    out: Path
    preset: str
    config: TrainConfig
    step: int
    epoch: int
    best_val_ce: float
    best_step: int
    stopped: str  # "epochs", "max_steps", "max_minutes", "signal"; "done": nothing was left
    model: DeepSynth  # this process's model (on its device) after the last step
    replica_difference: float = 0.0  # torchrun: largest weight difference to rank 0 (0 expected)
    rank: int = 0

    @property
    def last(self) -> Path:
        return self.out / LAST

    @property
    def best(self) -> Path:
        return self.out / BEST


# --- setting up -----------------------------------------------------------------------------


def _config_for(config: TrainConfig | dict[str, Any] | None, base: TrainConfig) -> TrainConfig:
    """`config` is a full TrainConfig, a dict of fields changed from `base`, or None (base)."""
    if config is None:
        return base
    if isinstance(config, TrainConfig):
        return config
    try:
        return dataclasses.replace(base, **config)
    except TypeError as e:
        raise DeepSynthError(f"unknown training setting: {e}") from None
    except ValueError as e:
        raise DeepSynthError(str(e)) from None


def _resume_config(saved: TrainConfig, asked: TrainConfig | dict | None) -> TrainConfig:
    """The checkpoint's recipe, with the changes a resume allows (epochs); others are an error."""
    if asked is None:
        return saved
    wanted = _config_for(asked, saved)
    changed = [f.name for f in dataclasses.fields(TrainConfig)
               if getattr(wanted, f.name) != getattr(saved, f.name)
               and not (isinstance(asked, TrainConfig) and getattr(asked, f.name) is None)]
    refused = [n for n in changed if n not in RESUMABLE_CHANGES]
    if refused:
        detail = ", ".join(f"{n} {getattr(saved, n)!r} -> {getattr(wanted, n)!r}" for n in refused)
        raise DeepSynthError(f"cannot resume with a different recipe ({detail}); only "
                             f"{', '.join(RESUMABLE_CHANGES)} may change")
    return dataclasses.replace(saved, **{n: getattr(wanted, n) for n in changed})


class _StopFlag:
    """SIGTERM / SIGINT set a flag the loop reads between steps (main thread only)."""

    def __init__(self) -> None:
        self.raised = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.raised and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.raised = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _Window:
    """Figures accumulated between two metrics rows (device tensors; no per-step sync)."""

    KEYS = ("ce", "grad_norm", "clipped", "penalty")

    def __init__(self, device: torch.device, saved: dict[str, float] | None = None) -> None:
        self.device = device
        saved = saved or {}
        self.sums = torch.tensor([float(saved.get(k, 0.0)) for k in self.KEYS],
                                 dtype=torch.float64, device=device)
        self.steps = int(saved.get("steps", 0))
        self.samples = int(saved.get("samples", 0))
        self.seconds = float(saved.get("seconds", 0.0))

    def add(self, ce, grad_norm, clip: float, penalty, samples: int) -> None:
        clipped = (grad_norm > clip) if clip > 0 else torch.zeros((), device=self.device)
        self.sums += torch.stack([ce.double(), grad_norm.double(), clipped.double(),
                                  penalty.double()])
        self.steps += 1
        self.samples += samples

    def to_dict(self) -> dict[str, float]:
        values = dict(zip(self.KEYS, self.sums.tolist(), strict=True))
        return values | {"steps": self.steps, "samples": self.samples, "seconds": self.seconds}

    def reset(self) -> None:
        self.sums.zero_()
        self.steps, self.samples, self.seconds = 0, 0, 0.0


# --- the loop -------------------------------------------------------------------------------


def train(
    data: str | os.PathLike,
    out: str | os.PathLike,
    preset: str | None = None,
    config: TrainConfig | dict[str, Any] | None = None,
    options: RunOptions | None = None,
) -> TrainResult:
    """Train (or resume) a run; see the module doc. `config`: a TrainConfig, or a dict of fields
    to change (from the defaults, or from the checkpoint's recipe when resuming)."""
    options = options or RunOptions()
    env = distributed.setup(options.device)
    try:
        return _train(env, Path(data), Path(out), preset, config, options)
    finally:
        distributed.teardown(env)


def _train(env: distributed.DistEnv, data: Path, out: Path, preset_name: str | None,
           config: TrainConfig | dict | None, options: RunOptions) -> TrainResult:
    t_invocation = time.monotonic()
    if options.threads:
        torch.set_num_threads(options.threads)
    device = env.device
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed sequence length: pick the fastest convs

    # --- fresh or resumed
    last_path = out / LAST
    resuming = options.resume == "always" or (options.resume == "auto" and last_path.exists())
    if options.resume == "never" and last_path.exists():
        raise DeepSynthError(f"{out} already holds a run ({last_path}); continue it with "
                             f"--resume, or choose another --out")
    ckpt = None
    if resuming:
        if not last_path.exists():
            raise DeepSynthError(f"nothing to resume: {last_path} not found (start without "
                                 f"--resume, or use --auto-resume to start fresh when absent)")
        ckpt = load_training_state(last_path)
        if preset_name not in (None, ckpt.preset):
            raise DeepSynthError(f"{last_path} was trained with preset {ckpt.preset!r}, "
                                 f"not {preset_name!r}")
        preset_name = ckpt.preset
        cfg = _resume_config(ckpt.config, config)
    else:
        if preset_name is None:
            raise DeepSynthError("a fresh run needs a preset (--preset NAME)")
        cfg = _config_for(config, TrainConfig())
    preset = get_preset(preset_name)
    cfg = cfg.resolved(preset.l2, cuda)
    if cfg.precision == "bf16" and not cuda:
        raise DeepSynthError("bf16 precision needs a CUDA device (use --precision fp32 on CPU)")
    model_cfg = preset.model
    if cfg.no_video:
        model_cfg = dataclasses.replace(model_cfg, no_video=True)
    if ckpt is not None and ckpt.model_config != model_cfg:
        raise DeepSynthError(f"{last_path} holds a model that differs from preset "
                             f"{preset_name!r} as defined now (was the preset changed?)")

    # --- model, optimizer, state
    seed_everything(cfg.seed)
    model = DeepSynth(model_cfg)
    state = TrainState()
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt.model_state)
        except RuntimeError as e:
            raise DeepSynthError(f"{last_path} does not fit preset {preset_name!r}: "
                                 f"{str(e).splitlines()[0]}") from None
        state = ckpt.state
    model.to(device)
    params = list(model.parameters())
    decayed = decayed_parameters(model)
    optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                 eps=cfg.adam_eps, fused=cuda or None)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt.optimizer_state)
        set_rng_state(ckpt.rng)

    # --- data
    windows = model.item_windows()
    context = windows["context"]
    video = not cfg.no_video
    workers = options.workers if options.workers is not None else (4 if cuda else 0)
    ds = tdata.open_datasets(data, cfg, windows, frames=video and not cuda, world=env.world)
    per_epoch = tdata.steps_per_epoch(len(ds.train), cfg.batch_size, env.world)
    total_steps = cfg.epochs * per_epoch
    if options.max_steps is not None:
        total_steps = min(total_steps, options.max_steps)
    val_batches = tdata.validation_batches(ds.val_indices, cfg.batch_size, env.rank, env.world)

    # --- how the model is called
    forward: nn.Module = model
    if env.distributed:
        from torch.nn.parallel import DistributedDataParallel

        # static_graph: the same parameters take part in every step (a few, e.g. the last
        # block's residual bias, never get a gradient, which a plain DDP refuses)
        forward = DistributedDataParallel(model, device_ids=[device.index] if cuda else None,
                                          static_graph=True)
    if cfg.compile:
        forward = torch.compile(forward)

    # --- logs (rank 0)
    log = None
    title = f"{preset_name}{' (no video)' if cfg.no_video else ''}"
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        log = MetricsLog(out, resume_step=state.step if ckpt else None,
                         tensorboard=options.tensorboard, title=title)
        atomic_write_text(out / CONFIG_JSON, json.dumps({
            "preset": preset_name, "data": str(data), "train": cfg.to_dict(),
            "model": to_dict(model_cfg), "world_size": env.world, "device": str(device),
            "context": context, "steps_per_epoch": per_epoch,
            "train_segments": len(ds.train), "val_segments": len(ds.val_indices),
        }, indent=1) + "\n")
    progress = Progress(env.is_main, options.progress, total_steps, state.step,
                        f"train {title}")
    shown_warnings: set[str] = set()

    def show_warnings() -> None:
        for message in log.warnings if log is not None else []:
            if message not in shown_warnings:
                shown_warnings.add(message)
                progress.write(f"warning: {message}")

    show_warnings()
    if env.is_main and ckpt is not None:
        progress.write(f"resumed {last_path} at step {state.step} (epoch {state.epoch}, "
                       f"{state.batch_in_epoch}/{per_epoch} batches into it)")

    if state.world != env.world:
        if state.batch_in_epoch:  # same segments seen, counted in steps of the new world size
            done = state.batch_in_epoch * state.world * cfg.batch_size
            state.batch_in_epoch = min(done // (env.world * cfg.batch_size), per_epoch - 1)
            progress.write(f"warning: resumed with {env.world} processes instead of "
                           f"{state.world}: the run goes on, but no longer exactly as before")
        state.world = env.world
    resident = None
    if options.resident_data if options.resident_data is not None else cuda:
        from deepsynth.train.resident import ResidentSegments

        resident = ResidentSegments(ds.train, device, video)
        if env.is_main:
            progress.write(f"training split resident on {device}: "
                           f"{resident.nbytes / 2**20:,.0f} MiB")
    window = _Window(device, state.window)
    samples_per_step = cfg.batch_size * (ds.train.window) * env.world
    extra = {"data": str(data), "data_manifest_sha256": manifest_sha256(data),
             "world_size": env.world}

    def validate() -> tuple[float, float]:
        loader = tdata.loader(ds.val, val_batches, workers, cuda)
        batches = (tdata.to_device(b, device, video) for b in loader)
        total, count, correct = evaluate_batches(forward, batches, cfg.precision)
        total, count, correct = distributed.all_reduce_sum([total, count, correct], env).tolist()
        return total / count, correct / count

    def save_last_checkpoint() -> None:
        state.window = window.to_dict()
        if env.is_main:
            save_last(last_path, model, optimizer, preset_name, cfg, state, options.shard_mb,
                      **extra)

    stopped = "epochs"
    last_save = mark = time.monotonic()

    def account() -> None:
        """Add the time since `mark` to the training time (validation and saving excluded)."""
        nonlocal mark
        now = time.monotonic()
        window.seconds += now - mark
        state.train_seconds += now - mark
        mark = now

    with _StopFlag() as stop_flag:
        if state.step >= total_steps or state.epoch >= cfg.epochs:
            stopped = "done"
        while stopped != "done" and state.epoch < cfg.epochs:
            batches = tdata.epoch_batches(len(ds.train), cfg.batch_size, cfg.seed, state.epoch,
                                          env.rank, env.world)[state.batch_in_epoch:]
            stop = None
            if resident is not None:
                stream = (resident.batch(b) for b in batches)
            else:
                stream = (tdata.to_device(raw, device, video)
                          for raw in tdata.loader(ds.train, batches, workers, cuda))
            for batch in stream:
                lr = lr_at(state.step, cfg)
                set_lr(optimizer, lr)
                r = train_step(forward, batch, optimizer, params, decayed, cfg.l2,
                               cfg.grad_clip, cfg.precision)
                window.add(r.ce, r.grad_norm, cfg.grad_clip, r.penalty, samples_per_step)
                state.step += 1
                state.batch_in_epoch += 1
                end_of_epoch = state.batch_in_epoch == per_epoch
                if end_of_epoch:
                    state.epoch += 1
                    state.batch_in_epoch = 0
                progress.update()

                # limits and signals: every process must stop at the same step
                if options.max_steps is not None and state.step >= options.max_steps:
                    stop = "max_steps"
                out_of_time = (options.max_minutes is not None
                               and time.monotonic() - t_invocation >= 60 * options.max_minutes)
                if env.distributed:
                    flags = distributed.all_reduce_sum([stop_flag.raised, out_of_time], env)
                    signalled, out_of_time = bool(flags[0]), bool(flags[1])
                else:
                    signalled = stop_flag.raised
                if stop is None and (signalled or out_of_time):
                    stop = "signal" if signalled else "max_minutes"

                do_val = bool(end_of_epoch or (cfg.val_every and state.step % cfg.val_every == 0)
                              or stop in ("max_steps", "max_minutes"))
                # train figures every log_every steps only (never flushed early by a stop: a
                # partial window is saved in last.pt, so a resumed run logs the same rows)
                log_train = state.step % cfg.log_every == 0 or (
                    end_of_epoch and state.epoch >= cfg.epochs)
                if do_val or log_train:
                    account()
                    row = {"step": state.step, "lr": lr, "time_s": state.train_seconds,
                           "epoch": state.epoch + state.batch_in_epoch / per_epoch}
                    if log_train and window.steps:
                        sums = distributed.all_reduce_sum(window.sums, env).tolist()
                        n = window.steps * env.world
                        ce = sums[0] / n
                        row |= {"train_ce": ce, "grad_norm": sums[1] / n, "clipped": sums[2] / n,
                                "l2_penalty": sums[3] / n,
                                "samples_per_s": window.samples / max(window.seconds, 1e-9)}
                        if not math.isfinite(ce):
                            raise DeepSynthError(
                                f"training diverged at step {state.step} (train CE {ce}); "
                                f"{last_path} holds the last good state")
                        progress.postfix(ce=f"{ce:.3f}", sps=f"{row['samples_per_s']:,.0f}",
                                         lr=f"{lr:.0e}")
                        window.reset()
                    if do_val:
                        val_ce, val_acc = validate()
                        state.last_val_step = state.step
                        row |= {"val_ce": val_ce, "val_acc": val_acc}
                        better = val_ce < state.best_val_ce
                        if better:
                            state.best_val_ce, state.best_step = val_ce, state.step
                            if env.is_main:
                                save_best(out / BEST, model, preset_name, cfg, state, val_ce,
                                          val_acc, options.shard_mb, **extra)
                        progress.write(
                            f"step {state.step} epoch {row['epoch']:.2f}: val CE {val_ce:.4f} "
                            f"nats ({val_ce * NATS_TO_BITS:.3f} bits), acc {val_acc:.3f}"
                            f"{' (best)' if better else ''}")
                    if log is not None:
                        log.log(row)
                        if do_val:
                            log.plot()
                            show_warnings()
                    mark = time.monotonic()

                every, minutes = options.checkpoint_every, options.checkpoint_minutes
                if (do_val or stop is not None or (every and state.step % every == 0)
                        or (minutes and time.monotonic() - last_save >= 60 * minutes)):
                    account()
                    save_last_checkpoint()
                    last_save = mark = time.monotonic()
                if stop is not None:
                    break
            if stop is not None:
                stopped = stop
                break
    progress.close()
    if log is not None:
        log.close()
    difference = distributed.max_replica_difference(model, env)
    distributed.barrier(env)
    return TrainResult(out, preset_name, cfg, state.step, state.epoch, state.best_val_ce,
                       state.best_step, stopped, model, difference, env.rank)
