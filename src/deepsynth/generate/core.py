"""The generation loop without torch: chunks of conditioning, the fused decoder, sampling, the
post-filter. `generator.generate` (a torch model) and `packed.generate_packed` (a model packed
into numpy arrays, no torch imported) both run `run`, with the same checks, the same random
streams and the same conditioning code, so they give the same audio sample for sample.

For each chunk of samples the conditioning runs in parallel over the chunk plus the
`condition_context` samples of video it reads before it (the empty keyboard before the piece),
so the result equals the conditioning over the whole piece; then the fused decoder steps through
the chunk sample by sample. The next chunk's conditioning is computed in a thread while the
decoder runs (both release the GIL: on two cores they overlap). Memory is bounded by two chunks,
not the piece.

Sampling draws its uniform numbers from one random generator per input, seeded from that
input's seed alone, so an input's audio depends on its seed and content only: the same whatever
the chunk size, the batch, or its position in the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepsynth.errors import DeepSynthError
from deepsynth.generate import keycond
from deepsynth.generate.defaults import MAX_FLOOR
from deepsynth.generate.postfilter import HarmonicFilter, window_notes
from deepsynth.generate.sources import VideoSource
from deepsynth.layout import KeyboardLayout

COND_BUDGET_BYTES = 64 << 20  # per chunk, for the conditioning of the whole batch
CHUNK_SAMPLES = (64, 4000)  # the fewest and most samples a chunk holds (a clip, not a rate)
FIRST_CHUNK = 256  # unless asked for a chunk size: the first chunk's samples, then doubling
MIN_CONDITION = 32  # the fewest samples conditioned at a time (see ChunkConditioner.reads)


@dataclass(frozen=True)
class Window:
    """The samples [start, start + length) of a source to generate."""

    start: int
    length: int


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


def check_request(n_sources: int, temperature: float, seed: int | Sequence[int], floor: float,
                  gain: float) -> list[int]:
    """The generation request checked (DeepSynthError for a bad value): the seed of each
    source."""
    seeds = [seed] * n_sources if isinstance(seed, int | np.integer) else list(seed)
    if len(seeds) != n_sources:
        raise ValueError(f"{len(seeds)} seeds for {n_sources} sources")
    if not 0 <= temperature <= 100:  # NaN too: it would sample a constant full-scale signal
        raise DeepSynthError(f"temperature must be a number from 0 to 100, got {temperature}")
    check_floor(floor)
    check_postfilter(gain)
    for s in seeds:
        if not 0 <= int(s) < 2**32:
            raise DeepSynthError(f"seed must be from 0 to {2**32 - 1}, got {s}")
    return [int(s) for s in seeds]


def input_rng(seed: int) -> np.random.Generator:
    """The random generator of one input seeded `seed` (the first child of the seed's sequence,
    as a batch of one has always drawn)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))


