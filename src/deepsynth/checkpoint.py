"""Checkpoints: one file holds the model's config and weights (plus whatever the caller adds), so
the file alone rebuilds the model. Written atomically; read with `torch.load(weights_only=True)`.

Payload (plain dicts, tensors, numbers, strings and bytes only):
    {"format": "deepsynth-checkpoint", "version": 1, "config": to_dict(ModelConfig),
     "layout": KeyboardLayout.to_dict() or None, "model": state_dict, "extra": {...},
     **states}   # e.g. optimizer=opt.state_dict()
"layout" is the keyboard the model was trained on (None: a model without one); files written
before layouts were stored have no "layout" and load with the simulator's keyboard.

Sharded checkpoints (`save_checkpoint(..., shard_mb=16)`, for machines that hand back files of at
most 16 MiB): when the serialized payload is larger than the limit, its bytes are cut into parts
`NAME.shard-TOKEN.00001-of-0000N` beside the file, and the file itself becomes a small index
    {"format", "version", "config", "extra", "shards": {"files", "sizes", "sha256", "bytes"}}
Reading (`read_payload`, `load_checkpoint`) joins the parts, checks their sizes and SHA-256 and
returns the full payload, so callers never see the difference. Parts carry a fresh token on every
write and the index is replaced last (atomically), so a reader never sees a mix of two versions;
parts no longer named by the index are removed after it is replaced.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from pathlib import Path
from typing import Any

import torch

from deepsynth.atomic import mark_durable, temp_name
from deepsynth.config import ModelConfig, from_dict, to_dict
from deepsynth.errors import DeepSynthError
from deepsynth.layout import KeyboardLayout
from deepsynth.model.deepsynth import DeepSynth

FORMAT = "deepsynth-checkpoint"
VERSION = 1
RESERVED = ("format", "version", "config", "layout", "model", "extra", "shards", "checksum")
MIB = 1 << 20
_UMASK = os.umask(0o022)
os.umask(_UMASK)
SHARD_TAG = ".shard-"


def _write_file(path: Path, write) -> None:
    """Atomically create or replace `path` with what `write(f)` writes (fsync'ed, then renamed;
    the temporary name is deepsynth.atomic's, so a killed writer's leftover is swept)."""
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # created private; give it the usual mode
        os.replace(tmp, path)
        mark_durable()
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def shard_files(path: str | os.PathLike) -> list[Path]:
    """Every part file beside `path` that belongs to it (current or stale)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(path.name + SHARD_TAG))


def _remove_stale_shards(path: Path, keep: set[str]) -> None:
    for p in shard_files(path):
        if p.name not in keep:
            p.unlink(missing_ok=True)


