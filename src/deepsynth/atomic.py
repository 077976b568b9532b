"""Safe file io. Atomic writes: write beside the target under a temporary name, then rename.

A reader never sees a half-written file, and an interrupted write leaves the old file (or none).

Temporary names are `.NAME.PID-RANDOM.partSUFFIX` beside the target: a file of that form whose
process is gone (killed with -9, say) is swept by `sweep_stale_parts` the next time a command
writes into that folder.

A command can keep a journal (`Journal`, opened by the cli for each command): every file an
atomic write creates where there was none, and every folder `ensure_output_dir` creates, are
recorded, and `Journal.rollback()` removes them again (folders only when they are empty), so a
command that fails leaves nothing behind. Files it replaced stay replaced (the new one is
complete), and nothing is rolled back on an interruption, nor once the command saved work a
later run resumes from (`mark_durable`: a checkpoint, a store's song).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

PART_RE = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}\.part(\.[A-Za-z0-9]+)?$")
OLD_PART_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.part(\.[A-Za-z0-9]+)?$")  # before the pid
OLD_PART_AGE = 3600.0  # seconds: an old-style temporary file this old is a leftover
MARK = b"deepsynth"
# files a command writes beside its main outputs (reports, logs, figures): replaced like ours
REPORT_SUFFIXES = (".json", ".md", ".csv", ".png", ".svg", ".pdf", ".txt", ".html")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- the journal of what a command created -------------------------------------------------


class Journal:
    """Files and folders created by the running command (see the module doc)."""

    active: Journal | None = None

    def __init__(self) -> None:
        self.files: list[Path] = []
        self.dirs: list[Path] = []
        self.durable = False  # work a later run resumes from was saved: nothing is rolled back

    def __enter__(self) -> Journal:
        self._outer, Journal.active = Journal.active, self
        return self

    def __exit__(self, *exc) -> None:
        Journal.active = self._outer

    def rollback(self) -> None:
        if self.durable:
            return
        for f in reversed(self.files):
            with contextlib.suppress(OSError):
                f.unlink()
        for d in sorted(set(self.dirs), key=lambda p: len(p.parts), reverse=True):
            _remove_empty_tree(d)
        self.files.clear()
        self.dirs.clear()


def _remove_empty_tree(d: Path) -> None:
    """Remove folder `d` if it holds nothing but empty folders."""
    if not d.is_dir():
        return
    for dirpath, _, _ in sorted(os.walk(d), key=lambda t: len(t[0]), reverse=True):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


def mark_durable() -> None:
    """The running command saved work a later run resumes from (a checkpoint, a store's
    song): a failure after this leaves what it created (see Journal)."""
    if Journal.active is not None:
        Journal.active.durable = True


def record_created(path: Path, is_dir: bool = False) -> None:
    journal = Journal.active
    if journal is not None:
        (journal.dirs if is_dir else journal.files).append(Path(path))


# --- temporary files ------------------------------------------------------------------------


def temp_name(path: Path, suffix: str = "") -> Path:
    """The temporary name beside `path` (see the module doc)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.part{suffix}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def sweep_stale_parts(folder: str | os.PathLike) -> list[Path]:
    """Remove our temporary files in `folder` whose writer is gone; returns them."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for e in entries:
        if not e.name.startswith(".") or ".part" not in e.name:
            continue
        m = PART_RE.match(e.name)
        stale = False
        if m is not None:
            stale = not _pid_alive(int(m.group(1)))
        elif OLD_PART_RE.match(e.name):
            with contextlib.suppress(OSError):
                stale = now - e.stat(follow_symlinks=False).st_mtime > OLD_PART_AGE
        if stale and e.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError):
                os.unlink(e.path)
                removed.append(Path(e.path))
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "",
                keep_partial: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it goes.

    `suffix` ends the temporary name (some writers pick the format from the extension).
    `keep_partial`: on an interruption (KeyboardInterrupt, SIGTERM) what was written is kept at
    `path`, but only where there was no file: an earlier complete output is never replaced by
    an incomplete one.
    """
    path = Path(path)
    tmp_path = temp_name(path, suffix)
    try:
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path.parent}: no such directory") from None
    os.close(fd)
    try:
        yield tmp_path
        _commit(tmp_path, path)
    except KeyboardInterrupt:
        if keep_partial and not path.exists() and tmp_path.exists():
            _commit(tmp_path, path)
        else:
            tmp_path.unlink(missing_ok=True)
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _commit(tmp_path: Path, path: Path) -> None:
    os.chmod(tmp_path, 0o666 & ~_umask())
    existed = path.exists()
    os.replace(tmp_path, path)
    if not existed:
        record_created(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def ensure_output_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Create (if needed) and check a directory to write into; DeepSynthError if unusable."""
    from deepsynth.errors import DeepSynthError

    out = Path(path)
    missing = []
    probe = out
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DeepSynthError(f"{out}: exists and is not a directory") from None
    except NotADirectoryError:
        raise DeepSynthError(f"{out}: cannot create {what} (a part of the path is a file, "
                             "not a folder)") from None
    except OSError as e:
        raise DeepSynthError(f"{out}: cannot create {what} ({e.strerror})") from None
    if missing:
        record_created(missing[-1], is_dir=True)
    if not out.is_dir():
        raise DeepSynthError(f"{out}: exists and is not a directory")
    if not os.access(out, os.W_OK | os.X_OK):
        raise DeepSynthError(f"{out}: {what} is not writable")
    return out


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# --- what DeepSynth made ----------------------------------------------------------------------


def made_by_deepsynth(path: str | os.PathLike) -> bool:
    """Whether DeepSynth wrote this file, by its content: a wav with our INFO chunk, an mp4
    whose comment is ours, a MIDI file with our text event, a DeepSynth checkpoint; a report's
    text or figure (REPORT_SUFFIXES) counts as ours. Unreadable or foreign files are not."""
    p = Path(path)
    suffix = p.suffix.lower()
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(1 << 16)
            f.seek(max(0, size - 4096))
            tail = f.read()
    except OSError:
        return False
    if suffix == ".wav":
        return head[:4] == b"RIFF" and b"ISFT" in tail and MARK in tail
    if suffix == ".mp4":
        return _mp4_is_ours(p)
    if suffix in (".mid", ".midi"):
        return head[:4] == b"MThd" and MARK in head
    if suffix == ".pt":
        return _checkpoint_is_ours(p, head)
    return suffix in REPORT_SUFFIXES  # a report's own files (the rule: deepsynth.cli.common)


def _mp4_is_ours(p: Path) -> bool:
    try:
        import av

        with av.open(str(p)) as c:
            values = list(c.metadata.values())
    except Exception:
        return False
    return any(str(v).lower().startswith("deepsynth") for v in values)


def _checkpoint_is_ours(p: Path, head: bytes) -> bool:
    import zipfile

    if head[:2] != b"PK":
        return False
    try:
        with zipfile.ZipFile(p) as z:
            names = [n for n in z.namelist() if n.endswith("data.pkl")]
            return bool(names) and b"deepsynth-checkpoint" in z.read(names[0])
    except Exception:
        return False


@contextlib.contextmanager
def atomic_group(paths: list[Path]) -> Iterator[list[Path]]:
    """Temporary paths for several files that belong together (a song's mp4, wav and json):
    all of them replace their targets once every one is written, or none does."""
    tmps = [temp_name(Path(p), Path(p).suffix) for p in paths]
    try:
        yield tmps
        for tmp, path in zip(tmps, paths, strict=True):
            if tmp.exists():
                _commit(tmp, Path(path))
    except BaseException:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        raise
