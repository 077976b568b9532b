"""Safe file io. Atomic writes: write beside the target under a temporary name, then rename.

A reader never sees a half-written file, and an interrupted write leaves the old file (or none).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it goes.

    `suffix` ends the temporary name (some writers pick the format from the extension).
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}",
                                   dir=path.parent)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path.parent}: no such directory") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def ensure_output_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Create (if needed) and check a directory to write into; DeepSynthError if unusable."""
    from deepsynth.errors import DeepSynthError

    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DeepSynthError(f"{out}: exists and is not a directory") from None
    except OSError as e:
        raise DeepSynthError(f"{out}: cannot create {what} ({e.strerror})") from None
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
