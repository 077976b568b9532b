"""Everything a run must carry across a kill -9 to continue exactly: the step counters and the
position inside the epoch, the best validation so far, the train figures accumulated since the
last metrics row, and the random number generators (python, numpy, torch, CUDA), saved in last.pt
beside the model and the Adam state. The data order is a function of (seed, epoch), so the
position in the epoch restores it.

Files of a run folder:
    last.pt   model + optimizer + train state: `--resume` continues from it
    best.pt   model of the lowest validation CE so far (no optimizer state: smaller)
Both are DeepSynth checkpoints: `load_checkpoint(path)` rebuilds the model from the file alone,
and their `extra` holds the preset name, the TrainConfig (as a dict) and the step's figures.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepsynth.checkpoint import read_payload, save_checkpoint
from deepsynth.config import ModelConfig, from_dict
from deepsynth.errors import DeepSynthError
from deepsynth.model.deepsynth import DeepSynth
from deepsynth.train.config import TrainConfig

LAST = "last.pt"
BEST = "best.pt"


@dataclass
class TrainState:
    step: int = 0  # optimizer steps taken
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # steps taken in the current epoch
    world: int = 1  # processes that took them (each step used world x batch_size segments)
    best_val_ce: float = math.inf
    best_step: int = -1
    last_val_step: int = -1
    train_seconds: float = 0.0  # wall time spent training, over all invocations
    metrics: dict[str, float] = field(default_factory=dict)  # accumulated since the last row

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        """The saved state; a last.pt written before the rename holds `metrics` as `window`."""
        if "window" in data and "metrics" not in data:
            data = {**data, "metrics": data["window"]}
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


# --- random number generators ---------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every generator's state, as plain values and tensors (loadable with weights_only)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- checkpoints ----------------------------------------------------------------------------


def _extra(preset: str, cfg: TrainConfig, state: TrainState, **more: Any) -> dict[str, Any]:
    return {"preset": preset, "train_config": cfg.to_dict(), "step": state.step,
            "epoch": state.epoch, "best_val_ce": state.best_val_ce,
            "best_step": state.best_step, **more}


def save_last(path: str | os.PathLike, model: DeepSynth, optimizer: torch.optim.Optimizer,
              preset: str, cfg: TrainConfig, state: TrainState, shard_mb: float = 16.0,
              **extra: Any) -> None:
    """The resumable checkpoint: model, optimizer, train state and generators."""
    save_checkpoint(path, model, extra=_extra(preset, cfg, state, **extra), shard_mb=shard_mb,
                    optimizer=optimizer.state_dict(), train_state=state.to_dict(),
                    rng=rng_state())


def save_best(path: str | os.PathLike, model: DeepSynth, preset: str, cfg: TrainConfig,
              state: TrainState, val_ce: float, val_acc: float, shard_mb: float = 16.0,
              **extra: Any) -> None:
    """The model of the lowest validation loss (no optimizer state)."""
    save_checkpoint(path, model, shard_mb=shard_mb,
                    extra=_extra(preset, cfg, state, val_ce=val_ce, val_acc=val_acc, **extra))


@dataclass
class TrainingCheckpoint:
    """A resumable checkpoint as read back (tensors on the CPU)."""

    path: Path
    payload: dict[str, Any]
    preset: str
    config: TrainConfig
    state: TrainState

    @property
    def model_state(self) -> dict[str, torch.Tensor]:
        return self.payload["model"]

    @property
    def model_config(self) -> ModelConfig:
        """The model the checkpoint holds (its saved config)."""
        return from_dict(ModelConfig, self.payload["config"])

    @property
    def optimizer_state(self) -> dict[str, Any]:
        return self.payload["optimizer"]

    @property
    def rng(self) -> dict[str, Any]:
        return self.payload["rng"]


def load_training_state(path: str | os.PathLike) -> TrainingCheckpoint:
    """Read a last.pt for resuming; a missing, corrupt or foreign file is a DeepSynthError (one
    line), never a silent fresh start."""
    path = Path(path)
    payload = read_payload(path, map_location="cpu")
    missing = [k for k in ("optimizer", "train_state", "rng") if k not in payload]
    extra = payload.get("extra", {})
    if missing or "train_config" not in extra or "preset" not in extra:
        raise DeepSynthError(f"checkpoint {path} holds no training state to resume from "
                             f"(was it written by `deepsynth train`?)")
    try:
        cfg = TrainConfig.from_dict(extra["train_config"])
        state = TrainState.from_dict(payload["train_state"])
    except (TypeError, ValueError) as e:
        raise DeepSynthError(f"checkpoint {path}: unreadable training state ({e})") from None
    return TrainingCheckpoint(path, payload, str(extra["preset"]), cfg, state)
