"""DeepSynth from Python: load a model, synthesize audio for a keyboard video, MIDI file, key
states or frames, and simulate a MIDI file (what the CLI's `synthesize` and `simulate` do).

    import deepsynth
    synth = deepsynth.load()                     # the shipped model (or a checkpoint, a run)
    audio = synth.synthesize("song.mid", duration=5)          # int16 at synth.sample_rate
    sim = deepsynth.simulate("song.mid", sample_rate=synth.sample_rate)
    audio = synth.synthesize((sim.states, sim.times), seed=1)  # key states + their times (s)

Times are in seconds from the start of the piece: the time each state (or frame) starts being
shown, non-decreasing, rounded to the model's sample grid; before the first one the keyboard is
empty. A piece given as arrays lasts until one second after its last change (as a video
DeepSynth did not write), or as long as `start + duration` asks.

Nothing here imports torch until it is needed (`import deepsynth` stays cheap), and no model
passed in is changed (generation works on a float32, eval-mode copy when it has to).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from deepsynth.errors import DeepSynthError
from deepsynth.generate.defaults import POSTFILTER_GAIN

if TYPE_CHECKING:
    from deepsynth.generate.core import Window
    from deepsynth.generate.live import LiveGenerator
    from deepsynth.generate.sources import VideoSource
    from deepsynth.layout import KeyboardLayout
    from deepsynth.model.deepsynth import DeepSynth

PathLike = Union[str, "os.PathLike[str]"]
Source = Union[PathLike, tuple[np.ndarray, np.ndarray], "Simulated"]
BEST = "best.pt"  # the checkpoint a run folder is loaded from


def default_checkpoint() -> Path:
    """The model shipped with DeepSynth."""
    return Path(__file__).resolve().parent / "checkpoints" / "small.pt"


def checkpoint_path(checkpoint: PathLike | None) -> Path:
    """The file to load: the shipped model for None, a run folder's best.pt, or the path."""
    if checkpoint is None:
        path = default_checkpoint()
        if not path.exists():
            raise DeepSynthError(f"no default checkpoint at {path}: pass a checkpoint")
        return path
    path = Path(checkpoint)
    if path.is_dir():
        if not (path / BEST).exists():
            raise DeepSynthError(f"{path}: a run folder without {BEST}")
        return path / BEST
    return path


def generation_model(
    checkpoint: PathLike | None, device: str = "cpu"
) -> tuple[Any, Any, dict, Path]:
    """What generation on `device` runs from `checkpoint` (see `checkpoint_path`):
    (pack, model, payload, path), one of pack and model None. On the CPU the checkpoint's
    packed model from the cache when there is one (generate/packed.py: no torch imported), else
    the model loaded with torch, whose pack is then cached for the next run; `payload` holds at
    least the checkpoint's "extra" record (recommended temperature and floor)."""
    from deepsynth.generate import packed

    path = checkpoint_path(checkpoint)
    sha = packed.checkpoint_sha256(path) if device == "cpu" else None  # None: loading says why
    pack = packed.cached(path, sha) if sha else None
    if pack is not None:
        return pack, None, {"extra": pack.extra}, path
    from deepsynth.checkpoint import load_checkpoint

    model, payload = load_checkpoint(path)
    if sha is not None:
        packed.store(model, path, payload.get("extra"), sha)
    return None, model, payload, path


def generate_with(pack: Any, model: Any, sources: list, windows: list | None,
                  temperature: float, seed: int | list[int] = 0,
                  **options: Any) -> list[np.ndarray]:
    """`generator.generate` on what `generation_model` gave: the packed model when there is one
    (the CPU, no torch), else the torch model (`options["device"]` where it runs); the same
    audio either way. `options`: generate's keywords (on_chunk, floor, postfilter, chunk)."""
    if pack is not None:
        from deepsynth.generate.packed import generate_packed

        options.pop("device", None)  # a pack is generated on the CPU
        return generate_packed(pack, sources, windows, temperature, seed, **options)
    from deepsynth.generate.generator import generate

    return generate(model, sources, windows, temperature, seed, **options)


def recommended_temperature(requested: float | None, payload: dict[str, Any]) -> float:
    """The temperature asked for, else the one recorded in the checkpoint at export, else 1."""
    if requested is None:
        try:
            requested = float((payload.get("extra") or {}).get("temperature", 1.0))
        except (TypeError, ValueError):
            requested = 1.0
        if not 0 <= requested <= 100:  # NaN too: a checkpoint's bad record is not used
            requested = 1.0
    if not 0 <= requested <= 100:
        raise DeepSynthError(f"temperature must be a number from 0 to 100, got {requested}")
    return requested


