"""What every sub-command shares: one-line errors, warnings, the one place that validates the
numbers of every option, and the one place that resolves output paths.

Numbers (`number_type`, applied by `deepsynth.cli.build_parser` to every option of every
sub-command whose type is int or float): finite, and inside the range `RANGES` gives for the
option's name (a float option not listed must still be finite, an int option not listed must be
>= 0). A bad value is argparse's one-line error, exit code 2.

Output paths (`output_file`, `output_dir`, `output_target`): the rule for an existing file at an
output path is
  - never an input of the same command (compared by device and inode, so a symlink, a hard
    link or another spelling of the same name is caught): refused;
  - never a folder where a file is wanted, nor a file where a folder is wanted: refused;
  - a file DeepSynth made (recognised by its content: the mark our wav, mp4, MIDI and
    checkpoint files carry, or DeepSynth's name in a text file) is the command's own earlier
    output: replaced, but only once the new one is complete (an interrupted command leaves it);
  - any other file: refused unless `--overwrite` is given.
Suffixes are compared without regard to case. The folder written into is created when missing
(and removed again if the command fails before anything else is put in it), and stale temporary
files of ours (`.NAME.PID-XXXX.part`, their process gone) are swept from it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deepsynth.atomic import ensure_output_dir, made_by_deepsynth, sweep_stale_parts
from deepsynth.errors import DeepSynthError
from deepsynth.generate.defaults import MAX_FLOOR

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

MAX_SEED = 2**32 - 1
MAX_INT = 2**53  # larger integers are refused (numpy and the sample counts stay exact)
MAX_SECONDS = 1e6  # about 11 days: longer than any piece, short enough to fit every sample count


def err(msg: str) -> None:
    """One line on stderr (a multi-line message is joined)."""
    line = " ".join(str(msg).split("\n")).strip()
    print(f"deepsynth: error: {line}", file=sys.stderr)


def warn(msg: str) -> None:
    print(f"deepsynth: warning: {msg}", file=sys.stderr)


# --- numbers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """A number's allowed range: lo <= x <= hi (lo < x when `open_lo`)."""

    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False

    def check(self, value: float) -> str | None:
        if self.lo is not None and (value <= self.lo if self.open_lo else value < self.lo):
            return f"must be {'>' if self.open_lo else '>='} {self.lo:g}"
        if self.hi is not None and value > self.hi:
            return f"must be <= {self.hi:g}"
        return None


POSITIVE = Range(0, open_lo=True)
NON_NEGATIVE = Range(0)
COUNT = Range(1)
SEED = Range(0, MAX_SEED)
SECONDS = Range(0, MAX_SECONDS, open_lo=True)
MINUTES = Range(0, MAX_SECONDS / 60, open_lo=True)

# option name (its dest) -> allowed range; the one table for every sub-command
RANGES: dict[str, Range] = {
    "seed": SEED, "seeds": SEED, "camera": SEED,
    "temperature": Range(0, 100), "floor": Range(0, MAX_FLOOR), "postfilter": Range(0, 1),
    "camera_mix": Range(0, 1),
    "start": Range(0, MAX_SECONDS),
    "duration": SECONDS, "seconds": SECONDS,
    "window_seconds": SECONDS, "overlap_seconds": Range(0, MAX_SECONDS),
    "fps": Range(0, 1000, open_lo=True),
    "sample_rate": Range(100, 384_000),
    "workers": Range(0, 1024), "limit": COUNT, "threads": Range(1, 1024),
    "segments": Range(0, 10**7), "excerpts": Range(0, 10**5), "batch_size": Range(1, 10**5),
    "val_segments": Range(1, 10**7), "val_every": Range(0), "log_every": COUNT,
    "epochs": COUNT, "max_steps": COUNT, "steps": COUNT, "lr_decay_every": COUNT,
    "lr_warmup": Range(0, 10**9),
    "max_minutes": MINUTES, "budget_minutes": MINUTES, "slice_minutes": MINUTES,
    "checkpoint_every": NON_NEGATIVE, "checkpoint_minutes": Range(0, MAX_SECONDS / 60),
    "shard_mb": Range(0, 1 << 20),
    "lr": Range(0, 10, open_lo=True), "lr_min": Range(0, 10), "lr_decay_factor": Range(0, 1,
                                                                                      open_lo=True),
    "clip": Range(0, 1e12), "l2": Range(0, 1e6), "peak_tflops": Range(0, 1e9, open_lo=True),
    "port": Range(0, 65535),
    # play and serve
    "block": Range(1, 4000), "horizon": Range(1, 10**7), "max_latency": Range(0, 1e6),
    "max_seconds": SECONDS,
}


def number_type(kind: type, name: str, base: Callable[[str], object] | None = None):
    """An argparse type for option `name`: `kind` (int or float) parsed, finite and in range."""
    rng = RANGES.get(name, None if kind is float else NON_NEGATIVE)
    parse = base or kind

    what = name.replace("_", " ")

    def convert(text: str):
        try:
            value = parse(text)
        except argparse.ArgumentTypeError:
            raise
        except (TypeError, ValueError):
            kind_name = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{what} must be {kind_name}, got {text!r}") from None
        if isinstance(value, int) and abs(value) > MAX_INT:
            raise argparse.ArgumentTypeError(f"{what} is too large, got {text}")
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{what} must be a finite number, got {text!r}")
        if rng is not None and isinstance(value, int | float):
            problem = rng.check(value)
            if problem:
                raise argparse.ArgumentTypeError(f"{what} {problem}, got {text}")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in its messages
    return convert


