"""What a configuration costs: parameters, receptive field (measured by gradient), multiply-adds
per generated sample and per second of generated audio (at the config's sample rate) and a
training-memory estimate. Fast for every preset: the big models are
only ever built on the meta device, and the receptive field is probed on a 16-channel copy (it
depends on kernels and dilations only, not on widths)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from deepsynth.config import FrameCNNConfig, ModelConfig
from deepsynth.layout import KeyboardLayout
from deepsynth.model.deepsynth import DeepSynth

TRAIN_BATCH = 3
TRAIN_SECONDS = 5.0  # a training segment (data.segments); it also carries one receptive field
FRAMES_PER_SECOND = 10.0  # assumed rate of key-state changes, for the frame CNN's share


def count_params(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def _span(grad: torch.Tensor) -> int:
    """Length of the stretch of time steps (last axis) with a nonzero gradient."""
    nz = torch.nonzero(grad.abs().sum(dim=tuple(range(grad.dim() - 1))) > 0).flatten()
    if nz.numel() == 0:
        raise RuntimeError("no gradient reached the input")
    if nz[0] == 0:
        raise RuntimeError("probe too short: the receptive field reaches the first time step")
    return int(nz[-1] - nz[0] + 1)


def measure_receptive_field(model: DeepSynth, length: int | None = None) -> tuple[int, int]:
    """(audio, video) receptive fields in samples, by gradient: backpropagate from the logits at
    the last position to a float input standing in for the one-hot audio (resp. to per-sample
    frame features: every sample shows a frame of its own) and count the video samples from the
    earliest with a nonzero gradient to the last one the prediction sees (lookahead included).
    Video is 0 without video. The key features are not measured (read, not learned: no
    gradient reaches their input; see `condition_context`)."""
    gen = torch.Generator().manual_seed(0)
    p = next(model.parameters())
    kw = {"dtype": p.dtype, "device": p.device}
    hop = model.cfg.encoder_hop
    T = length or 2 * (model.receptive_field + model.video_receptive_field) + 16
    # the farthest reach: the earliest conditioning the last prediction reads ends a hop block
    T += (model.decoder.cond_receptive_field - 1 - T) % hop
    dec = model.decoder
    probe = torch.randn(dec.n_params, generator=gen).to(**kw)

    def last_logit(logits: torch.Tensor) -> torch.Tensor:
        return (logits[0, :, -1] * probe).sum()

    def features(requires_grad: bool = False) -> tuple[list[torch.Tensor], torch.Tensor]:
        n = T + model.lookahead
        feats = [torch.randn(n, path.n_frame_features, generator=gen).to(**kw)
                 .requires_grad_(requires_grad) for path in model.paths.values()]
        return feats, torch.arange(n, device=p.device)[None]

    cond = None
    if model.conditioned:
        cond = model.condition_from_features(*features(), T).detach()
    audio = torch.randn(1, dec.n_inputs, T, generator=gen).to(**kw).requires_grad_()
    last_logit(dec(audio, cond)).backward()
    audio_rf = _span(audio.grad)
    if not model.conditioned:
        return audio_rf, 0
    if not any(path.learned for path in model.paths.values()):  # read, not learned: nothing
        return audio_rf, model.video_receptive_field  # to measure
    feats, index = features(requires_grad=True)
    classes = torch.randint(0, dec.n_inputs, (1, T), generator=gen, device=p.device)
    last_logit(dec(classes, model.condition_from_features(feats, index, T))).backward()
    grads = sum(f.grad.abs().sum(dim=1) for f in feats if f.grad is not None)
    reached = torch.nonzero(grads > 0).flatten()
    if reached.numel() == 0 or reached[0] == 0:
        raise RuntimeError("probe too short or no gradient reached the frame features")
    return audio_rf, int(T + model.lookahead - reached[0])  # counted back from T - 1 + L


def thin_copy(cfg: ModelConfig, width: int = 16) -> ModelConfig:
    """The same layer structure (kernels, dilations, layer counts) with `width` channels."""

    def stack(s):
        return dataclasses.replace(s, residual_channels=width, skip_channels=width)

    cnn = FrameCNNConfig(channels=(), input_pool=(1, 1), features=width)
    return dataclasses.replace(
        cfg, cnn=cnn, encoder=stack(cfg.encoder), decoder=stack(cfg.decoder), cond_channels=width
    )


def _macs(fn, *args) -> int:
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops() // 2


def macs_per_sample(model: DeepSynth, probe: int = 64) -> dict[str, int]:
    """Multiply-adds of cached generation at batch 1: per new sample for the decoder and the
    conditioning (the encoder's share per sample when it runs every hop samples, and the key
    features' projection), per unique frame for the CNN. Counts matrix products only (no
    activations). A cached step does what the parallel forward does for one position, so each
    figure is the forward pass over `probe` samples (whole encoder blocks) divided by them."""
    p = next(model.parameters())
    T = probe * model.condition_hop
    kw = {"device": p.device, "dtype": p.dtype}
    out = {"encoder": 0, "cnn_per_frame": 0}
    cond = None
    if model.conditioned:
        cond = torch.zeros(1, model.cfg.cond_channels, T, **kw)
    if model.keys is not None:
        out["encoder"] += model.keys.n_features * model.cfg.cond_channels
    if model.encoder is not None:
        steps = T // model.cfg.encoder_hop  # one encoder step per hop samples
        feature = torch.zeros(1, model.cfg.cnn.features, steps, **kw)
        out["encoder"] += _macs(model.encoder, feature) // T
        frame = torch.zeros(1, *model.layout.shape, dtype=torch.uint8, device=p.device)
        out["cnn_per_frame"] = _macs(model.frame_cnn, frame)
    classes = torch.zeros(1, T, dtype=torch.long, device=p.device)
    out["decoder"] = _macs(model.decoder, classes, cond) // T
    return out


def saved_activation_bytes(model: DeepSynth, batch: int, length: int, frames: int) -> int:
    """Bytes autograd keeps for backward (parameters excluded, shared storage counted once)
    in one training forward + cross-entropy on random inputs."""
    p = next(model.parameters())
    params = {q.untyped_storage()._cdata for q in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s._cdata not in params:
            seen[s._cdata] = s.nbytes()
        return t

    with torch.device(p.device):
        video = None if model.layout is None else torch.zeros(frames, *model.layout.shape,
                                                              dtype=torch.uint8)
        index = torch.zeros(batch, length + model.lookahead, dtype=torch.long)
        audio = torch.zeros(batch, length, dtype=torch.long)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.output.loss(model(video, index, audio), audio)
    return sum(seen.values())


def train_memory(model: DeepSynth, batch: int, length: int, frames: int) -> dict[str, int]:
    """Estimated training memory, float32: saved activations (measured at a short length and
    scaled linearly in samples and in frames) + weights, gradients and Adam's two moments."""
    t1, t2, n1, n2 = 256, 512, 1, 2
    a = saved_activation_bytes(model, batch, t1, n1)
    per_sample = (saved_activation_bytes(model, batch, t2, n1) - a) / (t2 - t1)
    per_frame = 0.0
    if model.conditioned:
        per_frame = saved_activation_bytes(model, batch, t1, n2) - a
    activations = a + per_sample * (length - t1) + per_frame * (frames - n1)
    weights = 4 * 4 * count_params(model)  # fp32 weights, grads, Adam m and v
    return {
        "activations": int(activations),
        "weights_grads_adam": weights,
        "total": int(activations) + weights,
    }


