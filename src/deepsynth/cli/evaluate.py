"""Sub-commands: evaluate (a checkpoint on a store's split -> report folder), sweep (train the
Table 1 presets for one budget and tabulate them beside the paper) and quality (tabulate
evaluated checkpoints by budget and quality)."""

from __future__ import annotations

import sys
from pathlib import Path

from deepsynth.errors import DeepSynthError


def _say(quiet: bool):
    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    return log


def cmd_evaluate(args) -> int:
    from deepsynth.evaluate.report import evaluate

    out = Path(args.output)
    report = evaluate(
        args.checkpoint, args.data, out, split=args.split, segments=args.segments,
        excerpts=args.excerpts, seconds=args.seconds, temperature=args.temperature,
        seed=args.seed, batch_size=args.batch_size, device=_device(args.device),
        transcribe=not args.no_transcribe, soundfont=args.soundfont, log=_say(args.quiet),
    )
    if not args.quiet:
        tf = report.get("teacher_forced")
        if tf:
            print(f"teacher-forced CE {tf['ce_nats']:.3f} nats ({tf['ce_bits']:.3f} bits/sample),"
                  f" accuracy {tf['accuracy']:.4f} over {tf['segments']} {tf['split']} segments"
                  f" (unigram baseline {tf['unigram_ce_nats']:.3f} nats)")
        dist = report.get("distances", {})
        for who in ("generated", "reference"):
            if who in dist:
                m = dist[who]
                print(f"{who}: MR-STFT SC {m['spectral_convergence']:.3f}, log-mag L1 "
                      f"{m['log_magnitude_l1']:.3f}, log-mel {m['log_mel_db']:.2f} dB")
        f1 = report.get("note_f1")
        if f1:
            print("onset F1: " + ", ".join(f"{who} {f1[who]['onset']['f1']:.3f}"
                                           for who in ("generated", "truth", "reference")))
        elif report["excerpts"]:
            print(f"note F1 left out: {report['transcriber']['reason']}")
        print(f"report: {out / 'report.md'}")
    return 0


def _device(name: str) -> str:
    if name != "auto":
        if name.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise DeepSynthError("--device cuda: no CUDA device is available")
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cmd_sweep(args) -> int:
    from deepsynth.evaluate.sweep import run_sweep

    out = Path(args.output)
    result = run_sweep(
        args.data, out, budget_minutes=args.budget_minutes, presets=args.presets,
        device=_device(args.device), seed=args.seed, log=_say(args.quiet),
        progress=not args.quiet,
        config=None if args.val_segments is None else {"val_segments": args.val_segments},
    )
    if not args.quiet:
        print(result["table_markdown"])
        print(f"table: {out / 'table1.md'}")
    return 0


def cmd_quality(args) -> int:
    from deepsynth.atomic import atomic_write_text
    from deepsynth.evaluate.quality import quality_markdown, quality_row

    rows = []
    for spec in args.reports:
        folder, _, label = spec.partition("=")
        rows.append(quality_row(folder, label or None))
    table = quality_markdown(rows)
    print(table, end="")
    if args.output:
        atomic_write_text(Path(args.output), table)
    if args.json:
        import json

        atomic_write_text(Path(args.json), json.dumps(rows, indent=1) + "\n")
    return 0