def recommended_floor(requested: float | None, payload: dict[str, Any]) -> float:
    """The sampling floor asked for, else the one recorded in the checkpoint at export, else 0
    (plain sampling)."""
    from deepsynth.generate.core import check_floor

    if requested is None:
        try:  # a checkpoint's bad record is not used
            return check_floor(float((payload.get("extra") or {}).get("floor", 0.0)))
        except (TypeError, ValueError, DeepSynthError):
            return 0.0
    return check_floor(requested)


def source_window(source: VideoSource, start: float = 0.0, duration: float | None = None) -> Window:
    """The samples of `source` from `start` seconds, `duration` seconds long (None: to its end;
    cut at its end)."""
    from deepsynth.generate.core import Window

    sr = source.sample_rate
    if not 0 <= start < float("inf"):
        raise DeepSynthError(f"start must be a finite number >= 0, got {start}")
    if duration is not None and not 0 < duration < float("inf"):
        raise DeepSynthError(f"duration must be a finite number > 0, got {duration}")
    first = int(round(start * sr))
    name = source.path if source.path is not None else "input"
    if first < 0:
        raise DeepSynthError(f"start must be >= 0, got {start}")
    if first >= source.n_samples:
        raise DeepSynthError(
            f"{name}: start {start} s is past its end ({source.n_samples / sr:.1f} s)"
        )
    length = source.n_samples - first if duration is None else int(round(duration * sr))
    if length <= 0:
        raise DeepSynthError(f"duration must be positive, got {duration}")
    return Window(first, min(length, source.n_samples - first))


def open_input(path: PathLike, sample_rate: int) -> VideoSource:
    """A video or MIDI file as a source timed at `sample_rate` (the model's); a video timed at
    another rate is refused."""
    from deepsynth.generate.sources import open_source

    src = open_source(path, sample_rate=sample_rate)
    if src.sample_rate != sample_rate:
        raise DeepSynthError(
            f"{src.path}: video is timed at {src.sample_rate} Hz, the model generates "
            f"{sample_rate} Hz"
        )
    return src


def change_samples(times: np.ndarray, n: int, sample_rate: int) -> np.ndarray:
    """(n,) times in seconds -> int64 start samples, checked (non-decreasing, >= 0)."""
    times = np.asarray(times, dtype=np.float64)
    if times.shape != (n,):
        raise DeepSynthError(f"times must have shape ({n},), one per row, got {times.shape}")
    if n == 0:
        raise DeepSynthError("no key states or frames given")
    if not np.all(np.isfinite(times)) or times[0] < 0 or np.any(np.diff(times) < 0):
        raise DeepSynthError("times must be finite, >= 0 and non-decreasing (seconds)")
    return np.round(times * sample_rate).astype(np.int64)


def array_source(
    rows: np.ndarray,
    starts: np.ndarray,
    sample_rate: int,
    layout: KeyboardLayout,
    n_samples: int | None = None,
) -> VideoSource:
    """A source from key states (N, 88) bool or frames (N, H, W) uint8 and the samples (N,)
    where each starts being shown (see `change_samples`). Before the first the keyboard is
    empty; the piece lasts `n_samples`, by default one second past the last change."""
    from deepsynth.generate.sources import FRAME_BATCH, VideoSource
    from deepsynth.layout import N_KEYS

    rows = np.asarray(rows)
    if rows.ndim == 2 and rows.shape[1] == N_KEYS and rows.dtype == bool:
        def draw(lo: int, hi: int) -> np.ndarray:
            return layout.render(rows[lo:hi])
        empty = np.zeros((1, N_KEYS), dtype=bool)
    elif rows.ndim == 3 and rows.dtype == np.uint8:
        if rows.shape[1:] != layout.shape:
            raise DeepSynthError(
                f"frames must be (N, {layout.height}, {layout.width}) for this model's "
                f"keyboard, got {rows.shape}"
            )

        def draw(lo: int, hi: int) -> np.ndarray:
            return rows[lo:hi]
        empty = layout.render(np.zeros((1, N_KEYS), dtype=bool))
    else:
        raise DeepSynthError(
            f"give key states (N, {N_KEYS}) bool or frames (N, H, W) uint8, "
            f"got {rows.dtype} {rows.shape}"
        )
    starts = np.asarray(starts, np.int64)
    if starts[0] > 0:  # the empty keyboard until the first change
        rows = np.concatenate([empty, rows])
        starts = np.r_[0, starts]
    end = int(starts[-1]) + sample_rate
    n_samples = end if n_samples is None else max(int(n_samples), int(starts[-1]) + 1)

    def frames() -> Iterator[np.ndarray]:
        for lo in range(0, len(rows), FRAME_BATCH):
            yield np.ascontiguousarray(draw(lo, lo + FRAME_BATCH))

    return VideoSource(None, "arrays", starts, n_samples, sample_rate, frames)


