"""A model packed into numpy arrays, and generation from it without importing torch.

Importing torch takes about 2 s, most of a short `synthesize`'s start-up. For a model the CPU
generator runs from numpy arrays alone (the decoder packed for the fused kernel, the key
features' projection for `keycond`: the shipped `small` and any model conditioned on key features
alone), those arrays, computed once by torch from the checkpoint (`pack_model`), are kept in a
cache file named after the checkpoint's SHA-256 (`save` / `load`, an .npz of plain arrays and a
JSON record; no pickle). `generate_packed` runs the same loop (`core.run`) with the same checks,
random streams, conditioning and kernels as `generator.generate`, so its audio is the same,
sample for sample (tests/test_packed.py). The cache is only a copy: a missing, stale or damaged
file is ignored and made again from the checkpoint.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deepsynth.atomic import file_sha256, temp_name
from deepsynth.audio import PcmStream
from deepsynth.generate import core
from deepsynth.generate.fused import FusedDecoderState, PackedDecoder
from deepsynth.generate.keycond import PackedKeyConditioning
from deepsynth.generate.sources import VideoSource
from deepsynth.layout import N_KEYS, KeyboardLayout
from deepsynth.samplers import MIX_COMPONENTS, sample_logistic_mix, sample_softmax

if TYPE_CHECKING:
    from deepsynth.model.deepsynth import DeepSynth

FORMAT = "deepsynth-packed"
VERSION = 3  # 3: the decoder's projections of the conditioning, the key features' own (not
#              composed with them); 2: the classes' float levels and the pre-emphasis
# the modules whose code defines what a pack's arrays mean: a pack made by other code is made
# again (its arrays feed compiled loops that do not check their shapes)
CODE = ("deepsynth.generate.fused", "deepsynth.generate.keycond", "deepsynth.generate.packed",
        "deepsynth.generate.simd", "deepsynth.samplers")
SAMPLERS = {"mulaw-softmax": sample_softmax,  # the output distributions a pack can hold
            "mulaw-logistic": sample_logistic_mix}


@dataclass(frozen=True)
class PackedOutput:
    """What the decoder's state needs of the output distribution (`fused.Sampling`)."""

    silence: int
    n_uniforms: int
    sample_one: Callable


