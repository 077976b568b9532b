"""Build the training store from a corpus of MIDI files: simulate every song, store its audio and
key-state changes, write the manifest (see store.py for the layout).

The work per song is one pure function, `build_song(job) -> SongResult`: it reads the job's MIDI
file and writes (or verifies) that song's folder, nothing else. So the same build runs inline, on a
local process pool (`workers`), or on a Dask distributed cluster (`scheduler`; the workers must
see the corpus and the output folder at the same paths, i.e. a shared filesystem).

Resuming: a song whose folder exists, was built from the same MIDI bytes with the same settings
and whose arrays match their recorded checksums is kept ("verified"); anything else is rebuilt.
Song folders appear by atomic rename and the manifest is written last, so a build killed at any
point (kill -9 included) leaves no half-written song behind and the next run continues from there.

A song that cannot be simulated (corrupt MIDI, no notes, ..) is skipped with its reason; the build
fails (DeepSynthError) only when no song at all could be built.
PyAV is never imported here: the build runs where no video library is installed.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from deepsynth.atomic import file_sha256
from deepsynth.config import SimConfig, to_dict
from deepsynth.data import store
from deepsynth.data.segments import SegmentConfig, n_segments
from deepsynth.data.splits import DEFAULT_FRACTIONS, split_of
from deepsynth.errors import DeepSynthError

MIDI_SUFFIXES = (".mid", ".midi")
METADATA_CSV = "metadata.csv"
LOCK_FILE = ".build.lock"


# --- the corpus -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SongSource:
    """One song of the corpus: its id (stable, from its path), MIDI file and labels."""

    id: str
    midi: str  # absolute path
    rel: str  # path relative to the corpus folder (POSIX)
    composer: str = ""
    title: str = ""


def song_id(rel_path: str | os.PathLike) -> str:
    """A song's id from its path in the corpus: `<folder>-<stem>`, or `<stem>` at the top.

    Only the path decides it, so ids (and thus splits) never change when other songs come or go.
    Characters other than letters, digits, '.', '_' and '-' become '_'.
    """
    parts = PurePosixPath(Path(rel_path).as_posix()).with_suffix("").parts
    name = "-".join(parts[-2:])
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return name or "song"


def find_corpus(corpus: str | os.PathLike) -> list[SongSource]:
    """The songs of a corpus folder, in a fixed order.

    With a metadata.csv (columns midi, and optionally composer and title; midi paths relative to
    the folder), its rows in file order; otherwise every .mid/.midi file under the folder, sorted
    by path (composer: the file's folder, title: its stem).
    """
    root = Path(corpus)
    if not root.is_dir():
        raise DeepSynthError(f"{root}: corpus folder not found")
    table = root / METADATA_CSV
    sources: list[SongSource] = []
    if table.is_file():
        try:
            with open(table, newline="") as f:
                rows = list(csv.DictReader(f))
        except (OSError, csv.Error, UnicodeDecodeError) as e:
            raise DeepSynthError(f"{table}: unreadable ({e})") from None
        if rows and "midi" not in rows[0]:
            raise DeepSynthError(f"{table}: has no 'midi' column")
        for row in rows:
            rel = PurePosixPath((row.get("midi") or "").strip())
            if not str(rel) or str(rel) == ".":
                continue
            sources.append(SongSource(song_id(rel), str((root / rel).resolve()), str(rel),
                                      (row.get("composer") or "").strip(),
                                      (row.get("title") or "").strip() or rel.stem))
    else:
        files = sorted(p for p in root.rglob("*")
                       if p.suffix.lower() in MIDI_SUFFIXES and p.is_file())
        for p in files:
            rel = PurePosixPath(p.relative_to(root).as_posix())
            composer = rel.parent.name if len(rel.parts) > 1 else ""
            sources.append(SongSource(song_id(rel), str(p.resolve()), str(rel), composer,
                                      rel.stem))
    if not sources:
        raise DeepSynthError(f"{root}: no MIDI files (.mid, .midi) and no {METADATA_CSV} rows")
    seen: dict[str, str] = {}
    for s in sources:
        if s.id in seen:
            raise DeepSynthError(f"{root}: {seen[s.id]} and {s.rel} would both be song {s.id!r}")
        seen[s.id] = s.rel
    return sources


# --- one song: the pure per-song function ---------------------------------------------------


@dataclass(frozen=True)
class BuildSettings:
    """What decides a song's stored content besides its MIDI bytes."""

    sim: SimConfig
    soundfont: str  # resolved path, read by the workers
    soundfont_sha256: str

    def key(self, source_sha256: str) -> dict:
        """Recorded in each song's meta.json; a song built with another key is rebuilt."""
        return {"format_version": store.FORMAT_VERSION, "sim_config": to_dict(self.sim),
                "soundfont_sha256": self.soundfont_sha256, "source_sha256": source_sha256}


@dataclass(frozen=True)
class SongJob:
    source: SongSource
    root: str  # the store's root folder
    settings: BuildSettings


@dataclass(frozen=True)
class SongResult:
    id: str
    midi: str  # path relative to the corpus
    status: str  # "built", "verified" (already there and intact) or "failed"
    reason: str = ""  # why it failed, or why an existing folder was rebuilt
    meta: dict | None = None  # the song's meta.json (None when failed)
    seconds: float = 0.0  # time spent on it

    @property
    def ok(self) -> bool:
        return self.status != "failed"


def build_song(job: SongJob) -> SongResult:
    """Simulate one song and write its folder, or keep the folder already there when intact.

    Pure in the sense that matters for scheduling: its only input is `job` (+ the files it names),
    its only effect is the song's folder, and running it twice gives the same folder.
    """
    from deepsynth.sim.simulate import simulate

    t0 = time.perf_counter()
    src = job.source
    folder = store.song_dir(job.root, src.id)

    def result(status: str, reason: str = "", meta: dict | None = None) -> SongResult:
        return SongResult(src.id, src.rel, status, reason, meta, time.perf_counter() - t0)

    try:
        source_sha = file_sha256(src.midi)
    except FileNotFoundError:
        return result("failed", f"{src.rel}: no such file")
    except OSError as e:
        return result("failed", f"{src.rel}: cannot read ({e.strerror})")
    build = job.settings.key(source_sha)
    meta, why = store.verify_song(folder, build)
    if meta is not None:
        return result("verified", meta=meta)
    try:
        sim = simulate(src.midi, job.settings.sim, job.settings.soundfont)
        info = sim.metadata()
        meta = store.write_song(folder, sim.audio.audio, sim.changes, {
            "id": src.id,
            "midi": src.rel,
            "composer": src.composer,
            "title": src.title or sim.piece.name,
            "sample_rate": job.settings.sim.audio.sample_rate,
            "seconds": info["seconds"],
            "n_notes": info["n_notes"],
            "clip_scale": info["clip_scale"],
            "peak_before_scaling": info["peak_before_scaling"],
            "pedal": info["pedal"],
            "warnings": info["warnings"],
            "source_sha256": source_sha,
            "build": build,
        })
    except DeepSynthError as e:
        return result("failed", str(e).replace(src.midi, src.rel))
    except Exception as e:  # one strange file must not end a corpus build: report it
        return result("failed", f"{src.rel}: {type(e).__name__}: {e}")
    return result("built", "" if why == "not built" else f"rebuilt: {why}", meta)


# --- the whole corpus -----------------------------------------------------------------------


@dataclass
class BuildReport:
    root: Path
    manifest: dict
    results: list[SongResult] = field(default_factory=list)

    def with_status(self, status: str) -> list[SongResult]:
        return [r for r in self.results if r.status == status]

    @property
    def built(self) -> list[SongResult]:
        return self.with_status("built")

    @property
    def verified(self) -> list[SongResult]:
        return self.with_status("verified")

    @property
    def failed(self) -> list[SongResult]:
        return self.with_status("failed")


def _run_inline(jobs: Sequence[SongJob]) -> Iterator[SongResult]:
    return map(build_song, jobs)


def _run_pool(jobs: Sequence[SongJob], workers: int) -> Iterator[SongResult]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: no fork of a parent that may hold threads (torch, a Dask client, tqdm's monitor)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(build_song, j) for j in jobs]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _run_dask(jobs: Sequence[SongJob], scheduler) -> Iterator[SongResult]:
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        raise DeepSynthError("--scheduler needs Dask: pip install 'dask[distributed]' "
                             "(or the package's 'data' extra)") from None
    own = not isinstance(scheduler, Client)
    try:
        client = Client(scheduler, timeout="20s") if own else scheduler
    except OSError as e:
        raise DeepSynthError(f"cannot reach the Dask scheduler at {scheduler} ({e})") from None
    try:
        futures = client.map(build_song, list(jobs), pure=False)
        try:
            for fut in as_completed(futures):
                yield fut.result()
        finally:
            client.cancel(futures)
    finally:
        if own:
            client.close()


class _Lock:
    """One build at a time per store (an advisory lock; released by the OS if we die)."""

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK_FILE
        self.fd: int | None = None

    def __enter__(self) -> _Lock:
        import fcntl

        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise DeepSynthError(f"{self.path.parent}: another build is writing there") from None
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)


def build_store(
    corpus: str | os.PathLike,
    out: str | os.PathLike,
    *,
    sim: SimConfig = SimConfig(),
    soundfont: str | os.PathLike | None = None,
    seed: int = 0,
    workers: int = 1,
    limit: int | None = None,
    scheduler=None,
    segments: SegmentConfig | None = None,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[SongResult], None] | None = None,
) -> BuildReport:
    """Build (or resume building) the store of `corpus` in `out`; returns what happened.

    workers: songs simulated in parallel on this machine (processes). scheduler: a Dask scheduler
    address (or a dask.distributed Client) to run the songs on instead. limit: only the first N
    songs of the corpus. seed: decides the splits (not the audio). segments: the window and
    overlap whose segment counts the manifest lists (default 5 s and 2 s). on_start(n_songs) and
    on_result(result) report progress (the CLI draws its progress bar with them).
    Raises DeepSynthError for a bad corpus, SoundFont or output folder, and when no song at all
    could be built.
    """
    from deepsynth.sim.synth import load_soundfont

    segments = segments or SegmentConfig()
    if workers < 1:
        raise DeepSynthError(f"workers must be at least 1, got {workers}")
    if limit is not None and limit < 1:
        raise DeepSynthError(f"limit must be at least 1, got {limit}")
    sources = find_corpus(corpus)[:limit]
    sf_path, sf_bytes = load_soundfont(soundfont)  # a bad SoundFont fails before any work
    settings = BuildSettings(sim, str(Path(sf_path).resolve()),
                             hashlib.sha256(sf_bytes).hexdigest())
    root = Path(out)
    try:
        (root / store.SONGS_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DeepSynthError(f"{root}: cannot create the store folder ({e.strerror})") from None

    report = BuildReport(root, {})
    with _Lock(root):
        store.clean_partial(root)
        # longest first (file size as the proxy) so no long song starts last
        ordered = sorted(sources, key=lambda s: -_size(s.midi))
        jobs = [SongJob(s, str(root.resolve()), settings) for s in ordered]
        if on_start is not None:
            on_start(len(jobs))
        if scheduler is not None:
            results: Iterable[SongResult] = _run_dask(jobs, scheduler)
        elif workers > 1 and len(jobs) > 1:
            results = _run_pool(jobs, min(workers, len(jobs)))
        else:
            results = _run_inline(jobs)
        for r in results:
            report.results.append(r)
            if on_result is not None:
                on_result(r)
        order = {s.id: i for i, s in enumerate(sources)}
        report.results.sort(key=lambda r: order[r.id])
        ok = [r for r in report.results if r.ok]
        if not ok:
            raise DeepSynthError(
                f"no song could be built: all {len(sources)} failed"
                + (f" (first: {report.failed[0].reason})" if report.failed else ""))
        report.manifest = make_manifest(ok, report.failed, settings, seed, segments, fractions)
        store.write_manifest(root, report.manifest)
    return report


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def make_manifest(
    ok: Sequence[SongResult], failed: Sequence[SongResult], settings: BuildSettings, seed: int,
    segments: SegmentConfig, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> dict:
    """The corpus table: the settings, one row per stored song, and the skipped songs."""
    sr = settings.sim.audio.sample_rate
    window, hop = segments.window(sr), segments.hop(sr)
    songs = []
    for r in ok:
        m = r.meta
        songs.append({
            "id": r.id,
            "split": split_of(r.id, seed, fractions),
            "midi": m["midi"],
            "composer": m["composer"],
            "title": m["title"],
            "n_samples": m["n_samples"],
            "seconds": m["seconds"],
            "n_key_changes": m["n_key_changes"],
            "segments": n_segments(m["n_samples"], window, hop),
            "clip_scale": m["clip_scale"],
            "checksum": m["checksum"],
        })
    return {
        "format": store.FORMAT,
        "format_version": store.FORMAT_VERSION,
        "sample_rate": sr,
        "sim_config": to_dict(settings.sim),
        "soundfont": Path(settings.soundfont).name,
        "soundfont_sha256": settings.soundfont_sha256,
        "seed": seed,
        "split_fractions": list(fractions),
        "segments": {"window_seconds": segments.window_seconds,
                     "overlap_seconds": segments.overlap_seconds,
                     "window": window, "hop": hop},
        "songs": songs,
        "skipped": [{"id": r.id, "midi": r.midi, "reason": r.reason} for r in failed],
    }
