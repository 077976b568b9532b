"""The `deepsynth` command. The cli package is the only place that parses arguments or prints
for a person; each module registers its sub-commands.

Errors in the input end the command with one line on stderr and exit code 2 (no traceback).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from deepsynth import __version__
from deepsynth.cli import data, demo, evaluate, generate, model, play, serve, sim, train
from deepsynth.cli.common import EXIT_BAD_INPUT, err
from deepsynth.errors import DeepSynthError

SUBCOMMAND_MODULES = [sim, data, model, train, generate, evaluate, demo, serve, play]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepsynth",
        description="DeepSynth: a piano's audio from a silent video of its keyboard.",
    )
    parser.add_argument("--version", action="version", version=f"deepsynth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable = args.func
    try:
        return int(func(args) or 0)
    except DeepSynthError as e:
        err(str(e))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        err("interrupted")
        return 130

