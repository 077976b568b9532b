"""The on-disk training store: one folder per song plus one manifest for the corpus.

Layout (everything a plain file; arrays are .npy, memory-mappable with np.load(mmap_mode='r')):

    ROOT/manifest.json            the corpus table: settings + one row per song (written last,
                                  atomically) + the songs skipped with their reasons
    ROOT/songs/SONG_ID/audio.npy  int16 (n_samples,): ground-truth audio
    ROOT/songs/SONG_ID/starts.npy int64 (n_changes,): sample where each key state starts (0 first)
    ROOT/songs/SONG_ID/states.npy uint8 (n_changes, 11): the 88-key states, np.packbits(axis=1)
    ROOT/songs/SONG_ID/meta.json  composer, title, duration, clip scale, SHA-256 of the source
                                  MIDI and of every array file, the settings it was built with

Frames are not stored: they are drawn from the key states on demand (keyboard.render).
A song folder is written under a temporary name and renamed into place, so a folder named
SONG_ID is always complete; its meta.json's checksums say whether its arrays are intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsynth.atomic import atomic_write_text, file_sha256, mark_durable
from deepsynth.errors import DeepSynthError
from deepsynth.sim.keyboard import N_KEYS
from deepsynth.sim.keystates import KeyChanges

FORMAT = "deepsynth-piano-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SONGS_DIR = "songs"
META = "meta.json"
ARRAYS = ("audio", "starts", "states")
PACKED_WIDTH = (N_KEYS + 7) // 8  # 11 bytes per key state
TMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"


# --- key states -----------------------------------------------------------------------------


def pack_states(states: np.ndarray) -> np.ndarray:
    """(N, 88) bool -> (N, 11) uint8 (bit 7 of byte 0 is key 0, A0)."""
    states = np.asarray(states, dtype=bool)
    if states.ndim != 2 or states.shape[1] != N_KEYS:
        raise ValueError(f"key states must be (N, {N_KEYS}), got {states.shape}")
    return np.packbits(states, axis=1)


def unpack_states(packed: np.ndarray) -> np.ndarray:
    """(N, 11) uint8 -> (N, 88) bool."""
    return np.unpackbits(np.asarray(packed, dtype=np.uint8), axis=1, count=N_KEYS).astype(bool)


# --- checksums ------------------------------------------------------------------------------


def song_checksum(array_sha256: dict[str, str]) -> str:
    """One checksum for a song: SHA-256 over its arrays' names and file digests."""
    text = "".join(f"{name} {array_sha256[name]}\n" for name in sorted(array_sha256))
    return hashlib.sha256(text.encode()).hexdigest()


# --- one song -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Song:
    """One stored song; the arrays are memory-mapped (read-only) unless opened with mmap=False."""

    id: str
    audio: np.ndarray  # int16 (n_samples,)
    starts: np.ndarray  # int64 (n_changes,)
    packed_states: np.ndarray  # uint8 (n_changes, 11)
    meta: dict

    @property
    def n_samples(self) -> int:
        return len(self.audio)

    @property
    def sample_rate(self) -> int:
        return int(self.meta["sample_rate"])

    def states(self, rows: slice = slice(None)) -> np.ndarray:
        """Unpacked key states (bool, 88 columns) of the change rows `rows`."""
        return unpack_states(self.packed_states[rows])

    def key_changes(self) -> KeyChanges:
        return KeyChanges(np.asarray(self.starts), self.states(), self.sample_rate, self.n_samples)


def song_dir(root: str | os.PathLike, song_id: str) -> Path:
    return Path(root) / SONGS_DIR / song_id


def read_meta(folder: str | os.PathLike) -> dict:
    path = Path(folder) / META
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DeepSynthError(f"{path}: missing") from None
    except (OSError, ValueError) as e:
        raise DeepSynthError(f"{path}: unreadable ({e})") from None


_VERIFIED: set[tuple[str, int, int, int, str]] = set()  # files whose SHA-256 was checked


def _stat_key(path: Path, digest: str) -> tuple[str, int, int, int, str]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, digest)


