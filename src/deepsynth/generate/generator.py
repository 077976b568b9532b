"""Autoregressive generation with an explicit cache, batched, in chunks.

For each chunk of samples: the frame features (the CNN ran once per unique frame, up front) are
held at audio rate, the conditioning (video encoder, key features) runs in parallel over the
chunk plus the `condition_context` samples of video it reads before it (the empty keyboard
before the piece), so the result equals the conditioning over the whole piece; each decoder
layer's conditioning projection is taken for the chunk, and then the fused decoder steps through
the chunk sample by sample. Memory is bounded by the chunk, not the piece.

Sampling draws its uniform numbers from one random generator per input, seeded from that
input's seed alone, so an input's audio depends on its seed and content only: the same whatever
the chunk size, the batch, or its position in the batch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from deepsynth.audio import float_to_int16
from deepsynth.errors import DeepSynthError
from deepsynth.generate import keycond
from deepsynth.generate.defaults import MAX_FLOOR
from deepsynth.generate.fused import FusedDecoderState, pack_decoder
from deepsynth.generate.postfilter import HarmonicFilter, window_notes
from deepsynth.generate.sources import VideoSource
from deepsynth.layout import N_KEYS
from deepsynth.model.deepsynth import DeepSynth

COND_BUDGET_BYTES = 64 << 20  # per chunk, for the per-layer conditioning of the whole batch
CHUNK_SAMPLES = (64, 4000)  # the fewest and most samples a chunk holds (a clip, not a rate)
MIN_CONDITION = 32  # the fewest samples conditioned at a time (see Conditioner.condition)


@dataclass(frozen=True)
class Window:
    """The samples [start, start + length) of a source to generate."""

    start: int
    length: int


class Conditioner:
    """Per-layer decoder conditioning for chunks of one or more sources (numpy float32).

    Before its first sample a piece shows the empty keyboard (as training items do), so the
    conditioning near the start sees `condition_context` samples of it: a key down at sample 0
    is a press there too."""

    def __init__(self, model: DeepSynth, features: Sequence[list[torch.Tensor] | None]) -> None:
        """`features`: per source, each conditioning path's rows of its unique frames."""
        self.model = model
        conditioned = model.conditioned
        self.context = model.condition_context
        self.hop = model.condition_hop
        self.empty = None  # each path's row of the empty keyboard (shown before the piece)
        if conditioned:  # one more row per path: the features of the empty keyboard
            with torch.no_grad():
                self.empty = model.frame_features(torch.from_numpy(
                    model.layout.render(np.zeros((1, N_KEYS), dtype=bool))))
            features = [[torch.cat([f, e]) for f, e in zip(fs, self.empty, strict=True)]
                        for fs in features]
        self.features = features
        # (L, 2R, C): each layer's 1x1 projection of the conditioning
        self.proj = model.decoder.stack.cond_weights() if conditioned else None
        # key features alone (the shipped model): the compiled loop, projections composed
        self.packed = keycond.pack(model) if conditioned and keycond.supports(model) else None

    @torch.no_grad()
    def chunk(
        self, sources: Sequence[VideoSource], starts: Sequence[int], n: int
    ) -> np.ndarray | None:
        """(B, n, L, 2R) for samples [start_b, start_b + n) of each source."""
        if self.proj is None:
            return None
        out = []
        for src, feats, start in zip(sources, self.features, starts, strict=True):
            lo, hi = self.reads(start, n)
            idx = src.frame_index(lo, hi)
            if lo < 0:
                idx[: -lo] = len(feats[0]) - 1  # before the piece: the empty keyboard
            out.append(self.condition(feats, idx, n))
        return torch.stack(out).numpy()

    def reads(self, start: int, n: int) -> tuple[int, int]:
        """[lo, hi): the samples of video the conditioning of samples [start, start + n) reads
        (lo on the paths' hop grid, so their blocks stay where they are over the whole piece;
        before sample 0 the keyboard is empty; at least MIN_CONDITION samples are conditioned,
        see `condition`). The live generator asks the same."""
        lo = start - self.context
        return lo - lo % self.hop, start + max(n, MIN_CONDITION) + self.model.lookahead

    @torch.no_grad()
    def condition(self, features: list[torch.Tensor], rows: np.ndarray, n: int) -> torch.Tensor:
        """(n, L, 2R): the conditioning of samples [start, start + n), `rows` the row of
        `features` shown at each sample of `reads(start, n)`. The paths compute only the
        conditioned samples (the context before them is read for presses), the same numbers as
        over the whole piece, bit for bit whatever the chunking (tests/test_play.py): a chunk
        of fewer than MIN_CONDITION samples is computed as one of MIN_CONDITION and cut, since
        the CPU's matrix products round a handful of rows differently (measured: 1..7). Key
        features alone go through the compiled loop (`keycond`: exact for any chunk, a few
        ~0.15 ms a call beyond its samples)."""
        m = max(n, MIN_CONDITION)
        if self.packed is not None:
            skip = len(rows) - m - self.model.lookahead
            levels = np.asarray(features[0])
            return torch.from_numpy(keycond.condition(
                self.packed, levels, rows[self.model.lookahead :], skip, n))
        cond = self.model.condition_from_features(features, torch.from_numpy(rows)[None], m)
        return torch.einsum("loc,cn->nlo", self.proj, cond[0])[:n]


