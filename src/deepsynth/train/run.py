"""One invocation of a training run: what `train` holds between two steps, opened fresh or
resumed from last.pt, with one method per part of the recipe (loop.py strings them together):

    run = Run.open(env, data, out, preset, config, options)  # fresh, or resumed from last.pt
    run.batches()            the batches left, epoch after epoch, in their seeded order
    run.step(batch)          one Adam step at the scheduled learning rate
    run.should_stop(...)     max_steps, max_minutes or a signal (the same on every process)
    run.log(validate)        the metrics row of the step, when due; validation when asked
    run.validate()           CE and accuracy over the fixed validation segments; best.pt
    run.checkpoint()         last.pt

The model takes its audio representation (sample rate, mu) from the store it trains on; a
resumed run refuses a store whose audio differs from its checkpoint's.

A fresh run can start from the weights of another checkpoint (`init_from`: a shipped or exported
file, or a run's best.pt / last.pt) instead of the seeded initialisation: the run's own recipe,
a fresh optimizer and step 0; the checkpoint must hold the preset's model at the store's audio
representation. The run records where it started (extra["init_from"], config.json), and a
resumed run keeps that record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepsynth.atomic import atomic_write_text
from deepsynth.checkpoint import read_payload
from deepsynth.config import AudioConfig, ModelConfig, from_dict, to_dict
from deepsynth.data.store import manifest_sha256, read_manifest
from deepsynth.errors import DeepSynthError
from deepsynth.model.deepsynth import DeepSynth
from deepsynth.model.presets import Preset, get_preset
from deepsynth.sim import keyboard
from deepsynth.train import data as tdata
from deepsynth.train import distributed
from deepsynth.train.config import RESUMABLE_CHANGES, RunOptions, TrainConfig
from deepsynth.train.data import DeviceBatch
from deepsynth.train.logs import MetricsLog, Progress
from deepsynth.train.objective import NATS_TO_BITS, decayed_parameters
from deepsynth.train.schedule import lr_at, set_lr
from deepsynth.train.state import (
    BEST,
    LAST,
    TrainingCheckpoint,
    TrainState,
    load_training_state,
    save_best,
    save_last,
    seed_everything,
    set_rng_state,
)
from deepsynth.train.step import evaluate_batches, noise_seed, train_step

CONFIG_JSON = "config.json"


# --- the recipe and the model of a run ------------------------------------------------------


def config_for(config: TrainConfig | dict[str, Any] | None, base: TrainConfig) -> TrainConfig:
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


def resume_config(saved: TrainConfig, asked: TrainConfig | dict | None) -> TrainConfig:
    """The checkpoint's recipe, with the changes a resume allows (epochs); others are an error."""
    if asked is None:
        return saved
    wanted = config_for(asked, saved)
    changed = [f.name for f in dataclasses.fields(TrainConfig)
               if getattr(wanted, f.name) != getattr(saved, f.name)
               and not (isinstance(asked, TrainConfig) and getattr(asked, f.name) is None)]
    refused = [n for n in changed if n not in RESUMABLE_CHANGES]
    if refused:
        detail = ", ".join(f"{n} {getattr(saved, n)!r} -> {getattr(wanted, n)!r}" for n in refused)
        raise DeepSynthError(f"cannot resume with a different recipe ({detail}); only "
                             f"{', '.join(RESUMABLE_CHANGES)} may change")
    return dataclasses.replace(saved, **{n: getattr(wanted, n) for n in changed})


def checkpoint_to_resume(out: Path, resume: str) -> TrainingCheckpoint | None:
    """out/last.pt read back if `resume` ("never", "always", "auto") says to continue it;
    None for a fresh run."""
    last = out / LAST
    if resume == "never" and last.exists():
        raise DeepSynthError(f"{out} already holds a run ({last}); continue it with "
                             f"--resume, or choose another --out")
    if resume == "never" or (resume == "auto" and not last.exists()):
        return None
    if not last.exists():
        raise DeepSynthError(f"nothing to resume: {last} not found (start without "
                             f"--resume, or use --auto-resume to start fresh when absent)")
    return load_training_state(last)