def check_song(folder: str | os.PathLike, meta: dict, checksum: str | None = None) -> None:
    """A DeepSynthError unless the song's array files have the SHA-256 its meta.json records
    (and its meta the song checksum the manifest records, when `checksum` is given). Each file
    is hashed once per process (while its size, time and inode stay the same); a song written
    before checksums were recorded is not checked."""
    folder = Path(folder)
    arrays = meta.get("arrays")
    if not isinstance(arrays, dict) or not arrays:
        return
    try:
        digests = {name: arrays[name]["sha256"] for name in ARRAYS}
    except (KeyError, TypeError):
        raise DeepSynthError(f"{folder / META}: damaged array list; rebuild the store with "
                             "`deepsynth data build`") from None
    if meta.get("checksum") not in (None, song_checksum(digests)) or \
            (checksum is not None and meta.get("checksum") not in (None, checksum)):
        raise DeepSynthError(f"{folder / META}: does not match the store's manifest (altered?); "
                             "rebuild the song with `deepsynth data build`")
    for name, digest in digests.items():
        path = folder / arrays[name].get("file", f"{name}.npy")
        try:
            key = _stat_key(path, digest)
            if key in _VERIFIED:
                continue
            ok = file_sha256(path) == digest
        except OSError:
            raise DeepSynthError(f"{path}: missing or unreadable; rebuild the store with "
                                 "`deepsynth data build`") from None
        if not ok:
            raise DeepSynthError(f"{path}: altered or corrupt (checksum mismatch); rebuild the "
                                 "store with `deepsynth data build`")
        _VERIFIED.add(key)


def check_songs(root: str | os.PathLike, rows: list[dict]) -> None:
    """`check_song` for each manifest row (what a dataset does when it is opened)."""
    for row in rows:
        folder = song_dir(root, row["id"])
        check_song(folder, read_meta(folder), row.get("checksum"))


def open_song(folder: str | os.PathLike, mmap: bool = True, verify: bool = True,
              checksum: str | None = None) -> Song:
    """Open a song folder; with `verify`, its files are checked against their recorded
    SHA-256 first (`check_song`: once per file and process)."""
    folder = Path(folder)
    meta = read_meta(folder)
    if verify:
        check_song(folder, meta, checksum)
    mode = "r" if mmap else None
    try:
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode=mode) for name in ARRAYS}
    except (OSError, ValueError) as e:
        raise DeepSynthError(f"{folder}: unreadable song arrays ({e})") from None
    return Song(meta.get("id", folder.name), arrays["audio"], arrays["starts"], arrays["states"],
                meta)


