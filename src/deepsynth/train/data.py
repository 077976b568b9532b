"""Feeding the model: which segments form each batch (a pure function of seed and epoch, so a
resumed run draws exactly the batches it would have), the loaders, and the move to the device.

Epoch e visits the training segments in the order `permutation(seed, e)`. Global step s of the
epoch takes the next world x batch_size of them, and process r the r-th block of batch_size:
the per-process share of DistributedSampler, without padding. The last partial global batch of
an epoch is dropped, so every process takes the same number of steps.

On a GPU, frames are not drawn by the loader: it ships key states (88 bools per distinct frame)
and the frames are rendered on the device (`render_frames_torch`, a gather through the keyboard's
key map); on the CPU the loader renders them (numpy is faster there).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from deepsynth.data.dataset import SegmentDataset, collate, render_frames_torch, validation_subset
from deepsynth.data.segments import SegmentConfig
from deepsynth.data.store import read_manifest
from deepsynth.errors import DeepSynthError
from deepsynth.train.config import TrainConfig


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch `epoch` visits the n training segments."""
    return np.random.default_rng([int(seed), int(epoch), 0x5E6]).permutation(n)


def steps_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    return n // (batch_size * world)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0,
                  world: int = 1) -> list[list[int]]:
    """The segment indices of every batch process `rank` takes in epoch `epoch`."""
    order = epoch_order(n, seed, epoch)
    out = []
    for step in range(steps_per_epoch(n, batch_size, world)):
        lo = (step * world + rank) * batch_size
        out.append(order[lo : lo + batch_size].tolist())
    return out


def segment_config(root: str | os.PathLike, cfg: TrainConfig) -> SegmentConfig:
    """The store's segments, with the recipe's window / overlap where it sets them."""
    seg = read_manifest(root)["segments"]
    window = seg["window_seconds"] if cfg.window_seconds is None else cfg.window_seconds
    overlap = seg["overlap_seconds"] if cfg.overlap_seconds is None else cfg.overlap_seconds
    try:
        return SegmentConfig(window, overlap)
    except ValueError as e:
        raise DeepSynthError(f"segments: {e}") from None


@dataclass
class Datasets:
    train: SegmentDataset
    val: SegmentDataset
    val_indices: list[int]  # the fixed validation subset (rows of `val`)
    context: int  # left context per segment, in samples (= loss_start)


def open_datasets(root: str | os.PathLike, cfg: TrainConfig, spans: dict[str, int],
                  frames: bool, world: int = 1) -> Datasets:
    """Training segments and the fixed validation subset of a built store, with the context
    and video the model needs (`DeepSynth.item_spans`); `frames=False`: key states only
    (rendered later, or no video)."""
    segments = segment_config(root, cfg)
    kw = {**spans, "render_frames": frames, "segments": segments}
    # the camera mix shapes the training items only: validation stays on the exact key states
    train = SegmentDataset(root, "train", **kw, camera_mix=cfg.camera_mix, camera_seed=cfg.seed)
    val = SegmentDataset(root, "val", **kw)
    need = cfg.batch_size * world
    if len(train) < need:
        raise DeepSynthError(
            f"{root}: {len(train)} training segments, fewer than one batch "
            f"({cfg.batch_size} x {world} process(es)); build a larger store")
    if len(val) == 0:
        raise DeepSynthError(f"{root}: the validation split has no segments (too few songs?)")
    subset = validation_subset(val, n=cfg.val_segments, seed=cfg.val_seed)
    return Datasets(train, val, list(subset.indices), spans["context"])


def loader(dataset: SegmentDataset, batches: list[list[int]], workers: int,
           pin_memory: bool) -> DataLoader:
    """Batches in the given order (no shuffling of its own), collated."""
    return DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=workers,
                      pin_memory=pin_memory, persistent_workers=False,
                      prefetch_factor=4 if workers else None)


def validation_batches(indices: list[int], batch_size: int, rank: int = 0,
                       world: int = 1) -> list[list[int]]:
    """This process's share of the validation subset (every world-th segment), in batches."""
    mine = indices[rank::world]
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]


@dataclass
class DeviceBatch:
    frames: torch.Tensor | None  # (N, 57, 780) uint8, None without video
    frame_index: torch.Tensor | None  # (B, T) int64
    audio: torch.Tensor  # (B, T) float32 in [-1, 1] (the model's output distribution makes
    loss_start: int  # its classes)

    @property
    def size(self) -> int:
        return self.audio.shape[0]

    @property
    def scored(self) -> int:
        """Samples the loss covers."""
        return self.audio.shape[0] * (self.audio.shape[1] - self.loss_start)


def to_device(batch: dict, device: torch.device, video: bool = True) -> DeviceBatch:
    """A collated batch on the training device; frames rendered there if the loader sent only
    key states."""
    nb = device.type == "cuda"
    audio = batch["audio"].to(device, non_blocking=nb)
    frames = frame_index = None
    if video:
        frame_index = batch["frame_index"].to(device, non_blocking=nb)
        if "frames" in batch:
            frames = batch["frames"].to(device, non_blocking=nb)
        else:
            frames = render_frames_torch(batch["states"].to(device, non_blocking=nb))
    return DeviceBatch(frames, frame_index, audio, int(batch["loss_start"]))