@dataclass(frozen=True)
class PackedModel:
    """Everything CPU generation reads of a key-features model, as numpy arrays."""

    checkpoint_sha256: str  # the checkpoint file it was packed from
    sample_rate: int
    lookahead: int  # samples of video the conditioning sees ahead
    context: int  # samples of video before a chunk its conditioning reads
    hop: int
    layout: KeyboardLayout
    decoder: PackedDecoder
    keys: PackedKeyConditioning
    levels: np.ndarray  # (K,) float32: the decoder's signal at every class (`dequantize`)
    preemphasis: float  # the model's pre-emphasis (0: none), undone on output
    output: str  # the output distribution's name (a key of SAMPLERS)
    silence: int
    n_uniforms: int
    extra: dict[str, Any] = field(default_factory=dict)  # the checkpoint's record (temperature)

    @property
    def sampling(self) -> PackedOutput:
        return PackedOutput(self.silence, self.n_uniforms, SAMPLERS[self.output])

    def key_levels(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames (N, H, W) -> (N, 88) float32: 0 at rest, 1 pressed
        (`KeyboardLayout.key_levels`: the numbers of `KeyFeatures.key_levels`, without
        torch)."""
        lay = self.layout
        if tuple(frames.shape[1:]) != lay.shape:
            raise ValueError(f"key features read {lay.shape[1]}x{lay.shape[0]} frames (their "
                             f"layout's), got shape {tuple(frames.shape)}")
        return lay.key_levels(frames)

    def source_levels(self, source: VideoSource) -> np.ndarray:
        """(N + 1, 88) float32: the key levels of every unique frame of `source`, then the
        empty keyboard's (shown before the piece), as `generator.frame_features` and
        `generator.Conditioner` give them to the compiled loop."""
        parts = [self.key_levels(np.ascontiguousarray(b)) for b in source.frame_batches()]
        empty = self.key_levels(self.layout.render(np.zeros((1, N_KEYS), dtype=bool)))
        return np.concatenate([*parts, empty])


def packable(model: DeepSynth) -> bool:
    """Whether the model can be packed: conditioned on key features alone, with an output
    distribution whose sampler a pack knows."""
    from deepsynth.generate import keycond

    return (model.conditioned and keycond.supports(model)
            and model.cfg.output in SAMPLERS)


def pack_model(model: DeepSynth, checkpoint_sha256: str,
               extra: dict[str, Any] | None = None) -> PackedModel:
    """The model's arrays (torch computes them; `model` is left as it was)."""
    from deepsynth.generate import keycond
    from deepsynth.generate.fused import pack_decoder
    from deepsynth.generate.generator import inference_model

    if not packable(model):
        raise ValueError("only a model conditioned on key features alone can be packed")
    model = inference_model(model)
    out = model.output
    return PackedModel(
        checkpoint_sha256=checkpoint_sha256,
        sample_rate=int(model.cfg.audio.sample_rate),
        lookahead=int(model.lookahead),
        context=int(model.condition_context),
        hop=int(model.condition_hop),
        layout=model.layout,
        decoder=pack_decoder(model.decoder),
        keys=keycond.pack(model),
        levels=np.ascontiguousarray(out.dequantize(np.arange(out.n_inputs)), np.float32),
        preemphasis=float(out.preemphasis),
        output=model.cfg.output,
        silence=int(out.silence),
        n_uniforms=int(out.n_uniforms),
        extra=_plain(extra or {}),
    )


def _plain(extra: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able part of a checkpoint's record."""
    return {k: v for k, v in extra.items()
            if isinstance(v, str | int | float | bool) or v is None}


# -- the cache file ---------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where packs are kept: `packed/` in $DEEPSYNTH_CACHE, else in $XDG_CACHE_HOME/deepsynth,
    else in ~/.cache/deepsynth."""
    root = os.environ.get("DEEPSYNTH_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(xdg) / "deepsynth")
    return Path(root) / "packed"


def cache_file(checkpoint_sha256: str) -> Path:
    return cache_dir() / f"{checkpoint_sha256[:40]}.npz"


@cache
def code_fingerprint() -> str:
    """SHA-256 of the source of the modules in CODE."""
    h = hashlib.sha256()
    for name in CODE:
        h.update(Path(importlib.import_module(name).__file__).read_bytes())
    return h.hexdigest()


def _parts(p: PackedModel) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"format": FORMAT, "version": VERSION, "code": code_fingerprint()}
    for name, record in (("decoder", p.decoder), ("keys", p.keys)):
        for f in fields(record):
            v = getattr(record, f.name)
            if isinstance(v, np.ndarray):
                arrays[f"{name}.{f.name}"] = v
            else:
                meta[f"{name}.{f.name}"] = int(v)
    arrays["levels"] = p.levels
    arrays["layout.key_map"] = p.layout.key_map
    meta["layout"] = {k: v for k, v in p.layout.to_dict().items() if k != "key_map"}
    for name in ("checkpoint_sha256", "sample_rate", "lookahead", "context", "hop", "output",
                 "silence", "n_uniforms", "preemphasis", "extra"):
        meta[name] = getattr(p, name)
    return arrays, meta


def save(p: PackedModel, path: str | os.PathLike) -> None:
    """Write the pack (atomically: a temporary file beside it, then renamed; by hand rather than
    with `atomic.atomic_path`, so that a failing command's journal does not remove a cache
    file another run may be using)."""
    arrays, meta = _parts(p)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load(path: str | os.PathLike, checkpoint_sha256: str | None = None) -> PackedModel:
    """The pack at `path` (ValueError if it is not one, or not of that checkpoint)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"][()]))
            arrays = {k: z[k] for k in z.files if k != "meta"}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a packed model ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT \
            or meta.get("version") != VERSION:
        raise ValueError(f"{path}: not a version-{VERSION} packed model")
    if meta.get("code") != code_fingerprint():
        raise ValueError(f"{path}: packed by other code")
    if checkpoint_sha256 is not None and meta.get("checkpoint_sha256") != checkpoint_sha256:
        raise ValueError(f"{path}: packed from another checkpoint")
    try:
        def record(cls, name):
            return cls(**{f.name: arrays[f"{name}.{f.name}"] if f"{name}.{f.name}" in arrays
                          else meta[f"{name}.{f.name}"] for f in fields(cls)})

        layout = KeyboardLayout.from_dict(
            {**meta["layout"], "key_map": arrays["layout.key_map"].astype("<i2").tobytes()})
        packed = PackedModel(
            checkpoint_sha256=str(meta["checkpoint_sha256"]),
            sample_rate=int(meta["sample_rate"]),
            lookahead=int(meta["lookahead"]),
            context=int(meta["context"]),
            hop=int(meta["hop"]),
            layout=layout,
            decoder=record(PackedDecoder, "decoder"),
            keys=record(PackedKeyConditioning, "keys"),
            levels=arrays["levels"],
            preemphasis=float(meta["preemphasis"]),
            output=str(meta["output"]),
            silence=int(meta["silence"]),
            n_uniforms=int(meta["n_uniforms"]),
            extra=dict(meta["extra"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: a damaged packed model ({e})") from None
    if packed.output not in SAMPLERS:
        raise ValueError(f"{path}: an output distribution this version cannot sample")
    _check_shapes(packed, path)
    return packed


def _check_shapes(p: PackedModel, path) -> None:
    """ValueError unless the arrays fit together (the compiled loops index them unchecked)."""
    d, k = p.decoder, p.keys
    n_layers, width = d.conv_b.shape
    classes, residual = d.embed.shape
    skip = d.head1_w.shape[0]
    n_params = d.head2_b.shape[0]  # the head's width: the distribution's parameters
    params = {"mulaw-softmax": classes, "mulaw-logistic": 3 * MIX_COMPONENTS}.get(p.output)
    fits = (width == 2 * residual and n_params == params
            and 0 <= p.silence < classes and p.n_uniforms >= 1
            and d.conv_w.shape == (n_layers, d.kernel, width, residual)
            and d.out_w.shape == (n_layers, residual + skip, residual)
            and d.out_b.shape == (n_layers, residual + skip)
            and d.head1_w.shape == (skip, skip) and d.head1_b.shape == (skip,)
            and d.head2_w.shape == (n_params, skip)
            and d.dilations.shape == (n_layers,) and d.offsets.shape == (n_layers + 1,)
            and p.levels.shape == (classes,) and p.levels.dtype == np.float32
            and 0.0 <= p.preemphasis < 1.0
            and d.cond_w.shape == (n_layers, width, k.channels)
            and k.level_w.shape == (N_KEYS, k.channels)
            and k.trace_w.shape[1:] == k.level_w.shape
            and k.wave_w.shape[1] == 2 and k.wave_w.shape[3] == k.channels
            and k.trace_curves.shape == (len(k.trace_w), k.window)
            and k.osc_curve.shape == (k.window,)
            and k.omega.shape == k.audible.shape == (len(k.wave_w), N_KEYS)
            and k.group.shape == (N_KEYS,)
            and 0 <= k.group.min() <= k.group.max() < k.wave_w.shape[2]
            and all(a.dtype == np.float32
                    for a in (d.embed, d.conv_w, d.cond_w, d.out_w, k.level_w, k.wave_w)))
    if not fits:
        raise ValueError(f"{path}: a packed model whose arrays do not fit together")


def checkpoint_sha256(checkpoint: str | os.PathLike) -> str | None:
    """The checkpoint file's SHA-256, or None if it cannot be read (loading it says why)."""
    try:
        return file_sha256(checkpoint)
    except OSError:
        return None


def cached(checkpoint: str | os.PathLike, sha256: str | None = None) -> PackedModel | None:
    """The pack of this checkpoint file (`sha256`: its hash, if known) from the cache, if one
    was made; None otherwise: none made, a damaged or stale cache file (it is only a copy), or
    a checkpoint that cannot be read."""
    sha = sha256 or checkpoint_sha256(checkpoint)
    if sha is None:
        return None
    try:
        return load(cache_file(sha), sha)
    except Exception:  # noqa: BLE001 - whatever is wrong with a cache file, it is made again
        return None


def store(model: DeepSynth, checkpoint: str | os.PathLike, extra: dict[str, Any] | None = None,
          sha256: str | None = None) -> PackedModel | None:
    """Pack a model loaded from `checkpoint` into the cache, if it can be packed (best effort:
    None when it cannot, or the cache cannot be written). `sha256`: the checkpoint's hash taken
    before it was loaded; if the file has changed since (replaced while it loaded), nothing is
    stored. Sharded checkpoints are not packed (their hash would cover the index alone)."""
    from deepsynth.checkpoint import shard_files

    if not packable(model) or shard_files(checkpoint):
        return None
    sha = checkpoint_sha256(checkpoint)
    if sha is None or (sha256 is not None and sha != sha256):
        return None
    packed = pack_model(model, sha, extra)
    try:
        save(packed, cache_file(sha))
    except OSError:
        return None
    return packed


# -- generation --------------------------------------------------------------------------------


def generate_packed(
    packed: PackedModel,
    sources: Sequence[VideoSource],
    windows: Sequence[core.Window] | None = None,
    temperature: float = 1.0,
    seed: int | Sequence[int] = 0,
    chunk: int | None = None,
    on_chunk: Callable[[list[np.ndarray]], None] | None = None,
    floor: float = 0.0,
    postfilter: float = 1.0,
) -> list[np.ndarray]:
    """`generator.generate` on the CPU for a packed model: the same arguments and the same
    audio, without torch."""
    seeds = core.check_request(len(sources), temperature, seed, floor, postfilter)
    windows = list(windows or [core.Window(0, s.n_samples) for s in sources])
    levels = core.map_sources(packed.source_levels, sources)
    conditioner = core.KeyConditioner(packed.keys, [[lv] for lv in levels], packed.context,
                                      packed.hop, packed.lookahead)
    step = core.chunk_samples(len(sources), packed.keys.channels, chunk)
    state = FusedDecoderState(packed.decoder, packed.sampling, len(sources))
    return core.run(conditioner, state, sources, windows, [core.input_rng(s) for s in seeds],
                    packed.n_uniforms, [PcmStream(packed.levels, packed.preemphasis)
                                        for _ in sources], step, temperature, floor, postfilter,
                    packed.sample_rate, packed.layout, on_chunk, ramp=not chunk)
