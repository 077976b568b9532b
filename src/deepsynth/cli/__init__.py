"""The `deepsynth` command. The cli package is the only place that parses arguments or prints
for a person; each module registers its sub-commands.

Errors in the input end the command with one line on stderr and exit code 2 (no traceback),
and what the failed command had created is removed again (deepsynth.atomic.Journal). Every
number an option takes is checked in one place (deepsynth.cli.common.RANGES), every output path
too (deepsynth.cli.common.output_file / output_dir). Ctrl-C ends with "interrupted" (exit 130),
SIGTERM the same way with "terminated" (exit 143): both run the same clean-up.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from deepsynth import __version__
from deepsynth.atomic import Journal
from deepsynth.cli import data, demo, evaluate, generate, model, play, serve, sim, train
from deepsynth.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    begin_command,
    err,
    validate_numbers,
)
from deepsynth.errors import DeepSynthError, Terminated

SUBCOMMAND_MODULES = [sim, data, model, train, generate, evaluate, demo, serve, play]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit code 2)."""

    def error(self, message: str):
        command = self.prog.removeprefix("deepsynth").strip()
        where = f"{command}: " if command else ""
        self.exit(EXIT_BAD_INPUT, f"deepsynth: error: {where}{' '.join(message.split())}\n")


def _add_overwrite(parser: argparse.ArgumentParser) -> None:
    """--overwrite on every sub-command that writes (the output-path rule of cli.common)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if subs:
        for action in subs:
            for p in action.choices.values():
                _add_overwrite(p)
        return
    if "--overwrite" not in parser._option_string_actions:
        parser.add_argument("--overwrite", action="store_true",
                            help="replace existing output files that DeepSynth did not make")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="deepsynth",
        description="DeepSynth: a piano's audio from a silent video of its keyboard.",
    )
    parser.add_argument("--version", action="version", version=f"deepsynth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMAND_MODULES:
        module.register(sub)
    validate_numbers(parser)
    _add_overwrite(parser)
    return parser


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def _install_sigterm():
    """SIGTERM raises Terminated (a KeyboardInterrupt) in the main thread; returns the old
    handler (None when not in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _on_sigterm)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a usage error is exit code 2, as any bad input (--help: 0)
        if e.code == EXIT_BAD_INPUT:
            return EXIT_BAD_INPUT
        raise
    func: Callable = args.func
    begin_command(args)
    previous = _install_sigterm()
    journal = Journal()
    try:
        with journal:
            return int(func(args) or 0)
    except DeepSynthError as e:
        journal.rollback()
        err(str(e))
        return EXIT_BAD_INPUT
    except Terminated:
        err("terminated")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        err("interrupted")
        return EXIT_INTERRUPTED
    except (OSError, MemoryError) as e:
        journal.rollback()
        err(_os_message(e))
        return EXIT_BAD_INPUT
    except BaseException:
        journal.rollback()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        sys.stderr.flush()


def _os_message(e: BaseException) -> str:
    if isinstance(e, MemoryError):
        return "out of memory"
    assert isinstance(e, OSError)
    where = e.filename if e.filename is not None else ""
    what = e.strerror or str(e) or type(e).__name__
    return f"{where}: {what}" if where else what