def check_same_store(ckpt: TrainingCheckpoint, data: Path) -> None:
    """A resume goes on with the store it was trained on (its manifest's SHA-256, recorded in
    every checkpoint): another store is refused, naming both."""
    extra = ckpt.payload.get("extra") or {}
    recorded = extra.get("data_manifest_sha256")
    if recorded is not None and recorded != manifest_sha256(data):
        raise DeepSynthError(f"{ckpt.path} was trained on the store {extra.get('data', '?')} "
                             f"(manifest {recorded[:12]}), not on {data}: resume it with that "
                             f"--data, or start a fresh run")


def preset_and_recipe(ckpt: TrainingCheckpoint | None, preset: str | None,
           config: TrainConfig | dict | None) -> tuple[str, TrainConfig]:
    """The preset's name and the (unresolved) recipe: asked for, or the checkpoint's."""
    if ckpt is None:
        if preset is None:
            raise DeepSynthError("a fresh run needs a preset (--preset NAME)")
        return preset, config_for(config, TrainConfig())
    if preset not in (None, ckpt.preset):
        raise DeepSynthError(f"{ckpt.path} was trained with preset {ckpt.preset!r}, "
                             f"not {preset!r}")
    return ckpt.preset, resume_config(ckpt.config, config)


def store_audio(root: str | Path) -> AudioConfig:
    """How a built store represents audio (the simulator config of its manifest)."""
    audio = read_manifest(root)["sim_config"]["audio"]
    try:
        return from_dict(AudioConfig, audio)
    except (TypeError, ValueError) as e:
        raise DeepSynthError(f"{root}: unreadable audio config in its manifest ({e})") from None


def model_config(preset_name: str, preset: Preset, cfg: TrainConfig, audio: AudioConfig,
                 data: Path, ckpt: TrainingCheckpoint | None) -> ModelConfig:
    """The preset's model at the store's audio representation (no video for the ablation); a
    checkpoint must hold that very model."""
    model_cfg = preset.model_for(audio)
    if cfg.no_video:
        model_cfg = dataclasses.replace(model_cfg, no_video=True)
    if ckpt is not None:
        check_saved_model(ckpt.path, ckpt.model_config, model_cfg, preset_name, data,
                          "resume it on a store of its rate, or start a fresh run")
    return model_cfg


def check_saved_model(path: Path, saved: ModelConfig, model_cfg: ModelConfig, preset_name: str,
                      data: Path, other_rate: str) -> None:
    """A checkpoint's model (a resumed run's, or the weights a fresh one starts from) must be
    the very model the run trains: the store's audio, video or not, the preset as defined now.
    `other_rate`: what to do about a checkpoint of another sample rate."""
    if saved.audio != model_cfg.audio:
        raise DeepSynthError(
            f"{path} was trained on {saved.audio.sample_rate} Hz audio (mu {saved.audio.mu}) "
            f"but {data} holds {model_cfg.audio.sample_rate} Hz audio (mu "
            f"{model_cfg.audio.mu}); {other_rate}")
    if saved.no_video != model_cfg.no_video:
        has, asked = ("without" if c.no_video else "with" for c in (saved, model_cfg))
        raise DeepSynthError(f"{path} holds a model {has} video, the run asks for one {asked}")
    if saved != model_cfg:
        raise DeepSynthError(f"{path} holds a model that differs from preset "
                             f"{preset_name!r} as defined now (was the preset changed?)")


@dataclasses.dataclass(frozen=True)
class InitialWeights:
    """The weights a fresh run starts from (`train --init-from`)."""

    path: Path
    preset: str | None  # the preset the checkpoint was trained as (None: not recorded)
    model_config: ModelConfig
    model_state: dict[str, torch.Tensor]
    step: int | None  # the steps behind those weights (None: not recorded)

    def record(self) -> dict[str, Any]:
        """What the run keeps of where it started."""
        return {"path": str(self.path), "preset": self.preset, "step": self.step}