def register(sub) -> None:
    """Add `evaluate` and `sweep` to the `deepsynth` sub-command parser."""
    p = sub.add_parser(
        "evaluate",
        help="score a checkpoint on a split: CE, generated excerpts, spectral distances, note F1",
        description="Evaluate a trained checkpoint on one split of a store: teacher-forced "
        "cross-entropy and accuracy over fixed segments; K generated excerpts saved as wav "
        "(beside the ground truth and the reference path: video -> notes -> SoundFont) and mp4; "
        "spectral distances; note F1 by transcription (basic-pitch, optional: make eval-deps); "
        "plots; REPORT_DIR/report.md and report.json.",
    )
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="checkpoint (.pt)")
    p.add_argument("--data", required=True, metavar="STORE",
                   help="store built by `deepsynth data build` (e.g. data/piano)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="split to evaluate on (default test)")
    p.add_argument("--segments", type=int, default=100, metavar="N",
                   help="segments for the teacher-forced CE (default 100; 0: skip)")
    p.add_argument("--excerpts", type=int, default=4, metavar="K",
                   help="excerpts to generate (default 4; 0: skip)")
    p.add_argument("--seconds", type=float, default=10.0, metavar="S",
                   help="length of each excerpt (default 10)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature for generation (default 1)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the segment and excerpt choice and of sampling (default 0)")
    p.add_argument("--batch-size", type=int, default=3, metavar="B",
                   help="segments per forward pass for the CE (default 3)")
    p.add_argument("--device", default="cpu", metavar="DEV",
                   help="device for the CE: cpu, cuda or auto (generation runs on the CPU)")
    p.add_argument("--soundfont", metavar="SF2",
                   help="SoundFont for the reference path (default: the simulator's)")
    p.add_argument("--no-transcribe", action="store_true",
                   help="leave out the note F1 (no basic-pitch run)")
    p.add_argument("-o", "--output", required=True, metavar="REPORT_DIR",
                   help="folder for report.md, report.json, excerpts/ and figures/")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
    p.set_defaults(func=cmd_evaluate)

    s = sub.add_parser(
        "sweep",
        help="reproduce a table of the paper (table1: every Table 1 preset, one budget each)",
        description="table1: train each Table 1 row for the same time budget on the store's "
        "train split (one after the other), then tabulate train and validation CE beside the "
        "paper's numbers (SWEEP_DIR/table1.md, table1.json; each run in SWEEP_DIR/NAME/, resumed "
        "when there, so a second sweep trains each row for another budget). On a GPU: the seven "
        "paper presets. On a CPU: stand-ins with the paper's layers and L2 at 1/8 of the "
        "channels and a small frame CNN (cpu-15x16-l2e-2, cpu-15x16, cpu-15x16-l2e-5, "
        "cpu-20x16, cpu-27x16, cpu-27x32, cpu-27x64).",
    )
    s.add_argument("table", choices=("table1",), help="which table (table1)")
    s.add_argument("--data", required=True, metavar="STORE", help="built store (data/piano)")
    s.add_argument("--budget-minutes", type=float, required=True, metavar="M",
                   help="training minutes per preset")
    s.add_argument("--presets", nargs="+", metavar="NAME",
                   help="presets to train instead (any preset or stand-in name)")
    s.add_argument("--device", default="auto", metavar="DEV", help="cpu, cuda or auto")
    s.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    s.add_argument("--val-segments", type=int, metavar="N",
                   help="validation segments per run (default: the recipe's 100, as the paper)")
    s.add_argument("-o", "--output", required=True, metavar="SWEEP_DIR", help="output folder")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress")
    s.set_defaults(func=cmd_sweep)

    q = sub.add_parser(
        "quality",
        help="tabulate evaluated checkpoints: training budget, CE and note F1 beside the ceiling",
        description="One markdown table from evaluation reports (`deepsynth evaluate -o DIR`): "
        "per checkpoint the training budget read from its run folder (steps, samples seen, "
        "minutes, device), best validation CE, teacher-forced CE on the report's split, onset "
        "F1 of the generated excerpts beside the ground truth's (the ceiling) and the reference "
        "path's, and the log-mel distance.",
    )
    q.add_argument("reports", nargs="+", metavar="REPORT_DIR[=LABEL]",
                   help="report folders, each optionally with the label of its row")
    q.add_argument("-o", "--output", metavar="FILE.md", help="also write the table here")
    q.add_argument("--json", metavar="FILE.json", help="write the rows as JSON")
    q.set_defaults(func=cmd_quality)
