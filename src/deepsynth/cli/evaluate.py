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
    from deepsynth.cli.common import output_dir, output_targets
    from deepsynth.evaluate.report import evaluate

    out = output_dir(args.output)
    # the excerpts' sound and videos replace only files DeepSynth made (or with --overwrite)
    media = out / "excerpts"
    output_targets(sorted(f for f in media.iterdir() if f.suffix.lower() in (".wav", ".mp4"))
                   if media.is_dir() else [])
    report = evaluate(
        args.checkpoint, args.data, out, split=args.split, segments=args.segments,
        excerpts=args.excerpts, seconds=args.seconds, temperature=args.temperature,
        floor=args.floor, postfilter=args.postfilter, seed=args.seed, batch_size=args.batch_size,
        device=_device(args.device),
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
        nf = report.get("noise_floor_db")
        if nf and nf.get("generated") is not None:
            print("noise floor: " + ", ".join(f"{who} {nf[who]:.1f} dB" for who in
                                              ("generated", "truth", "reference")
                                              if nf.get(who) is not None))
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


def _sweep_command(args) -> list[str]:
    """The sweep's command line, from its parsed arguments (defaults left out)."""
    argv = ["deepsynth", "sweep", args.table]
    for flag, value in (("--data", args.data), ("--budget-minutes", args.budget_minutes),
                        ("--steps", args.steps), ("--presets", args.presets),
                        ("--device", None if args.device == "auto" else args.device),
                        ("--seed", args.seed or None), ("--seeds", args.seeds),
                        ("--val-segments", args.val_segments), ("--val-every", args.val_every),
                        ("--window-seconds", args.window_seconds),
                        ("--overlap-seconds", args.overlap_seconds),
                        ("--threads", args.threads), ("--slice-minutes", args.slice_minutes),
                        ("--peak-tflops", args.peak_tflops)):
        if value is not None:
            argv += [flag, *map(str, value if isinstance(value, list) else [value])]
    return argv + (["--tabulate"] if args.tabulate else []) + ["-o", args.output]


def cmd_sweep(args) -> int:
    from deepsynth.cli.common import output_dir
    from deepsynth.evaluate.sweep import record_command, run_sweep, tabulate, tabulate_only

    out = Path(args.output) if args.tabulate else output_dir(args.output)  # tabulate: as it is
    if args.tabulate:
        result = tabulate_only(out)
    else:
        if args.data is None:
            raise DeepSynthError("--data STORE is needed to train (or --tabulate)")
        config = {k: v for k, v in (("val_segments", args.val_segments),
                                    ("val_every", args.val_every),
                                    ("window_seconds", args.window_seconds),
                                    ("overlap_seconds", args.overlap_seconds)) if v is not None}
        result = run_sweep(
            args.data, out, budget_minutes=args.budget_minutes, presets=args.presets,
            device=_device(args.device), seed=args.seed, log=_say(args.quiet),
            progress=not args.quiet, config=config or None, steps=args.steps,
            seeds=args.seeds, threads=args.threads, slice_minutes=args.slice_minutes,
            peak_tflops=args.peak_tflops,
        )
    record_command(out, _sweep_command(args))
    result |= tabulate(out)  # again, with this command among the ones that made the table
    if not args.quiet:
        print(result["table_markdown"])
        print(f"table: {out / 'table1.md'}")
        if result.get("finished") is False:
            print("the sweep stopped before every run reached --steps: run the same command "
                  "again to go on")
    return 0


def cmd_quality(args) -> int:
    from deepsynth.atomic import atomic_write_text
    from deepsynth.cli.common import output_file
    from deepsynth.evaluate.quality import quality_markdown, quality_row

    md = output_file(args.output) if args.output else None
    js = output_file(args.json) if args.json else None
    rows = []
    for spec in args.reports:
        folder, _, label = spec.partition("=")
        rows.append(quality_row(folder, label or None))
    table = quality_markdown(rows)
    print(table, end="")
    if md is not None:
        atomic_write_text(md, table)
    if js is not None:
        import json

        atomic_write_text(js, json.dumps(rows, indent=1) + "\n")
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
    p.add_argument("--floor", type=float, default=0.0,
                   help="sampling floor for generation (default 0: plain sampling)")
    p.add_argument("--postfilter", type=float, default=1.0, metavar="GAIN",
                   help="harmonic post-filter of the generated sound: its gain away from the "
                        "notes' partials (default 1: off, the model's raw output; synthesize "
                        "uses 0.2)")
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
        description="table1: train each Table 1 row for the same budget (--budget-minutes, or "
        "--steps) on the store's train split (one after the other), then tabulate train and "
        "validation CE at equal steps and at equal training time beside the paper's numbers, "
        "with the paper's three claims checked and a figure (SWEEP_DIR/table1.md, table1.json, "
        "table1.png, made from every run folder in SWEEP_DIR; each run in SWEEP_DIR/NAME/, "
        "resumed when there). On a GPU: the seven paper presets. On a CPU: stand-ins with the "
        "paper's layers and L2 at 1/8 of the channels and a small frame CNN (cpu-15x16-l2e-2, "
        "cpu-15x16, cpu-15x16-l2e-5, cpu-20x16, cpu-27x16, cpu-27x32, cpu-27x64). "
        "--slice-minutes ends the invocation in time at a validation step, to be run again.",
    )
    s.add_argument("table", choices=("table1",), help="which table (table1)")
    s.add_argument("--data", metavar="STORE", help="built store (data/piano); needed to train")
    budget = s.add_mutually_exclusive_group()
    budget.add_argument("--budget-minutes", type=float, metavar="M",
                        help="training minutes per preset (runs in SWEEP_DIR train M more)")
    budget.add_argument("--steps", type=int, metavar="N",
                        help="train every run up to N steps in all (resumed runs go on to N)")
    s.add_argument("--presets", nargs="+", metavar="NAME",
                   help="presets to train instead (any preset or stand-in name)")
    s.add_argument("--device", default="auto", metavar="DEV", help="cpu, cuda or auto")
    s.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    s.add_argument("--seeds", type=int, nargs="+", metavar="S",
                   help="train each preset once per seed (SWEEP_DIR/NAME for the first, "
                   "NAME-seedS for the others); overrides --seed")
    s.add_argument("--val-segments", type=int, metavar="N",
                   help="validation segments per run (default: the recipe's 100, as the paper)")
    s.add_argument("--val-every", type=int, metavar="STEPS",
                   help="also validate every STEPS steps (default: after each epoch only)")
    s.add_argument("--window-seconds", type=float, metavar="S",
                   help="segment length (default: the store's, 5 s, as the paper)")
    s.add_argument("--overlap-seconds", type=float, metavar="S",
                   help="segment overlap (default: the store's, 2 s)")
    s.add_argument("--threads", type=int, metavar="N", help="torch CPU threads per run")
    s.add_argument("--slice-minutes", type=float, metavar="M",
                   help="with --steps and --val-every: end this invocation within M minutes, "
                   "at a validation step; the same command again resumes (from last.pt, in "
                   "16 MiB shards), and the sliced runs end as uncut ones would")
    s.add_argument("--peak-tflops", type=float, metavar="T",
                   help="the device's peak TFLOP/s, for the model FLOPs utilisation written to "
                   "each run's throughput.json (e.g. 989 for an H100 SXM in bf16)")
    s.add_argument("--tabulate", action="store_true",
                   help="train nothing: make the table from the run folders in SWEEP_DIR")
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