def model_info(cfg: ModelConfig, layout: KeyboardLayout | None = None) -> dict[str, Any]:
    """A flat dict (JSON-ready) describing what `cfg` costs, per sample and per second of audio
    at `cfg.audio.sample_rate` (the CNN's share per second at FRAMES_PER_SECOND)."""
    with torch.device("meta"):
        model = DeepSynth(cfg, layout)
    rate = cfg.audio.sample_rate
    with torch.random.fork_rng(devices=[]):  # deterministic probe, global RNG untouched
        torch.manual_seed(0)
        thin = DeepSynth(thin_copy(cfg), layout).double()
    audio_rf, video_rf = measure_receptive_field(thin)
    macs = macs_per_sample(model)
    length = round(TRAIN_SECONDS * rate) + audio_rf
    frames = 1 if cfg.no_video else max(1, round(TRAIN_BATCH * TRAIN_SECONDS * FRAMES_PER_SECOND))
    mem = train_memory(model, TRAIN_BATCH, length, frames)
    total = count_params(model)
    return {
        "params": total,
        "params_frame_cnn": count_params(model.frame_cnn),
        "params_encoder": count_params(model.encoder) + count_params(model.keys),
        "params_decoder": count_params(model.decoder),
        "rf_samples": audio_rf,
        "rf_ms": round(1000 * audio_rf / rate, 1),
        "video_rf_samples": video_rf,
        "video_rf_ms": round(1000 * video_rf / rate, 1),
        "macs_per_sample": macs["decoder"] + macs["encoder"],
        "macs_decoder_per_sample": macs["decoder"],
        "macs_encoder_per_sample": macs["encoder"],
        "macs_cnn_per_frame": macs["cnn_per_frame"],
        "sample_rate": rate,
        "macs_per_second": rate * (macs["decoder"] + macs["encoder"]),
        "macs_decoder_per_second": rate * macs["decoder"],
        "macs_encoder_per_second": rate * macs["encoder"],
        "macs_cnn_per_second": round(FRAMES_PER_SECOND * macs["cnn_per_frame"]),
        "train_batch": f"{TRAIN_BATCH}x{length} samples, {frames} frames",
        "train_memory_bytes": mem["total"],
        "train_memory_activation_bytes": mem["activations"],
        "train_memory_weight_bytes": mem["weights_grads_adam"],
        "checkpoint_bytes_fp16": 2 * total,
    }


COLUMNS = [  # (key, header, format)
    ("preset", "preset", "{}"),
    ("params", "params", "{:,}"),
    ("rf_samples", "RF", "{}"),
    ("rf_ms", "RF ms", "{:.1f}"),
    ("video_rf_samples", "video RF", "{}"),
    ("macs_per_sample", "MAC/sample", "{:,}"),
    ("macs_per_second", "MMAC/s", "{}"),
    ("macs_cnn_per_frame", "CNN MAC/frame", "{:,}"),
    ("train_memory_bytes", "train mem", "{}"),
]


def _fmt(key: str, spec: str, value: Any) -> str:
    if key == "train_memory_bytes":
        return f"{value / 2**30:.1f} GiB"
    if key == "macs_per_second":
        return f"{value / 1e6:,.1f}"
    return spec.format(value)


def format_info_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table, one row per `model_info` dict (a "preset" key names the row)."""
    cols = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    cells = [[h for _, h, _ in cols]]
    cells += [[_fmt(k, s, r[k]) if k in r else "" for k, _, s in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