def chunk_samples(batch: int, channels: int, requested: int | None = None) -> int:
    """Samples per chunk: `requested`, else as many as COND_BUDGET_BYTES of conditioning
    (`channels` float32 per sample and input) hold, within CHUNK_SAMPLES."""
    if requested:
        return requested
    per_sample = batch * channels * 4
    return int(np.clip(COND_BUDGET_BYTES // max(per_sample, 1), *CHUNK_SAMPLES))


def chunk_starts(total: int, step: int, ramp: bool = False) -> list[int]:
    """Where each chunk of `total` samples starts: every `step` samples, or with `ramp` first
    FIRST_CHUNK samples and each chunk twice the last up to `step`, so that the decoder starts
    once a short chunk's conditioning is ready instead of a whole one's (it waits for the first
    alone: the next is computed beside it). The chunks change no sample."""
    starts, t, n = [], 0, min(FIRST_CHUNK, step) if ramp else step
    while t < total:
        starts.append(t)
        t += n
        n = min(2 * n, step)
    return starts


def map_sources(fn: Callable[[VideoSource], Any], sources: Sequence[VideoSource],
                initializer: Callable[[], None] | None = None) -> list[Any]:
    """[fn(s) for s in sources], over as many threads as numba may use when there are several
    (reading a source's frames and their features release the GIL: on two cores a batch's set-up
    takes half the time)."""
    import numba

    workers = min(len(sources), numba.config.NUMBA_NUM_THREADS)
    if workers < 2:
        return [fn(s) for s in sources]
    with ThreadPoolExecutor(workers, "deepsynth-features", initializer) as pool:
        return list(pool.map(fn, sources))


class ChunkConditioner:
    """The decoder's conditioning (C channels per sample, which each conditioned layer
    projects) for chunks of one or more sources (numpy float32), from
    each source's rows of features for its unique frames (`features`: per source, one array per
    conditioning path, the empty keyboard's row appended last; None: a model without video).

    Before its first sample a piece shows the empty keyboard (as training items do), so the
    conditioning near the start sees `context` samples of it: a key down at sample 0 is a
    press there too. Subclasses give `condition`."""

    def __init__(self, features: Sequence[Sequence[Any]] | None, context: int, hop: int,
                 lookahead: int) -> None:
        self.features = None if features is None else [list(f) for f in features]
        self.context, self.hop, self.lookahead = int(context), int(hop), int(lookahead)

    def reads(self, start: int, n: int) -> tuple[int, int]:
        """[lo, hi): the samples of video the conditioning of samples [start, start + n) reads
        (lo on the paths' hop grid, so their blocks stay where they are over the whole piece;
        before sample 0 the keyboard is empty; at least MIN_CONDITION samples are conditioned,
        see `condition`). The live generator asks the same."""
        lo = start - self.context
        return lo - lo % self.hop, start + max(n, MIN_CONDITION) + self.lookahead

    @property
    def channels(self) -> int:
        """C: the conditioning's channels per sample."""
        raise NotImplementedError

    def condition(self, features: list[Any], rows: np.ndarray, n: int,
                  out: np.ndarray | None = None) -> np.ndarray:
        """(n, C): the conditioning of samples [start, start + n), `rows` the row of
        `features` shown at each sample of `reads(start, n)`; written into `out` if given."""
        raise NotImplementedError

    def thread_start(self) -> None:
        """Called once in the thread that computes the chunks (`run`'s), before the first."""

    def chunk(self, sources: Sequence[VideoSource], starts: Sequence[int], n: int,
              out: np.ndarray | None = None) -> np.ndarray | None:
        """(B, n, C) for samples [start_b, start_b + n) of each source, written into `out` if
        given."""
        if self.features is None:
            return None
        if out is None:
            out = np.empty((len(sources), n, self.channels), np.float32)
        for b, (src, feats, start) in enumerate(zip(sources, self.features, starts,
                                                    strict=True)):
            lo, hi = self.reads(start, n)
            idx = src.frame_index(lo, hi)
            if lo < 0:
                idx[: -lo] = len(feats[0]) - 1  # before the piece: the empty keyboard
            self.condition(feats, idx, n, out[b])
        return out


class KeyConditioner(ChunkConditioner):
    """The conditioning of a model whose only path is the key features, through the compiled
    loop (`keycond`): `features` are each source's key levels (one array (N + 1, 88))."""

    def __init__(self, packed: keycond.PackedKeyConditioning,
                 features: Sequence[Sequence[np.ndarray]], context: int, hop: int,
                 lookahead: int) -> None:
        super().__init__(features, context, hop, lookahead)
        self.packed = packed

    @property
    def channels(self) -> int:
        return self.packed.channels

    def condition(self, features: list[Any], rows: np.ndarray, n: int,
                  out: np.ndarray | None = None) -> np.ndarray:
        """Exact for any chunk (see `keycond`): computed over the columns `reads` gives, the
        context before the conditioned ones read for presses only."""
        skip = len(rows) - max(n, MIN_CONDITION) - self.lookahead
        levels = np.asarray(features[0])
        return keycond.condition(self.packed, levels, rows[self.lookahead :], skip, n, out)


def run(
    conditioner: ChunkConditioner,
    state: Any,  # .run(cond, n, uniforms, temperature, floor=) -> (classes (B, n), _)
    sources: Sequence[VideoSource],
    windows: Sequence[Window],
    rngs: Sequence[np.random.Generator],
    n_uniforms: int,
    to_pcm: Sequence[Callable[[np.ndarray], np.ndarray]],
    step: int,
    temperature: float,
    floor: float,
    gain: float,
    sample_rate: int,
    layout: KeyboardLayout | None,
    on_chunk: Callable[[list[np.ndarray]], None] | None = None,
    ramp: bool = False,
) -> list[np.ndarray]:
    """The loop over chunks: int16 audio for each source's window (see `generator.generate`
    for the arguments' meaning); `to_pcm`: per source, what turns its classes into int16
    samples, chunk after chunk (an `audio.PcmStream`); chunks of `step` samples, with `ramp`
    shorter ones first (`chunk_starts`)."""
    filters = [None] * len(sources)
    if gain < 1.0:
        filters = [HarmonicFilter(window_notes(s, w.start, w.length, layout), sample_rate, gain)
                   for s, w in zip(sources, windows, strict=True)]
    total = max(w.length for w in windows)
    starts = chunk_starts(total, step, ramp)
    ends = [*starts[1:], total]
    outputs: list[list[np.ndarray]] = [[] for _ in sources]
    # two arrays for the chunks' conditioning, in turn: the decoder reads one while the next
    # chunk's is written into the other (fresh ones per chunk cost page faults, measured)
    buffers: list[np.ndarray | None] = [None, None]

    def conditioning(i: int) -> Future:  # chunk i, computed beside the decoder
        t, n, k = starts[i], ends[i] - starts[i], i % 2
        if conditioner.features is not None and buffers[k] is None:
            buffers[k] = np.empty((len(sources), min(step, total), conditioner.channels),
                                  np.float32)
        out = None if buffers[k] is None else buffers[k][:, :n]
        return pool.submit(conditioner.chunk, sources, [w.start + t for w in windows], n, out)

    with ThreadPoolExecutor(1, "deepsynth-condition", conditioner.thread_start) as pool:
        pending = conditioning(0) if total else None
        for i, (t, end) in enumerate(zip(starts, ends, strict=True)):
            n = end - t
            cond = pending.result()
            if i + 1 < len(starts):  # the next chunk's while the decoder runs this one
                pending = conditioning(i + 1)
            uniforms = np.stack([r.random((n, n_uniforms)) for r in rngs])
            classes, _ = state.run(cond, n, uniforms, temperature, floor=floor)
            pieces = []
            for b, w in enumerate(windows):
                keep = max(0, min(n, w.length - t))
                pcm = to_pcm[b](classes[b, :keep])
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
