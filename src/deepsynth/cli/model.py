"""Sub-commands about models: info."""

from __future__ import annotations

import json

from deepsynth.config import AudioConfig
from deepsynth.errors import DeepSynthError


def cmd_info(args) -> int:
    from deepsynth.model.info import format_info_table, model_info
    from deepsynth.model.presets import PRESETS, get_preset
    from deepsynth.sim.keyboard import layout

    if args.sample_rate <= 0:
        raise DeepSynthError(f"--sample-rate must be positive, got {args.sample_rate}")
    audio = AudioConfig(sample_rate=args.sample_rate)
    names = list(PRESETS) if args.preset in (None, "all") else [args.preset]
    rows = []
    for name in names:
        preset = get_preset(name)
        info = model_info(preset.model_for(audio), layout())
        rows.append({"preset": name, "l2": preset.l2} | info)
    if args.json:
        print(json.dumps(rows if len(rows) > 1 else rows[0], indent=2, default=str))
    else:
        print(format_info_table(rows))
        if len(rows) == 1:
            print(f"\n{names[0]}: {get_preset(names[0]).description}")
    return 0


def cmd_export(args) -> int:
    from deepsynth.checkpoint import export_checkpoint
    from deepsynth.cli.common import output_file

    out = output_file(args.output, (".pt",))
    more = {}
    if args.data:
        from deepsynth.checkpoint import read_payload
        from deepsynth.data.store import manifest_sha256, read_manifest

        more["data_manifest_sha256"] = manifest_sha256(args.data)
        store_rate = read_manifest(args.data)["sample_rate"]
        model_rate = (read_payload(args.checkpoint).get("config") or {}).get("audio", {}).get(
            "sample_rate")
        if model_rate is not None and int(store_rate) != int(model_rate):
            raise DeepSynthError(f"{args.data} holds {store_rate} Hz audio, but "
                                 f"{args.checkpoint} is a {model_rate} Hz model")
    if args.temperature is not None:
        if args.temperature < 0:
            raise DeepSynthError(f"--temperature must be >= 0, got {args.temperature}")
        more["temperature"] = args.temperature
    if args.floor is not None:
        from deepsynth.generate.core import check_floor

        more["floor"] = check_floor(args.floor)
    record = export_checkpoint(args.checkpoint, out, half=not args.fp32, extra=more)
    size = out.stat().st_size / 2**20
    val = record.get("val_ce")
    val_text = f", validation CE {val:.4f} nats" if isinstance(val, float) else ""
    print(f"{out}: {record.get('preset', '?')} after {record.get('step', '?')} steps"
          f"{val_text}, {record['weights']}, {size:.2f} MiB")
    return 0


def register(sub) -> None:
    """Add `info` and `export` to the `deepsynth` sub-command parser."""
    p = sub.add_parser(
        "export",
        help="package a trained checkpoint for shipping (float16, no optimizer state)",
        description="Write a compact copy of a checkpoint (e.g. runs/small/best.pt): the model, "
        "its config and its record (preset, steps, validation CE, recipe, data manifest hash), "
        "without optimizer or random-generator states.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT.pt")
    p.add_argument("-o", "--output", required=True, metavar="OUT.pt")
    p.add_argument("--data", metavar="DIR",
                   help="the store it was trained on, to record its manifest hash")
    p.add_argument("--fp32", action="store_true", help="keep float32 weights")
    p.add_argument("--temperature", type=float, metavar="T",
                   help="the sampling temperature `synthesize` and `demo` use with this "
                        "checkpoint unless told otherwise (measure it with `evaluate`)")
    p.add_argument("--floor", type=float, metavar="P",
                   help="the sampling floor they use with it unless told otherwise (0..0.1)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "info",
        help="size, receptive field, cost and memory of a model preset",
        description="Parameters, receptive field (measured by gradient, in samples and ms), "
        "multiply-accumulates per generated sample and per second of audio, and the training "
        "memory for a batch of 3 x 5 s, for one preset or all of them, at a sample rate.",
    )
    p.add_argument("--preset", default="all", metavar="NAME",
                   help="a preset name (default: all presets)")
    rate = AudioConfig().sample_rate
    p.add_argument("--sample-rate", type=int, default=rate, metavar="HZ",
                   help=f"audio sample rate the presets are resolved at (default {rate})")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)
