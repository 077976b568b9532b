"""What a training run is: the recipe (TrainConfig, saved in every checkpoint, decides the
numbers) and the run options (RunOptions: device, limits, checkpoint cadence, logging; they do
not change what is learned, except precision on a GPU).

The defaults are the paper's recipe (section 5): Adam at 1e-3, x0.1 every 20,000 batches down to
1e-6, 3 segments a batch, gradient norm clipped at 10, the preset's L2 strength, 200 epochs, the
loss of 100 fixed validation segments after every epoch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from deepsynth.config import from_dict, to_dict

PRECISIONS = ("fp32", "bf16")
RESUME_MODES = ("never", "always", "auto")


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe. `None` fields are resolved when the run starts (`resolved`): l2 from
    the preset, precision and compile from the device; a checkpoint holds resolved values only.

    L2: the paper adds an L2 penalty to the loss (as the TensorFlow WaveNet code it borrows from
    does), so here too: loss = CE + l2 / 2 * sum of squared weights (conv and linear weights, not
    biases), before gradient clipping. It is not Adam's weight decay. The logged CE excludes it.
    """

    lr: float = 1e-3
    lr_decay_every: int = 20_000  # batches (optimizer steps) between decays
    lr_decay_factor: float = 0.1
    lr_min: float = 1e-6  # the schedule's floor
    lr_warmup: int = 0  # steps of a linear ramp from lr / lr_warmup up to lr (0: none); for
    # runs started from other weights (--init-from), whose fresh Adam otherwise moves every weight
    # by about lr in its first steps
    batch_size: int = 3  # segments per step in each process (torchrun: global = world x this)
    grad_clip: float = 10.0  # max global gradient norm; 0 turns clipping off
    l2: float | None = None  # penalty strength; None: the preset's (1e-2 / 1e-4 / 1e-5)
    epochs: int = 200
    seed: int = 0  # model initialisation and the order of segments in every epoch
    val_segments: int = 100  # the fixed, seeded validation subset
    val_seed: int = 0
    val_every: int = 0  # also validate every N steps; 0: only after each epoch
    log_every: int = 10  # train figures (means over the last N steps) every N steps
    window_seconds: float | None = None  # segment length; None: the store's (5 s)
    overlap_seconds: float | None = None  # segment overlap; None: the store's (2 s)
    no_video: bool = False  # ablation: no frame CNN or encoder, the decoder sees past audio only
    # std (in classes) of Gaussian noise added to the past samples the decoder reads in training,
    # the targets left clean (LPCNet): a model that meets its own sampling errors in training
    input_noise: float = 0.0
    camera_mix: float = 0.0  # share of training items keyed as a camera video shows them, read
    precision: str | None = None  # "fp32" or "bf16" (autocast, CUDA only); None: bf16 on CUDA
    compile: bool | None = None  # torch.compile the model; None: on for CUDA
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8

    def __post_init__(self) -> None:
        positive = ("lr", "lr_decay_every", "lr_decay_factor", "lr_min", "batch_size", "epochs",
                    "val_segments", "log_every", "adam_eps")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("grad_clip", "seed", "val_seed", "val_every", "lr_warmup", "input_noise"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.l2 is not None and self.l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2}")
        if self.lr_decay_factor > 1:
            raise ValueError(f"lr_decay_factor must be at most 1, got {self.lr_decay_factor}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {self.precision!r}")
        if not (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1):
            raise ValueError("Adam betas must be in [0, 1)")
        for name in ("window_seconds", "overlap_seconds"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if not 0.0 <= self.camera_mix <= 1.0:
            raise ValueError(f"camera_mix must be in [0, 1], got {self.camera_mix}")

    def resolved(self, preset_l2: float, cuda: bool) -> TrainConfig:
        """Every `None` replaced: l2 by the preset's, precision and compile by the device's."""
        return dataclasses.replace(
            self,
            l2=preset_l2 if self.l2 is None else self.l2,
            precision=self.precision or ("bf16" if cuda else "fp32"),
            compile=cuda if self.compile is None else self.compile,
        )

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return from_dict(cls, data)


# fields that may change when a run is resumed (the others are the recipe and must not): epochs
# and logging cadence do not alter the steps taken; precision and compile let a run move between
# a GPU and a CPU (the continuation is then no longer bit-exact)
RESUMABLE_CHANGES = ("epochs", "val_every", "log_every", "precision", "compile")


@dataclass(frozen=True)
class RunOptions:
    """How (not what) to train. None of these is saved as part of the recipe."""

    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda"
    resume: str = "never"  # "never": out/last.pt must not exist; "always": it must; "auto": either
    max_steps: int | None = None  # stop once the run has taken this many steps (in total)
    max_minutes: float | None = None  # stop after this many minutes of this invocation
    checkpoint_every: int = 1000  # write last.pt every N steps (0: off) ..
    checkpoint_minutes: float = 10.0  # .. and every M minutes (0: off); also after validation
    shard_mb: float = 16.0  # no checkpoint file larger than this (0: one file whatever its size)
    workers: int | None = None  # DataLoader worker processes; None: 0 on CPU, 4 on CUDA
    resident_data: bool | None = None  # training split held on the device; None: on CUDA only
    threads: int | None = None  # torch CPU threads; None: torch's default
    tensorboard: bool = True
    progress: bool = True  # the tqdm bar on stderr (validation lines are printed either way)

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.resume not in RESUME_MODES:
            raise ValueError(f"resume must be one of {', '.join(RESUME_MODES)}")
        for name in ("max_steps", "max_minutes", "threads"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        for name in ("checkpoint_every", "checkpoint_minutes", "shard_mb"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