def _replace_dir(src: Path, dst: Path) -> None:
    """Put folder `src` at `dst`, replacing any folder there (each step is one rename)."""
    old = None
    if dst.exists():
        old = dst.with_name(f"{OLD_PREFIX}{dst.name}-{uuid.uuid4().hex[:8]}")
        os.rename(dst, old)
    os.rename(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_song(
    folder: str | os.PathLike, audio: np.ndarray, changes: KeyChanges, meta: dict
) -> dict:
    """Write a song folder atomically (temporary folder, then rename); returns its full meta.

    `meta` gets the array descriptions (dtype, shape, SHA-256 of the .npy file) and the song
    checksum added before it is written.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    audio = np.asarray(audio)
    if audio.dtype != np.int16 or audio.ndim != 1:
        raise ValueError(f"audio must be 1-D int16, got {audio.dtype} {audio.shape}")
    if len(audio) != changes.n_samples:
        raise ValueError(f"audio has {len(audio)} samples, key changes {changes.n_samples}")
    arrays = {
        "audio": audio,
        "starts": np.asarray(changes.starts, dtype=np.int64),
        "states": pack_states(changes.states),
    }
    tmp = folder.with_name(f"{TMP_PREFIX}{folder.name}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        described = {}
        for name in ARRAYS:
            path = tmp / f"{name}.npy"
            np.save(path, arrays[name], allow_pickle=False)
            described[name] = {"file": path.name, "dtype": str(arrays[name].dtype),
                               "shape": list(arrays[name].shape), "sha256": file_sha256(path)}
        meta = dict(meta) | {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "n_samples": int(changes.n_samples), "n_key_changes": len(changes),
            "arrays": described,
            "checksum": song_checksum({n: d["sha256"] for n, d in described.items()}),
        }
        (tmp / META).write_text(json.dumps(meta, indent=1) + "\n")
        _replace_dir(tmp, folder)
        mark_durable()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def verify_song(folder: str | os.PathLike, build: dict | None = None) -> tuple[dict | None, str]:
    """Check a song folder: (meta, "") when intact, else (None, why it must be rebuilt).

    Intact means: meta.json readable, built with exactly the settings `build` (when given: the
    simulator settings and the source MIDI's SHA-256), and every array file's SHA-256 equal to the
    one recorded when it was written.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None, "not built"
    try:
        meta = read_meta(folder)
    except DeepSynthError as e:
        return None, str(e)
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        return None, "older store format"
    if build is not None and meta.get("build") != build:
        return None, "built from another source or with other settings"
    arrays = meta.get("arrays", {})
    if sorted(arrays) != sorted(ARRAYS):
        return None, "array list incomplete"
    for name in ARRAYS:
        path = folder / arrays[name]["file"]
        try:
            digest = file_sha256(path)
        except OSError:
            return None, f"{path.name} missing"
        if digest != arrays[name]["sha256"]:
            return None, f"{path.name} checksum mismatch"
    return meta, ""


def clean_partial(root: str | os.PathLike) -> list[Path]:
    """Remove the temporary song folders an interrupted build left behind; returns them."""
    songs = Path(root) / SONGS_DIR
    if not songs.is_dir():
        return []
    stale = [p for p in songs.iterdir()
             if p.is_dir() and p.name.startswith((TMP_PREFIX, OLD_PREFIX))]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


# --- manifest -------------------------------------------------------------------------------


def write_manifest(root: str | os.PathLike, manifest: dict) -> Path:
    path = Path(root) / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=1) + "\n")
    return path


def manifest_sha256(root: str | os.PathLike) -> str:
    """Fingerprint of a built store: the SHA-256 of its manifest (songs, splits, checksums)."""
    try:
        return file_sha256(Path(root) / MANIFEST)
    except OSError:
        raise DeepSynthError(f"{root}: not a built store (no {MANIFEST})") from None


def read_manifest(root: str | os.PathLike) -> dict:
    """The manifest of a built store; a missing or foreign one is a DeepSynthError."""
    path = Path(root) / MANIFEST
    if not Path(root).is_dir():
        raise DeepSynthError(f"{root}: no such store directory")
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DeepSynthError(f"{root}: not a built store (no {MANIFEST}; run "
                             f"`deepsynth data build`)") from None
    except (OSError, ValueError) as e:
        raise DeepSynthError(f"{path}: unreadable ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DeepSynthError(f"{path}: not a DeepSynth store manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DeepSynthError(f"{path}: store format {manifest.get('format_version')} is not "
                             f"{FORMAT_VERSION}: rebuild it with `deepsynth data build`")
    return manifest


def disk_usage(root: str | os.PathLike) -> int:
    """Bytes of all files under `root` (apparent size)."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def store_stats(root: str | os.PathLike) -> dict:
    """Per split and in total: songs, hours, segments, key changes per second; size on disk."""
    from deepsynth.data.splits import SPLITS

    manifest = read_manifest(root)
    sr = manifest["sample_rate"]
    rows: dict[str, dict] = {}
    for name in (*SPLITS, "all"):
        songs = [s for s in manifest["songs"] if name == "all" or s["split"] == name]
        seconds = sum(s["n_samples"] for s in songs) / sr
        changes = sum(s["n_key_changes"] for s in songs)
        rows[name] = {
            "songs": len(songs),
            "hours": round(seconds / 3600, 4),
            "segments": sum(s["segments"] for s in songs),
            "key_changes": changes,
            "key_changes_per_second": round(changes / seconds, 3) if seconds else 0.0,
        }
    audio_bytes = sum(2 * s["n_samples"] for s in manifest["songs"])
    return {
        "root": str(root),
        "sample_rate": sr,
        "seed": manifest["seed"],
        "segments": manifest["segments"],
        "splits": rows,
        "skipped": len(manifest.get("skipped", [])),
        "size_bytes": disk_usage(root),
        "audio_bytes": audio_bytes,
    }
