"""Sub-command `train`: train a preset on a built store (the paper's recipe by default), resume
an interrupted run exactly, on a CPU, one GPU or many (torchrun)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from deepsynth.errors import DeepSynthError

# recipe flags (dest -> TrainConfig field); only those given on the command line are passed on,
# so a resumed run keeps its checkpoint's recipe unless asked otherwise
RECIPE = {
    "lr": "lr", "lr_decay_every": "lr_decay_every", "lr_decay_factor": "lr_decay_factor",
    "lr_min": "lr_min", "lr_warmup": "lr_warmup", "batch_size": "batch_size",
    "clip": "grad_clip", "l2": "l2",
    "epochs": "epochs", "seed": "seed", "val_segments": "val_segments", "val_every": "val_every",
    "log_every": "log_every", "window_seconds": "window_seconds",
    "overlap_seconds": "overlap_seconds", "no_video": "no_video", "camera_mix": "camera_mix",
    "input_noise": "input_noise",
    "precision": "precision",
    "compile": "compile",
}


def cmd_train(args) -> int:
    from deepsynth.train import RunOptions, train

    overrides = {field: getattr(args, dest) for dest, field in RECIPE.items()
                 if getattr(args, dest) is not None}
    resume = "always" if args.resume else "auto" if args.auto_resume else "never"
    try:
        options = RunOptions(
            device=args.device, resume=resume, max_steps=args.max_steps,
            max_minutes=args.max_minutes, checkpoint_every=args.checkpoint_every,
            checkpoint_minutes=args.checkpoint_minutes, shard_mb=args.shard_mb,
            workers=args.workers, resident_data=args.resident_data, threads=args.threads,
            tensorboard=not args.no_tensorboard,
            progress=not args.quiet,
        )
    except ValueError as e:
        raise DeepSynthError(str(e)) from None
    init_from = None
    if args.init_from is not None:
        if args.resume:
            raise DeepSynthError("--init-from starts a fresh run; --resume continues one (use "
                                 "--auto-resume to start from it only when there is no last.pt)")
        from deepsynth.api import checkpoint_path

        shipped = args.init_from == "shipped" and not Path(args.init_from).exists()
        init_from = checkpoint_path(None if shipped else args.init_from)
    out = args.out or (f"runs/{args.preset}" if args.preset else None)
    if out is None:
        raise DeepSynthError("give --out (the run folder), or --preset to default to runs/PRESET")
    from deepsynth.cli.common import output_run

    output_run(out)  # a file, a place that cannot be written, a user's files: refused first
    result = train(args.data, out, args.preset, overrides, options, init_from)
    if result.rank != 0:
        return 0
    if result.stopped == "done":
        print(f"{result.out}: nothing left to do (step {result.step}, epoch {result.epoch} of "
              f"{result.config.epochs}); raise --epochs or --max-steps to go on")
        return 0
    best = (f"best val CE {result.best_val_ce:.4f} nats "
            f"({result.best_val_ce / math.log(2):.3f} bits) at step {result.best_step}"
            if math.isfinite(result.best_val_ce) else "no validation yet")
    print(f"{result.out}: stopped ({result.stopped}) at step {result.step}, epoch "
          f"{result.epoch}; {best}")
    print(f"  {result.last} (resume with --resume), {result.best}, "
          f"{result.out / 'metrics.csv'}, {result.out / 'loss.png'}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def register(sub) -> None:
    """Add `train` to the `deepsynth` sub-command parser."""
    p = sub.add_parser(
        "train", help="train a model preset on a built store (the paper's recipe)",
        description="Train a preset on the training split of a store built by `deepsynth data "
        "build`, with the paper's recipe by default: Adam at 1e-3, x0.1 every 20,000 batches "
        "down to 1e-6, 3 segments a batch, gradient norm clipped at 10, the preset's L2 "
        "penalty (added to the loss, biases excluded), 200 epochs, the CE of 100 fixed "
        "validation segments after each epoch. The loss covers each 5 s segment, not its left "
        "context (one receptive field).",
        epilog="The run folder gets last.pt (resumable), best.pt (lowest validation CE), "
        "metrics.csv, loss.png, tb/ (TensorBoard) and config.json. Kill it any time: "
        "`--resume` continues from last.pt exactly (same losses as an uninterrupted run). "
        "Several GPUs or machines: torchrun --nproc_per_node N -m deepsynth train ... "
        "(DistributedDataParallel; the batch is per process).",
    )
    p.add_argument("--data", required=True, metavar="DIR", help="built store (data/piano)")
    p.add_argument("--preset", metavar="NAME",
                   help="model preset (`deepsynth info`); optional with --resume or --init-from")
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/PRESET)")
    p.add_argument("--init-from", metavar="CHECKPOINT",
                   help="start a fresh run from this checkpoint's weights (a file, a run folder "
                        "for its best.pt, or `shipped` for the model DeepSynth ships), with the "
                        "run's own recipe and a fresh optimizer; the preset defaults to the "
                        "checkpoint's; ignored when --auto-resume finds a last.pt")
    run = p.add_argument_group("run")
    run.add_argument("--epochs", type=_positive_int, metavar="N",
                     help="epochs of the recipe (default 200)")
    run.add_argument("--max-steps", type=_positive_int, metavar="N",
                     help="stop once the run has taken N steps in total")
    run.add_argument("--max-minutes", type=float, metavar="M",
                     help="stop after M minutes of this invocation (then validate and save)")
    run.add_argument("--device", default="auto", metavar="DEV",
                     help="auto (default: cuda if available), cpu or cuda")
    resume = run.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last.pt (an error if absent)")
    resume.add_argument("--auto-resume", action="store_true",
                        help="continue from last.pt if there is one, else start fresh")
    run.add_argument("--checkpoint-every", type=int, default=1000, metavar="STEPS",
                     help="write last.pt every STEPS steps (default 1000; 0: off); also after "
                          "every validation and at the end")
    run.add_argument("--checkpoint-minutes", type=float, default=10.0, metavar="M",
                     help="and every M minutes (default 10; 0: off)")
    run.add_argument("--shard-mb", type=float, default=16.0, metavar="MB",
                     help="no checkpoint file larger than MB MiB: bigger ones are split in "
                          "parts beside an index file (default 16; 0: one file)")
    run.add_argument("--workers", type=int, metavar="N",
                     help="data loader processes (default: 0 on CPU, 4 on CUDA)")
    run.add_argument("--resident-data", action=argparse.BooleanOptionalAction, default=None,
                     help="hold the training split on the device and cut batches there (no "
                          "loader processes; default: on with CUDA, off on the CPU)")
    run.add_argument("--threads", type=_positive_int, metavar="N",
                     help="torch CPU threads (default: torch's choice)")
    run.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard events")
    run.add_argument("-q", "--quiet", action="store_true",
                     help="no progress bar (validation lines are still printed)")

    rec = p.add_argument_group("recipe (saved in the checkpoints; defaults: the paper's)")
    rec.add_argument("--lr", type=float, help="initial learning rate (1e-3)")
    rec.add_argument("--lr-decay-every", type=_positive_int, metavar="STEPS",
                     help="multiply the learning rate by --lr-decay-factor every STEPS (20000)")
    rec.add_argument("--lr-decay-factor", type=float, metavar="F", help="(0.1)")
    rec.add_argument("--lr-min", type=float, metavar="LR", help="learning-rate floor (1e-6)")
    rec.add_argument("--lr-warmup", type=int, metavar="STEPS",
                     help="ramp the learning rate up linearly over the first STEPS (0: none); "
                          "for --init-from, whose fresh Adam otherwise jolts the weights")
    rec.add_argument("--batch-size", type=_positive_int, metavar="N",
                     help="segments per step and process (3)")
    rec.add_argument("--clip", type=float, metavar="NORM",
                     help="max global gradient norm (10; 0: no clipping)")
    rec.add_argument("--l2", type=float, metavar="W",
                     help="L2 penalty strength, added to the loss (default: the preset's)")
    rec.add_argument("--seed", type=int, metavar="S", help="initialisation and data order (0)")
    rec.add_argument("--val-every", type=int, metavar="STEPS",
                     help="also validate every STEPS steps (default 0: after each epoch only)")
    rec.add_argument("--val-segments", type=_positive_int, metavar="N",
                     help="size of the fixed validation subset (100)")
    rec.add_argument("--log-every", type=_positive_int, metavar="STEPS",
                     help="train figures in metrics.csv every STEPS steps (10)")
    rec.add_argument("--window-seconds", type=float, metavar="S",
                     help="segment length (default: the store's, 5 s)")
    rec.add_argument("--overlap-seconds", type=float, metavar="S",
                     help="segment overlap (default: the store's, 2 s)")
    rec.add_argument("--no-video", action="store_const", const=True, default=None,
                     help="ablation: no video at all, the decoder sees past audio only")
    rec.add_argument("--camera-mix", type=float, metavar="F",
                     help="share of training segments (0..1) whose keys are those a camera "
                          "video at 25/30/60 fps shows once read (frame-rate timing, re-strikes "
                          "lifted a frame), so the model plays camera videos too (default 0)")
    rec.add_argument("--input-noise", type=float, metavar="CLASSES",
                     help="std of Gaussian noise (in classes, rounded) added to the past samples "
                          "the decoder reads in training, the targets left clean, as LPCNet "
                          "does (default 0)")
    rec.add_argument("--precision", choices=("fp32", "bf16"),
                     help="bf16 autocast (CUDA only; default there) or fp32 (default on CPU)")
    comp = rec.add_mutually_exclusive_group()
    comp.add_argument("--compile", action="store_const", const=True, default=None,
                      help="torch.compile the model (default on CUDA)")
    comp.add_argument("--no-compile", dest="compile", action="store_const", const=False,
                      help="run eagerly")
    p.set_defaults(func=cmd_train)