@torch.no_grad()
def frame_features(model: DeepSynth, source: VideoSource) -> list[torch.Tensor] | None:
    """Each conditioning path's rows for every unique frame of `source` (None for a model
    without video)."""
    if not model.conditioned:
        return None
    parts = [
        model.frame_features(torch.from_numpy(np.ascontiguousarray(b)))
        for b in source.frame_batches()
    ]
    return [torch.cat(rows) for rows in zip(*parts, strict=True)]


def chunk_length(model: DeepSynth, batch: int, requested: int | None = None) -> int:
    if requested:
        return requested
    blocks = model.decoder.stack.blocks
    per_sample = batch * len(blocks) * blocks[0].conv.out_channels * 4
    return int(np.clip(COND_BUDGET_BYTES // max(per_sample, 1), *CHUNK_SAMPLES))


def decoder_state(model: DeepSynth, batch: int, chunk: int, device: str = "cpu"):
    """The decoder's cache and step loop: fused numba kernel on the CPU, graphed PyTorch else."""
    if torch.device(device).type == "cpu":
        return FusedDecoderState(pack_decoder(model.decoder), model.output, batch)
    from deepsynth.generate.graphed import GraphedDecoderState

    decoder = copy.deepcopy(model.decoder)
    return GraphedDecoderState(decoder, model.output, batch, chunk, device)


def inference_model(model: DeepSynth) -> DeepSynth:
    """`model` itself if it is already in eval mode, float32 and on the CPU, else a copy that
    is: the caller's model is never changed."""
    tensors = [*model.parameters(), *model.buffers()]
    ready = not any(m.training for m in model.modules()) and all(
        t.device.type == "cpu" and (t.dtype == torch.float32 or not t.is_floating_point())
        for t in tensors
    )
    return model if ready else copy.deepcopy(model).eval().float().cpu()


def input_rng(seed: int) -> np.random.Generator:
    """The random generator of one input seeded `seed` (the first child of the seed's sequence,
    as a batch of one has always drawn)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))


@torch.no_grad()
def generate(
    model: DeepSynth,
    sources: Sequence[VideoSource],
    windows: Sequence[Window] | None = None,
    temperature: float = 1.0,
    seed: int | Sequence[int] = 0,
    chunk: int | None = None,
    on_chunk: Callable[[list[np.ndarray]], None] | None = None,
    device: str = "cpu",
    floor: float = 0.0,
    postfilter: float = 1.0,
) -> list[np.ndarray]:
    """Generate int16 audio for each source (as one batch). `floor`: the sampler's probability
    floor (see the output distribution; 0: plain sampling). `postfilter`: the harmonic
    post-filter's gain away from the notes the video shows (`postfilter.py`; 1: off, the
    model's raw output). `on_chunk` receives each new chunk (one int16 array per source, already
    cut to its window) as soon as it is generated (post-filtered: all but its last ~64 ms, which
    come with the next chunk; the last call brings the rest).
    `seed`: one for every input, or one per input; an input's audio depends only on its own
    seed and content, not on the batch. `model` is left as it was (see `inference_model`).

    On the CPU the decoder steps in the fused numba kernel; on another device (CUDA) in
    PyTorch with the step captured in a CUDA graph. The conditioning is computed on the CPU, by
    one torch thread: its convolutions are small, and two threads competing with the sampler
    (or anything else on a 2-core machine) made them 50x slower than one (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _generate(model, sources, windows, temperature, seed, chunk, on_chunk, device,
                         floor, postfilter)
    finally:
        torch.set_num_threads(threads)


def check_floor(floor: float) -> float:
    """The sampling floor, checked: a number from 0 to MAX_FLOOR (DeepSynthError otherwise)."""
    if not 0 <= floor <= MAX_FLOOR:  # NaN too
        raise DeepSynthError(f"floor must be a number from 0 to {MAX_FLOOR:g}, got {floor}")
    return float(floor)


def check_postfilter(gain: float) -> float:
    """The post-filter's gain, checked: a number from 0 to 1 (DeepSynthError otherwise)."""
    if not 0.0 <= gain <= 1.0:  # NaN too
        raise DeepSynthError(f"post-filter gain must be a number from 0 to 1, got {gain}")
    return float(gain)


def _generate(model, sources, windows, temperature, seed, chunk, on_chunk, device, floor,
              gain):
    model = inference_model(model)
    seeds = [seed] * len(sources) if isinstance(seed, int | np.integer) else list(seed)
    if len(seeds) != len(sources):
        raise ValueError(f"{len(seeds)} seeds for {len(sources)} sources")
    if not 0 <= temperature <= 100:  # NaN too: it would sample a constant full-scale signal
        raise DeepSynthError(f"temperature must be a number from 0 to 100, got {temperature}")
    check_floor(floor)
    check_postfilter(gain)
    for s in seeds:
        if not 0 <= int(s) < 2**32:
            raise DeepSynthError(f"seed must be from 0 to {2**32 - 1}, got {s}")
    windows = list(windows or [Window(0, s.n_samples) for s in sources])
    filters = [None] * len(sources)
    if gain < 1.0:
        sr = model.cfg.audio.sample_rate
        filters = [HarmonicFilter(window_notes(s, w.start, w.length, model.layout), sr, gain)
                   for s, w in zip(sources, windows, strict=True)]
    conditioner = Conditioner(model, [frame_features(model, s) for s in sources])
    total = max(w.length for w in windows)
    step = chunk_length(model, len(sources), chunk)
    state = decoder_state(model, len(sources), step, device)
    rngs = [input_rng(int(s)) for s in seeds]
    outputs: list[list[np.ndarray]] = [[] for _ in sources]
    for t in range(0, total, step):
        n = min(step, total - t)
        cond = conditioner.chunk(sources, [w.start + t for w in windows], n)
        uniforms = np.stack([r.random((n, model.output.n_uniforms)) for r in rngs])
        classes, _ = state.run(cond, n, uniforms, temperature, floor=floor)
        pieces = []
        for b, w in enumerate(windows):
            keep = max(0, min(n, w.length - t))
            pcm = float_to_int16(model.output.decode(classes[b, :keep]))
            if filters[b] is not None:
                pcm = filters[b].feed(pcm)
            outputs[b].append(pcm)
            pieces.append(pcm)
        if on_chunk is not None:
            on_chunk(pieces)
    if gain < 1.0:  # the post-filter's last samples
        pieces = [f.finish() for f in filters]
        for out, piece in zip(outputs, pieces, strict=True):
            out.append(piece)
        if on_chunk is not None:
            on_chunk(pieces)
    return [np.concatenate(o) if o else np.zeros(0, np.int16) for o in outputs]


@torch.no_grad()
def score_incremental(
    model: DeepSynth,
    frames: torch.Tensor | None,
    frame_index: torch.Tensor | None,
    audio: torch.Tensor,
    chunk: int = 1000,
) -> torch.Tensor:
    """Teacher-forced logits (B, K, T) computed sample by sample with the cache, in the layout
    of `model.forward(frames, frame_index, audio)`, which they must equal (frame_index as
    forward takes it: extra video context before the audio and the lookahead after it).
    `model` is left as it was."""
    model = inference_model(model)
    B, T = audio.shape
    state = FusedDecoderState(pack_decoder(model.decoder), model.output, B)
    feats = model.frame_features(frames) if model.conditioned else None
    proj = model.decoder.stack.cond_weights() if model.conditioned else None
    cond_all = None if feats is None else model.condition_from_features(feats, frame_index, T)
    out = []
    for t in range(0, T, chunk):
        n = min(chunk, T - t)
        cond = None
        if proj is not None:
            cond = torch.einsum("loc,bcn->bnlo", proj, cond_all[:, :, t : t + n]).numpy()
        forced = audio[:, t : t + n].numpy().astype(np.int64)
        _, logits = state.run(cond, n, forced=forced, keep_logits=True)
        out.append(torch.from_numpy(logits))
    return torch.cat(out, dim=1).transpose(1, 2)
