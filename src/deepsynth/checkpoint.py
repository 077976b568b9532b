"""Checkpoints: one file holds the model's config and weights (plus whatever the caller adds), so
the file alone rebuilds the model. Written atomically; read with `torch.load(weights_only=True)`.

Payload (plain dicts, tensors, numbers and strings only):
    {"format": "deepsynth-checkpoint", "version": 1, "config": to_dict(ModelConfig),
     "model": state_dict, "extra": {...}, **states}   # e.g. optimizer=opt.state_dict()
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from deepsynth.config import ModelConfig, from_dict, to_dict
from deepsynth.errors import DeepSynthError
from deepsynth.model.deepsynth import DeepSynth

FORMAT = "deepsynth-checkpoint"
VERSION = 1
RESERVED = ("format", "version", "config", "model", "extra")


def save_checkpoint(
    path: str | os.PathLike,
    model: DeepSynth,
    extra: dict[str, Any] | None = None,
    half: bool = False,
    **states: Any,
) -> None:
    """Write `model` (its config and weights), `extra` (preset name, step, val CE, ..) and any
    named `states` (optimizer=..., scheduler=..) to `path`, atomically. `half=True` stores the
    floating-point weights as float16 (for shipping; loading converts them back)."""
    clash = sorted(set(states) & set(RESERVED))
    if clash:
        raise ValueError(f"reserved checkpoint keys: {clash}")
    weights = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": to_dict(model.cfg),
        "model": weights,
        "extra": dict(extra or {}),
        **states,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_payload(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint's raw contents, checked to be one of ours; DeepSynthError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DeepSynthError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DeepSynthError(
            f"checkpoint {path} is unreadable (truncated or corrupt?): {reason}"
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DeepSynthError(f"{path} is not a DeepSynth checkpoint")
    if payload.get("version") != VERSION:
        raise DeepSynthError(
            f"checkpoint {path} has format version {payload.get('version')}, expected {VERSION}"
        )
    return payload


def load_checkpoint(
    path: str | os.PathLike, map_location: Any = "cpu"
) -> tuple[DeepSynth, dict[str, Any]]:
    """Rebuild the model from the file alone: (model in eval mode, float32, the full payload)."""
    payload = read_payload(path, map_location)
    try:
        cfg = from_dict(ModelConfig, payload["config"])
        model = DeepSynth(cfg)
        model.load_state_dict(payload["model"])
    except Exception as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DeepSynthError(f"checkpoint {path} does not match its model: {reason}") from e
    device = map_location if isinstance(map_location, str | torch.device) else "cpu"
    return model.to(device).eval(), payload