def initial_weights(path: str | Path) -> InitialWeights:
    """A checkpoint's model for a fresh run to start from; DeepSynthError if it is not one."""
    path = Path(path)
    payload = read_payload(path)
    extra = payload.get("extra") or {}
    try:
        cfg = from_dict(ModelConfig, payload["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise DeepSynthError(f"checkpoint {path}: unreadable model config ({e})") from None
    step = extra.get("step")
    return InitialWeights(path, extra.get("preset"), cfg, payload["model"],
                          int(step) if isinstance(step, int) else None)


def check_initial_weights(init: InitialWeights, preset_name: str, model_cfg: ModelConfig,
                          data: Path) -> None:
    """The checkpoint must hold the very model the run trains (preset, audio, video or not)."""
    if init.preset not in (None, preset_name):
        raise DeepSynthError(f"{init.path} holds preset {init.preset!r}, not {preset_name!r} "
                             f"(give --preset {init.preset} or leave --preset out)")
    check_saved_model(init.path, init.model_config, model_cfg, preset_name, data,
                      "start from a checkpoint of the store's rate")


# --- the train figures between two rows -----------------------------------------------------


class MetricsAccumulator:
    """Train figures summed over the steps since the last metrics row (device tensors: no
    per-step sync). Saved in last.pt (`TrainState.metrics`), so a resumed run logs the rows a
    straight one would."""

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

    def means(self, env: distributed.DistEnv) -> dict[str, float]:
        """The metrics columns: means over the steps of every process (a collective)."""
        sums = distributed.all_reduce_sum(self.sums, env).tolist()
        n = self.steps * env.world
        return {"train_ce": sums[0] / n, "grad_norm": sums[1] / n, "clipped": sums[2] / n,
                "l2_penalty": sums[3] / n,
                "samples_per_s": self.samples / max(self.seconds, 1e-9)}

    def to_dict(self) -> dict[str, float]:
        values = dict(zip(self.KEYS, self.sums.tolist(), strict=True))
        return values | {"steps": self.steps, "samples": self.samples, "seconds": self.seconds}

    def reset(self) -> None:
        self.sums.zero_()
        self.steps, self.samples, self.seconds = 0, 0, 0.0


# --- the run --------------------------------------------------------------------------------


class Run:
    """A run in this process: the recipe, the model (and how it is called) with its optimizer,
    the train state, the data, the logs (rank 0 writes), the progress bar and the train figures
    since the last row. Training time excludes validation, logging and saving."""

    @classmethod
    def open(cls, env: distributed.DistEnv, data: Path, out: Path, preset: str | None,
             config: TrainConfig | dict | None, options: RunOptions,
             init_from: str | Path | None = None) -> Run:
        """A fresh run, or the one in out/last.pt resumed (as `options.resume` says); a fresh
        one starts from `init_from`'s weights if given (a resumed one ignores it); every
        refusal is a one-line DeepSynthError."""
        started = time.monotonic()
        if options.threads:
            torch.set_num_threads(options.threads)
        cuda = env.device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = True  # fixed sequence length: pick the fastest convs
        ckpt = checkpoint_to_resume(out, options.resume)
        init = initial_weights(init_from) if init_from is not None and ckpt is None else None
        if preset is None and init is not None:
            preset = init.preset
        preset_name, cfg = preset_and_recipe(ckpt, preset, config)
        found = get_preset(preset_name)
        cfg = cfg.resolved(found.l2, cuda)
        if cfg.precision == "bf16" and not cuda:
            raise DeepSynthError("bf16 precision needs a CUDA device (use --precision fp32 on CPU)")
        model_cfg = model_config(preset_name, found, cfg, store_audio(data), data, ckpt)
        if ckpt is not None:  # after the rate check: another rate is named as such
            check_same_store(ckpt, data)
        if init is not None:
            check_initial_weights(init, preset_name, model_cfg, data)
        return cls(env, data, out, options, preset_name, cfg, model_cfg, ckpt, started, init)

    def __init__(self, env: distributed.DistEnv, data: Path, out: Path, options: RunOptions,
                 preset_name: str, cfg: TrainConfig, model_cfg: ModelConfig,
                 ckpt: TrainingCheckpoint | None, started: float,
                 init: InitialWeights | None = None) -> None:
        self.env, self.data, self.out, self.options = env, data, out, options
        self.preset_name, self.cfg, self.model_cfg = preset_name, cfg, model_cfg
        self.started = started  # this invocation's start (max_minutes)
        self.device = env.device
        self.cuda = self.device.type == "cuda"
        self.video = not cfg.no_video
        self.last_path = out / LAST
        # where the weights started: this run's --init-from, or the resumed run's record
        self.init_record = (init.record() if init is not None else
                            (ckpt.payload.get("extra") or {}).get("init_from") if ckpt else None)
        self._build_model(ckpt, init)
        self._open_data()
        self.forward = self._forward()
        self._open_logs(resumed=ckpt is not None)
        self._adopt_world()
        self.resident = self._resident()
        self.metrics = MetricsAccumulator(self.device, self.state.metrics)
        self.samples_per_step = cfg.batch_size * self.ds.train.window * env.world
        self.extra = {"data": str(data), "data_manifest_sha256": manifest_sha256(data),
                      "world_size": env.world}
        if self.init_record is not None:
            self.extra["init_from"] = self.init_record
        self.lr = lr_at(self.state.step, cfg)
        self.end_of_epoch = False  # the last step ended an epoch
        self.last_save = self.mark = time.monotonic()  # mark: training time counted up to here

    # --- opening

    def _build_model(self, ckpt: TrainingCheckpoint | None,
                     init: InitialWeights | None = None) -> None:
        """The seeded model and Adam, with the checkpoint's weights, state and generators (or
        a fresh run's initial weights, converted to the model's float32)."""
        cfg = self.cfg
        seed_everything(cfg.seed)
        # the frames the dataset draws are the simulator's keyboard
        layout = None if self.model_cfg.no_video else keyboard.layout()
        self.model = DeepSynth(self.model_cfg, layout)
        self.state = TrainState()
        source = ckpt if ckpt is not None else init
        if source is not None:
            try:
                self.model.load_state_dict(source.model_state)
            except RuntimeError as e:
                raise DeepSynthError(f"{source.path} does not fit preset {self.preset_name!r}: "
                                     f"{str(e).splitlines()[0]}") from None
        if ckpt is not None:
            self.state = ckpt.state
        self.model.to(self.device)
        self.params = list(self.model.parameters())
        self.decayed = decayed_parameters(self.model)
        self.optimizer = torch.optim.Adam(
            self.params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
            fused=self.cuda or None)
        if ckpt is not None:
            self.optimizer.load_state_dict(ckpt.optimizer_state)
            set_rng_state(ckpt.rng)

    def _open_data(self) -> None:
        """The segments with the audio and video around them that the model needs."""
        cfg, env = self.cfg, self.env
        spans = self.model.item_spans()  # context, video context and lookahead, in samples
        self.context = spans["context"]
        workers = self.options.workers
        self.workers = workers if workers is not None else (4 if self.cuda else 0)
        self.ds = tdata.open_datasets(self.data, cfg, spans, frames=self.video and not self.cuda,
                                      world=env.world)
        self.per_epoch = tdata.steps_per_epoch(len(self.ds.train), cfg.batch_size, env.world)
        self.total_steps = cfg.epochs * self.per_epoch
        if self.options.max_steps is not None:
            self.total_steps = min(self.total_steps, self.options.max_steps)
        self.val_batches = tdata.validation_batches(self.ds.val_indices, cfg.batch_size,
                                                    env.rank, env.world)

    def _forward(self) -> nn.Module:
        """The model as a step calls it: DDP-wrapped under torchrun, compiled if asked."""
        forward: nn.Module = self.model
        if self.env.distributed:
            from torch.nn.parallel import DistributedDataParallel

            # static_graph: the same parameters take part in every step (a few, e.g. the last
            # block's residual bias, never get a gradient, which a plain DDP refuses)
            ids = [self.device.index] if self.cuda else None
            forward = DistributedDataParallel(self.model, device_ids=ids, static_graph=True)
        if self.cfg.compile:
            forward = torch.compile(forward)
        return forward

    def _open_logs(self, resumed: bool) -> None:
        """metrics.csv, TensorBoard and config.json (rank 0); the progress bar."""
        state, env = self.state, self.env
        title = f"{self.preset_name}{' (no video)' if self.cfg.no_video else ''}"
        self.logs: MetricsLog | None = None
        if env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.logs = MetricsLog(self.out, resume_step=state.step if resumed else None,
                                   tensorboard=self.options.tensorboard, title=title)
            self._write_config_json()
        self.progress = Progress(env.is_main, self.options.progress, self.total_steps,
                                 state.step, f"train {title}")
        self.shown_warnings: set[str] = set()
        self.show_warnings()
        if env.is_main and resumed:
            self.progress.write(f"resumed {self.last_path} at step {state.step} (epoch "
                                f"{state.epoch}, {state.batch_in_epoch}/{self.per_epoch} "
                                f"batches into it)")

    def _write_config_json(self) -> None:
        env = self.env
        atomic_write_text(self.out / CONFIG_JSON, json.dumps({
            "preset": self.preset_name, "data": str(self.data), "train": self.cfg.to_dict(),
            "model": to_dict(self.model_cfg), "world_size": env.world, "device": str(self.device),
            "context": self.context, "steps_per_epoch": self.per_epoch,
            "train_segments": len(self.ds.train), "val_segments": len(self.ds.val_indices),
            "init_from": self.init_record,
        }, indent=1) + "\n")

    def _adopt_world(self) -> None:
        """A run resumed with another number of processes goes on from the same segments."""
        state, world, batch = self.state, self.env.world, self.cfg.batch_size
        if state.world == world:
            return
        if state.batch_in_epoch:  # same segments seen, counted in steps of the new world size
            done = state.batch_in_epoch * state.world * batch
            state.batch_in_epoch = min(done // (world * batch), self.per_epoch - 1)
            self.progress.write(f"warning: resumed with {world} processes instead of "
                                f"{state.world}: the run goes on, but no longer exactly as before")
        state.world = world

    def _resident(self):
        """The training split held on the device (by default on CUDA), or None."""
        resident = self.options.resident_data
        if self.cfg.camera_mix > 0:  # camera readings are made per song by the dataset
            if resident:
                raise DeepSynthError("--camera-mix needs the loader path (--no-resident-data)")
            return None
        if not (resident if resident is not None else self.cuda):
            return None
        from deepsynth.train.resident import ResidentSegments

        segments = ResidentSegments(self.ds.train, self.device, self.video)
        if self.env.is_main:
            self.progress.write(f"training split resident on {self.device}: "
                                f"{segments.nbytes / 2**20:,.0f} MiB")
        return segments

    # --- the recipe

    def finished(self) -> bool:
        """Nothing left to do: the epochs (or max_steps) are done."""
        return self.state.step >= self.total_steps or self.state.epoch >= self.cfg.epochs

    def batches(self) -> Iterator[DeviceBatch]:
        """The batches left, epoch after epoch, each epoch in its seeded order (a resumed run
        starts inside its epoch, where it stopped)."""
        cfg, state, env = self.cfg, self.state, self.env
        while state.epoch < cfg.epochs:
            mine = tdata.epoch_batches(len(self.ds.train), cfg.batch_size, cfg.seed,
                                       state.epoch, env.rank, env.world)[state.batch_in_epoch:]
            if self.resident is not None:
                yield from (self.resident.batch(b) for b in mine)
            else:
                loader = tdata.loader(self.ds.train, mine, self.workers, self.cuda)
                yield from (tdata.to_device(raw, self.device, self.video) for raw in loader)

    def step(self, batch: DeviceBatch) -> None:
        """One Adam step at the scheduled learning rate; the counters move on."""
        cfg, state = self.cfg, self.state
        self.lr = lr_at(state.step, cfg)
        set_lr(self.optimizer, self.lr)
        r = train_step(self.forward, self.model.output, batch, self.optimizer, self.params,
                       self.decayed, cfg.l2, cfg.grad_clip, cfg.precision, cfg.input_noise,
                       noise_seed(cfg.seed, self.env.rank, state.step))
        self.metrics.add(r.ce, r.grad_norm, cfg.grad_clip, r.penalty, self.samples_per_step)
        state.step += 1
        state.batch_in_epoch += 1
        self.end_of_epoch = state.batch_in_epoch == self.per_epoch
        if self.end_of_epoch:
            state.epoch += 1
            state.batch_in_epoch = 0
        self.progress.update()

    def should_stop(self, signalled: bool) -> str | None:
        """Why the run stops after this step ("max_steps", "signal", "max_minutes"), or None;
        every process stops at the same step."""
        options = self.options
        stop = None
        if options.max_steps is not None and self.state.step >= options.max_steps:
            stop = "max_steps"
        out_of_time = (options.max_minutes is not None
                       and time.monotonic() - self.started >= 60 * options.max_minutes)
        if self.env.distributed:
            flags = distributed.all_reduce_sum([signalled, out_of_time], self.env)
            signalled, out_of_time = bool(flags[0]), bool(flags[1])
        if stop is None and (signalled or out_of_time):
            stop = "signal" if signalled else "max_minutes"
        return stop

    def validation_due(self, stop: str | None) -> bool:
        """After every epoch, every `val_every` steps, and where a limit stops the run."""
        every = self.cfg.val_every
        return bool(self.end_of_epoch or (every and self.state.step % every == 0)
                    or stop in ("max_steps", "max_minutes"))

    def _train_row_due(self) -> bool:
        # every log_every steps only (never flushed early by a stop: the partial figures are
        # saved in last.pt, so a resumed run logs the same rows)
        state, cfg = self.state, self.cfg
        return state.step % cfg.log_every == 0 or (self.end_of_epoch and state.epoch >= cfg.epochs)

    def log(self, validate: bool) -> None:
        """The metrics row of this step, when one is due: the train figures every `log_every`
        steps (and after the last epoch), the validation figures when `validate`."""
        train = self._train_row_due()
        if not (train or validate):
            return
        state = self.state
        with self._untimed():
            row = {"step": state.step, "lr": self.lr, "time_s": state.train_seconds,
                   "epoch": self.epoch_progress}
            if train and self.metrics.steps:
                row |= self._train_figures()
            if validate:
                row |= self.validate()
            if self.logs is not None:
                self.logs.log(row)
                if validate:
                    self.logs.plot()
                    self.show_warnings()

    def _train_figures(self) -> dict[str, float]:
        figures = self.metrics.means(self.env)
        ce = figures["train_ce"]
        if not math.isfinite(ce):
            raise DeepSynthError(f"training diverged at step {self.state.step} (train CE {ce}); "
                                 f"{self.last_path} holds the last good state")
        self.progress.postfix(ce=f"{ce:.3f}", sps=f"{figures['samples_per_s']:,.0f}",
                              lr=f"{self.lr:.0e}")
        self.metrics.reset()
        return figures

    def validate(self) -> dict[str, float]:
        """CE (nats) and accuracy over the fixed validation segments, shared among the
        processes; best.pt when the CE is the lowest so far."""
        loader = tdata.loader(self.ds.val, self.val_batches, self.workers, self.cuda)
        batches = (tdata.to_device(b, self.device, self.video) for b in loader)
        sums = evaluate_batches(self.forward, self.model.output, batches, self.cfg.precision)
        total, count, correct = distributed.all_reduce_sum(list(sums), self.env).tolist()
        val_ce, val_acc = total / count, correct / count
        state = self.state
        state.last_val_step = state.step
        better = val_ce < state.best_val_ce
        if better:
            state.best_val_ce, state.best_step = val_ce, state.step
            if self.env.is_main:
                save_best(self.out / BEST, self.model, self.preset_name, self.cfg, state, val_ce,
                          val_acc, self.options.shard_mb, **self.extra)
        self.progress.write(
            f"step {state.step} epoch {self.epoch_progress:.2f}: val CE {val_ce:.4f} "
            f"nats ({val_ce * NATS_TO_BITS:.3f} bits), acc {val_acc:.3f}"
            f"{' (best)' if better else ''}")
        return {"val_ce": val_ce, "val_acc": val_acc}

    def checkpoint_due(self) -> bool:
        """The cadence of last.pt: every `checkpoint_every` steps, every `checkpoint_minutes`."""
        every, minutes = self.options.checkpoint_every, self.options.checkpoint_minutes
        return bool((every and self.state.step % every == 0)
                    or (minutes and time.monotonic() - self.last_save >= 60 * minutes))

    def checkpoint(self) -> None:
        """last.pt (rank 0 writes): model, Adam, the train state with the figures since the
        last row, the generators."""
        with self._untimed():
            self.state.metrics = self.metrics.to_dict()
            if self.env.is_main:
                save_last(self.last_path, self.model, self.optimizer, self.preset_name, self.cfg,
                          self.state, self.options.shard_mb, **self.extra)
        self.last_save = self.mark

    # --- bookkeeping

    @property
    def epoch_progress(self) -> float:
        """Epochs done, fractional."""
        return self.state.epoch + self.state.batch_in_epoch / self.per_epoch

    @contextlib.contextmanager
    def _untimed(self) -> Iterator[None]:
        """Count the time since the last mark as training time; what runs inside does not."""
        now = time.monotonic()
        self.metrics.seconds += now - self.mark
        self.state.train_seconds += now - self.mark
        yield
        self.mark = time.monotonic()

    def show_warnings(self) -> None:
        """What the logs could not write (once each)."""
        for message in self.logs.warnings if self.logs is not None else []:
            if message not in self.shown_warnings:
                self.shown_warnings.add(message)
                self.progress.write(f"warning: {message}")

    def close(self) -> None:
        self.progress.close()
        if self.logs is not None:
            self.logs.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
