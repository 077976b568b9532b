"""Teacher-forced scores of a model on a fixed, seeded set of segments of one split: cross-entropy
(nats, and bits per sample) and next-sample accuracy, over each segment's own samples only (its
left context, one receptive field long, is there so every scored sample sees a full past; it is
not scored), computed in batches. Beside them, the unigram baseline: the cross-entropy of
predicting every sample from the class frequencies of the same scored samples (a model that
ignores both the video and the past audio cannot do better on average).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np
import torch

from deepsynth.errors import DeepSynthError
from deepsynth.model.deepsynth import DeepSynth

NATS_TO_BITS = 1.0 / math.log(2.0)


def check_store_matches(model: DeepSynth, manifest: dict, root: str | os.PathLike) -> None:
    audio = manifest["sim_config"]["audio"]
    a = model.cfg.audio
    if int(audio["sample_rate"]) != a.sample_rate or int(audio["mu"]) != a.mu:
        raise DeepSynthError(
            f"{root}: the store has {audio['sample_rate']} Hz audio with mu {audio['mu']}, the "
            f"model was made for {a.sample_rate} Hz with mu {a.mu}")


@torch.inference_mode()
def teacher_forced_scores(
    model: DeepSynth, root: str | os.PathLike, split: str = "test", segments: int = 100,
    seed: int = 0, batch_size: int = 3, device: str | torch.device = "cpu",
    on_batch: Callable[[int, int], None] | None = None,
) -> dict:
    """Teacher-forced CE and accuracy over `segments` segments of `split` (the fixed, seeded
    choice of data.validation_subset, in dataset order), `batch_size` at a time.

    Returns {"split", "seed", "segments", "context", "samples", "ce_nats", "ce_bits", "accuracy",
    "ce_nats_std" (over segments), "unigram_ce_nats", "unigram_ce_bits", "per_segment": [{"song",
    "segment", "ce_nats", "accuracy"}, ..]}. `on_batch(done, total)` reports progress."""
    from deepsynth.data.dataset import SegmentDataset, collate, validation_subset
    from deepsynth.data.store import read_manifest

    check_store_matches(model, read_manifest(root), root)
    spans = model.item_spans()
    context = spans["context"]
    ds = SegmentDataset(root, split, **spans,
                        render_frames=not model.cfg.no_video)
    if len(ds) == 0:
        raise DeepSynthError(f"{root}: the {split} split has no segments (too few songs?)")
    indices = list(validation_subset(ds, n=segments, seed=seed).indices)
    device = torch.device(device)
    model = model.to(device).eval()
    output = model.output
    counts = torch.zeros(output.n_inputs, dtype=torch.float64)
    ce_total, correct, samples = 0.0, 0, 0
    per_segment = []
    for lo in range(0, len(indices), batch_size):
        batch = collate([ds[i] for i in indices[lo : lo + batch_size]])
        start = batch["loss_start"]
        classes = output.encode(batch["audio"].to(device))
        frames = index = None
        if not model.cfg.no_video:
            frames, index = batch["frames"].to(device), batch["frame_index"].to(device)
        params = model(frames, index, classes)[:, :, start:]
        target = classes[:, start:]
        ce = output.loss(params, target, reduction="none")  # (B, T)
        hits = output.most_likely(params) == target
        ce_total += float(ce.double().sum())
        correct += int(hits.sum())
        samples += target.numel()
        counts += torch.bincount(target.reshape(-1).cpu(), minlength=output.n_inputs).double()
        for b in range(len(target)):
            per_segment.append({"song": batch["song"][b], "segment": int(batch["segment"][b]),
                                "ce_nats": float(ce[b].double().mean()),
                                "accuracy": float(hits[b].double().mean())})
        if on_batch is not None:
            on_batch(min(lo + batch_size, len(indices)), len(indices))
    p = counts / counts.sum()
    unigram = float(-(p[p > 0] * p[p > 0].log()).sum())
    ce_nats = ce_total / samples
    return {
        "split": split, "seed": int(seed), "segments": len(indices), "context": context,
        "samples": samples, "ce_nats": ce_nats, "ce_bits": ce_nats * NATS_TO_BITS,
        "accuracy": correct / samples,
        "ce_nats_std": float(np.std([s["ce_nats"] for s in per_segment])),
        "unigram_ce_nats": unigram, "unigram_ce_bits": unigram * NATS_TO_BITS,
        "per_segment": per_segment,
    }