def validate_numbers(parser: argparse.ArgumentParser) -> None:
    """Put `number_type` on every int/float option of `parser` and its sub-parsers."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                validate_numbers(sub)
            continue
        kind = action.type
        if kind in (int, float):
            action.type = number_type(kind, action.dest)
        elif callable(kind) and getattr(kind, "__name__", "").endswith("_int"):
            action.type = number_type(int, action.dest, kind)


def check_number(name: str, value: float | None) -> float | None:
    """The same check for a number that comes from elsewhere (a checkpoint, a config)."""
    if value is None:
        return None
    if not math.isfinite(value):
        raise DeepSynthError(f"{name} must be a finite number, got {value}")
    rng = RANGES.get(name)
    problem = rng.check(value) if rng is not None else None
    if problem:
        raise DeepSynthError(f"{name} {problem}, got {value}")
    return value


# --- output paths ---------------------------------------------------------------------------


@dataclass
class Command:
    """What the running command protects: its inputs (device, inode) and --overwrite."""

    inputs: set[tuple[int, int]] = field(default_factory=set)
    overwrite: bool = False


_COMMAND = Command()
OUTPUT_DESTS = ("output", "out", "json")  # options that name what a command writes


def begin_command(args: argparse.Namespace) -> None:
    """Record the inputs named by `args` (every existing file an option or argument names,
    other than the outputs) and --overwrite, for the output checks."""
    global _COMMAND
    inputs: set[tuple[int, int]] = set()
    for dest, value in vars(args).items():
        if dest in OUTPUT_DESTS or dest == "func":
            continue
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, str | os.PathLike) and str(item):
                with _suppress():
                    st = os.stat(item)
                    if not os.path.isdir(item):
                        inputs.add((st.st_dev, st.st_ino))
    _COMMAND = Command(inputs, bool(getattr(args, "overwrite", False)))


def protect_inputs(paths: Iterable[str | os.PathLike]) -> None:
    """Also protect these files (inputs found by the command, e.g. MIDI files in a folder)."""
    for p in paths:
        with _suppress():
            st = os.stat(p)
            _COMMAND.inputs.add((st.st_dev, st.st_ino))


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        return exc_type is not None and issubclass(exc_type, OSError | ValueError)


def _is_input(path: Path) -> bool:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) in _COMMAND.inputs


def output_target(path: str | os.PathLike) -> Path:
    """Check a file the command is about to write (the rule in the module doc); its folder
    must exist."""
    p = Path(path)
    if p.is_dir():
        raise DeepSynthError(f"{p}: is a folder, an output file is needed here")
    if p.is_symlink() and not p.exists():
        raise DeepSynthError(f"{p}: is a dangling link")
    if p.exists():
        if _is_input(p):
            raise DeepSynthError(f"{p}: is an input of this command; it would be replaced by "
                                 "the output")
        if not p.is_file():
            raise DeepSynthError(f"{p}: exists and is not a regular file")
        if not _COMMAND.overwrite and not made_by_deepsynth(p):
            raise DeepSynthError(f"{p}: exists and DeepSynth did not make it; give --overwrite "
                                 "to replace it")
    return p


def output_dir(path: str | os.PathLike) -> Path:
    """Create (if needed) and check an output directory; unusable ones are a DeepSynthError."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise DeepSynthError(f"{p}: exists and is not a directory")
    out = ensure_output_dir(p)
    sweep_stale_parts(out)
    return out


def output_store(path: str | os.PathLike) -> Path:
    """`output_dir` for a store: a folder whose manifest.json is not a DeepSynth store's is
    refused (unless --overwrite), so a build never replaces a user's manifest.json."""
    import json

    out = Path(path)
    manifest = out / "manifest.json"
    if manifest.exists() and not _COMMAND.overwrite:
        try:
            ours = json.loads(manifest.read_text()).get("format") == "deepsynth-piano-store"
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise DeepSynthError(f"{manifest}: exists and is not a DeepSynth store's manifest; "
                                 "choose another --out, or give --overwrite")
    return output_dir(out)


RUN_FILES = ("best.pt", "config.json")  # last.pt: the run itself refuses one not its own


def output_run(path: str | os.PathLike) -> Path:
    """`output_dir` for a training run: a checkpoint there that DeepSynth did not make, or a
    config.json that is not a run's, is refused (unless --overwrite)."""
    import json

    out = Path(path)
    for name in RUN_FILES if out.is_dir() and not _COMMAND.overwrite else ():
        p = out / name
        if not p.exists():
            continue
        if name.endswith(".pt"):
            ours = made_by_deepsynth(p)
        else:
            try:
                ours = {"preset", "train", "model"} <= set(json.loads(p.read_text()))
            except (OSError, ValueError, TypeError):
                ours = False
        if not ours:
            raise DeepSynthError(f"{p}: exists and DeepSynth did not make it; choose another "
                                 "--out, or give --overwrite")
    return output_dir(out)


def output_file(path: str | os.PathLike, suffixes: Sequence[str] | None = None) -> Path:
    """An output file: its suffix one of `suffixes` (any case), its folder created, and the
    existing-file rule of the module doc checked."""
    p = Path(path)
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise DeepSynthError(f"{p}: output must end in {' or '.join(suffixes)}")
    if p.is_dir():
        raise DeepSynthError(f"{p}: is a folder, give a file name ending in "
                             f"{' or '.join(suffixes or ['a suffix'])}")
    output_dir(p.parent if str(p.parent) else ".")
    return output_target(p)


def output_targets(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """`output_target` for each of several files in output folders (checked before any work)."""
    return [output_target(p) for p in paths]
