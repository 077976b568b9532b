"""What every sub-command shares: one-line errors, warnings, output paths."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from deepsynth.atomic import ensure_output_dir
from deepsynth.errors import DeepSynthError

EXIT_BAD_INPUT = 2


def err(msg: str) -> None:
    print(f"deepsynth: error: {msg}", file=sys.stderr)


def warn(msg: str) -> None:
    print(f"deepsynth: warning: {msg}", file=sys.stderr)


def output_dir(path: str | os.PathLike) -> Path:
    """Create (if needed) and check an output directory; unusable ones are a DeepSynthError."""
    return ensure_output_dir(path)


def output_file(path: str | os.PathLike, suffixes: Sequence[str]) -> Path:
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise DeepSynthError(f"{p}: output must end in {' or '.join(suffixes)}")
    output_dir(p.parent if str(p.parent) else ".")
    return p


