"""Sub-commands about models: info."""

from __future__ import annotations

import json


def cmd_info(args) -> int:
    from deepsynth.model.info import format_info_table, model_info
    from deepsynth.model.presets import PRESETS, get_preset

    names = list(PRESETS) if args.preset in (None, "all") else [args.preset]
    rows = []
    for name in names:
        preset = get_preset(name)
        rows.append({"preset": name, "l2": preset.l2} | model_info(preset.model))
    if args.json:
        print(json.dumps(rows if len(rows) > 1 else rows[0], indent=2, default=str))
    else:
        print(format_info_table(rows))
        if len(rows) == 1:
            print(f"\n{names[0]}: {get_preset(names[0]).description}")
    return 0


def register(sub) -> None:
    """Add `info` to the `deepsynth` sub-command parser."""
    p = sub.add_parser(
        "info",
        help="size, receptive field, cost and memory of a model preset",
        description="Parameters, receptive field (measured by gradient, in samples and ms), "
        "multiply-accumulates per generated sample and the training memory for a batch of "
        "3 x 5 s, for one preset or all of them.",
    )
    p.add_argument("--preset", default="all", metavar="NAME",
                   help="a preset name (default: all presets)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)