def _write_payload(path: Path, payload: dict[str, Any], shard_mb: float | None) -> None:
    if not shard_mb:
        _write_file(path, lambda f: torch.save(payload, f))
        _remove_stale_shards(path, set())
        return
    limit = max(1, int(shard_mb * MIB))
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getbuffer()
    if len(data) <= limit:
        _write_file(path, lambda f: f.write(data))
        _remove_stale_shards(path, set())
        return
    n = -(-len(data) // limit)
    token = uuid.uuid4().hex[:12]
    files, sizes, digests = [], [], []
    for i in range(n):
        piece = data[i * limit : (i + 1) * limit]
        name = f"{path.name}{SHARD_TAG}{token}.{i + 1:05d}-of-{n:05d}"
        _write_file(path.parent / name, lambda f, piece=piece: f.write(piece))
        files.append(name)
        sizes.append(len(piece))
        digests.append(hashlib.sha256(piece).hexdigest())
    index = {key: payload[key] for key in ("format", "version", "config", "extra")
             if key in payload}
    index["shards"] = {"files": files, "sizes": sizes, "sha256": digests, "bytes": len(data)}
    _write_file(path, lambda f: torch.save(index, f))
    _remove_stale_shards(path, set(files))


def _join_shards(path: Path, index: dict[str, Any], map_location: Any) -> dict[str, Any]:
    """The full payload of a sharded checkpoint, from its index; DeepSynthError if a part is
    missing, truncated or altered."""
    shards = index["shards"]
    try:
        files, sizes, digests = shards["files"], shards["sizes"], shards["sha256"]
    except (KeyError, TypeError):
        raise DeepSynthError(f"checkpoint {path} has a damaged shard index") from None
    buf = bytearray()
    for name, size, digest in zip(files, sizes, digests, strict=True):
        part = path.parent / name
        try:
            piece = part.read_bytes()
        except FileNotFoundError:
            raise DeepSynthError(f"checkpoint {path}: its part {name} is missing") from None
        except OSError as e:
            raise DeepSynthError(f"checkpoint {path}: part {name} unreadable ({e})") from None
        if len(piece) != size or hashlib.sha256(piece).hexdigest() != digest:
            raise DeepSynthError(
                f"checkpoint {path}: part {name} is corrupt (size or checksum mismatch)"
            )
        buf += piece
    try:
        payload = torch.load(io.BytesIO(buf), map_location=map_location, weights_only=True)
    except Exception as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DeepSynthError(f"checkpoint {path}: its parts do not load: {reason}") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DeepSynthError(f"checkpoint {path}: its parts are not a DeepSynth checkpoint")
    return payload


def save_checkpoint(
    path: str | os.PathLike,
    model: DeepSynth,
    extra: dict[str, Any] | None = None,
    half: bool = False,
    shard_mb: float | None = None,
    **states: Any,
) -> None:
    """Write `model` (its config and weights), `extra` (preset name, step, val CE, ..) and any
    named `states` (optimizer=..., scheduler=..) to `path`, atomically. `half=True` stores the
    floating-point weights as float16 (for shipping; loading converts them back).
    `shard_mb`: no file written is larger than this many MiB (see the module doc); None or 0
    writes one file whatever its size."""
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
        "layout": None if model.layout is None else model.layout.to_dict(),
        "model": weights,
        "extra": dict(extra or {}),
        **states,
    }
    payload["checksum"] = {"sha256": payload_sha256(payload)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_payload(path, payload, shard_mb)


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
    if "shards" in payload:
        payload = _join_shards(path, payload, map_location)
    verify_payload(path, payload)
    return payload


def _feed(h, value: Any) -> None:
    """Hash `value` (plain containers, tensors, numbers, strings, bytes) canonically."""
    if isinstance(value, dict):
        h.update(b"{%d" % len(value))
        for key in sorted(value, key=repr):
            h.update(repr(key).encode())
            _feed(h, value[key])
        h.update(b"}")
    elif isinstance(value, list | tuple):
        h.update(b"[%d" % len(value))
        for item in value:
            _feed(h, item)
        h.update(b"]")
    elif isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, bytes | bytearray):
        h.update(b"B%d" % len(value))
        h.update(bytes(value))
    else:
        h.update(f"{type(value).__name__}:{value!r}".encode())


def payload_sha256(payload: dict[str, Any]) -> str:
    """SHA-256 over everything a checkpoint holds but its checksum (tensors by their bytes)."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != "checksum"})
    return h.hexdigest()


def verify_payload(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """A DeepSynthError if the payload's checksum (files written before checksums have none)
    does not match, or if its model weights are not all finite."""
    recorded = payload.get("checksum")
    if recorded is not None:
        digest = recorded.get("sha256") if isinstance(recorded, dict) else None
        if digest != payload_sha256(payload):
            raise DeepSynthError(f"checkpoint {path} is corrupt: its contents do not match "
                                 "their checksum")
    weights = payload.get("model")
    if isinstance(weights, dict):
        for name, t in weights.items():
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() and \
                    not bool(torch.isfinite(t).all()):
                raise DeepSynthError(f"checkpoint {path} has weights that are not finite "
                                     f"(NaN or infinity) in {name}")


def load_checkpoint(
    path: str | os.PathLike, map_location: Any = "cpu"
) -> tuple[DeepSynth, dict[str, Any]]:
    """Rebuild the model from the file alone: (model in eval mode, float32, the full payload)."""
    payload = read_payload(path, map_location)
    try:
        cfg = from_dict(ModelConfig, payload["config"])
        model = DeepSynth(cfg, payload_layout(payload))
        model.load_state_dict(payload["model"])
    except Exception as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DeepSynthError(f"checkpoint {path} does not match its model: {reason}") from e
    device = map_location if isinstance(map_location, str | torch.device) else "cpu"
    return model.to(device).eval(), payload


def payload_layout(payload: dict[str, Any]) -> KeyboardLayout | None:
    """The keyboard layout a checkpoint's model was trained on: the one it stores, or the
    simulator's for a file written before layouts were stored."""
    if "layout" not in payload:
        from deepsynth.sim import keyboard

        return keyboard.layout()
    data = payload["layout"]
    return None if data is None else KeyboardLayout.from_dict(data)


def export_checkpoint(
    src: str | os.PathLike, dst: str | os.PathLike, half: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A checkpoint for shipping: the model and its record (`extra`: preset, steps, validation
    CE, training recipe, data manifest hash), without optimizer or generator states, in float16
    by default. Returns the new `extra`."""
    model, payload = load_checkpoint(src)
    record = dict(payload.get("extra") or {}) | (extra or {}) | {"exported_from": str(src),
                                                              "weights": "float16" if half
                                                              else "float32"}
    save_checkpoint(dst, model, extra=record, half=half)
    return record