@dataclass(frozen=True)
class Simulated:
    """A simulated MIDI file: what its keyboard video shows and what the piano sounds like.

    `states` (N, 88) bool: the keys down in each shown state (A0 first); `times` (N,) seconds:
    when each state starts; `audio` int16 at `sample_rate`: the ground truth. `frames()`
    renders the keyboard video's frames (N, 57, 780) uint8."""

    states: np.ndarray
    times: np.ndarray
    audio: np.ndarray
    sample_rate: int
    starts: np.ndarray  # (N,) int64: the sample where each state starts (times * sample_rate)

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.sample_rate

    def frames(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """The video's frames of states [lo, hi) (all by default), (n, 57, 780) uint8."""
        from deepsynth.sim import keyboard

        return keyboard.layout().render(self.states[lo:hi])


def simulate(
    midi: PathLike, sample_rate: int = 4000, soundfont: PathLike | None = None
) -> Simulated:
    """Simulate a MIDI file as `deepsynth simulate` does: the key states its keyboard video
    shows, with their times, and the SoundFont piano's audio at `sample_rate` (the model's:
    `synth.sample_rate`). Writes nothing."""
    from deepsynth.config import AudioConfig, SimConfig
    from deepsynth.sim.simulate import simulate as run

    sim = run(midi, SimConfig(audio=AudioConfig(sample_rate=sample_rate)), soundfont)
    starts = sim.changes.starts.astype(np.int64)
    return Simulated(
        states=sim.changes.states,
        times=starts / sample_rate,
        audio=sim.audio.audio,
        sample_rate=sample_rate,
        starts=starts,
    )


class Synth:
    """A model ready to generate: `synthesize` turns one input into int16 audio at
    `sample_rate`. Build one with `deepsynth.load`, or from a model in memory (left as it is).

    `deepsynth.load` on the CPU gives one backed by the checkpoint's packed model when the cache
    has it (generate/packed.py): `synthesize` then runs without torch, the same audio; `model`
    (and `stream`, which needs it) loads the torch model from the checkpoint on first use."""

    def __init__(
        self,
        model: DeepSynth | None,
        temperature: float = 1.0,
        device: str = "cpu",
        checkpoint: Path | None = None,
        floor: float = 0.0,
        packed: Any = None,
    ) -> None:
        if model is None and (packed is None or checkpoint is None):
            raise ValueError("a Synth needs a model, or a packed model and its checkpoint")
        self._model = model
        self.packed = packed  # a generate.packed.PackedModel, or None
        self.temperature = recommended_temperature(temperature, {})
        self.floor = recommended_floor(floor, {})
        self.device = device
        self.checkpoint = checkpoint

    @property
    def model(self) -> DeepSynth:
        """The torch model (loaded from the checkpoint on first use if the Synth is packed)."""
        if self._model is None:
            from deepsynth.checkpoint import load_checkpoint

            self._model = load_checkpoint(self.checkpoint)[0]
        return self._model

    @property
    def sample_rate(self) -> int:
        """Samples per second of the audio it generates (and of the times it is given)."""
        if self._model is None:
            return self.packed.sample_rate
        return self.model.cfg.audio.sample_rate

    def __repr__(self) -> str:
        where = self.checkpoint.name if self.checkpoint else "a model in memory"
        return (f"Synth({where}, {self.sample_rate} Hz, temperature {self.temperature}, "
                f"floor {self.floor})")

    def source(self, source: Source | VideoSource, n_samples: int | None = None) -> VideoSource:
        """What `synthesize` conditions on, from any input it takes (a source it made before
        is taken as it is: a video read once serves several calls)."""
        from deepsynth.generate.sources import VideoSource

        sr = self.sample_rate
        if isinstance(source, VideoSource):
            return source
        if isinstance(source, Simulated):
            if source.sample_rate != sr:
                raise DeepSynthError(
                    f"simulated at {source.sample_rate} Hz, the model generates {sr} Hz"
                )
            n = len(source.audio) if n_samples is None else max(n_samples, len(source.audio))
            return array_source(source.states, source.starts, sr, self._layout(), n)
        if isinstance(source, tuple):
            if len(source) != 2:
                raise DeepSynthError("give (key states or frames, times in seconds)")
            rows = np.asarray(source[0])
            starts = change_samples(source[1], len(rows), sr)
            return array_source(rows, starts, sr, self._layout(), n_samples)
        if isinstance(source, str | os.PathLike):
            return open_input(source, sr)
        raise DeepSynthError(
            f"source must be a path, (states or frames, times) or a Simulated, got "
            f"{type(source).__name__}"
        )

    def _layout(self) -> KeyboardLayout:
        if self._model is None:
            return self.packed.layout
        if self.model.layout is not None:
            return self.model.layout
        from deepsynth.sim import keyboard

        return keyboard.layout()

    def synthesize(
        self,
        source: Source,
        start: float = 0.0,
        duration: float | None = None,
        temperature: float | None = None,
        seed: int = 0,
        progress: Callable[[int, int], None] | None = None,
        floor: float | None = None,
        postfilter: float | None = None,
    ) -> np.ndarray:
        """Generate the audio (n,) int16 at `sample_rate` of `source` from `start` seconds,
        `duration` seconds long (None: to its end). `source`: a video or MIDI path; a tuple
        (key states (N, 88) bool, times (N,) s) or (frames (N, H, W) uint8, times (N,) s);
        or what `deepsynth.simulate` returned. `temperature` None: the model's recommended
        one; 0 picks the most likely sample. `floor` None: the model's recommended probability
        floor (drawn classes less likely than it are dropped; 0: plain sampling). The same
        seed and input give the same audio. `postfilter`: the harmonic post-filter's gain away
        from the partials of the notes the video shows (None: 0.2, -14 dB; 1: off, the model's
        raw output, which is what `stream` gives).
        `progress(done, total)` is called with the samples generated so far, chunk by chunk."""
        temperature = self.temperature if temperature is None else temperature
        temperature = recommended_temperature(temperature, {})
        floor = recommended_floor(self.floor if floor is None else floor, {})
        n = None
        if duration is not None and isinstance(source, tuple | Simulated):
            n = int(round((start + duration) * self.sample_rate))
        src = self.source(source, n)
        win = source_window(src, start, duration)
        on_chunk = None
        if progress is not None:
            done = [0]

            def on_chunk(pieces: list[np.ndarray]) -> None:
                done[0] += len(pieces[0])
                progress(done[0], win.length)

        gain = POSTFILTER_GAIN if postfilter is None else float(postfilter)
        pack = self.packed if self.device == "cpu" else None
        return generate_with(pack, None if pack else self.model, [src], [win], temperature,
                             seed, on_chunk=on_chunk, device=self.device, floor=floor,
                             postfilter=gain)[0]

    def stream(
        self,
        temperature: float | None = None,
        seed: int = 0,
        block: int | None = None,
        background: bool = False,
    ) -> LiveGenerator:
        """A live generator (`deepsynth play`'s): give it the key states as they happen with
        `add_change(sample, states (88,) bool)` and take the audio with `next_block()` (int16,
        `block` samples; the changes before `needed()` must be known first). For the same key
        changes and seed its audio is what `synthesize((states, times))` makes, sample for
        sample. `background`: compute the conditioning in a thread of its own. Close it (or
        use it in a `with` block) to stop that thread and give torch its threads back."""
        from deepsynth.generate.live import DEFAULT_BLOCK, LiveGenerator

        temperature = self.temperature if temperature is None else temperature
        temperature = recommended_temperature(temperature, {})
        return LiveGenerator(self.model, temperature, seed, block=block or DEFAULT_BLOCK,
                             background=background, layout=self._layout(), floor=self.floor)

    def write_video(
        self,
        path: PathLike,
        source: Source | VideoSource,
        audio: np.ndarray,
        start: float = 0.0,
        lossless: bool = False,
    ) -> Path:
        """Write the keyboard video of `source` from `start` seconds, as long as `audio`
        (int16 at `sample_rate`), with `audio` as its sound: an mp4 every player opens (H.264
        High, yuv420p, AAC), or the exact lossless gray stream with `lossless`. Returns `path`.
        """
        from deepsynth.generate.outputs import write_mp4

        audio = np.asarray(audio)
        if audio.ndim != 1 or audio.dtype != np.int16 or len(audio) == 0:
            raise DeepSynthError(f"audio must be (n,) int16 samples, got {audio.dtype} "
                                 f"{audio.shape}")
        n = len(audio)
        first = int(round(start * self.sample_rate))
        if isinstance(source, tuple | Simulated):
            src = self.source(source, first + n)
        else:
            src = self.source(source)
        window = source_window(src, start, n / self.sample_rate)
        if window.length != n:
            raise DeepSynthError(f"{len(audio)} samples from {start} s run past the input's end "
                                 f"({src.n_samples / self.sample_rate:.2f} s)")
        write_mp4(path, src, window, audio, lossless=lossless)
        return Path(path)


def load(checkpoint: PathLike | None = None, device: str = "cpu") -> Synth:
    """A `Synth` for a checkpoint: the model shipped with DeepSynth by default, else a
    checkpoint file or a training run's folder (its best.pt). `device`: "cpu", or "cuda" to
    run the decoder in a CUDA graph. Its temperature and sampling floor are the ones the
    checkpoint recommends."""
    if device not in ("cpu", "cuda"):
        raise DeepSynthError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise DeepSynthError("device 'cuda': no CUDA device is available here")
    pack, model, payload, path = generation_model(checkpoint, device)
    return Synth(model, recommended_temperature(None, payload), device, path,
                 recommended_floor(None, payload), packed=pack)
