"""Autoregressive generation of a torch model with an explicit cache, batched, in chunks.

The loop itself (`core.run`: chunks of conditioning, the fused decoder, sampling, the
post-filter) needs no torch; here a `DeepSynth` model gives it its conditioning (the frame
features of each source, the conditioning paths in torch, or the compiled loop of `keycond`
for a model conditioned on key features alone) and its decoder state (the fused numba kernel
on the CPU, a CUDA-graphed PyTorch step on a GPU). `packed.py` runs the same loop from a model
packed into numpy arrays, without importing torch.

Sampling draws its uniform numbers from one random generator per input, seeded from that
input's seed alone, so an input's audio depends on its seed and content only: the same whatever
the chunk size, the batch, or its position in the batch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch

from deepsynth.generate import core, keycond
from deepsynth.generate.core import MIN_CONDITION, Window, input_rng
from deepsynth.generate.fused import FusedDecoderState, pack_decoder
from deepsynth.generate.sources import VideoSource
from deepsynth.layout import N_KEYS
from deepsynth.model.deepsynth import DeepSynth


class Conditioner(core.ChunkConditioner):
    """The decoder's conditioning for chunks of one or more sources (numpy float32), from
    a torch model: `features`, per source, each conditioning path's rows of its unique frames
    (see `frame_features`); the empty keyboard's rows are appended here."""

    def __init__(self, model: DeepSynth, features: Sequence[list[torch.Tensor] | None]) -> None:
        self.model = model
        conditioned = model.conditioned
        self.empty = None  # each path's row of the empty keyboard (shown before the piece)
        if conditioned:  # one more row per path: the features of the empty keyboard
            with torch.no_grad():
                self.empty = model.frame_features(torch.from_numpy(
                    model.layout.render(np.zeros((1, N_KEYS), dtype=bool))))
            features = [[torch.cat([f, e]) for f, e in zip(fs, self.empty, strict=True)]
                        for fs in features]
        super().__init__(features if conditioned else None, model.condition_context,
                         model.condition_hop, model.lookahead)
        self.conditioned = conditioned
        # key features alone (the shipped model): the compiled loop
        self.packed = None
        if conditioned and keycond.supports(model):
            self.packed = keycond.pack(model)
            self._keys = core.KeyConditioner(self.packed, [], self.context, self.hop,
                                             self.lookahead)

    def thread_start(self) -> None:
        """One torch thread in the conditioning's thread too (a thread's own setting)."""
        torch.set_num_threads(1)

    @property
    def channels(self) -> int:
        return self.model.cfg.cond_channels

    @torch.no_grad()
    def condition(self, features: list[torch.Tensor], rows: np.ndarray, n: int,
                  out: np.ndarray | None = None) -> np.ndarray:
        """(n, C): the conditioning of samples [start, start + n), `rows` the row of
        `features` shown at each sample of `reads(start, n)`. The paths compute only the
        conditioned samples (the context before them is read for presses), the same numbers as
        over the whole piece, bit for bit whatever the chunking (tests/test_play.py): a chunk
        of fewer than MIN_CONDITION samples is computed as one of MIN_CONDITION and cut, since
        the CPU's matrix products round a handful of rows differently (measured: 1..7). Key
        features alone go through the compiled loop (`keycond`: exact for any chunk, a few
        ~0.15 ms a call beyond its samples)."""
        if self.packed is not None:
            return self._keys.condition(features, rows, n, out)
        m = max(n, MIN_CONDITION)
        cond = self.model.condition_from_features(features, torch.from_numpy(rows)[None], m)
        cond = cond[0, :, :n].T.numpy()
        if out is None:
            return np.ascontiguousarray(cond)
        out[...] = cond
        return out


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
    return core.chunk_samples(batch, model.cfg.cond_channels, requested)


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


def _generate(model, sources, windows, temperature, seed, chunk, on_chunk, device, floor,
              gain):
    model = inference_model(model)
    seeds = core.check_request(len(sources), temperature, seed, floor, gain)
    windows = list(windows or [Window(0, s.n_samples) for s in sources])
    features = core.map_sources(lambda s: frame_features(model, s), sources,
                                lambda: torch.set_num_threads(1))
    conditioner = Conditioner(model, features)
    step = chunk_length(model, len(sources), chunk)
    state = decoder_state(model, len(sources), step, device)
    output = model.output
    return core.run(conditioner, state, sources, windows, [input_rng(s) for s in seeds],
                    output.n_uniforms, [output.pcm_stream() for _ in sources], step,
                    temperature, floor, gain, model.cfg.audio.sample_rate, model.layout,
                    on_chunk, ramp=not chunk)


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
    cond_all = None if feats is None else model.condition_from_features(feats, frame_index, T)
    out = []
    for t in range(0, T, chunk):
        n = min(chunk, T - t)
        cond = None
        if cond_all is not None:
            cond = cond_all[:, :, t : t + n].transpose(1, 2).contiguous().numpy()
        forced = audio[:, t : t + n].numpy().astype(np.int64)
        _, logits = state.run(cond, n, forced=forced, keep_logits=True)
        out.append(torch.from_numpy(logits))
    return torch.cat(out, dim=1).transpose(1, 2)
